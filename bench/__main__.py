"""``python -m bench [NAME ...]``: run benchmarks, write ``bench/results/NAME.json``.

Each benchmark compares the kit against a baseline in the same run and returns a dict of
figures; the README quotes the JSON files. Names default to every entry of BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
from pathlib import Path

from rsna_lumbar.atomic import write_text

BENCHMARKS: tuple[str, ...] = ("dicom_io", "crops", "synth", "localizer", "localizer_training", "training",
                              "predict")
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHMARKS), help="benchmarks to run")
    parser.add_argument("--work", type=Path, default=Path("work/bench"), help="scratch folder")
    args = parser.parse_args()
    for name in args.names:
        module = importlib.import_module(f"bench.{name}")
        started = time.time()
        result = module.run(args.work / name)
        result["_machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}
        result["_wall_s"] = round(time.time() - started, 1)
        result["_date"] = time.strftime("%Y-%m-%d")
        write_text(RESULTS / f"{name}.json", json.dumps(result, indent=2) + "\n")
        print(f"{name}: {json.dumps(result, indent=2)}")


if __name__ == "__main__":
    main()
