"""RSNA 2024 Lumbar Spine: offline inference with the rsna-lumbar kit. A shim, no logic of its own.

Attach the competition and the weights dataset made by `make push-weights` (it holds wheels/ and
weights/); internet off. This installs the kit from wheels/ and runs `rsna-lumbar predict` into
/kaggle/working/submission.csv. RSNA_KAGGLE_ROOT (default /kaggle) moves the whole /kaggle tree:
the local dry run (tests/test_kaggle_kernel.py) runs this very file that way.
"""

import os
import subprocess
import sys
from pathlib import Path

COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
ROOT = Path(os.environ.get("RSNA_KAGGLE_ROOT", "/kaggle"))
INPUT, SUBMISSION = ROOT / "input", ROOT / "working" / "submission.csv"


def attached(marker: str) -> Path:
    """The attached input folder (up to three levels below input/) that holds `marker`."""
    hits = sorted(h for depth in ("*", "*/*", "*/*/*") for h in INPUT.glob(f"{depth}/{marker}"))
    if not hits:
        sys.exit(f"nothing under {INPUT} holds {marker}: attach what kernels/README.md lists")
    return hits[0].parents[len(Path(marker).parts) - 1]


def run(*cmd) -> None:
    print("+", *cmd, flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


dataset = attached("wheels/kaggle-requirements.txt")
wheels, competition = dataset / "wheels", INPUT / COMPETITION
data = competition if competition.is_dir() else attached("test_series_descriptions.csv")
run(sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--no-deps",
    "--force-reinstall", "--disable-pip-version-check", "-r", wheels / "kaggle-requirements.txt")
run(sys.executable, "-m", "rsna_lumbar", "predict", "--data", data, "--split", "test",
    "--out", SUBMISSION, "--models", dataset / "weights")
lines = SUBMISSION.read_text().splitlines() if SUBMISSION.is_file() else []
if len(lines) < 2 or lines[0] != "row_id,normal_mild,moderate,severe":
    sys.exit(f"{SUBMISSION} is missing or empty: see the predict log above")
print(f"wrote {SUBMISSION}: {len(lines) - 1} rows")
