"""The localiser that ships with the kit, as package data in ``rsna_lumbar/localize/pretrained/``.

``make localiser-package`` makes it: the localiser recipe of ``docs/localiser.md`` (timm
``lcnet_075``, 128 px, steps ``sag_t2=6000, sag_t1=2000, axial=1500``, batch 8) trained out of
fold (5 folds) on 120 synthetic studies (seed 17) and the real exams of
:func:`~rsna_lumbar.localize.keypoints.realworld.real_exams`, then :func:`export` keeps the
models of one fold per task (fold 0: the first, not the best — no fold is picked by its score)
in float16, and :func:`write_card` writes the model card, ``MODEL_CARD.md``, from that run's
measurements: the recipe's out-of-fold figures and the shipped models' own on every real exam,
marked where they trained on it.

:func:`resolve` is the default wherever a localiser folder is needed and none is given: the
folder named, else ``weights/localizer`` when it holds a trained localiser, else this one (and
it says so in the log).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd

from rsna_lumbar.atomic import write_csv, write_text

PACKAGED = Path(__file__).resolve().parent / "pretrained"
CARD = "MODEL_CARD.md"
OUTPUTS = ("config.json", "provenance.json", "recipe_metrics.json", "recipe_real.csv", "real.csv", CARD)
DEFAULT_FOLDER = Path("weights/localizer")

_LOG = logging.getLogger(__name__)


def packaged() -> Path | None:
    """The packaged localiser's folder, or None when the installed kit lacks it."""
    return PACKAGED if (PACKAGED / "config.json").is_file() else None


def fingerprint() -> str:
    """A digest of the packaged weights (12 hex digits; ``"absent"`` without them): a run made
    with other packaged weights is told apart by it."""
    folder = packaged()
    if folder is None:
        return "absent"
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def resolve(model: str | os.PathLike | None,
            default: str | os.PathLike | None = DEFAULT_FOLDER) -> Path:  # fmt: skip
    """The localiser folder to predict with.

    ``model`` when given (used as is: a folder without ``config.json`` fails when it is read);
    else ``default`` when it holds a trained localiser (``predict`` passes the ensemble's, or
    None); else the packaged one, logged. Raises ``FileNotFoundError`` when none of them exists.
    """
    if model is not None:
        return Path(model)
    if default is not None and (Path(default) / "config.json").is_file():
        return Path(default)
    where = default if default is not None else "the ensemble"
    folder = packaged()
    if folder is None:
        msg = (f"no localiser: {where} holds none and this install lacks the packaged one; "
               "train one with 'rsna-lumbar localize --split train --data DIR --model FOLDER'")
        raise FileNotFoundError(msg)
    _LOG.info("no localiser at %s: using the packaged localiser (%s; model card %s)", where,
              folder, folder / CARD)  # fmt: skip
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(model_dir: str | os.PathLike, out: str | os.PathLike = PACKAGED, fold: int = 0,
           synthetic: dict | None = None) -> Path:  # fmt: skip
    """Write fold ``fold``'s models of a trained localiser folder (``localize --split train``)
    to ``out`` in float16, with ``config.json`` (``"packaged"``: the source fold, the real
    exams' folds), the recipe's out-of-fold measurements (``recipe_metrics.json`` without its
    timing, ``recipe_real.csv``), the shipped models' own measurement on every real exam
    (``real.csv``) and the model card. ``synthetic``: the shipped models' figures on the
    synthetic studies they did not train on (:func:`rsna_lumbar.localize.evaluate.evaluate`
    of the fold's out-of-fold rows), for the card. Every file is a function of the run alone,
    so the same run on the same machine writes the same bytes."""
    from rsna_lumbar.localize.keypoints import realworld
    from rsna_lumbar.localize.keypoints.model import fold_members, load_models, save_state

    model_dir, out = Path(model_dir), Path(out)
    config, models = load_models(model_dir)
    if not 0 <= fold < int(config["folds"]):
        raise ValueError(f"fold must be one of 0 … {int(config['folds']) - 1}, got {fold}")
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("*.safetensors"), *(out / name for name in OUTPUTS)]:
        stale.unlink(missing_ok=True)  # nothing of an earlier export survives this one
    per_fold = int(config.get("models_per_fold", 1))
    files: dict[str, list[str]] = {}
    shipped: dict[str, list] = {}
    for task, task_models in models.items():
        shipped[task] = fold_members(config, task_models, fold)
        files[task] = []
        for seed, model in enumerate(shipped[task]):
            name = f"{task}.safetensors" if per_fold == 1 else f"{task}_seed{seed}.safetensors"
            save_state(model, out / name, half=True)
            files[task].append(name)
    real_folds = config.get("real_folds", {})
    packaged_config = {key: config[key] for key in ("backbone", "width", "tasks", "train", "steps")}
    packaged_config.update(folds=1, models_per_fold=per_fold, files=files,
                           packaged={"fold": fold, "of_folds": config["folds"], "real_folds": real_folds})
    write_text(out / "config.json", json.dumps(packaged_config, indent=2) + "\n")
    _write_provenance(model_dir, out, len(real_folds))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics.pop("train_seconds", None)
    write_text(out / "recipe_metrics.json", json.dumps(metrics, indent=2) + "\n")
    if (model_dir / "real.csv").is_file():
        shutil.copyfile(model_dir / "real.csv", out / "recipe_real.csv")
    own = pd.DataFrame()
    if "sag_t2" in shipped and real_folds:  # measured as shipped: the float16 weights read back
        _, as_shipped = load_models(out)
        own = realworld.measure_all(as_shipped["sag_t2"])
        own = own[own.exam.isin(real_folds)]
        own = own.assign(trained_on=[real_folds[e] != fold for e in own.exam])
        write_csv(own, out / "real.csv")
    write_card(out, packaged_config, metrics, own, synthetic)
    return out


def _write_provenance(model_dir: Path, out: Path, exams: int) -> None:
    """``out/provenance.json``: data kind ``packaged`` (``make push-weights`` lets it through: it
    is meant for real data), the training data's fingerprint and recipe; no commit or date, so
    the file is a function of the run alone."""
    from rsna_lumbar import __version__
    from rsna_lumbar.provenance import PACKAGED as KIND
    from rsna_lumbar.provenance import PROVENANCE, read_provenance

    trained = read_provenance(model_dir) or {}
    record = {"data_folder": f"synthetic studies + {exams} real exams (MODEL_CARD.md)",
              "data_fingerprint": trained.get("data_fingerprint"), "data_kind": KIND,
              "recipe": trained.get("recipe"), "kit_version": __version__, "commit": None,
              "created": None}  # fmt: skip
    write_text(out / PROVENANCE, json.dumps(record, indent=1) + "\n")


def held_out_metrics(data: str | os.PathLike, oof: str | os.PathLike, n_folds: int, fold: int = 0,
                     work: str | os.PathLike = "work") -> dict:  # fmt: skip
    """The localiser metrics (:func:`rsna_lumbar.localize.evaluate.evaluate`) of the out-of-fold
    rows ``oof`` of fold ``fold``'s studies: the figures of that fold's models alone, on the
    synthetic studies they did not train on (folds as ``localize --split train`` made them)."""
    from rsna_lumbar.localize.evaluate import evaluate
    from rsna_lumbar.localize.keypoints.train import read_or_make_folds, study_stacks
    from rsna_lumbar.points import read_points
    from rsna_lumbar.tables import read_label_coordinates

    data = Path(data)
    folds = read_or_make_folds(data, None, n_folds)
    held = set(folds.study_id[folds.fold == sorted(folds.fold.unique())[fold]])
    rows = read_points(oof)
    rows = rows[rows.study_id.isin(held)]
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    return evaluate(rows, coords, study_stacks(data, "train", work))


def main(argv: list[str] | None = None) -> int:
    """``python -m rsna_lumbar.localize.packaged --model DIR --data DIR --oof CSV [--out DIR]``:
    :func:`export` of a trained localiser folder (``make localiser-package``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rsna_lumbar.localize.packaged",
                                     description="export one fold of a trained localiser as the packaged one")
    parser.add_argument("--model", type=Path, required=True, help="folder of 'localize --split train'")
    parser.add_argument("--data", type=Path, required=True, help="the competition folder it trained on")
    parser.add_argument("--oof", type=Path, required=True, help="its out-of-fold points (--out)")
    parser.add_argument("--work", type=Path, default=Path("work"), help="header index cache")
    parser.add_argument("--out", type=Path, default=PACKAGED, help=f"default {PACKAGED}")
    parser.add_argument("--fold", type=int, default=0, help="the fold whose models ship (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    n_folds = json.loads((args.model / "config.json").read_text())["folds"]
    synthetic = held_out_metrics(args.data, args.oof, n_folds, args.fold, args.work)
    print(f"packaged localiser → {export(args.model, args.out, args.fold, synthetic)}")
    return 0



def _exam_rows(own: pd.DataFrame, recipe: pd.DataFrame) -> list[str]:
    lines = ["| exam | contrast | shipped models trained on it | levels right (shipped) | median mm | "
             "p95 mm | levels right (recipe, out of fold) |", "|---|---|---|---|---|---|---|"]
    for exam, part in own.groupby("exam", sort=True):
        theirs = recipe[(recipe.exam == exam) & (recipe.framing == "acquired")]
        contrast = "T2 TSE (discs segmented)" if exam.startswith("ivd") else "water-fat (water image)"
        lines.append(f"| {exam} | {contrast} | {'yes' if part.trained_on.iloc[0] else 'no'} | "
                     f"{int(part.correct.sum())}/{len(part)} | {part.error_mm.median():.1f} | "
                     f"{part.error_mm.quantile(0.95):.1f} | {int(theirs.correct.sum())}/{len(theirs)} |")
    return lines


def _summary_line(name: str, part: pd.DataFrame) -> str:
    return (f"| {name} | {part.exam.nunique()} | {int(part.correct.sum())}/{len(part)} | "
            f"{part.error_mm.median():.1f} | {part.error_mm.quantile(0.95):.1f} |")


def write_card(out: Path, config: dict, metrics: dict, own: pd.DataFrame, synthetic: dict | None) -> Path:
    """``out/MODEL_CARD.md``: what the packaged localiser is, its data, recipe and measured
    accuracy (the tables of :func:`export`'s files; nothing typed by hand)."""
    from rsna_lumbar.localize.keypoints import realworld

    recipe = pd.read_csv(out / "recipe_real.csv") if (out / "recipe_real.csv").is_file() else pd.DataFrame()
    fold, of_folds = config["packaged"]["fold"], config["packaged"]["of_folds"]
    train = config["train"]
    real_folds = config["packaged"]["real_folds"]
    ivd = sum(exam.startswith("ivd") for exam in real_folds)
    vb3 = len(real_folds) - ivd
    lines = [
        "# Model card: the packaged localiser",
        "",
        "Generated by `make localiser-package` (`rsna_lumbar.localize.packaged.export`); do not edit.",
        "Reference: [docs/localiser.md](../../../docs/localiser.md#the-packaged-localiser).",
        "",
        "## What it is",
        "",
        f"Heatmap keypoint models (timm `{config['backbone']}`, {config['width']}-channel decoder, "
        "weights in float16), one per task: `sag_t2` (the five canal points on Sagittal T2/STIR), "
        "`sag_t1` (the ten foramina on Sagittal T1), `axial` (the subarticular points on the Axial T2 "
        "slice a canal point registers to). `rsna-lumbar localize` and `rsna-lumbar predict` use it "
        "when no localiser is given and `weights/localizer` holds none. It finds levels on lumbar "
        "MRI; it grades nothing.",
        "",
        "## Data and recipe",
        "",
        f"- Out of fold, {of_folds} folds: {metrics['studies']} synthetic studies (`make "
        "localiser-package` generates them: `rsna-lumbar synth`, seed 17, scale 2) and "
        f"{len(real_folds)} real sagittal exams of `shared/data/` dealt to the folds like studies "
        f"(exam *i* → fold *i* mod {of_folds}): {ivd} disc-segmented T2 exams of `real-lumbar/` and "
        f"{vb3} water-fat exams of `real-lumbar-vb3/` (their disc points derived from the "
        "vertebral bodies, `localize/keypoints/realworld.py`). The real exams train the `sag_t2` "
        f"models only, {train['extra_fraction']:.0%} of each batch.",
        f"- Steps {json.dumps(config['steps'])}, batch {train['batch']}, learning rate {train['lr']}, "
        f"seed {train['seed']}, device `{train['device']}`.",
        f"- Shipped: fold {fold}'s models (trained on the other {of_folds - 1} folds' studies and "
        "exams; `make localiser-package` ships fold 0, the first, not one chosen by its score).",
        "",
        "## Measured accuracy",
        "",
        "Synthetic studies, canal level accuracy (the canal point lands on the right disc):",
        "",
        "| models | studies | level accuracy (canal) | median mm (canal) | p95 mm (canal) | "
        "foraminal level accuracy | subarticular level accuracy |",
        "|---|---|---|---|---|---|---|",
    ]

    def synth_row(name: str, m: dict) -> str:
        def cell(family: str, key: str, digits: int) -> str:
            value = m.get(family, {}).get(key)
            return "–" if value is None else f"{value:.{digits}f}"  # a task not trained

        return (f"| {name} | {m['studies']} | {cell('spinal', 'level_accuracy', 3)} | "
                f"{cell('spinal', 'median_mm', 1)} | {cell('spinal', 'p95_mm', 1)} | "
                f"{cell('foraminal', 'level_accuracy', 3)} | {cell('subarticular', 'level_accuracy', 3)} |")

    lines.append(synth_row(f"recipe, out of fold ({of_folds} folds)", metrics))
    if synthetic:
        lines.append(synth_row(f"shipped (fold {fold}), on the studies it did not train on", synthetic))
    lines += ["", "Real exams as acquired (levels right: the canal point lands on the right disc, "
              f"within {realworld.LANDING_MM:.0f} mm of its posterior edge; errors to that edge):", "",
              "| models | exams | levels right | median mm | p95 mm |", "|---|---|---|---|---|"]
    if not recipe.empty:
        acquired = recipe[recipe.framing == "acquired"]
        lines.append(_summary_line(f"recipe, out of fold ({of_folds} folds)", acquired))
        for framing in ("tight", "top_cut"):
            part = recipe[recipe.framing == framing]
            if not part.empty:
                lines.append(_summary_line(f"recipe, out of fold, framed {framing}", part))
    if not own.empty:
        held = own[~own.trained_on]
        lines.append(_summary_line(f"shipped (fold {fold}), exams it did not train on", held))
        lines.append(_summary_line(f"shipped (fold {fold}), all exams", own))
        lines += ["", "Per exam (the shipped models; the last column is the recipe's out-of-fold "
                  "model for that exam):", "", *_exam_rows(own, recipe)]
    lines += ["", "## Limits", "",
              f"- Trained on a synthetic phantom and {len(real_folds)} real exams (the water-fat ones of healthy volunteers): no scoliosis, "
              "transitional vertebrae, implants or severe degeneration were seen in training; "
              "on such spines check the levels (`rsna-lumbar localize` writes a confidence per point).",
              "- The real exams have no Sagittal T1 or Axial T2: the `sag_t1` and `axial` models "
              "were trained on synthetic series only.",
              "- Floating-point kernels differ between CPUs: `make localiser-package` reproduces "
              "these bytes on the machine kind that made them and close weights elsewhere.",
              "", "## Files", "", "| file | sha256 |", "|---|---|"]
    for name in sorted(p.name for p in out.iterdir() if p.suffix in (".safetensors", ".json", ".csv")):
        lines.append(f"| `{name}` | `{_sha256(out / name)[:16]}` |")
    write_text(out / CARD, "\n".join(lines) + "\n")
    return out / CARD


if __name__ == "__main__":
    raise SystemExit(main())
