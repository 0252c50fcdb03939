"""RSNA 2024 Lumbar Spine: offline inference with the rsna-lumbar kit. A shim, no logic of its own.

Attach the competition and the weights dataset made by `make push-weights` (wheels/, weights/);
internet off. Installs the kit offline, checks its imports, runs `rsna-lumbar predict` into
/kaggle/working/submission.csv. Outside Kaggle's scoring rerun (KAGGLE_IS_COMPETITION_RERUN unset)
a run not worth submitting fails loudly (predict --strict); in the rerun it never fails and every
row is written. RSNA_KAGGLE_ROOT (default /kaggle) moves the tree for the local dry run.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()  # the time budget counts from here: installing counts too
COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
ROOT = Path(os.environ.get("RSNA_KAGGLE_ROOT", "/kaggle"))
INPUT, SUBMISSION = ROOT / "input", ROOT / "working" / "submission.csv"
RERUN = bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))
KIT_MODULES = "rsna_lumbar.cli.predict, rsna_lumbar.inference.predict, rsna_lumbar.crops.stage"


def attached(marker: str) -> Path:
    """The attached input folder (up to three levels below input/) that holds `marker`."""
    hits = sorted(h for depth in ("*", "*/*", "*/*/*") for h in INPUT.glob(f"{depth}/{marker}"))
    if not hits:
        sys.exit(f"nothing under {INPUT} holds {marker}: attach what kernels/README.md lists")
    return hits[0].parents[len(Path(marker).parts) - 1]


def run(*cmd) -> int:
    print("+", *cmd, flush=True)
    return subprocess.run([str(c) for c in cmd]).returncode


dataset = attached("wheels/kaggle-requirements.txt")
wheels, competition = dataset / "wheels", INPUT / COMPETITION
data = competition if competition.is_dir() else attached("test_series_descriptions.csv")
pip = (sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--no-deps",
       "--force-reinstall", "--disable-pip-version-check")
if run(*pip, "-r", wheels / "kaggle-requirements.txt"):  # pure-Python wheels
    sys.exit("installing the kit from wheels/ failed (above): rebuild the dataset, make push-weights")
optional = wheels / "kaggle-optional.txt"  # compiled codecs: best effort, one by one
for spec in optional.read_text().split() if optional.is_file() else []:
    if run(*pip, spec):
        print(f"warning: {spec} has no wheel for this Python: DICOMs needing it get priors")
if run(sys.executable, "-c", f"import {KIT_MODULES}; print('kit imports: ok')"):
    sys.exit(f"the kit does not import on Python {sys.version.split()[0]} (above): see kernels/README.md")
print(f"scoring rerun: {RERUN}; weights: {dataset / 'weights'}", flush=True)
code = run(sys.executable, "-m", "rsna_lumbar", "predict", "--data", data, "--split", "test",
           "--out", SUBMISSION, "--models", dataset / "weights", "--started-at", STARTED,
           "--budget-hours", os.environ.get("RSNA_BUDGET_HOURS", "8.5"),
           *(() if RERUN else ("--strict",)))
lines = SUBMISSION.read_text().splitlines() if SUBMISSION.is_file() else []
if len(lines) < 2 or lines[0] != "row_id,normal_mild,moderate,severe":
    sys.exit(f"{SUBMISSION} is missing or empty: see the predict log above")
print(f"wrote {SUBMISSION}: {len(lines) - 1} rows; predict exit status {code}")
if code and not RERUN:
    sys.exit(f"predict exit status {code}: this run is not fit to submit (see its log and "
             f"{SUBMISSION.with_name('submission_summary.json')})")
