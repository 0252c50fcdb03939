"""Ensemble weights fitted out of fold (training/ensemble_weights.py): a member that adds only
noise is weighted down and the cross-fitted mix beats the mean; between equals the mean stays."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rsna_lumbar.training.ensemble_weights import choose_weights, fit_weights, mixed
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, TARGETS


def _set(n_studies: int = 40, seed: int = 0):
    """Labels drawn from known probabilities; a member that knows them, one that is noise."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for s in range(n_studies):
        study = 1000 + s
        for condition, level in TARGETS:
            p = rng.dirichlet([4, 1.5, 0.8])
            rows.append((f"{study}_{condition.value}_{level.value}", p))
            labels.append((study, f"{condition.value}_{level.value}", int(rng.choice(3, p=p))))
    grades = ("Normal/Mild", "Moderate", "Severe")
    train = pd.DataFrame({"study_id": sorted({s for s, _, _ in labels})})
    for study, column, label in labels:
        train.loc[train.study_id == study, column] = grades[label]
    good = pd.DataFrame([(r, *p) for r, p in rows], columns=["row_id", *PROBABILITY_COLUMNS])
    noise = good.copy()
    noise[list(PROBABILITY_COLUMNS)] = rng.dirichlet([1, 1, 1], len(noise))
    folds = pd.DataFrame({"study_id": train.study_id, "fold": np.arange(len(train)) % 4})
    return train, good, noise, folds


def test_a_noise_member_is_weighted_down_and_the_cross_fitted_mix_beats_the_mean():
    train, good, noise, folds = _set()
    w = fit_weights([good, noise], train)
    assert w.sum() == 1 and w[0] > 0.8, w
    choice = choose_weights([good, noise], train, folds)
    assert choice["used"] == "fitted" and choice["fitted_score"] < choice["mean_score"]
    assert choice["weights"] == choice["fitted"]


def test_between_equal_members_the_mean_stays():
    train, good, _, folds = _set()
    choice = choose_weights([good, good.copy()], train, folds)
    assert choice["used"] == "mean" and choice["weights"] == [0.5, 0.5]
    np.testing.assert_allclose(mixed([good, good], [0.3, 0.7])[list(PROBABILITY_COLUMNS)],
                               good.sort_values("row_id")[list(PROBABILITY_COLUMNS)], atol=1e-12)


def test_run_writes_the_chosen_weights_into_the_manifest(tmp_path):
    import json

    import yaml

    from rsna_lumbar.inference.ensemble import read_ensemble
    from rsna_lumbar.recipes import load_recipe
    from rsna_lumbar.run import _manifest

    recipe = load_recipe("demo")  # two members
    work, weights = tmp_path / "work", tmp_path / "weights"
    work.mkdir(), weights.mkdir()
    _manifest(recipe, work, weights)  # no choice recorded (one member, or not reported): 1 each
    assert [m["weight"] for m in yaml.safe_load((weights / "ensemble.yaml").read_text())["members"]] == [1.0, 1.0]
    names = [m.name for m in recipe.members]
    (work / "ensemble_weights.json").write_text(json.dumps({"members": names, "weights": [0.7, 0.3]}))
    _manifest(recipe, work, weights)
    ensemble = read_ensemble(weights)
    assert [m.weight for m in ensemble.members] == [0.7, 0.3] and ensemble.tta
    # a record left by other members (the recipe changed) is ignored
    (work / "ensemble_weights.json").write_text(json.dumps({"members": ["a", "b"], "weights": [0.7, 0.3]}))
    _manifest(recipe, work, weights)
    assert [m.weight for m in read_ensemble(weights).members] == [1.0, 1.0]
