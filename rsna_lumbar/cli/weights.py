"""``rsna-lumbar weights``: the ImageNet backbone weights that training starts from."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path

HELP = "cache timm ImageNet backbone weights for training (pull), or list what is cached"
DESCRIPTION = """\
Training with model.pretrained=true starts each backbone from ImageNet weights read from a
local cache: $RSNA_TIMM_WEIGHTS, else ~/.cache/rsna-lumbar/timm. Inference never reads it
(trained model folders hold every weight), and nothing downloads at training time.

'pull NAME...' fills the cache with CACHE/NAME.safetensors for each timm model NAME (resnet18,
or with a tag: resnet18.a1_in1k). Without --from it downloads from timm's Hugging Face hub, so
run it on a machine with internet (not the Kaggle kernel); offline (HF_HUB_OFFLINE set, or no
network) it fails with one line naming the file to fetch and where to put it. A NAME already
cached is not fetched again. --from FILE takes the weights from a local .safetensors, .pth or
.bin file, or a folder in timm's Hugging Face layout (model.safetensors): one NAME only. The
weights are checked against timm's NAME first; another architecture's are refused.

'list' shows the cached files and, for every model spec the packaged configs and recipes name,
its backbone, ImageNet tag and whether the cache holds it.

examples:
  rsna-lumbar weights pull tf_efficientnetv2_s convnext_small
  rsna-lumbar weights pull resnet18 --from ~/Downloads/model.safetensors
  rsna-lumbar weights list
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("pull", "list"),
                        help="pull: cache weights; list: show the cache and what configs need")
    parser.add_argument("names", nargs="*", metavar="NAME", help="timm model names (pull)")
    parser.add_argument("--from", dest="source", type=Path, default=None, metavar="FILE",
                        help="a local weights file or timm Hugging Face folder (pull, one NAME)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="the cache folder (default $RSNA_TIMM_WEIGHTS, else "
                             "~/.cache/rsna-lumbar/timm)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from rsna_lumbar.models.weights import cache_dir

    cache = args.cache.expanduser() if args.cache is not None else cache_dir()
    if args.action == "list":
        return _list(cache)
    if not args.names:
        raise ValueError("weights pull: name at least one timm model, e.g. resnet18")
    if args.source is not None and len(args.names) > 1:
        raise ValueError("weights pull --from FILE: one NAME at a time")
    from rsna_lumbar.models.weights import pull_weights

    for name in args.names:
        path = pull_weights(name, cache, args.source)
        print(f"{name}: {path} ({_size(path)})")
    if cache.resolve() != cache_dir().resolve():
        print(f"training reads {cache_dir()}: set RSNA_TIMM_WEIGHTS={cache} to use these")
    return 0


def _list(cache: Path) -> int:
    from rsna_lumbar.models.weights import candidate_init_files

    files = sorted(p for p in cache.glob("*") if p.suffix in (".safetensors", ".pth", ".bin"))
    print(f"cache {cache}: {len(files)} file(s)")
    for path in files:
        print(f"  {path.name:<44}{_size(path):>10}")
    print("backbones of the packaged configs and recipes (read only with model.pretrained=true):")
    print(f"  {'file':<28}{'spec':<22}{'backbone.tag':<36}cached")
    for need in packaged_backbones():
        label = f"{need.backbone}.{need.tag}" if need.tag else need.backbone
        found = next((p.name for p in candidate_init_files(need.backbone, need.tag, cache)
                      if p.is_file()), None)  # fmt: skip
        status = found or f"no: rsna-lumbar weights pull {need.backbone}"
        print(f"  {need.where:<28}{need.spec:<22}{label:<36}{status}")
    return 0


@dataclasses.dataclass(frozen=True)
class Needed:
    """A backbone a packaged config or recipe (``where``) names through a model spec."""

    where: str
    spec: str
    backbone: str
    tag: str | None


def packaged_backbones(folders: Iterable[str | os.PathLike] | None = None) -> list[Needed]:
    """The model specs the packaged YAML files name (``spec: NAME``, ``model.spec=NAME``; by
    default ``rsna_lumbar/configs`` and ``rsna_lumbar/recipes``) with their backbones and tags.
    Names that are no registered spec are passed over."""
    from rsna_lumbar.models.registry import get_spec

    package = Path(__file__).resolve().parents[1]
    folders = [package / "configs", package / "recipes"] if folders is None else folders
    found = []
    for folder in map(Path, folders):
        for path in sorted(folder.glob("*.yaml")):
            names = dict.fromkeys(re.findall(r"\bspec\s*[:=]\s*([A-Za-z0-9_]+)", path.read_text()))
            for name in names:
                try:
                    spec = get_spec(name)
                except KeyError:
                    continue
                found.append(Needed(f"{folder.name}/{path.name}", name, spec.backbone,
                                    spec.pretrained_tag))  # fmt: skip
    return found


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"
