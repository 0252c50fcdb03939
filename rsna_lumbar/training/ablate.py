"""``rsna-lumbar ablate``: cross-validate config variants and write one comparison table.

A variants file names each variant and the dotted keys it changes from the base config::

    common:                      # optional, applied to every variant (e.g. a shorter schedule)
      train.epochs: 4
    variants:
      baseline: {}
      shared_backbone: {model.shared: true}
      slices_3: {model.slices: 3}
      crop_96: {model.size: 96}
      spinal_sagittal_only: {data.views.spinal: [sag_t2]}
      efficientnet_b0: {model.spec: efficientnet_b0_25d}

Each variant trains into ``OUT/{name}`` (resumable, skipped when done) on the same folds, is
reported (``metrics.json``), and ``OUT/comparison.csv`` / ``comparison.md`` list the official
OOF score and its terms, balanced accuracy and Moderate recall per family, parameters and
training time, best score first.

With ``localised_crops`` (crops cut at the localiser's out-of-fold points, ``rsna-lumbar crops
--points``) every variant also trains on them for its ``data.localised_share`` of the draws and
is graded a second time, out of fold on them (``report --crops``): the ``*_localised`` columns,
by which the table is then sorted — the honest CV, as inference places its crops. Each variant
folder then keeps the calibration fitted on those crops, as ``rsna-lumbar run`` does.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pandas as pd
import yaml

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.training.config import ConfigError, _merge, _set_dotted, config_from_dict

LOGGER = logging.getLogger(__name__)
FAMILIES = ("spinal", "foraminal", "subarticular")


def read_variants(path) -> tuple[dict, dict[str, dict]]:
    """``(common tree, {name: tree})`` from a variants YAML (module docstring)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    unknown = set(data) - {"common", "variants"}
    if unknown or not isinstance(data.get("variants"), dict) or not data["variants"]:
        msg = (f"{path}: a variants file has 'variants: {{name: {{dotted.key: value}}}}' and "
               f"optionally 'common:'; found keys {sorted(data)}")
        raise ConfigError(msg)

    def tree(changes, where) -> dict:
        out: dict = {}
        for key, value in (changes or {}).items():
            _set_dotted(out, str(key), value)
        return out

    for name in data["variants"]:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ConfigError(f"{path}: variant name {name!r} must be usable as a folder name")
    return tree(data.get("common"), "common"), {
        str(n): tree(v, n) for n, v in data["variants"].items()
    }


def variant_configs(base: dict, variants_file, overrides=()) -> dict:
    """Validated :class:`Config` of every variant (all checked before any training starts)."""
    common, variants = read_variants(variants_file)
    configs = {}
    for name, changes in variants.items():
        try:
            configs[name] = config_from_dict(_merge(_merge(base, common), changes), overrides)
        except ConfigError as error:
            raise ConfigError(f"variant {name}: {error}") from None
    return configs, variants


def _flatten(tree: dict, prefix: str = "") -> str:
    parts = []
    for key, value in tree.items():
        if isinstance(value, dict):
            parts.append(_flatten(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={json.dumps(value)}")
    return " ".join(p for p in parts if p) or "(base)"


def run_ablation(crops, folds_csv, labels_csv, base: dict, variants_file, out, *, overrides=(),
                 force: bool = False, only: tuple[str, ...] = (), data=None,
                 localised_crops=None) -> pd.DataFrame:  # fmt: skip
    """Train + report every variant (or those named in ``only``, in the file's order); write
    and return the comparison table. ``data``: the competition folder the crops were cut
    from, recorded in each variant's ``provenance.json``; ``localised_crops``: module
    docstring."""
    from rsna_lumbar.models.predictor import load_model_folder
    from rsna_lumbar.training.loop import train_cv
    from rsna_lumbar.training.report import TERMS, build_report

    out = Path(out)
    configs, changes = variant_configs(base, variants_file, overrides)
    unknown = set(only) - set(configs)
    if unknown:
        msg = f"--only names {sorted(unknown)}, not variants of {variants_file}: {list(configs)}"
        raise ConfigError(msg)
    if only:
        configs = {name: config for name, config in configs.items() if name in only}
    rows = []
    for name, config in configs.items():
        folder = out / name
        timing = folder / "train_seconds.txt"  # written once the variant is trained
        finished = timing.is_file() and not force
        started = time.time()
        LOGGER.info("ablation: variant %s (%s)", name, _flatten(changes[name]))
        train_cv(crops, folds_csv, labels_csv, config, folder, force=force, data=data,
                 recipe=f"ablation {Path(variants_file).name}: {name}",
                 localised_crops=localised_crops)
        if not finished:  # a reused variant keeps the timing of its training
            write_text(timing, f"{time.time() - started:.1f}\n")
        metrics = build_report(folder, labels_csv)
        params = sum(p.numel() for p in load_model_folder(folder).models[0].parameters())
        row = {"variant": name, "changes": _flatten(changes[name]),
               **{k: metrics[k] for k in TERMS},
               "score_uncalibrated": metrics["uncalibrated"]["score"],
               "prior_score": metrics["prior_baseline"]["score"]}
        for f in FAMILIES:
            row[f"bal_acc_{f}"] = metrics["balanced_accuracy"].get(f)
            row[f"moderate_recall_{f}"] = metrics["recall"].get(f, {}).get("moderate")
        if localised_crops is not None:  # last, so the folder keeps this calibration
            localised = build_report(folder, labels_csv, crops=localised_crops)
            row.update({f"{k}_localised": localised[k] for k in TERMS})
        row["params_m"] = round(params / 1e6, 3)
        row["train_s"] = float(timing.read_text())
        rows.append(row)
    order = "score_localised" if localised_crops is not None else "score"
    table = pd.DataFrame(rows).sort_values(order, kind="stable").reset_index(drop=True)
    write_csv(table, out / "comparison.csv", float_format="%.4f")
    write_text(out / "comparison.md", to_markdown(table))
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table (no tabulate dependency)."""
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
