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

from kaggle_stub import SUBMISSION_REF, KaggleStub
from rsna_lumbar.publish import PublishError, kaggle_cli, metadata, staging, wheels
from rsna_lumbar.provenance import read_provenance, write_provenance

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


def _weights(folder: Path, kind: str = "competition", provenance: bool = True) -> Path:
    """A weights/ folder: a severity model folder, a localiser, priors.json; each model folder
    with the provenance of a (tiny) competition folder, synthetic when ``kind`` says so."""
    data = folder.parent / f"data-{kind}"
    (data / "train_images" / "1" / "2").mkdir(parents=True, exist_ok=True)
    (data / "train_images" / "1" / "2" / "1.dcm").write_bytes(b"dicm")
    (data / "train.csv").write_text("study_id\n1\n")
    if kind == "synthetic":
        (data / "truth").mkdir(exist_ok=True)
        (data / "truth" / "manifest.json").write_text("{}")
    for name, marker in (("severity_default", "model.json"), ("localizer", "config.json")):
        (folder / name).mkdir(parents=True)
        (folder / name / marker).write_text("{}\n")
        if provenance:
            write_provenance(folder / name, data, recipe=f"test {name}")
    (folder / "priors.json").write_text("{}\n")
    return folder


def _wheelhouse(folder: Path) -> Path:
    """What 'make wheels' leaves, without building: the requirements file and a kit wheel."""
    folder.mkdir()
    (folder / "rsna_lumbar-0.1.0-py3-none-any.whl").write_bytes(b"")
    wheels.write_requirements(folder)
    return folder


def test_push_weights_creates_then_versions_the_dataset(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    staged = tmp_path / "build" / "kaggle-dataset"
    weights = _weights(tmp_path / "weights")
    with KaggleStub() as stub:
        first = _make("push-weights", stub, tmp_path, f"WHEELHOUSE={wheelhouse}",
                      "WEIGHTS_DATASET=my-lumbar-weights", f"WEIGHTS_DIR={weights}")
        assert first.returncode == 0, first.stdout + first.stderr
        _assert_no_secret(first, staged)
        _assert_authenticated(stub)
        meta = json.loads((staged / metadata.DATASET_METADATA).read_text())
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
        published = _tree(staged / "weights")
        manifest = json.loads(published.pop(staging.WEIGHTS_MANIFEST))
        assert published == _tree(weights)
        assert manifest["allow_synthetic"] is False
        assert manifest["models"] == {name: read_provenance(weights / name)
                                      for name in ("localizer", "severity_default")}
        assert manifest["models"]["localizer"]["data_kind"] == "competition"

        # second time: it exists, so a new version carries the files
        stub.requests.clear(), stub.blob_names.clear(), stub.uploads.clear()
        second = _make("push-weights", stub, tmp_path, f"WHEELHOUSE={wheelhouse}",
                       "WEIGHTS_DATASET=my-lumbar-weights", f"WEIGHTS_DIR={weights}",
                       "-o", "kit-wheel")  # wheel is built
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


@pytest.mark.parametrize("case", ["empty", "synthetic", "unrecorded"])
def test_stage_weights_refuses_what_would_score_like_noise(tmp_path, case):
    wheelhouse = _wheelhouse(tmp_path / "wheelhouse")
    if case == "empty":  # (not the checkout's weights/: 'make demo' fills that)
        weights, match = tmp_path / "weights", "holds no model folder"
        weights.mkdir()
    else:
        weights = _weights(tmp_path / "weights", "synthetic", provenance=case == "synthetic")
        match = "trained on synthetic data" if case == "synthetic" else "no provenance.json"
    with pytest.raises(PublishError, match=match) as refused:
        staging.stage_weights(REPO, tmp_path / "out", USER, weights=weights, wheelhouse=wheelhouse)
    assert "ALLOW_SYNTHETIC=1" in str(refused.value)
    if case != "empty":
        named = ("  localizer: ", "  severity_default: ")
        assert all(name in str(refused.value) for name in named)
        assert "scores like noise" in str(refused.value)
    assert not (tmp_path / "out").exists()
    staged = staging.stage_weights(REPO, tmp_path / "out", USER, weights=weights,
                              wheelhouse=wheelhouse, allow_synthetic=True)
    manifest = json.loads((staged / "weights" / staging.WEIGHTS_MANIFEST).read_text())
    assert manifest["allow_synthetic"] is True
    kinds = {name: record and record["data_kind"] for name, record in manifest["models"].items()}
    assert kinds == {"empty": {}, "synthetic": {"localizer": "synthetic",
                                                "severity_default": "synthetic"},
                     "unrecorded": {"localizer": None, "severity_default": None}}[case]


def test_members_the_ensemble_names_below_the_top_level_are_checked_too(tmp_path):
    weights = _weights(tmp_path / "weights")  # competition-trained top-level folders
    nested = weights / "runs" / "severity_big"
    nested.mkdir(parents=True)
    (nested / "model.json").write_text("{}\n")  # no provenance.json
    (weights / "ensemble.yaml").write_text(
        "members:\n  - {path: severity_default}\n  - {path: runs/severity_big}\n"
        "localizer: localizer\n")
    with pytest.raises(PublishError, match="  runs/severity_big: no provenance.json"):
        staging.check_weights(weights)
    write_provenance(nested, tmp_path / "data-competition", recipe="test big")
    assert set(staging.check_weights(weights)) == {"localizer", "runs/severity_big",
                                                    "severity_default"}


def test_push_weights_refuses_synthetic_models_unless_allowed(tmp_path):
    wheelhouse = _wheelhouse(tmp_path / "wheelhouse")
    weights = _weights(tmp_path / "weights", "synthetic")
    args = (f"WHEELHOUSE={wheelhouse}", f"WEIGHTS_DIR={weights}", "-o", "kit-wheel")
    with KaggleStub() as stub:
        refused = _make("push-weights", stub, tmp_path, *args)
        assert refused.returncode != 0
        assert not stub.requests  # refused before any upload
        assert "severity_default: trained on synthetic data" in refused.stderr
        assert "ALLOW_SYNTHETIC=1" in refused.stderr
        allowed = _make("push-weights", stub, tmp_path, *args, "ALLOW_SYNTHETIC=1")
        assert allowed.returncode == 0, allowed.stdout + allowed.stderr
        assert "warning (ALLOW_SYNTHETIC)" in allowed.stderr
        assert len(stub.calls("CreateDataset")) == 1


def test_push_kernel_waits_for_the_dataset_then_submit_and_status(tmp_path):
    """The full cycle after push-weights: push-kernel (once the dataset version is ready),
    kernel-status, submit the version it pushed (or KERNEL_VERSION)."""
    dataset, kernel = f"{USER}/my-lumbar-weights", f"{USER}/my-lumbar-kernel"
    args = (f"KAGGLE_USER={USER}", "KERNEL_SLUG=my-lumbar-kernel",
            "WEIGHTS_DATASET=my-lumbar-weights", "DATASET_POLL=0")
    states = {dataset: ["BLOBS_RECEIVED", "READY"]}
    with KaggleStub(existing={dataset}, dataset_states=states, versions={dataset: 3}) as stub:
        done = _make("push-kernel", stub, tmp_path, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        _assert_no_secret(done, tmp_path / "build")
        _assert_authenticated(stub)
        rpcs = [r.rpc for r in stub.requests if r.rpc != "GetDataset"]
        assert rpcs == ["GetDatasetStatus", "GetDatasetStatus", "SaveKernel"]
        assert all(r.json == {"ownerSlug": USER, "datasetSlug": "my-lumbar-weights"}
                   for r in stub.calls("GetDatasetStatus"))
        assert f"dataset {dataset} version 3 is 'blobs_received'" in done.stdout
        assert f"dataset {dataset} version 3 is ready" in done.stdout
        (save,) = stub.calls("SaveKernel")
        body = save.json
        assert body["slug"] == kernel
        assert body["datasetDataSources"] == [dataset]
        assert body["competitionDataSources"] == [metadata.COMPETITION]
        assert body["enableGpu"] is True and body["enableInternet"] is False
        assert body["machineShape"] == "NvidiaTeslaT4"
        assert body["dockerImagePinningType"] == "original"
        assert body["isPrivate"] is True
        assert (body["language"], body["kernelType"]) == ("python", "script")
        assert body["text"] == (REPO / "kernels" / "rsna_lumbar_inference.py").read_text()
        assert "does not resolve" not in done.stdout  # the title matches the slug
        assert "successfully pushed" in done.stdout
        record = json.loads(
            (tmp_path / "build" / "kaggle-kernel" / kaggle_cli.PUSH_RECORD).read_text())
        assert record == {"kernel": kernel, "version": 1, "dataset": dataset,
                          "dataset_version": 3}

        stub.requests.clear()
        status = _make("kernel-status", stub, tmp_path, *args)
        assert status.returncode == 0, status.stdout + status.stderr
        (asked,) = stub.calls("GetKernelSessionStatus")
        assert asked.json == {"userName": USER, "kernelSlug": "my-lumbar-kernel"}
        assert f"{kernel} has status" in status.stdout and "COMPLETE" in status.stdout

        submitted = _make("submit", stub, tmp_path, *args)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        _assert_no_secret(submitted, tmp_path / "build")
        (sub,) = stub.calls("CreateCodeSubmission")
        assert sub.json["competitionName"] == metadata.COMPETITION
        assert (sub.json["kernelOwner"], sub.json["kernelSlug"]) == (USER, "my-lumbar-kernel")
        assert sub.json["kernelVersion"] == 1 and sub.json["fileName"] == "submission.csv"
        assert sub.json["submissionDescription"].startswith("rsna-lumbar 0.1.0")
        assert sub.json["submissionDescription"].endswith("kernel version 1")
        assert f"Submission ref: {SUBMISSION_REF}" in submitted.stdout

        # a second push is version 2, and submit follows it; KERNEL_VERSION picks another
        assert _make("push-kernel", stub, tmp_path, *args).returncode == 0
        stub.requests.clear()
        assert _make("submit", stub, tmp_path, *args).returncode == 0
        chosen = _make("submit", stub, tmp_path, *args, "KERNEL_VERSION=1",
                       "SUBMIT_MESSAGE=first try")
        assert chosen.returncode == 0, chosen.stdout + chosen.stderr
        assert [(r.json["kernelVersion"], r.json["submissionDescription"][-16:])
                for r in stub.calls("CreateCodeSubmission")] == [
            (2, "kernel version 2"), (1, "first try")]

        stub.kernel_states[kernel] = "ERROR"
        stub.requests.clear()
        failed = _make("kernel-status", stub, tmp_path, *args, "KERNEL_VERSION=2")
        assert failed.returncode == 0, failed.stdout + failed.stderr
        (asked,) = stub.calls("GetKernelSessionStatus")
        assert asked.json["versionLabel"] == "v2"
        assert "ERROR" in failed.stdout and "stub: the run failed" in failed.stdout


@pytest.mark.parametrize("state", ["missing", "FAILED", "BLOBS_RECEIVED"])
def test_push_kernel_does_not_push_before_the_dataset_is_ready(tmp_path, state):
    dataset = f"{USER}/rsna-lumbar-weights"
    existing = set() if state == "missing" else {dataset}
    with KaggleStub(existing=existing, dataset_states={dataset: [state]}) as stub:
        done = _make("push-kernel", stub, tmp_path, "DATASET_WAIT=0")
    assert done.returncode != 0
    assert not stub.calls("SaveKernel")
    expected = {"missing": "run 'make push-weights' first", "FAILED": "is 'failed' on Kaggle",
                "BLOBS_RECEIVED": "still 'blobs_received' after 0 s"}[state]
    assert expected in done.stderr, done.stderr


def test_submit_without_a_pushed_version_says_what_to_do(tmp_path):
    with KaggleStub() as stub:
        done = _make("submit", stub, tmp_path)
    assert done.returncode != 0 and not stub.requests
    assert "make push-kernel' first, or pass KERNEL_VERSION=N" in done.stderr


def test_push_kernel_fails_when_kaggle_reports_an_error(tmp_path):
    class Refusing(KaggleStub):
        def answer(self, req):
            if req.rpc == "SaveKernel":
                return 200, {"error": "Notebook not found or no access", "versionNumber": 0}
            return super().answer(req)

    with Refusing(existing={f"{USER}/rsna-lumbar-weights"}) as stub:
        done = _make("push-kernel", stub, tmp_path)
    assert done.returncode != 0
    assert "Kernel push error" in done.stdout and "failed" in done.stderr
    assert not (tmp_path / "build" / "kaggle-kernel" / kaggle_cli.PUSH_RECORD).exists()


@pytest.mark.parametrize("command", ["kernels", "datasets"])
def test_committed_templates_pass_the_cli_validation(tmp_path, command):
    """The committed metadata, placeholder owner and all, is accepted by the real CLI."""
    folder = tmp_path / "upload"
    if command == "kernels":
        shutil.copytree(REPO / "kernels", folder)
        args = ["kernels", "push", "-p", str(folder)]
    else:
        folder.mkdir()
        shutil.copy(REPO / metadata.DATASET_METADATA, folder)
        (folder / "note.txt").write_text("x\n")
        args = ["datasets", "create", "-p", str(folder)]
    with KaggleStub() as stub:
        done = subprocess.run([KAGGLE, *args], capture_output=True, text=True,
                              env=_env(stub, tmp_path), timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = stub.calls("SaveKernel" if command == "kernels" else "CreateDataset")
    assert len(sent) == 1 and "error" not in done.stdout.lower()
    assert "does not resolve" not in done.stdout  # title and slug agree
    assert metadata.PLACEHOLDER_OWNER in json.dumps(sent[0].json)
    if command == "kernels":  # the accelerator and the image pinning reach Kaggle
        assert sent[0].json["machineShape"] == "NvidiaTeslaT4"
        assert sent[0].json["dockerImagePinningType"] == "original"
        assert "retired" not in done.stderr


def test_templates_hold_no_real_owner_and_agree_on_the_weights_dataset():
    dataset = json.loads((REPO / metadata.DATASET_METADATA).read_text())
    kernel = json.loads((REPO / "kernels" / metadata.KERNEL_METADATA).read_text())
    assert dataset["id"].split("/")[0] == kernel["id"].split("/")[0] == metadata.PLACEHOLDER_OWNER
    assert kernel["dataset_sources"] == [dataset["id"]]
    assert kernel["competition_sources"] == [metadata.COMPETITION]
    assert kernel["enable_gpu"] is True and kernel["enable_internet"] is False
    rendered = metadata.render_kernel_metadata(REPO, USER, "my-kernel", "my-weights")
    assert rendered["machine_shape"] == kernel["machine_shape"] == "NvidiaTeslaT4"
    assert rendered["docker_image_pinning_type"] == "original"


def test_owner_comes_from_flag_env_or_kaggle_json(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(PublishError, match="KAGGLE_USER="):
        metadata.resolve_owner()
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "jsonuser", "key": KEY}))
    assert metadata.resolve_owner() == "jsonuser"
    monkeypatch.setenv("KAGGLE_USERNAME", "envuser")
    assert metadata.resolve_owner() == "envuser"
    assert metadata.resolve_owner("flaguser") == "flaguser"
    with pytest.raises(PublishError, match="KAGGLE_USER="):
        metadata.resolve_owner(metadata.PLACEHOLDER_OWNER)


def test_bad_slug_and_missing_wheelhouse_say_what_to_do(tmp_path):
    with pytest.raises(PublishError, match="6-50 characters"):
        metadata.render_dataset_metadata(REPO, USER, "Bad_Slug")
    # weights given explicitly: the checkout's weights/ exists only after 'make demo'
    with pytest.raises(PublishError, match="train models into it, or pass --weights"):
        staging.stage_weights(REPO, tmp_path / "out", USER, weights=tmp_path / "no-weights",
                              wheelhouse=tmp_path / "none")
    with pytest.raises(PublishError, match="make wheels"):
        staging.stage_weights(REPO, tmp_path / "out", USER, weights=tmp_path,
                              wheelhouse=tmp_path / "none")


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
    """pip download (offline, from a local folder) keeps only the asked Pythons' manylinux x86-64
    wheels; compiled wheels go to the optional list, pure ones to the required list."""
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
    specs = wheels.pinned(["fakepkg"], requirements)
    assert specs == ["fakepkg==1.0"]
    wheelhouse = tmp_path / "wheelhouse"
    wheels.download_wheels(specs, wheelhouse, ["3.10", "3.11"])
    assert sorted(p.name for p in wheelhouse.glob("*.whl")) == [
        "fakepkg-1.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "fakepkg-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    ]
    (wheelhouse / "rsna_lumbar-0.1.0-py3-none-any.whl").write_bytes(b"")
    (wheelhouse / "purepkg-2.0-py3-none-any.whl").write_bytes(b"")
    assert wheels.write_requirements(wheelhouse).read_text().split() == [
        "purepkg==2.0", "rsna-lumbar==0.1.0"]  # pure Python: the kernel installs them strictly
    optional = (wheelhouse / wheels.OPTIONAL_FILE).read_text().split()
    assert optional == ["fakepkg==1.0"]  # best effort
    (wheelhouse / "fakepkg-0.9-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(PublishError, match="two versions of fakepkg"):
        wheels.write_requirements(wheelhouse)
