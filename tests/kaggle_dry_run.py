"""The Kaggle kernel's dry run, shared by tests/test_kaggle_kernel.py (this environment's
Python) and tests/test_kaggle_image.py (a venv of Kaggle's image versions): a fake /kaggle tree,
the kernel file run unchanged with the network closed, and checks of what it wrote."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

from rsna_lumbar.publish.metadata import COMPETITION, DATASET_METADATA
from rsna_lumbar.publish.staging import stage_weights
from rsna_lumbar.vocabulary import study_row_ids

REPO = Path(__file__).resolve().parents[1]
KERNEL = REPO / "kernels" / "rsna_lumbar_inference.py"
HEADER = ["row_id", "normal_mild", "moderate", "severe"]


def offline_env(**extra) -> dict:
    """This environment with every network route closed (pip: no index, proxies: nowhere)."""
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("PYTHONPATH", "NO_PROXY", "PIP_FIND_LINKS", "PIP_INDEX_URL",
                                "KAGGLE_IS_COMPETITION_RERUN")}
    dead = "http://127.0.0.1:9"  # nothing listens: any network use fails fast
    env.update(HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead,
               PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", **extra)
    return env


def stage_kaggle(root: Path, wheelhouse: Path, weights: Path, data: Path) -> Path:
    """Lay out ``root`` as Kaggle mounts it: the weights dataset as push-weights stages it, the
    competition folder (a copy of ``data``'s test split) and an empty working folder."""
    dataset = stage_weights(REPO, root / "input" / "rsna-lumbar-weights", "fakeuser",
                               weights=weights, wheelhouse=wheelhouse, allow_synthetic=True)
    (dataset / DATASET_METADATA).unlink()  # Kaggle does not mount the metadata file
    competition = root / "input" / COMPETITION
    competition.mkdir(parents=True)
    shutil.copy(data / "test_series_descriptions.csv", competition)
    shutil.copytree(data / "test_images", competition / "test_images")
    (root / "working").mkdir()
    return dataset


def _network_namespace() -> list[str]:
    """``unshare -n`` where this machine allows it (root, or user namespaces): the kernel then
    runs with no network interface at all, not only with dead proxies."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    except OSError:
        ok = False
    return ["unshare", "-n"] if ok else []


NO_NETWORK = _network_namespace()


def run_kernel(python: Path, root: Path, rerun: bool = False,
               **extra) -> subprocess.CompletedProcess:
    """The kernel file, unchanged, with ``root`` as /kaggle and the network closed."""
    env = offline_env(RSNA_KAGGLE_ROOT=str(root), **extra)
    if rerun:
        env["KAGGLE_IS_COMPETITION_RERUN"] = "1"
    return subprocess.run([*NO_NETWORK, str(python), str(KERNEL)], capture_output=True, text=True,
                          cwd=root / "working", timeout=600, env=env)


def submission_rows(root: Path, studies: list[int]) -> list[list[str]]:
    """The rows of the kernel's submission, checked complete and normalised."""
    with open(root / "working" / "submission.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == HEADER
    assert sorted(r[0] for r in rows[1:]) == sorted(r for s in studies for r in study_row_ids(s))
    for r in rows[1:]:
        assert abs(sum(map(float, r[1:])) - 1) < 1e-5
    return rows[1:]


def run_summary(root: Path) -> dict:
    return json.loads((root / "working" / "submission_summary.json").read_text())
