"""The member-mix bench (bench/member_mixes.py): per-family weights find the family where the
second member knows the grades, each held fold gets the weights of the other folds, and the
mixes are scored and paired fold by fold."""

import pandas as pd
from conftest import make_train_frame

from rsna_lumbar.metric import score_submission
from rsna_lumbar.priors import class_priors, prior_submission
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.oof import submission_from_logits
from test_bench_calibration_forms import _oof


def test_family_weights_take_the_member_where_it_knows_and_the_pairs_are_paired(tmp_path):
    from bench.member_mixes import member_mixes

    data = tmp_path / "data"
    (data / "truth").mkdir(parents=True)
    make_train_frame(16, seed=4).to_csv(data / "train.csv", index=False)
    train = read_train(data / "train.csv")
    ids = train.study_id.tolist()
    prior = prior_submission(class_priors(train), ids)
    prior.to_csv(data / "truth" / "bayes_train.csv", index=False)
    right, wrong = (submission_from_logits(_oof(train, wrong_share=s)) for s in (0.0, 1.0))
    spinal = right.row_id.str.contains("spinal")
    knows_canal = pd.concat([right[spinal], wrong[~spinal]])  # sure and right only on the canal
    fold_0 = right.row_id.str.split("_").str[0].astype(int).isin(ids[0::2])  # the folds _oof names
    canal_in_fold_0 = pd.concat([right[spinal & fold_0], wrong[~(spinal & fold_0)]])
    pd.DataFrame({"study_id": ids, "fold": [n % 2 for n in range(len(ids))]}).to_csv(
        tmp_path / "folds.csv", index=False)  # the folds _oof names
    run = tmp_path / "ablation"
    for name, frame in (("prior", prior), ("prior_again", prior), ("canal", knows_canal),
                        ("canal_in_fold_0", canal_in_fold_0)):
        (run / name).mkdir(parents=True)
        frame.to_csv(run / name / "oof_calibrated.csv", index=False)

    result = member_mixes(run, data, tmp_path / "folds.csv",
                          ["prior+prior_again", "prior+canal", "prior+canal_in_fold_0"])

    floor = score_submission(train, prior).score
    assert abs(result["bayes_floor"] - floor) < 1e-4
    assert abs(result["members"]["prior"]["score"] - floor) < 1e-4
    mix = result["mixes"]["prior+canal"]
    half = prior.set_index("row_id").sort_index() * 0.5 + knows_canal.set_index("row_id").sort_index() * 0.5
    assert abs(mix["mean"]["score"] - score_submission(train, half.reset_index()).score) < 1e-4
    family = mix["family_weights"]
    assert family["weights"]["spinal"] >= 0.9
    assert family["weights"]["foraminal"] <= 0.1 and family["weights"]["subarticular"] <= 0.1
    assert family["cross_fitted_score"] < min(mix["mean"]["score"], floor)
    assert len(family["per_fold"]) == 2
    same = result["mixes"]["prior+prior_again"]
    assert same["member_weights"]["used"] == "mean"  # two equal members: the mean stays
    difference = result["paired"]["prior+canal − prior+prior_again"]
    assert len(difference["folds"]) == 2
    expected = [c - p for c, p in zip(mix["mean"]["per_fold"], same["mean"]["per_fold"])]
    assert all(abs(d - e) < 2e-4 for d, e in zip(difference["folds"], expected))
    # cross-fitted: each held fold gets the weights of the other fold's rows only
    held_0, held_1 = result["mixes"]["prior+canal_in_fold_0"]["family_weights"]["per_fold"]
    assert held_0["spinal"] <= 0.1 and held_1["spinal"] >= 0.9
