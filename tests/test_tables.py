import pandas as pd
import pytest

from conftest import make_train_frame
from rsna_lumbar.tables import (
    TableError,
    labels_long,
    read_label_coordinates,
    read_sample_submission,
    read_series_descriptions,
    read_train,
)
from rsna_lumbar.vocabulary import TARGET_COLUMNS, study_row_ids


def write(path, text):
    path.write_text(text)
    return path


def test_read_train_round_trip(tmp_path, train_frame):
    path = tmp_path / "train.csv"
    train_frame.to_csv(path, index=False)
    frame = read_train(path)
    assert list(frame.columns) == ["study_id", *TARGET_COLUMNS]
    assert frame["study_id"].dtype == "int64"
    assert frame[list(TARGET_COLUMNS)].isna().sum().sum() == train_frame[list(TARGET_COLUMNS)].isna().sum().sum()
    long = labels_long(frame)
    assert len(long) == frame[list(TARGET_COLUMNS)].notna().sum().sum()
    assert set(long["severity"]) <= {0, 1, 2}


def test_train_unknown_severity_names_file_line_value(tmp_path):
    frame = make_train_frame(3, seed=0, missing=0)
    frame.loc[1, "left_subarticular_stenosis_l4_l5"] = "Mild"
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TableError) as error:
        read_train(path)
    message = str(error.value)
    assert str(path) in message and "line 3" in message and "'Mild'" in message
    assert "left_subarticular_stenosis_l4_l5" in message
    assert error.value.line == 3


def test_train_wrong_column(tmp_path):
    frame = make_train_frame(2, seed=0).rename(columns={"spinal_canal_stenosis_l1_l2": "scs_l1_l2"})
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match=r"line 1: missing column\(s\) \['spinal_canal_stenosis_l1_l2'\]; unexpected column\(s\) \['scs_l1_l2'\]"):
        read_train(path)


def test_train_duplicate_study(tmp_path):
    frame = make_train_frame(2, seed=0)
    frame.loc[1, "study_id"] = frame.loc[0, "study_id"]
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match="line 3: duplicate row for study_id"):
        read_train(path)


def test_coordinates(tmp_path):
    path = write(
        tmp_path / "c.csv",
        "study_id,series_id,instance_number,condition,level,x,y\n"
        "4003253,702807833,8,Spinal Canal Stenosis,L1/L2,322.83,227.96\n"
        "4003253,1054713880,4,Right Neural Foraminal Narrowing,L4/L5,187.96,251.78\n",
    )
    frame = read_label_coordinates(path)
    assert frame["instance_number"].tolist() == [8, 4]
    assert frame["x"].dtype == "float64"
    bad = write(tmp_path / "bad.csv", path.read_text().replace("L4/L5", "L4-L5"))
    with pytest.raises(TableError, match=r"line 3: level='L4-L5': unknown level"):
        read_label_coordinates(bad)
    bad = write(tmp_path / "bad2.csv", path.read_text().replace("Spinal Canal", "spinal canal"))
    with pytest.raises(TableError, match=r"line 2: condition='spinal canal Stenosis'"):
        read_label_coordinates(bad)
    bad = write(tmp_path / "bad3.csv", path.read_text().replace(",8,", ",-1,"))
    with pytest.raises(TableError, match="line 2: instance_number='-1'"):
        read_label_coordinates(bad)


def test_series_descriptions(tmp_path):
    path = write(
        tmp_path / "s.csv",
        "study_id,series_id,series_description\n"
        "44036939,2828203845,Sagittal T1\n44036939,3481971518,Axial T2\n"
        "44036939,3844393089,Sagittal T2/STIR\n",
    )
    assert len(read_series_descriptions(path)) == 3
    bad = write(tmp_path / "bad.csv", path.read_text().replace("Sagittal T2/STIR", "Sagittal T2"))
    with pytest.raises(TableError, match=r"line 4: series_description='Sagittal T2'"):
        read_series_descriptions(bad)


def test_sample_submission(tmp_path):
    ids = study_row_ids(44036939)
    frame = pd.DataFrame({"row_id": ids, "normal_mild": 1 / 3, "moderate": 1 / 3, "severe": 1 / 3})
    path = tmp_path / "sample_submission.csv"
    frame.to_csv(path, index=False)
    assert len(read_sample_submission(path)) == 25
    frame.loc[4, "row_id"] = "44036939_spinal_canal_stenosis_l5_s2"
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match=r"line 6: row_id='44036939_spinal_canal_stenosis_l5_s2': malformed row_id"):
        read_sample_submission(path)
    frame.loc[4, "row_id"] = ids[4]
    frame["extra"] = 0
    frame.to_csv(path, index=False)
    with pytest.raises(TableError, match=r"unexpected column\(s\) \['extra'\]"):
        read_sample_submission(path)


def test_missing_file(tmp_path):
    with pytest.raises(TableError, match="not found"):
        read_train(tmp_path / "train.csv")
