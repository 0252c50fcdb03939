"""``python -m bench [NAME ...]``: run benchmarks, write ``bench/results/NAME.json``.

Each benchmark compares the kit against a baseline in the same run and returns a dict of
figures; the README quotes the JSON files. Names default to every entry of BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from rsna_lumbar.atomic import write_text

BENCHMARKS: tuple[str, ...] = ("dicom_io", "crops", "synth", "localizer", "localiser_decoding",
                              "localizer_training", "training", "predict")
# Not in the default run (an hour or more on 2 cores): python -m bench scale
ON_REQUEST: tuple[str, ...] = ("scale",)
RESULTS = Path(__file__).parent / "results"


def _commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when tracked files differ, the result files that
    a run of several benchmarks writes as it goes excepted), or None outside git."""
    try:
        root = RESULTS.parent.parent
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)bench/results"], capture_output=True, text=True,
                               check=True, cwd=root).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS),
                        help=f"benchmarks to run (default: all but {', '.join(ON_REQUEST)})")
    parser.add_argument("--work", type=Path, default=Path("work/bench"), help="scratch folder")
    args = parser.parse_args()
    for name in args.names:
        module = importlib.import_module(f"bench.{name}")
        started = time.time()
        result = module.run(args.work / name)
        result["_machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        result["_command"] = f"python -m bench {name}"
        result["_commit"] = _commit()
        result["_wall_s"] = round(time.time() - started, 1)
        result["_date"] = time.strftime("%Y-%m-%d")
        write_text(RESULTS / f"{name}.json", json.dumps(result, indent=2) + "\n")
        print(f"{name}: {json.dumps(result, indent=2)}")


if __name__ == "__main__":
    main()
