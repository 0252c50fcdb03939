"""The competition's vocabulary: conditions, sides, levels, severities, series descriptions.

Every spelling the competition uses lives here once, and everything else is derived:

* ``train.csv`` columns are ``{condition}_{level}`` in lower case, e.g.
  ``left_neural_foraminal_narrowing_l4_l5``; the 25 columns come condition-major, level-minor
  (:data:`TARGET_COLUMNS`).
* ``train_label_coordinates.csv`` spells conditions in Title Case with spaces
  (``Left Neural Foraminal Narrowing``) and levels as ``L4/L5`` (:attr:`Condition.title`,
  :attr:`Level.title`).
* Submission row ids are ``{study_id}_{condition}_{level}`` (:func:`row_id`,
  :func:`parse_row_id`), with header ``row_id,normal_mild,moderate,severe``.
* Severity strings are ``Normal/Mild``, ``Moderate``, ``Severe``; the submission columns and
  the metric's sample weights (1, 2, 4) derive from them (:class:`Severity`).
* Series descriptions are ``Sagittal T1``, ``Sagittal T2/STIR``, ``Axial T2``
  (:class:`SeriesDescription`).
* Each family is graded from named crop views (``sag_t2``, ``sag_t1``, ``axial``:
  :data:`VIEWS`).
"""

from __future__ import annotations

import enum
import functools
import re


class Family(str, enum.Enum):
    """The three condition groups the official metric scores separately."""

    SPINAL = "spinal"
    FORAMINAL = "foraminal"
    SUBARTICULAR = "subarticular"


class Side(str, enum.Enum):
    """Patient side of a bilateral condition (patient left = DICOM +x direction)."""

    LEFT = "left"
    RIGHT = "right"


class SeriesDescription(str, enum.Enum):
    """The three ``series_description`` values of ``*_series_descriptions.csv``."""

    SAGITTAL_T1 = "Sagittal T1"
    SAGITTAL_T2 = "Sagittal T2/STIR"
    AXIAL_T2 = "Axial T2"

    @property
    def is_sagittal(self) -> bool:
        return self is not SeriesDescription.AXIAL_T2


class Condition(str, enum.Enum):
    """The five graded conditions, valued by their ``train.csv`` spelling."""

    SPINAL_CANAL_STENOSIS = "spinal_canal_stenosis"
    LEFT_NEURAL_FORAMINAL_NARROWING = "left_neural_foraminal_narrowing"
    RIGHT_NEURAL_FORAMINAL_NARROWING = "right_neural_foraminal_narrowing"
    LEFT_SUBARTICULAR_STENOSIS = "left_subarticular_stenosis"
    RIGHT_SUBARTICULAR_STENOSIS = "right_subarticular_stenosis"

    @property
    def title(self) -> str:
        """Spelling in ``train_label_coordinates.csv``, e.g. ``Left Subarticular Stenosis``."""
        return " ".join(word.capitalize() for word in self.value.split("_"))

    @property
    def family(self) -> Family:
        return _FAMILY_OF[self]

    @property
    def side(self) -> Side | None:
        """``None`` for the central spinal canal, else the patient side."""
        for side in Side:
            if self.value.startswith(side.value + "_"):
                return side
        return None

    @property
    def annotated_on(self) -> SeriesDescription:
        """The series type the condition's coordinates are annotated on (``docs/competition.md``)."""
        return _ANNOTATED_ON[self.family]

    @classmethod
    def from_title(cls, title: str) -> Condition:
        """Inverse of :attr:`title`; raises ``ValueError`` naming the accepted spellings."""
        for condition in cls:
            if condition.title == title:
                return condition
        msg = f"unknown condition {title!r}; expected one of {[c.title for c in cls]}"
        raise ValueError(msg)


_FAMILY_OF = {c: next(f for f in Family if f.value in c.value) for c in Condition}  # each names one
_ANNOTATED_ON = {
    Family.SPINAL: SeriesDescription.SAGITTAL_T2,
    Family.FORAMINAL: SeriesDescription.SAGITTAL_T1,
    Family.SUBARTICULAR: SeriesDescription.AXIAL_T2,
}


class Level(str, enum.Enum):
    """The five intervertebral levels, cranial to caudal, valued by their ``train.csv`` spelling."""

    L1_L2 = "l1_l2"
    L2_L3 = "l2_l3"
    L3_L4 = "l3_l4"
    L4_L5 = "l4_l5"
    L5_S1 = "l5_s1"

    @property
    def title(self) -> str:
        """Spelling in ``train_label_coordinates.csv``, e.g. ``L4/L5``."""
        return self.value.upper().replace("_", "/")

    @property
    def index(self) -> int:
        """0 for L1/L2 … 4 for L5/S1 (cranial to caudal)."""
        return list(Level).index(self)

    @classmethod
    def from_title(cls, title: str) -> Level:
        for level in cls:
            if level.title == title:
                return level
        msg = f"unknown level {title!r}; expected one of {[lv.title for lv in cls]}"
        raise ValueError(msg)


class Severity(str, enum.Enum):
    """The three grades, valued by their ``train.csv`` spelling."""

    NORMAL_MILD = "Normal/Mild"
    MODERATE = "Moderate"
    SEVERE = "Severe"

    @property
    def column(self) -> str:
        """Submission column name: ``normal_mild``, ``moderate`` or ``severe``."""
        return self.value.replace("/", "_").lower()

    @property
    def index(self) -> int:
        """Class index used by models: 0, 1, 2."""
        return list(Severity).index(self)

    @property
    def weight(self) -> float:
        """The metric's sample weight for a row whose true grade is this one: 1, 2 or 4."""
        return float(2**self.index)

    @classmethod
    def parse(cls, text: str) -> Severity:
        for severity in cls:
            if severity.value == text:
                return severity
        msg = f"unknown severity {text!r}; expected one of {[s.value for s in cls]}"
        raise ValueError(msg)


CONDITIONS: tuple[Condition, ...] = tuple(Condition)
LEVELS: tuple[Level, ...] = tuple(Level)
SEVERITIES: tuple[Severity, ...] = tuple(Severity)
PROBABILITY_COLUMNS: tuple[str, ...] = tuple(s.column for s in Severity)
SAMPLE_WEIGHTS: tuple[float, ...] = tuple(s.weight for s in Severity)
SUBMISSION_COLUMNS: tuple[str, ...] = ("row_id", *PROBABILITY_COLUMNS)
VIEWS: dict[str, tuple[str, ...]] = {
    "spinal": ("sag_t2", "axial"),
    "foraminal": ("sag_t1",),
    "subarticular": ("axial",),
}
"""Family (:class:`Family` value) → the crop views its samples are graded from, in order: the
crop cache's keys (:mod:`rsna_lumbar.crops`) and the severity models' inputs."""


def target_column(condition: Condition, level: Level) -> str:
    """``train.csv`` column of one (condition, level), e.g. ``spinal_canal_stenosis_l1_l2``."""
    return f"{condition.value}_{level.value}"


TARGETS: tuple[tuple[Condition, Level], ...] = tuple((c, lv) for c in Condition for lv in Level)
TARGET_COLUMNS: tuple[str, ...] = tuple(target_column(c, lv) for c, lv in TARGETS)
"""The 25 label columns of ``train.csv`` in the file's order (condition-major)."""


_TARGET_OF_COLUMN: dict[str, tuple[Condition, Level]] = dict(zip(TARGET_COLUMNS, TARGETS))


def parse_target_column(column: str) -> tuple[Condition, Level]:
    """Inverse of :func:`target_column`; raises ``ValueError`` on an unknown column."""
    try:
        return _TARGET_OF_COLUMN[column]
    except (KeyError, TypeError):
        msg = f"unknown label column {column!r}; expected one of the 25 train.csv targets"
        raise ValueError(msg) from None


def row_id(study_id: int, condition: Condition, level: Level) -> str:
    """Submission row id ``{study_id}_{condition}_{level}``."""
    return f"{int(study_id)}_{target_column(condition, level)}"


def study_row_ids(study_id: int) -> list[str]:
    """The 25 row ids of one study, in :data:`TARGETS` order."""
    return [row_id(study_id, c, lv) for c, lv in TARGETS]


_ROW_ID = re.compile(r"^(\d+)_([a-z0-9_]+)$")


def parse_row_id(text: str) -> tuple[int, Condition, Level]:
    """Split ``{study_id}_{condition}_{level}`` into its parts.

    Raises:
        ValueError: naming the malformed id and the expected form.
    """
    return _parse_row_id_cached(text) if isinstance(text, str) else _parse_row_id(text)


def _parse_row_id(text) -> tuple[int, Condition, Level]:
    match = _ROW_ID.match(str(text))
    if match is None:
        msg = f"malformed row_id {text!r}; expected '{{study_id}}_{{condition}}_{{level}}'"
        raise ValueError(msg)
    try:
        condition, level = parse_target_column(match.group(2))
    except ValueError:
        msg = (
            f"malformed row_id {text!r}: {match.group(2)!r} is not one of the 25 "
            "'{condition}_{level}' targets"
        )
        raise ValueError(msg) from None
    return int(match.group(1)), condition, level


# the metric parses the same row ids at every call of a weight fit
_parse_row_id_cached = functools.lru_cache(maxsize=1 << 16)(_parse_row_id)
