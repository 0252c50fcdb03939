"""``rsna-lumbar report``: how good a trained model folder is, out of fold.

Reads ``oof_logits.csv`` and the labels — or, given ``crops``, predicts the out-of-fold logits
afresh on that crop cache (:mod:`rsna_lumbar.training.held_out`, e.g. crops placed by the
localiser as at inference; kept as ``oof_logits_on_crops.csv``) — and writes into the model
folder (``metrics.json`` names the source under ``oof_crops``):

* ``metrics.json`` — ``score``, ``spinal``, ``foraminal``, ``subarticular``,
  ``any_severe_spinal`` (official metric on the calibrated OOF, temperatures cross-fitted so the
  number stays out of fold), ``uncalibrated`` (the same five on raw logits),
  ``prior_baseline`` (class priors on the same rows), ``balanced_accuracy`` and per-class
  ``recall`` for each of the five conditions and three families, ``temperature``, row counts;
* ``calibration.json`` — the per-family temperatures fitted on all OOF rows (used by predict),
  1.0 for a family whose cross-fitted calibration did not lower its OOF terms;
* ``oof_calibrated.csv`` — the calibrated OOF in submission format;
* ``report/confusion_{condition}.png`` and ``report/confusion_matrices.png`` — confusion
  matrices (rows true grade, columns predicted = argmax), counts and row percentages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix

from rsna_lumbar.atomic import atomic_path, write_csv, write_text
from rsna_lumbar.metric import score_submission
from rsna_lumbar.models.folder import CALIBRATION_FILE, save_temperatures
from rsna_lumbar.priors import class_priors, prior_submission
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.calibration import choose_temperatures, cross_fitted, fit_temperatures
from rsna_lumbar.training.oof import LOGIT_COLUMNS, probabilities, submission_from_logits
from rsna_lumbar.vocabulary import CONDITIONS, PROBABILITY_COLUMNS

TERMS = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")
GRADES = ("Normal/Mild", "Moderate", "Severe")


def _terms(result) -> dict[str, float]:
    return {k: round(float(getattr(result, k)), 6) for k in TERMS}


def _accuracy(frame: pd.DataFrame, probs: np.ndarray, key: str, value: str) -> dict:
    rows = (frame[key] == value).to_numpy() & (frame.label >= 0).to_numpy() & (
        frame.predicted == 1).to_numpy()
    y, p = frame.label.to_numpy()[rows], probs[rows].argmax(axis=1)
    if rows.sum() == 0:
        return {"balanced_accuracy": float("nan"), "recall": {}, "confusion": [], "n": 0}
    cm = confusion_matrix(y, p, labels=[0, 1, 2])
    recall = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan"))
              for i, c in enumerate(PROBABILITY_COLUMNS)}
    present = [r for r in recall.values() if np.isfinite(r)]
    return {"balanced_accuracy": float(np.mean(present)) if present else float("nan"),
            "recall": recall, "confusion": cm.tolist(), "n": int(rows.sum())}


def plot_confusion(ax, cm: np.ndarray, title: str) -> None:
    """One confusion matrix: colour = row percentage, text = count and percentage."""
    cm = np.asarray(cm, dtype=float)
    share = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            ax.text(j, i, f"{int(cm[i, j])}\n{100 * share[i, j]:.0f}%", ha="center", va="center",
                    color="white" if share[i, j] > 0.6 else "black", fontsize=8)
    ax.set_xticks(range(3), GRADES, fontsize=7)
    ax.set_yticks(range(3), GRADES, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def write_figures(per_condition: dict[str, dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    fig_all, axes = plt.subplots(1, len(per_condition), figsize=(3.4 * len(per_condition), 3.4))
    for ax_all, (condition, stats) in zip(np.atleast_1d(axes), per_condition.items()):
        title = f"{condition}\nbalanced acc. {stats['balanced_accuracy']:.3f} (n={stats['n']})"
        cm = stats["confusion"] or np.zeros((3, 3))
        fig, ax = plt.subplots(figsize=(3.6, 3.4))
        plot_confusion(ax, cm, title)
        path = folder / f"confusion_{condition}.png"
        _save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
        plot_confusion(ax_all, cm, title)
    fig_all.tight_layout()
    _save_figure(fig_all, folder / "confusion_matrices.png")
    plt.close(fig_all)
    return [folder / "confusion_matrices.png", *paths]


def build_report(model_dir: str | os.PathLike, labels_csv: str | os.PathLike,
                 crops: str | os.PathLike | None = None, tta: bool = False) -> dict:  # fmt: skip
    """Compute and write the report of a model folder (module docstring); returns metrics.
    ``tta`` (with ``crops``): the re-predicted logits average the mirrored canal crops', as
    ``predict --tta`` does."""
    if tta and crops is None:
        raise ValueError("test-time augmentation re-predicts the held-out studies: give the crops")
    model_dir = Path(model_dir)
    train = read_train(labels_csv)
    if crops is None:
        oof_path = model_dir / "oof_logits.csv"
        if not oof_path.is_file():
            msg = f"{oof_path} not found; finish 'rsna-lumbar train --out {model_dir}' first"
            raise FileNotFoundError(msg)
        oof = pd.read_csv(oof_path)
    else:
        from rsna_lumbar.training.held_out import held_out_logits

        oof = held_out_logits(model_dir, crops, train, tta=tta)
        write_csv(oof, model_dir / "oof_logits_on_crops.csv", float_format="%.6g")
    labelled = {int(s) for s in train.study_id}
    oof = oof[oof.study_id.isin(labelled)].reset_index(drop=True)
    # The OOF covers the folds' studies, which may be only some of train.csv's: score those.
    raw = score_submission(train, submission_from_logits(oof), subset=True)
    crossed, per_fold = cross_fitted(oof)
    temperatures = choose_temperatures(oof, crossed, fit_temperatures(oof))
    # Families whose calibration did not help out of fold keep their raw logits.
    keep = oof.family.map(lambda f: temperatures[f] != 1.0).to_numpy()
    calibrated_frame = oof.copy()
    calibrated_frame.loc[keep, list(LOGIT_COLUMNS)] = crossed.loc[keep, list(LOGIT_COLUMNS)]
    calibrated_sub = submission_from_logits(calibrated_frame)
    calibrated = score_submission(train, calibrated_sub, subset=True)
    oof_studies = sorted(oof.study_id.unique())
    prior = score_submission(train, prior_submission(class_priors(train), oof_studies), subset=True)
    probs = probabilities(calibrated_frame)
    oof["condition"] = oof.row_id.str.split("_", n=1).str[1].str.rsplit("_", n=2).str[0]
    per_condition = {c.value: _accuracy(oof, probs, "condition", c.value) for c in CONDITIONS}
    per_family = {f: _accuracy(oof, probs, "family", f) for f in ("spinal", "foraminal", "subarticular")}
    metrics = {
        **_terms(calibrated),
        "uncalibrated": _terms(raw),
        "prior_baseline": _terms(prior),
        "balanced_accuracy": {k: round(v["balanced_accuracy"], 6)
                              for k, v in {**per_condition, **per_family}.items()},
        "recall": {k: {c: round(r, 6) for c, r in v["recall"].items()}
                   for k, v in {**per_condition, **per_family}.items()},
        "temperature": temperatures,
        "temperature_per_fold": {str(k): v for k, v in per_fold.items()},
        "rows_scored": calibrated.rows_scored,
        "studies_scored": calibrated.studies_scored,
        "rows_predicted": int(oof.predicted.sum()),
        "rows_fallback": int((oof.predicted == 0).sum()),
        "folds": sorted(int(f) for f in oof.fold.unique()),
        "oof_crops": "training" if crops is None else str(crops),
        "tta": tta,
    }
    save_temperatures(temperatures, model_dir / CALIBRATION_FILE)
    write_csv(calibrated_sub, model_dir / "oof_calibrated.csv", float_format="%.8g")
    write_figures(per_condition, model_dir / "report")
    write_text(model_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return metrics


def format_report(metrics: dict) -> str:
    """The printed table: four terms + score for calibrated, raw and prior; accuracy per condition."""
    lines = [f"{'term':<20}{'calibrated':>12}{'raw':>10}{'prior':>10}"]
    for term in ("spinal", "foraminal", "subarticular", "any_severe_spinal", "score"):
        lines.append(f"{term:<20}{metrics[term]:>12.4f}{metrics['uncalibrated'][term]:>10.4f}"
                     f"{metrics['prior_baseline'][term]:>10.4f}")
    lines += ["", f"{'condition':<34}{'bal.acc':>8}{'R normal':>10}{'R moderate':>11}{'R severe':>10}"]
    for name, value in metrics["balanced_accuracy"].items():
        r = metrics["recall"].get(name, {})
        lines.append(f"{name:<34}{value:>8.3f}{r.get('normal_mild', np.nan):>10.3f}"
                     f"{r.get('moderate', np.nan):>11.3f}{r.get('severe', np.nan):>10.3f}")
    temps = ", ".join(f"{k} {v:.2f}" for k, v in metrics["temperature"].items())
    lines += ["", f"temperatures: {temps}; {metrics['rows_scored']} rows of "
              f"{metrics['studies_scored']} studies ({metrics['rows_fallback']} rows fell back to priors)"]
    return "\n".join(lines)
