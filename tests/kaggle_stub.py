"""A stand-in for api.kaggle.com on 127.0.0.1 that the real ``kaggle`` CLI talks to.

The CLI (2.2.5) has no endpoint setting, but ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` sends every
call to ``http://localhost/api/v1/<service>/<method>`` (a JSON POST), and ``HTTP_PROXY`` routes
that to this server (docs/kaggle.md). Blob uploads come back as
``PUT http://localhost/upload/<token>``. Every request is recorded: method, path, headers,
JSON body, and the bytes of each upload.

State it keeps, as Kaggle would: which datasets exist and their current version numbers (create
→ 1, each new version + 1), the status each dataset reports (``dataset_states``: served in turn,
the last one repeated; default ``READY``), each kernel's pushed versions and the status of its
run (``kernel_states``; default ``COMPLETE``). Code submissions get ref :data:`SUBMISSION_REF`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SUBMISSION_REF = 4242


@dataclass
class Request:
    method: str
    path: str  # /api/v1/<service>/<method> or /upload/<token>
    headers: dict
    body: bytes
    json: dict | None = None

    @property
    def rpc(self) -> str:
        """The RPC name (``SaveKernel``, ``CreateDatasetVersion``...) or ``PUT``."""
        return self.path.rsplit("/", 1)[-1] if self.method == "POST" else self.method


@dataclass
class KaggleStub:
    """Start with ``with KaggleStub(existing={"owner/slug"}) as stub:``; then ``stub.env(...)``."""

    existing: set = field(default_factory=set)  # datasets that GetDatasetStatus finds
    dataset_states: dict = field(default_factory=dict)  # ref -> statuses served in turn
    kernel_states: dict = field(default_factory=dict)  # owner/slug -> run status
    versions: dict = field(default_factory=dict)  # dataset ref -> current version number
    kernel_versions: dict = field(default_factory=dict)  # owner/slug -> versions pushed
    requests: list = field(default_factory=list)
    blob_names: dict = field(default_factory=dict)  # token -> file name announced
    uploads: dict = field(default_factory=dict)  # token -> bytes received

    def __enter__(self) -> KaggleStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, payload: dict) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self):
                body = self._body()
                req = Request("POST", urlsplit(self.path).path, dict(self.headers), body,
                              json.loads(body or b"{}"))
                stub.requests.append(req)
                self._reply(*stub.answer(req))

            def do_PUT(self):
                body = self._body()
                path = urlsplit(self.path).path
                stub.requests.append(Request("PUT", path, dict(self.headers), body))
                stub.uploads[path.rsplit("/", 1)[-1]] = body
                self._reply(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def answer(self, req: Request) -> tuple[int, dict]:
        body, rpc = req.json or {}, req.rpc
        if rpc == "StartBlobUpload":
            token = f"tok{len(self.blob_names) + 1}"
            self.blob_names[token] = body["name"]
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}
        if rpc in ("GetDatasetStatus", "GetDataset"):
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.existing:
                return 404, {"code": 404, "message": f"Dataset {ref} not found"}
            if rpc == "GetDataset":
                return 200, {"ref": ref, "currentVersionNumber": self.versions.get(ref, 1)}
            states = self.dataset_states.get(ref) or ["READY"]
            return 200, {"status": states.pop(0) if len(states) > 1 else states[0]}
        if rpc in ("CreateDataset", "CreateDatasetVersion"):
            slug = body.get("slug") or body.get("datasetSlug")
            ref = f"{body.get('ownerSlug')}/{slug}"
            known = ref in self.existing and rpc == "CreateDatasetVersion"
            self.existing.add(ref)
            self.versions[ref] = self.versions.get(ref, 1) + 1 if known else 1
            return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}",
                         "status": "ok", "error": ""}
        if rpc == "SaveKernel":
            ref = body.get("slug")
            self.kernel_versions[ref] = version = self.kernel_versions.get(ref, 0) + 1
            url = f"https://www.kaggle.com/code/{ref}"
            return 200, {"ref": ref, "url": url, "versionNumber": version, "error": ""}
        if rpc == "GetKernelSessionStatus":
            status = self.kernel_states.get(f"{body.get('userName')}/{body.get('kernelSlug')}",
                                            "COMPLETE")
            failure = {"failureMessage": "stub: the run failed"} if status == "ERROR" else {}
            return 200, {"status": status, **failure}
        if rpc == "CreateCodeSubmission":
            return 200, {"message": "Successfully submitted", "ref": SUBMISSION_REF}
        if rpc == "GetSubmissionLimits":
            return 200, {"numToday": 1, "numTotal": 1, "numAllowedNow": 4}
        return 501, {"code": 501, "message": f"stub does not know {req.path}"}

    def calls(self, rpc: str) -> list[Request]:
        return [r for r in self.requests if r.rpc == rpc]

    def uploaded_files(self) -> dict[str, bytes]:
        """File name announced in StartBlobUpload -> bytes PUT for its token."""
        return {name: self.uploads[token] for token, name in self.blob_names.items()
                if token in self.uploads}

    def env(self, base: dict, tmp_path) -> dict:
        """``base`` plus what routes the real CLI here, with fake credentials in a tmp config."""
        env = {k: v for k, v in base.items()
               if k.upper() not in ("NO_PROXY", "HTTPS_PROXY", "ALL_PROXY", "KAGGLE_API_TOKEN")}
        config = tmp_path / "kaggle-config"
        config.mkdir(exist_ok=True)
        proxy = f"http://127.0.0.1:{self.port}"
        env.update(KAGGLE_API_ENVIRONMENT="LOCALHOST", HTTP_PROXY=proxy, http_proxy=proxy,
                   KAGGLE_CONFIG_DIR=str(config), TMPDIR=str(tmp_path))
        return env
