"""The uploads, through the real ``kaggle`` CLI: the weights dataset, the kernel, the submission."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rsna_lumbar import __version__
from rsna_lumbar.publish import PublishError
from rsna_lumbar.publish.metadata import (
    COMPETITION,
    DATASET_METADATA,
    KERNEL_METADATA,
    load_json,
    write_json,
)

PUSH_RECORD = "pushed.json"  # written into the staged kernel folder after a push: kernel + version
SUBMISSION_FILE = "submission.csv"  # what the kernel writes and the competition scores


def kaggle_executable() -> str:
    """The ``kaggle`` CLI next to this Python (the venv), else on PATH."""
    here = Path(sys.executable).parent / "kaggle"
    found = str(here) if here.is_file() else shutil.which("kaggle")
    if not found:
        msg = "the kaggle CLI is not installed: pip install 'rsna-lumbar[kaggle]' (kaggle + six)."
        raise PublishError(msg)
    return found


def _kaggle(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the kaggle CLI, echoing its output; ``check``: raise on failure."""
    cmd = [kaggle_executable(), *args]
    print("+ kaggle", shlex.join(args), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(done.stdout if done.stdout.endswith("\n") or not done.stdout
                     else done.stdout + "\n")  # some commands end without one
    sys.stderr.write(done.stderr)
    text = done.stdout + done.stderr
    failed = done.returncode != 0 or re.search(r"(creation|push) error", text)
    if check and failed:
        msg = f"'kaggle {shlex.join(args)}' failed (exit {done.returncode}); its output is above."
        raise PublishError(msg)
    return done


def dataset_status(ref: str) -> dict | None:
    """``{"status": "ready", "current_version_number": 3}`` from ``kaggle datasets status``;
    None when Kaggle has no dataset ``ref`` (404); raises otherwise."""
    done = _kaggle("datasets", "status", ref, "--format", "json", check=False)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        if "404" in text or "not found" in text.lower():
            return None
        raise PublishError(f"'kaggle datasets status {ref}' failed; its output is above.")
    try:  # the JSON is the last line; anything the CLI warns about comes before it
        return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    except (IndexError, ValueError):
        msg = f"'kaggle datasets status {ref}' printed no status; its output is above."
        raise PublishError(msg) from None


def dataset_exists(ref: str) -> bool:
    """True when ``kaggle datasets status`` finds ``ref``; False on 404; raises otherwise."""
    return dataset_status(ref) is not None


DATASET_FAILED = ("failed", "deleted")


def wait_for_dataset(ref: str, timeout: float = 900, interval: float = 15) -> int | None:
    """Poll ``kaggle datasets status`` until the current version of ``ref`` is ready (Kaggle
    processes a new version for a few minutes); returns its number. Raises when the dataset
    does not exist, its version failed, or it is still not ready after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        state = dataset_status(ref)
        if state is None:
            msg = f"the weights dataset {ref} is not on Kaggle: run 'make push-weights' first."
            raise PublishError(msg)
        status, version = state.get("status"), state.get("current_version_number")
        what = f"dataset {ref} version {version}"
        if status == "ready":
            print(f"{what} is ready", flush=True)
            return version
        if status in DATASET_FAILED:
            msg = (f"{what} is '{status}' on Kaggle: see the dataset's page, then run "
                   "'make push-weights' again.")
            raise PublishError(msg)
        if time.monotonic() >= deadline:
            msg = (f"{what} is still '{status}' after {timeout:g} s: rerun 'make push-kernel' "
                   "later, or wait longer with DATASET_WAIT=SECONDS.")
            raise PublishError(msg)
        print(f"{what} is '{status}': checking again in {interval:g} s", flush=True)
        time.sleep(interval)


def version_notes(root: Path) -> str:
    notes = f"rsna-lumbar {__version__}"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"{notes} ({sha})" if sha else notes
    except (OSError, subprocess.CalledProcessError):
        return notes


def push_weights(staged: Path, notes: str) -> str:
    """``datasets version`` when the dataset exists, else ``datasets create``; returns which."""
    ref = load_json(staged / DATASET_METADATA)["id"]
    if dataset_exists(ref):
        _kaggle("datasets", "version", "-p", str(staged), "-m", notes, "--dir-mode", "zip")
        return "version"
    _kaggle("datasets", "create", "-p", str(staged), "--dir-mode", "zip")
    return "create"


def push_kernel(staged: Path, timeout: float = 900, interval: float = 15) -> int | None:
    """Wait for the weights dataset (:func:`wait_for_dataset`), push, and record the kernel
    version Kaggle reports in ``staged/pushed.json`` (for :func:`submit`); returns it."""
    meta = load_json(staged / KERNEL_METADATA)
    weights = meta["dataset_sources"][0]
    dataset_version = wait_for_dataset(weights, timeout, interval)
    done = _kaggle("kernels", "push", "-p", str(staged))
    found = re.search(r"Kernel version (\d+) successfully", done.stdout)
    version = int(found[1]) if found else None
    write_json(staged / PUSH_RECORD, {"kernel": meta["id"], "version": version,
                                       "dataset": weights, "dataset_version": dataset_version})
    return version


def pushed_version(staged: Path, kernel: str) -> int:
    """The version of ``kernel`` that the last ``push-kernel`` into ``staged`` recorded."""
    record = staged / PUSH_RECORD
    try:
        pushed = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pushed = {}
    if not isinstance(pushed, dict) or pushed.get("kernel") != kernel or not pushed.get("version"):
        msg = (f"{record} records no pushed version of {kernel}: run 'make push-kernel' first, or "
               "pass KERNEL_VERSION=N (the 'Kernel version N' that push printed).")
        raise PublishError(msg)
    return int(pushed["version"])


def submit(kernel: str, version: int, message: str, file_name: str = SUBMISSION_FILE) -> None:
    """Submit version ``version`` of ``kernel`` (``owner/slug``) to the competition: Kaggle
    reruns it on the hidden test set and scores its ``file_name``."""
    _kaggle("competitions", "submit", COMPETITION, "-k", kernel, "-v", str(version),
            "-f", file_name, "-m", message)


def kernel_status(kernel: str, version: int | None = None) -> None:
    """Print the state of ``kernel``'s latest run, or of version ``version``."""
    _kaggle("kernels", "status", f"{kernel}/{version}" if version else kernel)
