"""Suspect labels out of fold (confident learning), counted against known reader errors, and
left out of training (data.drop_labels) while the out-of-fold grading keeps them."""

import numpy as np
import pandas as pd
import pytest
from crop_factory import make_crop_cache

from rsna_lumbar.models.dataset import StudyDataset, labels_by_study
from rsna_lumbar.tables import read_train
from rsna_lumbar.training.config import load_config
from rsna_lumbar.training.label_noise import (
    against_truth,
    drop_labels,
    find_suspects,
    keep_drop_list,
)
from rsna_lumbar.training.loop import train_cv
from rsna_lumbar.vocabulary import PROBABILITY_COLUMNS, SEVERITIES, TARGET_COLUMNS

GRADE = {s.value: i for i, s in enumerate(SEVERITIES)}


def _probabilities(true: pd.DataFrame, sure: set[str]) -> pd.DataFrame:
    """Out-of-fold probabilities that know the true grade whatever the label: 0.75–0.85 on it,
    0.9 for the rows in ``sure``."""
    rng = np.random.default_rng(1)
    records = []
    for row in true.itertuples(index=False):
        for column in TARGET_COLUMNS:
            row_id = f"{row.study_id}_{column}"
            on_grade = 0.9 if row_id in sure else rng.uniform(0.75, 0.85)
            p = np.full(3, (1.0 - on_grade) / 2)
            p[getattr(row, column)] = on_grade
            records.append((row_id, *p))
    return pd.DataFrame(records, columns=["row_id", *PROBABILITY_COLUMNS])


def test_suspects_are_the_labels_that_disagree_with_a_confident_model(tmp_path):
    _, train_csv, _ = make_crop_cache(tmp_path, n_studies=30, slices=3, size=16, missing_label=0.1)
    train = read_train(train_csv)
    true = train[["study_id"]].copy()
    for column in TARGET_COLUMNS:  # the label's grade, 0 where it is missing
        true[column] = train[column].map(GRADE).fillna(0).astype(int)
    rng = np.random.default_rng(0)
    wrong = {}
    for column in TARGET_COLUMNS[::3]:  # the reader got some labels wrong: the truth differs
        i = int(rng.integers(len(true)))
        if isinstance(train.at[i, column], str):
            true.at[i, column] = (true.at[i, column] + 1) % 3
            wrong[f"{true.at[i, 'study_id']}_{column}"] = true.at[i, column]
    judged = find_suspects(_probabilities(true, set(wrong)), train)
    assert len(judged) == train[list(TARGET_COLUMNS)].notna().sum().sum()  # labelled rows only
    flagged = judged[judged.suspect]
    assert set(flagged.row_id) == set(wrong)
    assert dict(zip(flagged.row_id, flagged.suggested)) == wrong  # the model's grade suggested
    counts = against_truth(judged, true)
    assert counts["all"] == {"labelled": len(judged), "mislabelled": len(wrong),
                             "suspects": len(wrong), "found": len(wrong), "precision": 1.0,
                             "recall": 1.0}
    assert sum(counts[f]["found"] for f in ("spinal", "foraminal", "subarticular")) == len(wrong)


def test_dropped_labels_leave_training_but_not_the_out_of_fold_grading(tmp_path, caplog,
                                                                        monkeypatch):
    crops, train_csv, folds_csv = make_crop_cache(tmp_path, n_studies=8, slices=3, size=16, k=2)
    train = read_train(train_csv)
    labels = labels_by_study(train)
    study = int(train.study_id[0])
    listed = [f"{study}_{t}" for t in list(labels[study])[:4]]
    drop_csv = tmp_path / "suspects.csv"
    pd.DataFrame({"row_id": listed, "label": 0}).to_csv(drop_csv, index=False)
    kept, dropped = drop_labels(labels, drop_csv)
    assert dropped == 4 and len(kept[study]) == len(labels[study]) - 4
    assert all(kept[s] == labels[s] for s in labels if s != study)

    read = []  # the labels each dataset of the fold loop was built with
    monkeypatch.setattr("rsna_lumbar.training.loop.StudyDataset",
                        lambda cache, ids, labels, **kw: read.append((kw.get("augment"), labels))
                        or StudyDataset(cache, ids, labels, **kw))
    config = load_config("tiny", ["train.epochs=1", "train.folds=[0]",
                                  f"data.drop_labels={drop_csv}"])
    caplog.set_level("INFO")
    out = train_cv(crops, folds_csv, train_csv, config, tmp_path / "model")
    assert "4 labels left out of training" in caplog.text
    (training,) = [labels for augment, labels in read if augment is not None]
    (grading,) = [labels for augment, labels in read if augment is None]
    assert training == kept and grading == labels
    oof = pd.read_csv(out / "oof_logits.csv").set_index("row_id")
    graded = [r for r in listed if r in oof.index]
    assert (oof.loc[graded, "label"] >= 0).all()  # still graded out of fold
    assert sorted(pd.read_csv(out / "drop_labels.csv").row_id) == sorted(listed)

    # the same folder resumed once the list has changed: refused, not silently mixed
    pd.DataFrame({"row_id": listed[:2]}).to_csv(drop_csv, index=False)
    with pytest.raises(ValueError, match="trained without the labels of"):
        train_cv(crops, folds_csv, train_csv, config, out)
    with pytest.raises(FileNotFoundError, match="is not a file"):
        keep_drop_list(tmp_path / "nowhere.csv", out)
