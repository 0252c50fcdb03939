"""``rsna-lumbar run``: the whole chain on one competition folder, by a recipe.

data (the folder given, or a synthetic one the recipe describes) → header index → folds and
the class priors → learned localiser, out of fold (or the one packaged with the kit, which never
saw these studies) → crops at the labelled points and at the localiser's out-of-fold points → severity models, k-fold, one per recipe member → report (out
of fold on both kinds of crops: the difference is the localisation tax) → ensemble manifest →
predict the test split → validate and score where labels exist.

Every training stage skips work whose artefact exists (an interrupted run resumes; the crops
and the index are keyed on their inputs, training resumes fold by fold); the report, the
prediction and the scores are recomputed (minutes). What WORK and OUT were made from — the data
folder's fingerprint, the folds and the localiser settings — is recorded in ``run.json`` in
both; a rerun that asks for other data or other settings stops before touching anything
instead of reusing results made from something else. The severity members guard themselves
(``train_cv`` refuses a folder trained with another configuration), so a rerun with other
severity settings retrains nothing else; ``--device`` may change between runs.

``WORK/summary.json`` (the contract; the README's demo section shows one): ``recipe``, ``stages`` (seconds), ``oof``
(``labelled_points`` and ``localised_points``: the four terms and ``score`` of the ensemble out
of fold, with balanced accuracy and Moderate recall per family), ``prior`` and ``bayes_floor``
(same rows), ``members`` (each model folder's reports), ``ensemble_weights`` (several members:
:func:`~rsna_lumbar.training.ensemble_weights.choose_weights` at the localised points; the
``oof`` figures are the plain mean's), ``localiser`` (level accuracy and median
error, out of fold), ``test`` (when the test split has labels: the submission's terms, score and
``studies``, with ``prior`` and ``bayes_floor`` on the same rows, ``interval95`` — 95 % bootstrap
intervals over the test studies of ``score`` and of ``prior_minus_score``, paired — and
``localiser``, the canal level accuracy and median and 95th-percentile error on the test split
against the synthetic truth), ``label_noise`` (labels that look mislabelled, out of fold at the
labelled points: ``judged``, ``suspects``, ``file`` — ``WORK/label_suspects.csv`` — and, with the
synthetic truth, ``against_truth``: per family, how many labels the reader got wrong and how many
of them the suspects hold; :mod:`rsna_lumbar.training.label_noise`), ``submission``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rsna_lumbar.atomic import write_text
from rsna_lumbar.layout import CompetitionFolder
from rsna_lumbar.recipes import Recipe

if TYPE_CHECKING:
    import pandas as pd

FAMILIES = ("spinal", "foraminal", "subarticular")
TERMS = ("score", "spinal", "foraminal", "subarticular", "any_severe_spinal")
STAGES = {
    "data": "competition folder",
    "index": "header index",
    "folds": "folds and the class priors",
    "localiser": "learned localiser (out of fold, or the packaged one as is)",
    "crops": "crops at the labelled and at the localised points",
    "severity": "severity models (k-fold)",
    "report": "report: out of fold on both kinds of crops",
    "ensemble": "ensemble manifest",
    "predict": "predict the test split",
    "score": "validate and score",
}


class _Progress:
    """Numbered stage banners; seconds per stage."""

    def __init__(self, until: str | None):
        self.names = list(STAGES) if until is None else list(STAGES)[:list(STAGES).index(until) + 1]
        self.seconds: dict[str, float] = {}
        self.current: str | None = None
        self.started = time.time()

    def stage(self, name: str, detail: str = "") -> bool:
        """Open stage ``name``; False when ``--until`` ended the run before it."""
        self._close()
        if name not in self.names:
            return False
        self.current, self._since = name, time.time()
        print(f"\n[{self.names.index(name) + 1}/{len(self.names)}] {STAGES[name]}"
              f"{': ' + detail if detail else ''}", flush=True)  # fmt: skip
        return True

    def _close(self) -> None:
        if self.current:
            self.seconds[self.current] = round(time.time() - self._since, 1)
            print(f"    {self.current}: {self.seconds[self.current] / 60:.1f} min", flush=True)
            self.current = None

    def done(self) -> dict[str, float]:
        self._close()
        return self.seconds


def run_chain(recipe: Recipe, work: str | Path, weights: str | Path, data: str | Path | None = None,
              *, until: str | None = None, device: str = "auto") -> dict:
    """Run the recipe's stages (module docstring); returns the summary written to
    ``WORK/summary.json``.

    Raises:
        ValueError: no data and a recipe without ``synthetic``, a folder that is not in the
            competition layout, a work folder made from other data or settings, an unknown
            ``until`` stage or device.
        FileNotFoundError, FileExistsError: a recipe with the packaged localiser on an install
            without it, or with a localiser trained in ``OUT`` (before any stage runs).
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"--until {until!r}: use one of {', '.join(STAGES)}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device!r}: use auto, cpu or cuda")
    if device == "cuda":  # a GPU promised but missing or unusable: say so before any stage runs
        from rsna_lumbar.devices import choose_device

        choose_device("cuda")
    work, weights = Path(work), Path(weights)
    if recipe.settings["threads"]:
        import torch

        torch.set_num_threads(int(recipe.settings["threads"]))
    _refuse_early(recipe, weights)
    progress = _Progress(until)
    summary: dict = {"recipe": recipe.name, "recipe_source": recipe.source, "work": str(work),
                     "weights": str(weights), "device": device}
    progress.stage("data")
    data = _data(recipe, work, data)
    summary["data"] = str(data)
    _check_made_from(recipe, data, work, weights)
    if progress.stage("index", "train and test splits"):
        from rsna_lumbar.dicom.index import write_index

        for split in _splits(data):
            write_index(data, split, work)
    if progress.stage("folds", f"{recipe.settings['folds']} folds → {work / 'folds.csv'}"):
        _folds_and_priors(recipe, data, work, weights)
    if progress.stage("localiser", str(weights / "localizer")):
        summary["localiser"] = _localiser(recipe, data, work, weights, device)
    if progress.stage("crops", f"{work / 'crops_train'}, {work / 'crops_train_localised'}"):
        _crops(data, work, recipe.crop_geometry)
    if progress.stage("severity", ", ".join(m.name for m in recipe.members)):
        _severity(recipe, data, work, weights, device)
    if progress.stage("report"):
        summary.update(_report(recipe, data, work, weights))
    if progress.stage("ensemble", str(weights / "ensemble.yaml")):
        _manifest(recipe, work, weights)
    test = CompetitionFolder(data).series_descriptions_csv("test")
    if progress.stage("predict", "none: the folder has no test split" if not test.is_file() else ""):
        if test.is_file():
            from rsna_lumbar.inference.predict import predict_split

            summary["submission"] = str(work / "submission.csv")
            predict_split(data, "test", work / "submission.csv", weights, work=work / "predict",
                          device=device, chunk_studies=recipe.settings["predict"]["chunk_studies"])
    if progress.stage("score") and summary.get("submission"):
        summary["test"] = _score_test(data, Path(summary["submission"]), weights)
        summary["test"]["localiser"] = _localiser_on_test(data, work / "predict")
    summary["stages"] = progress.done()
    summary["minutes"] = round((time.time() - progress.started) / 60, 1)
    write_text(work / "summary.json", json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    return summary


def _splits(data: Path) -> list[str]:
    folder = CompetitionFolder(data)
    return [s for s in ("train", "test") if folder.series_descriptions_csv(s).is_file()]


def _data(recipe: Recipe, work: Path, data: str | Path | None) -> Path:
    """The competition folder: ``data`` checked, or the recipe's synthetic set in WORK/data
    (refused before anything is written when WORK was made from other data)."""
    if data is None:
        if recipe.synthetic is None:
            raise ValueError(f"recipe {recipe.name} describes no synthetic data: pass --data DIR "
                             "(the unzipped competition folder)")
        from rsna_lumbar.synth.generate import generate, recorded_arguments, set_arguments

        data = work / "data"
        spec = recipe.synthetic
        made = recorded_arguments(data)
        wanted = set_arguments(spec["studies"], spec["seed"], spec["test_studies"])
        if made is not None and made != wanted:
            raise ValueError(f"{data} holds another synthetic set ({made}) than the recipe asks "
                             f"for ({wanted}): use a fresh --work and --weights, or delete them")
        if made is None and (work / RUN_RECORD).is_file():
            raise ValueError(f"{work} holds a run on another data folder: pass that --data, or "
                             "use a fresh --work and --weights")
        print(f"    {spec['studies']} train + {spec['test_studies']} test synthetic studies "
              f"→ {data}", flush=True)  # fmt: skip
        generate(data, spec["studies"], spec["seed"], test_studies=spec["test_studies"])
    data = Path(data)
    folder = CompetitionFolder(data)
    needed = [folder.root / "train.csv", folder.series_descriptions_csv("train"),
              folder.label_coordinates_csv]  # fmt: skip
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise ValueError(f"{data} is not a competition folder: it lacks {', '.join(missing)} "
                         "(unzip the Kaggle download there, or run 'rsna-lumbar synth')")
    return data


RUN_RECORD = "run.json"


def _refuse_early(recipe: Recipe, weights: Path) -> None:
    """Before any stage runs: a recipe that asks for the packaged localiser stops when this
    install lacks it, or when ``OUT/localizer`` holds a localiser trained there (the run would
    replace it)."""
    from rsna_lumbar.localize.packaged import packaged
    from rsna_lumbar.provenance import PACKAGED as PACKAGED_KIND
    from rsna_lumbar.provenance import read_provenance

    if not recipe.packaged_localiser:
        return
    if packaged() is None:
        msg = "the recipe asks for the packaged localiser, but this install lacks it: reinstall the kit"
        raise FileNotFoundError(msg)
    folder = weights / "localizer"
    if (folder / "config.json").is_file() and (read_provenance(folder) or {}).get("data_kind") != PACKAGED_KIND:
        msg = (f"{folder} holds a localiser trained here (not the packaged one): the recipe "
               "would replace it; pass another --weights, or move it away first")
        raise FileExistsError(msg)


def _check_made_from(recipe: Recipe, data: Path, work: Path, weights: Path) -> None:
    """Stop when WORK or OUT holds results made from other data, folds, localiser settings or
    crop geometry (their ``run.json``); record them otherwise."""
    from rsna_lumbar.provenance import data_fingerprint

    from rsna_lumbar.crops.recipes import geometry_settings
    from rsna_lumbar.localize.packaged import fingerprint as packaged_fingerprint

    made = {"data_fingerprint": data_fingerprint(data),
            **{k: recipe.settings[k] for k in ("folds", "seed", "localiser")},
            **({"localiser": f"packaged {packaged_fingerprint()}"} if recipe.packaged_localiser else {}),
            "crops": geometry_settings(recipe.crop_geometry)}
    for folder in (work, weights):
        record = folder / RUN_RECORD
        if record.is_file():
            before = json.loads(record.read_text(encoding="utf-8"))
            changed = [k for k in made if before.get(k) != made[k]]
            if changed:
                what = "data" if changed == ["data_fingerprint"] else ", ".join(
                    "data" if k == "data_fingerprint" else k for k in changed)
                raise ValueError(f"{folder} holds a run made with other {what} ({record}): use "
                                 "a fresh --work and --weights, or delete them")
    for folder in (work, weights):
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / RUN_RECORD, json.dumps(made, indent=1) + "\n")


def _folds_and_priors(recipe: Recipe, data: Path, work: Path, weights: Path) -> None:
    """``WORK/folds.csv`` (study-level, stratified) and ``OUT/priors.json``."""
    from rsna_lumbar.folds import make_folds, write_folds
    from rsna_lumbar.priors import class_priors, save_priors
    from rsna_lumbar.tables import read_train

    train = read_train(data / "train.csv")
    folds_csv = work / "folds.csv"
    if not folds_csv.is_file():
        write_folds(make_folds(train, k=recipe.settings["folds"], seed=recipe.settings["seed"]),
                    folds_csv)  # fmt: skip
    save_priors(class_priors(train), weights / "priors.json")


def _localiser(recipe: Recipe, data: Path, work: Path, weights: Path, device: str) -> dict:
    """The localiser in ``OUT/localizer`` and its points on the train split (skipped when done):
    trained out of fold here, or (``localiser: packaged``) the kit's own copied there, whose
    points on these studies are out of sample as they stand (it never saw them). Its canal
    level accuracy and median error on the train split, out of fold or out of sample."""
    out, folder = work / "localize_oof.csv", weights / "localizer"
    if out.is_file() and (folder / "metrics.json").is_file():
        print(f"    already done: {folder}", flush=True)
        metrics = json.loads((folder / "metrics.json").read_text())
    elif recipe.packaged_localiser:
        metrics = _packaged_localiser(data, out, folder, work, device)
    else:
        from rsna_lumbar.localize.oof import train_oof

        cfg = recipe.localiser_config(device)
        metrics = train_oof(data, out, folder, work=work, folds=work / "folds.csv", cfg=cfg,
                            steps=recipe.localiser_steps, real=recipe.real_exams)  # fmt: skip
    canal = metrics.get("spinal", {})
    return {"folder": str(folder), "oof_points": str(out), "packaged": recipe.packaged_localiser,
            "level_accuracy": canal.get("level_accuracy"), "median_error_mm": canal.get("median_mm"),
            "metrics": metrics}


def _packaged_localiser(data: Path, out: Path, folder: Path, work: Path, device: str) -> dict:
    """Copy the packaged localiser to ``folder``, predict the train split with it into ``out``
    and measure those points (``folder/metrics.json``, written last: its presence means done)."""
    import shutil

    from rsna_lumbar.atomic import write_text
    from rsna_lumbar.localize.evaluate import evaluate
    from rsna_lumbar.localize.keypoints.train import study_stacks
    from rsna_lumbar.localize.packaged import packaged
    from rsna_lumbar.localize.stage import predict_split
    from rsna_lumbar.tables import read_label_coordinates

    source = packaged()  # present, and folder holds no localiser trained here: _refuse_early
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    (folder / "metrics.json").unlink(missing_ok=True)
    print(f"    the packaged localiser ({source}) on the train split", flush=True)
    table = predict_split(data, "train", out, folder, work=work, device=device)
    coords = read_label_coordinates(data / "train_label_coordinates.csv")
    metrics = evaluate(table, coords, study_stacks(data, "train", work))
    write_text(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _crops(data: Path, work: Path, geometry: dict) -> None:
    """The train split's crops at the labelled points and at the localiser's OOF points, at the
    recipe's crop geometry."""
    from rsna_lumbar.crops.stage import build_crops

    build_crops(data, "train", work / "crops_train", work=work, geometry=geometry)
    build_crops(data, "train", work / "crops_train_localised", points=work / "localize_oof.csv",
                work=work, montages=0, geometry=geometry)  # fmt: skip


def _severity(recipe: Recipe, data: Path, work: Path, weights: Path, device: str) -> None:
    """Train every recipe member k-fold on the labelled-point crops into ``OUT/{name}`` (and on
    the crops at the localiser's points for the share its ``data.localised_share`` sets)."""
    from rsna_lumbar.training.config import load_config
    from rsna_lumbar.training.loop import train_cv

    for member in recipe.members:
        overrides = [*member.config_overrides(), f"train.device={device}"]
        config = load_config(member.config, overrides)
        train_cv(work / "crops_train", work / "folds.csv", data / "train.csv", config,
                 weights / member.name, data=data, localised_crops=work / "crops_train_localised",
                 recipe=f"{recipe.name}: {member.name} --config {member.config} "
                        + " ".join(overrides))  # fmt: skip


def _report(recipe: Recipe, data: Path, work: Path, weights: Path) -> dict:
    """Each member's report on both kinds of crops; the ensemble's OOF scores.

    The report on the localised crops runs last, so the calibration each model folder keeps is
    fitted on what inference sees. With the recipe's ``predict.tta`` the held-out studies are
    graded as ``predict`` will grade the test split: with the mirrored canal crops too (the
    labelled points' then re-predicted on the training crops).
    """
    import pandas as pd

    from rsna_lumbar.tables import read_train
    from rsna_lumbar.training.report import build_report, format_report

    train = read_train(data / "train.csv")
    members, oof, means, frames = {}, {}, {}, {}
    tta = bool(recipe.settings["predict"].get("tta", False))  # as predict will grade the test split
    for points, crops in (("labelled_points", work / "crops_train" if tta else None),
                          ("localised_points", work / "crops_train_localised")):
        frames[points] = probabilities = []
        for member in recipe.members:
            folder = weights / member.name
            metrics = build_report(folder, data / "train.csv", crops=crops, tta=tta)
            print(f"\n{member.name}, out of fold on crops at the {points.replace('_', ' ')}:\n"
                  f"{format_report(metrics)}", flush=True)  # fmt: skip
            members.setdefault(member.name, {})[points] = _family_metrics(metrics)
            probabilities.append(pd.read_csv(folder / "oof_calibrated.csv"))
        oof[points], means[points] = _ensemble_oof(probabilities, train)
    # labels are judged where the crops sit on them; both means cover the same studies
    label_noise = _label_noise(means["labelled_points"], train, data, work)
    studies = sorted({int(r.split("_")[0]) for r in means["labelled_points"].row_id})
    baselines = _baselines(data, weights, studies, train)
    out = {"oof": oof, "members": members, **baselines, "label_noise": label_noise,
           "report": [str(weights / m.name / "report") for m in recipe.members]}
    if len(recipe.members) > 1:  # weights fitted at the localiser's points, as inference sees
        from rsna_lumbar.folds import read_folds
        from rsna_lumbar.training.ensemble_weights import choose_weights

        out["ensemble_weights"] = {"members": [m.name for m in recipe.members],
                                   **choose_weights(frames["localised_points"], train,
                                                    read_folds(work / "folds.csv"))}  # fmt: skip
        write_text(work / "ensemble_weights.json", json.dumps(out["ensemble_weights"], indent=1) + "\n")
    return out


def _baselines(data: Path, weights: Path, studies: list[int], train: pd.DataFrame) -> dict:
    """The class prior (``OUT/priors.json``) and, with synthetic truth, the Bayes floor, scored
    on the studies the out-of-fold figures cover (``train``: ``DATA/train.csv``)."""
    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.priors import load_priors, prior_submission
    from rsna_lumbar.tables import read_sample_submission

    out = {"prior": score_submission(train, prior_submission(load_priors(weights / "priors.json"),
                                                             studies), subset=True).as_dict()}
    bayes = data / "truth" / "bayes_train.csv"
    if bayes.is_file():
        frame = read_sample_submission(bayes)
        held = frame.row_id.str.split("_").str[0].astype(int).isin(studies)
        out["bayes_floor"] = score_submission(train, frame[held].reset_index(drop=True),
                                              subset=True).as_dict()
    return out


def _family_metrics(metrics: dict) -> dict:
    """The four terms and score, balanced accuracy and Moderate recall per family."""
    return {**{k: metrics[k] for k in TERMS},
            "balanced_accuracy": {f: metrics["balanced_accuracy"].get(f) for f in FAMILIES},
            "moderate_recall": {f: metrics["recall"].get(f, {}).get("moderate")
                                for f in FAMILIES}}  # fmt: skip


def _ensemble_oof(frames: list, train: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """The official metric of the members' mean out-of-fold probabilities, and that mean (a
    submission-format frame)."""
    import pandas as pd

    from rsna_lumbar.metric import score_submission
    from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS

    columns = list(PROBABILITY_COLUMNS)
    mean = pd.concat(frames).groupby("row_id", sort=True)[columns].mean().reset_index()
    result = score_submission(train, mean, subset=True).as_dict()
    return result, mean


def _label_noise(probabilities: pd.DataFrame, train: pd.DataFrame, data: Path,
                 work: Path) -> dict:  # fmt: skip
    """Suspect labels (:mod:`rsna_lumbar.training.label_noise`) of the ensemble's out-of-fold
    probabilities at the labelled points → ``WORK/label_suspects.csv``; with the synthetic
    truth, how many of them the reader really got wrong."""
    import pandas as pd

    from rsna_lumbar.atomic import write_csv
    from rsna_lumbar.synth.severity import latent_grades
    from rsna_lumbar.training.label_noise import against_truth, find_suspects

    judged = find_suspects(probabilities, train)
    write_csv(judged[judged.suspect].drop(columns="suspect"), work / "label_suspects.csv")
    out = {"judged": len(judged), "suspects": int(judged.suspect.sum()),
           "file": str(work / "label_suspects.csv")}
    latent = data / "truth" / "latent.csv"
    if latent.is_file():
        frame = pd.read_csv(latent)
        columns = [c for c in frame.columns if c != "study_id"]
        frame[columns] = latent_grades(frame[columns].to_numpy())
        out["against_truth"] = against_truth(judged, frame)
    return out


def _manifest(recipe: Recipe, work: Path, weights: Path) -> None:
    """``OUT/ensemble.yaml``: the recipe's members, the localiser and whether ``predict`` runs
    test-time augmentation (the recipe's ``predict.tta``). The members' weights are those the
    report stage chose (``WORK/ensemble_weights.json``: fitted out of fold where that beat the
    mean out of fold), else 1."""
    import yaml

    chosen = work / "ensemble_weights.json"
    record = json.loads(chosen.read_text()) if chosen.is_file() else {}
    names = [m.name for m in recipe.members]
    # a record of other members (the recipe changed since) is not this ensemble's
    weights_of = record["weights"] if record.get("members") == names else [1.0] * len(names)
    manifest = {"members": [{"path": m.name, "weight": float(w)}
                            for m, w in zip(recipe.members, weights_of)],
                "localizer": "localizer", "tta": bool(recipe.settings["predict"].get("tta", False))}
    write_text(weights / "ensemble.yaml", yaml.safe_dump(manifest, sort_keys=False))


def _score_test(data: Path, submission: Path, weights: Path) -> dict:
    """Validate the submission (every row of the split); with labels or synthetic truth for
    the test split, score it, the prior baseline and the Bayes floor on the same rows."""
    from rsna_lumbar.metric import bootstrap_scores, score_submission
    from rsna_lumbar.priors import load_priors, prior_submission
    from rsna_lumbar.submission import validate_submission
    from rsna_lumbar.tables import read_sample_submission, read_train, split_study_ids

    test_ids = split_study_ids(data, "test")
    frame = read_sample_submission(submission)
    validate_submission(frame, test_ids)
    truth = data / "truth" / "test_labels.csv"
    result: dict = {"studies": len(test_ids), "valid": True}
    if not truth.is_file():
        return result
    labels = read_train(truth)
    result.update(score_submission(labels, frame).as_dict())
    prior = prior_submission(load_priors(weights / "priors.json"), test_ids)
    result["prior"] = score_submission(labels, prior).as_dict()
    bayes = data / "truth" / "bayes_test.csv"
    if bayes.is_file():
        result["bayes_floor"] = score_submission(labels, read_sample_submission(bayes)).as_dict()
    scores = bootstrap_scores(labels, {"submission": frame, "prior": prior}, resamples=RESAMPLES)
    result["interval95"] = {
        "resamples": RESAMPLES,
        "score": _percentiles(scores["submission"]),
        "prior_minus_score": _percentiles(scores["prior"] - scores["submission"])}
    return result


RESAMPLES = 200  # bootstrap resamples of the test studies for the 95 % intervals


def _percentiles(values) -> list[float]:
    import numpy as np

    return [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]


def _localiser_on_test(data: Path, predict_work: Path) -> dict:
    """The learned localiser on the test split against the synthetic truth (when the folder has
    it): canal level accuracy (a predicted point's nearest true canal point of its study carries
    its level) and the median and 95th-percentile distance to its own level's true point, mm."""
    import numpy as np
    import pandas as pd

    from rsna_lumbar.points import read_points

    truth_csv = data / "truth" / "points.csv"
    found = sorted(predict_work.glob("points_test_*.csv"))
    if not truth_csv.is_file() or not found:
        return {}
    truth = pd.read_csv(truth_csv).query("split == 'test' and structure == 'canal'")
    points = pd.concat([read_points(p) for p in found]).query("condition == 'Spinal Canal Stenosis'")
    right, errors = [], []
    for row in points.itertuples(index=False):
        mine = truth[truth.study_id == row.study_id]
        if mine.empty:
            continue
        distance = np.linalg.norm(mine[["world_x", "world_y", "world_z"]].to_numpy()
                                  - [row.world_x, row.world_y, row.world_z], axis=1)  # fmt: skip
        right.append(mine.level.iloc[int(np.argmin(distance))] == row.level)
        errors.append(float(distance[(mine.level == row.level).to_numpy()].min()))
    if not right:
        return {}
    return {"canal_points": len(right), "level_accuracy": round(float(np.mean(right)), 3),
            "median_error_mm": round(float(np.median(errors)), 2),
            "p95_error_mm": round(float(np.percentile(errors, 95)), 2)}


def print_summary(summary: dict) -> None:
    """One screen: the metric's terms for the ensemble (out of fold on both kinds of crops, and
    on the test split), the prior baseline and the Bayes floor; then where everything is."""
    import pandas as pd

    rows = []

    def row(where: str, what: str, result: dict | None) -> None:
        if result and "score" in result:
            rows.append({"rows": where, "submission": what,
                         **{k: round(result[k], 4) for k in TERMS}})

    oof = summary.get("oof", {})
    row("train OOF", "labelled points", oof.get("labelled_points"))
    row("train OOF", "localised points", oof.get("localised_points"))
    row("train OOF", "class prior", summary.get("prior"))
    row("train OOF", "Bayes floor", summary.get("bayes_floor"))
    test = summary.get("test", {})
    row(f"test ({test.get('studies', 0)})", "submission", test)
    row(f"test ({test.get('studies', 0)})", "class prior", test.get("prior"))
    row(f"test ({test.get('studies', 0)})", "Bayes floor", test.get("bayes_floor"))
    if rows:
        print("\n" + pd.DataFrame(rows).to_string(index=False))
    interval = test.get("interval95")
    if interval:
        (lo, hi), (dlo, dhi) = interval["score"], interval["prior_minus_score"]
        print(f"test, 95 % bootstrap intervals ({interval['resamples']} resamples of the "
              f"{test.get('studies')} studies): score {lo:.3f}–{hi:.3f}; prior − score "
              f"{dlo:+.3f} to {dhi:+.3f}")
    for name, reports in summary.get("members", {}).items():
        local = reports.get("localised_points", {})
        accuracy = ", ".join(f"{f} {v:.2f}" for f, v in local.get("balanced_accuracy", {}).items()
                             if v is not None)  # fmt: skip
        moderate = ", ".join(f"{f} {v:.2f}" for f, v in local.get("moderate_recall", {}).items()
                             if v is not None)  # fmt: skip
        print(f"\n{name} (localised points): balanced accuracy {accuracy}; Moderate recall "
              f"{moderate}")
    mix = summary.get("ensemble_weights")
    if mix:
        print(f"ensemble weights: {mix['used']} {mix['weights']} (fitted {mix['fitted']}: "
              f"{mix['fitted_score']:.4f} cross-fitted at the localised points, the mean "
              f"{mix['mean_score']:.4f})")
    noise = summary.get("label_noise")
    if noise:
        line = (f"labels that look mislabelled (out of fold): {noise['suspects']} of "
                f"{noise['judged']} → {noise['file']}")
        truth = (noise.get("against_truth") or {}).get("all")
        if truth:
            line += (f"; {truth['found']} of them among the {truth['mislabelled']} the reader got "
                     f"wrong (synthetic truth)")
        print(line)
    localiser = summary.get("localiser", {})
    if localiser.get("level_accuracy") is not None:
        how = "packaged, train split" if localiser.get("packaged") else "out of fold"
        print(f"localiser ({how}, canal): level accuracy {localiser['level_accuracy']:.3f}, "
              f"median error {localiser['median_error_mm']} mm")
    on_test = test.get("localiser") or {}
    if on_test:
        print(f"localiser (test split, canal): level accuracy {on_test['level_accuracy']:.3f}, "
              f"median error {on_test['median_error_mm']} mm, 95th percentile "
              f"{on_test['p95_error_mm']} mm")
    stages = summary.get("stages", {})
    print(f"\nsubmission: {summary.get('submission')}\nreport:     {summary.get('report')}"
          f"\nweights:    {summary.get('weights')}  (rsna-lumbar predict --models "
          f"{summary.get('weights')} ... reuses them)\n"
          f"minutes:    {', '.join(f'{k} {v / 60:.1f}' for k, v in stages.items())}"
          f" (total {summary.get('minutes')})")  # fmt: skip
