import pytest

from rsna_lumbar.vocabulary import (
    SUBMISSION_COLUMNS,
    TARGET_COLUMNS,
    Condition,
    Family,
    Level,
    SeriesDescription,
    Severity,
    Side,
    parse_row_id,
    row_id,
    study_row_ids,
)

# Spelled out by hand from the competition's data page (docs/competition.md).
EXPECTED_COLUMNS = [
    f"{c}_{lv}"
    for c in (
        "spinal_canal_stenosis",
        "left_neural_foraminal_narrowing",
        "right_neural_foraminal_narrowing",
        "left_subarticular_stenosis",
        "right_subarticular_stenosis",
    )
    for lv in ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
]


def test_target_columns_are_train_csv_order():
    assert list(TARGET_COLUMNS) == EXPECTED_COLUMNS


def test_coordinate_spellings():
    assert [c.title for c in Condition] == [
        "Spinal Canal Stenosis",
        "Left Neural Foraminal Narrowing",
        "Right Neural Foraminal Narrowing",
        "Left Subarticular Stenosis",
        "Right Subarticular Stenosis",
    ]
    assert [lv.title for lv in Level] == ["L1/L2", "L2/L3", "L3/L4", "L4/L5", "L5/S1"]
    assert Condition.from_title("Right Subarticular Stenosis") is Condition.RIGHT_SUBARTICULAR_STENOSIS
    assert Level.from_title("L5/S1") is Level.L5_S1
    with pytest.raises(ValueError, match="unknown condition 'Spinal canal stenosis'"):
        Condition.from_title("Spinal canal stenosis")


def test_families_sides_and_series():
    assert Condition.SPINAL_CANAL_STENOSIS.side is None
    assert Condition.LEFT_NEURAL_FORAMINAL_NARROWING.side is Side.LEFT
    assert Condition.RIGHT_SUBARTICULAR_STENOSIS.family is Family.SUBARTICULAR
    assert Condition.SPINAL_CANAL_STENOSIS.annotated_on is SeriesDescription.SAGITTAL_T2
    assert Condition.LEFT_NEURAL_FORAMINAL_NARROWING.annotated_on.value == "Sagittal T1"
    assert Condition.LEFT_SUBARTICULAR_STENOSIS.annotated_on.value == "Axial T2"
    assert SeriesDescription("Sagittal T2/STIR").is_sagittal


def test_severities():
    assert [s.value for s in Severity] == ["Normal/Mild", "Moderate", "Severe"]
    assert [s.column for s in Severity] == ["normal_mild", "moderate", "severe"]
    assert [s.weight for s in Severity] == [1.0, 2.0, 4.0]
    assert SUBMISSION_COLUMNS == ("row_id", "normal_mild", "moderate", "severe")
    with pytest.raises(ValueError, match="unknown severity 'Mild'"):
        Severity.parse("Mild")


def test_row_ids_round_trip():
    assert row_id(12345, Condition.SPINAL_CANAL_STENOSIS, Level.L3_L4) == (
        "12345_spinal_canal_stenosis_l3_l4"
    )
    ids = study_row_ids(44036939)
    assert len(ids) == 25 and len(set(ids)) == 25
    assert ids[0] == "44036939_spinal_canal_stenosis_l1_l2"
    for text in ids:
        study, condition, level = parse_row_id(text)
        assert row_id(study, condition, level) == text


@pytest.mark.parametrize(
    "bad",
    ["spinal_canal_stenosis_l1_l2", "12_spinal_canal_stenosis_l6_l7", "12_spinal_l1_l2", "x_y", "",
     None, 12, ["12_spinal_canal_stenosis_l1_l2"]],  # parsed ids are cached: unhashable too
)
def test_malformed_row_ids(bad):
    for _ in range(2):  # the second call is answered by the cache where there is one
        with pytest.raises(ValueError, match="malformed row_id"):
            parse_row_id(bad)
