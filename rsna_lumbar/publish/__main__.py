"""``python -m rsna_lumbar.publish STEP``: the command line the Make targets wrap
(:mod:`rsna_lumbar.publish`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rsna_lumbar.publish
from rsna_lumbar.publish import PublishError
from rsna_lumbar.publish.kaggle_cli import (
    kernel_status,
    push_kernel,
    push_weights,
    pushed_version,
    submit,
    version_notes,
)
from rsna_lumbar.publish.metadata import render_kernel_metadata, resolve_owner
from rsna_lumbar.publish.staging import stage_kernel, stage_weights
from rsna_lumbar.publish.wheels import OPTIONAL_FILE, make_wheelhouse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rsna_lumbar.publish",
                                     description=rsna_lumbar.publish.__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root")
    sub = parser.add_subparsers(dest="step", required=True)
    wheels = sub.add_parser("wheels", help="build the offline wheelhouse")
    wheels.add_argument("--out", type=Path, default=Path("wheelhouse"))
    wheels.add_argument("--download", nargs="*", default=[], metavar="PKG",
                        help="also fetch these (pinned as in requirements.txt); empties --out")
    wheels.add_argument("--python", nargs="+", default=["3.11", "3.12", "3.13"],
                        help="the Pythons the Kaggle image may run (default: 3.11 3.12 3.13)")
    for step in ("stage-weights", "push-weights", "stage-kernel", "push-kernel", "submit",
                 "kernel-status"):
        p = sub.add_parser(step)
        p.add_argument("--owner", help="Kaggle user (default: KAGGLE_USERNAME or kaggle.json)")
        p.add_argument("--dataset", help="weights dataset slug (default: dataset-metadata.json)")
        if "weights" in step:
            p.add_argument("--weights", type=Path, help="model folders (default: ROOT/weights)")
            p.add_argument("--wheelhouse", type=Path, help="default: ROOT/wheelhouse")
            p.add_argument("--out", type=Path, default=Path("build/kaggle-dataset"))
            p.add_argument("--notes", help="version notes (default: kit version + git commit)")
            p.add_argument("--allow-synthetic", action="store_true",
                           help="publish even without competition-trained model folders")
            continue
        p.add_argument("--kernel", help="kernel slug (default: kernels/kernel-metadata.json)")
        p.add_argument("--out", type=Path, default=Path("build/kaggle-kernel"),
                       help="staged kernel folder (push-kernel records the version there)")
        if step == "push-kernel":
            p.add_argument("--wait-timeout", type=float, default=900, metavar="S",
                           help="wait this long for the weights dataset to be ready")
            p.add_argument("--wait-interval", type=float, default=15, metavar="S")
        if step in ("submit", "kernel-status"):
            p.add_argument("--kernel-version", type=int, metavar="N",
                           help="default: " + ("the version push-kernel recorded"
                                               if step == "submit" else "the latest run"))
        if step == "submit":
            p.add_argument("--message", help="default: kit version + git commit + kernel version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = args.root.resolve()
    try:
        if args.step == "wheels":
            req = make_wheelhouse(root, args.out, args.download, tuple(args.python))
            optional = (args.out / OPTIONAL_FILE).read_text().split()
            print(f"wheelhouse {args.out}: {', '.join(req.read_text().split())}; "
                  f"best effort: {', '.join(optional) or 'none'}")
            return 0
        owner = resolve_owner(args.owner)
        if args.step in ("stage-weights", "push-weights"):
            staged = stage_weights(root, args.out, owner, args.dataset, args.weights,
                                   args.wheelhouse, allow_synthetic=args.allow_synthetic)
            print(f"staged {staged}")
            if args.step == "push-weights":
                how = push_weights(staged, args.notes or version_notes(root))
                print(f"weights dataset: {how} done")
        elif args.step in ("stage-kernel", "push-kernel"):
            staged = stage_kernel(root, args.out, owner, args.kernel, args.dataset)
            print(f"staged {staged}")
            if args.step == "push-kernel":
                version = push_kernel(staged, args.wait_timeout, args.wait_interval)
                if version is None:
                    print("warning: Kaggle's answer named no kernel version: pass it to submit "
                          "yourself (make submit KERNEL_VERSION=N; N from 'make kernel-status')",
                          file=sys.stderr)
                else:
                    print(f"kernel version {version} pushed: 'make kernel-status' shows its "
                          "run; once it is complete, 'make submit' submits it")
        else:
            kernel = render_kernel_metadata(root, owner, args.kernel, args.dataset)["id"]
            if args.step == "kernel-status":
                kernel_status(kernel, args.kernel_version)
            else:
                version = args.kernel_version or pushed_version(args.out, kernel)
                message = args.message or f"{version_notes(root)}, kernel version {version}"
                submit(kernel, version, message)
                print(f"submitted {kernel} version {version}: Kaggle reruns it on the hidden test "
                      "set; the competition's 'Submissions' page shows the score")
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
