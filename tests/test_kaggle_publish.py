"""make push-weights / push-kernel run the real kaggle CLI; a stub on 127.0.0.1 records requests.

Credentials are fake and live only in the environment of the CLI subprocess (the user's usual
configuration, as far as the CLI can tell); the tests check they never reach a log or a file.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kaggle_stub import KaggleStub
from rsna_lumbar import kaggle_publish as kp

REPO = Path(__file__).resolve().parents[1]
KAGGLE = str(Path(sys.executable).parent / "kaggle")
USER, KEY = "fakeuser", "fk-7c1e93b0d4a24f6f9e2b5d8a31c0ffee"

pytestmark = pytest.mark.skipif(not Path(KAGGLE).is_file(), reason="kaggle CLI not installed")


def _env(stub: KaggleStub, tmp_path: Path, **extra) -> dict:
    env = stub.env({k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}, tmp_path)
    env.update(KAGGLE_USERNAME=USER, KAGGLE_KEY=KEY, HOME=str(tmp_path),
               PIP_CONFIG_FILE=os.devnull, **extra)
    return env


def _make(target: str, stub: KaggleStub, tmp_path: Path, *variables: str):
    cmd = ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.installed", target,
           f"PY={sys.executable}", f"KAGGLE_BUILD={tmp_path / 'build'}", *variables]
    env = _env(stub, tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _assert_no_secret(done, *folders: Path) -> None:
    assert KEY not in done.stdout + done.stderr
    for folder in folders:
        for f in folder.rglob("*"):
            assert not f.is_file() or KEY.encode() not in f.read_bytes(), f


def _assert_authenticated(stub: KaggleStub) -> None:
    expected = "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    posts = [r for r in stub.requests if r.method == "POST"]
    assert posts and all(r.headers.get("Authorization") == expected for r in posts)
    assert all(KEY not in json.dumps(r.json) for r in posts)


def _zip_members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist() if not n.endswith("/")}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_weights_creates_then_versions_the_dataset(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    staged = tmp_path / "build" / "kaggle-dataset"
    with KaggleStub() as stub:
        first = _make("push-weights", stub, tmp_path, f"WHEELHOUSE={wheelhouse}",
                      "WEIGHTS_DATASET=my-lumbar-weights")
        assert first.returncode == 0, first.stdout + first.stderr
        _assert_no_secret(first, staged)
        _assert_authenticated(stub)
        meta = json.loads((staged / kp.DATASET_METADATA).read_text())
        assert meta["id"] == f"{USER}/my-lumbar-weights"

        # first time: the dataset does not exist, so it is created with every staged file
        (create,) = stub.calls("CreateDataset")
        assert not stub.calls("CreateDatasetVersion")
        body = create.json
        assert (body["ownerSlug"], body["slug"]) == (USER, "my-lumbar-weights")
        assert body["title"] == meta["title"] and body["licenseName"] == "other"
        assert body["isPrivate"] is True
        uploaded = stub.uploaded_files()
        assert sorted(uploaded) == ["weights.zip", "wheels.zip"]
        assert sorted(f["token"] for f in body["files"]) == sorted(stub.blob_names)
        for name in ("weights", "wheels"):
            assert _zip_members(uploaded[f"{name}.zip"]) == _tree(staged / name)
        assert "rsna_lumbar-0.1.0-py3-none-any.whl" in _tree(staged / "wheels")
        assert _tree(staged / "weights") == _tree(REPO / "weights")

        # second time: it exists, so a new version carries the files
        stub.requests.clear(), stub.blob_names.clear(), stub.uploads.clear()
        second = _make("push-weights", stub, tmp_path, f"WHEELHOUSE={wheelhouse}",
                       "WEIGHTS_DATASET=my-lumbar-weights", "-o", "kit-wheel")  # wheel is built
        assert second.returncode == 0, second.stdout + second.stderr
        _assert_no_secret(second, staged)
        assert not stub.calls("CreateDataset")
        (version,) = stub.calls("CreateDatasetVersion")
        body = version.json
        assert (body["ownerSlug"], body["datasetSlug"]) == (USER, "my-lumbar-weights")
        assert body["body"]["versionNotes"].startswith("rsna-lumbar 0.1.0")
        assert sorted(f["token"] for f in body["body"]["files"]) == sorted(stub.blob_names)
        assert sorted(stub.uploaded_files()) == ["weights.zip", "wheels.zip"]
        assert "version done" in second.stdout


def test_push_kernel_sends_slug_sources_gpu_on_internet_off(tmp_path):
    with KaggleStub() as stub:
        done = _make("push-kernel", stub, tmp_path, f"KAGGLE_USER={USER}",
                     "KERNEL_SLUG=my-lumbar-kernel", "WEIGHTS_DATASET=my-lumbar-weights")
        assert done.returncode == 0, done.stdout + done.stderr
        _assert_no_secret(done, tmp_path / "build")
        _assert_authenticated(stub)
    (save,) = stub.calls("SaveKernel")
    body = save.json
    assert body["slug"] == f"{USER}/my-lumbar-kernel"
    assert body["datasetDataSources"] == [f"{USER}/my-lumbar-weights"]
    assert body["competitionDataSources"] == [kp.COMPETITION]
    assert body["enableGpu"] is True and body["enableInternet"] is False
    assert body["isPrivate"] is True
    assert (body["language"], body["kernelType"]) == ("python", "script")
    assert body["text"] == (REPO / "kernels" / "rsna_lumbar_inference.py").read_text()
    assert "does not resolve" not in done.stdout  # the title matches the slug
    assert "successfully pushed" in done.stdout


def test_push_kernel_fails_when_kaggle_reports_an_error(tmp_path):
    class Refusing(KaggleStub):
        def answer(self, req):
            if req.rpc == "SaveKernel":
                return 200, {"error": "Notebook not found or no access", "versionNumber": 0}
            return super().answer(req)

    with Refusing() as stub:
        done = _make("push-kernel", stub, tmp_path)
    assert done.returncode != 0
    assert "Kernel push error" in done.stdout and "failed" in done.stderr


@pytest.mark.parametrize("command", ["kernels", "datasets"])
def test_committed_templates_pass_the_cli_validation(tmp_path, command):
    """The committed metadata, placeholder owner and all, is accepted by the real CLI."""
    folder = tmp_path / "upload"
    if command == "kernels":
        shutil.copytree(REPO / "kernels", folder)
        args = ["kernels", "push", "-p", str(folder)]
    else:
        folder.mkdir()
        shutil.copy(REPO / kp.DATASET_METADATA, folder)
        (folder / "note.txt").write_text("x\n")
        args = ["datasets", "create", "-p", str(folder)]
    with KaggleStub() as stub:
        done = subprocess.run([KAGGLE, *args], capture_output=True, text=True,
                              env=_env(stub, tmp_path), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = stub.calls("SaveKernel" if command == "kernels" else "CreateDataset")
    assert len(sent) == 1 and "error" not in done.stdout.lower()
    assert "does not resolve" not in done.stdout  # title and slug agree
    assert kp.PLACEHOLDER_OWNER in json.dumps(sent[0].json)


def test_templates_hold_no_real_owner_and_agree_on_the_weights_dataset():
    dataset = json.loads((REPO / kp.DATASET_METADATA).read_text())
    kernel = json.loads((REPO / "kernels" / kp.KERNEL_METADATA).read_text())
    assert dataset["id"].split("/")[0] == kernel["id"].split("/")[0] == kp.PLACEHOLDER_OWNER
    assert kernel["dataset_sources"] == [dataset["id"]]
    assert kernel["competition_sources"] == [kp.COMPETITION]
    assert kernel["enable_gpu"] is True and kernel["enable_internet"] is False


def test_owner_comes_from_flag_env_or_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(kp.PublishError, match="KAGGLE_USER="):
        kp.resolve_owner()
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "jsonuser", "key": KEY}))
    assert kp.resolve_owner() == "jsonuser"
    monkeypatch.setenv("KAGGLE_USERNAME", "envuser")
    assert kp.resolve_owner() == "envuser"
    assert kp.resolve_owner("flaguser") == "flaguser"
    with pytest.raises(kp.PublishError, match="KAGGLE_USER="):
        kp.resolve_owner(kp.PLACEHOLDER_OWNER)


def test_bad_slug_and_missing_wheelhouse_say_what_to_do(tmp_path):
    with pytest.raises(kp.PublishError, match="6-50 characters"):
        kp.render_dataset_metadata(REPO, USER, "Bad_Slug")
    with pytest.raises(kp.PublishError, match="make wheels"):
        kp.stage_weights(REPO, tmp_path / "out", USER, wheelhouse=tmp_path / "none")


def _fake_wheel(folder: Path, tag: str) -> None:
    name = f"fakepkg-1.0-{tag}.whl"
    with zipfile.ZipFile(folder / name, "w") as z:
        z.writestr("fakepkg/__init__.py", "")
        z.writestr("fakepkg-1.0.dist-info/METADATA",
                   "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
        z.writestr("fakepkg-1.0.dist-info/WHEEL",
                   f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
        z.writestr("fakepkg-1.0.dist-info/RECORD", "")


def test_download_picks_kaggle_linux_wheels_per_python_and_pins_them(tmp_path, monkeypatch):
    """pip download (offline, from a local folder) keeps only cp310/cp311 manylinux x86-64."""
    index = tmp_path / "index"
    index.mkdir()
    for tag in ("cp310-cp310-manylinux_2_17_x86_64", "cp311-cp311-manylinux_2_28_x86_64",
                "cp312-cp312-manylinux_2_17_x86_64", "cp310-cp310-win_amd64",
                "cp310-cp310-manylinux_2_17_aarch64"):
        _fake_wheel(index, tag)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("fakepkg==1.0\nother>=2\n")
    specs = kp.pinned(["fakepkg"], requirements)
    assert specs == ["fakepkg==1.0"]
    wheelhouse = tmp_path / "wheelhouse"
    kp.download_wheels(specs, wheelhouse, ["3.10", "3.11"])
    assert sorted(p.name for p in wheelhouse.glob("*.whl")) == [
        "fakepkg-1.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "fakepkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    ]
    (wheelhouse / "rsna_lumbar-0.1.0-py3-none-any.whl").write_bytes(b"")
    assert kp.write_requirements(wheelhouse).read_text().split() == [
        "fakepkg==1.0", "rsna-lumbar==0.1.0"]
    (wheelhouse / "fakepkg-0.9-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(kp.PublishError, match="two versions of fakepkg"):
        kp.write_requirements(wheelhouse)
