"""``rsna-lumbar models``: the model-spec registry."""

from __future__ import annotations

import argparse

HELP = "list the registered severity-model specs"
DESCRIPTION = """\
'rsna-lumbar models list' prints every registered spec: its timm backbone, default slices and
crop size, slice pooling and a note. Configs choose one with model.spec=NAME.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list",), help="list: print the registry")


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.models.registry import get_spec, list_models

    print(f"{'name':<22}{'backbone':<22}{'slices':>7}{'size':>6}  {'pooling':<10}note")
    for name in list_models():
        s = get_spec(name)
        print(f"{name:<22}{s.backbone:<22}{s.slices:>7}{s.size:>6}  {s.pooling:<10}{s.note}")
    return 0
