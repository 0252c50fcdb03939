"""RSNA 2024 Lumbar Spine: offline inference with the rsna-lumbar kit. A shim over its wheel.

Attach the competition and the weights dataset made by `make push-weights` (wheels/, weights/);
internet off. Installs the kit offline, checks its imports, runs `rsna-lumbar predict` into
/kaggle/working/submission.csv. Outside Kaggle's scoring rerun (KAGGLE_IS_COMPETITION_RERUN unset)
a run not worth submitting fails loudly (predict --strict); in the rerun it never fails and every
row is written (its one piece of logic: weights/priors.json for every study when the kit cannot
run at all). RSNA_KAGGLE_ROOT (default /kaggle) moves the tree for the local dry run.
"""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.time()  # the time budget counts from here: installing counts too
COMPETITION = "rsna-2024-lumbar-spine-degenerative-classification"
ROOT = Path(os.environ.get("RSNA_KAGGLE_ROOT", "/kaggle"))
INPUT, SUBMISSION = ROOT / "input", ROOT / "working" / "submission.csv"
HEADER = "row_id,normal_mild,moderate,severe"
RERUN = bool(os.environ.get("KAGGLE_IS_COMPETITION_RERUN"))
KIT_MODULES = ("torch, timm, rsna_lumbar.models.predictor, rsna_lumbar.localize.stage, "
               "rsna_lumbar.crops.stage, rsna_lumbar.inference.predict, rsna_lumbar.cli.predict")


def attached(marker: str) -> Path:
    """The attached input folder (up to three levels below input/) that holds `marker`."""
    hits = sorted(h for depth in ("*", "*/*", "*/*/*") for h in INPUT.glob(f"{depth}/{marker}"))
    if not hits:
        sys.exit(f"nothing under {INPUT} holds {marker}: attach what kernels/README.md lists")
    return hits[0].parents[len(Path(marker).parts) - 1]


def run(*cmd) -> int:
    print("+", *cmd, flush=True)
    return subprocess.run([str(c) for c in cmd]).returncode


def written() -> int:
    lines = SUBMISSION.read_text().splitlines() if SUBMISSION.is_file() else []
    return len(lines) - 1 if len(lines) > 1 and lines[0] == HEADER else 0


def stop(why: str) -> None:
    """Outside the rerun: fail with `why`. In the rerun: keep or write every row, exit 0."""
    if not RERUN:
        sys.exit(f"{why}: this run is not fit to submit (see above)")
    print(f"error: {why}", file=sys.stderr)
    if not written():  # the kit could not run at all: weights/priors.json for every study
        priors = json.loads((dataset / "weights" / "priors.json").read_text())
        with open(data / "test_series_descriptions.csv", newline="") as f:
            studies = sorted({row["study_id"] for row in csv.DictReader(f)}, key=int)
        rows = [f"{s}_{target},{p['normal_mild']},{p['moderate']},{p['severe']}"
                for s in studies for target, p in priors.items()]
        SUBMISSION.write_text("\n".join([HEADER, *rows]) + "\n")
    print(f"wrote {SUBMISSION}: {written()} rows (scoring rerun: never fails)")
    sys.exit(0)


dataset = attached("wheels/kaggle-requirements.txt")
wheels, competition = dataset / "wheels", INPUT / COMPETITION
data = competition if competition.is_dir() else attached("test_series_descriptions.csv")
print(f"scoring rerun: {RERUN}; weights: {dataset / 'weights'}", flush=True)
pip = (sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels, "--no-deps",
       "--force-reinstall", "--disable-pip-version-check")
if run(*pip, "-r", wheels / "kaggle-requirements.txt"):  # pure-Python wheels
    stop("installing the kit from wheels/ failed: rebuild the dataset with make push-weights")
optional = wheels / "kaggle-optional.txt"  # compiled codecs: best effort, one by one
for spec in optional.read_text().split() if optional.is_file() else []:
    if run(*pip, spec):
        print(f"warning: {spec} has no wheel for this Python: DICOMs needing it get priors")
if run(sys.executable, "-c", f"import {KIT_MODULES}; print('kit imports: ok')"):
    stop(f"the kit does not import on Python {sys.version.split()[0]}: see kernels/README.md")
code = run(sys.executable, "-m", "rsna_lumbar", "predict", "--data", data, "--split", "test",
           "--out", SUBMISSION, "--models", dataset / "weights", "--started-at", STARTED,
           "--budget-hours", os.environ.get("RSNA_BUDGET_HOURS", "8.5"),
           *(() if RERUN else ("--strict",)))
if code or not written():
    stop(f"predict exit status {code}, {written()} rows (summary: submission_summary.json)")
print(f"wrote {SUBMISSION}: {written()} rows; predict exit status 0")
