import numpy as np
import pytest

from conftest import make_train_frame
from rsna_lumbar.folds import make_folds, read_folds, severity_stratum, write_folds


def test_folds_partition_studies_reproducibly(tmp_path):
    train = make_train_frame(300, seed=0)
    folds = make_folds(train, k=5, seed=7)
    assert sorted(folds["study_id"]) == sorted(train["study_id"])
    assert set(folds["fold"]) == set(range(5))
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 5
    again = make_folds(train.sample(frac=1.0, random_state=1), k=5, seed=7)
    assert again.equals(folds)  # independent of row order
    assert not make_folds(train, k=5, seed=8)["fold"].equals(folds["fold"])
    write_folds(folds, tmp_path / "folds.csv")
    assert read_folds(tmp_path / "folds.csv").equals(folds)


def test_folds_are_stratified_on_severe_spinal():
    train = make_train_frame(500, seed=3)
    folds = make_folds(train, k=5, seed=0).set_index("study_id").loc[train["study_id"], "fold"]
    severe_spinal = severity_stratum(train) >= 6
    per_fold = [severe_spinal[folds.to_numpy() == f].sum() for f in range(5)]
    assert max(per_fold) - min(per_fold) <= 2, per_fold


def test_folds_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot fill 5 folds"):
        make_folds(make_train_frame(3), k=5)
    (tmp_path / "bad.csv").write_text("study,fold\n1,0\n")
    with pytest.raises(ValueError, match="not a folds file"):
        read_folds(tmp_path / "bad.csv")
