"""Typed reading issues, the exceptions that carry them, and the raise/warn/skip read policy.

Every problem met while indexing or decoding a split is an :class:`Issue` that names the study,
series and file, so a log line or a row of ``work/index/{split}_issues.csv`` is enough to find
the offending data. A :class:`ReadPolicy` decides what happens next, like pydicom's
``reading_validation_mode``:

* ``raise``: stop with a :class:`DicomReadError` (strict; for tests and debugging),
* ``warn``: log a warning, record the issue, skip what cannot be used (the default),
* ``skip``: record the issue and log it at debug level only.

Issues of severity ``info`` (e.g. instance-number gaps, which are harmless once slices are
ordered by position) are recorded and logged at debug level; they never raise.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import asdict, dataclass

_LOG = logging.getLogger("rsna_lumbar.dicom")


class IssueCode(str, enum.Enum):
    """What went wrong; the value is the spelling used in issue tables."""

    UNREADABLE_FILE = "unreadable_file"  # truncated, not DICOM, or pydicom cannot parse it
    MISSING_TAG = "missing_tag"  # a required geometry tag is absent: the file is unusable
    MISSING_OPTIONAL_TAG = "missing_optional_tag"  # SliceThickness etc.; value inferred
    DECODE_FAILED = "decode_failed"  # header fine, pixel data cannot be decoded
    EMPTY_SERIES = "empty_series"  # a series folder without a usable file
    MISSING_SERIES = "missing_series"  # listed in the CSV, absent on disk
    UNLISTED_SERIES = "unlisted_series"  # on disk, absent from the CSV
    MULTIPLE_STACKS = "multiple_stacks"  # one series holds several orientations/shapes/blocks
    MIXED_SHAPES = "mixed_shapes"  # slices of one series differ in Rows/Columns
    DUPLICATE_POSITIONS = "duplicate_positions"  # two slices at the same place; extras dropped
    SLICE_GAP = "slice_gap"  # positions jump by more than 1.5× the usual step: stack split
    UNEVEN_SPACING = "uneven_spacing"  # steps vary by more than the tolerance, no gap
    INSTANCE_GAP = "instance_gap"  # InstanceNumbers not contiguous (harmless)
    NO_AXIAL = "no_axial"  # a study without any axial stack
    MISSING_POINT = "missing_point"  # a label refers to an instance absent from the index


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_SEVERITY = {
    IssueCode.INSTANCE_GAP: Severity.INFO,
    IssueCode.MISSING_OPTIONAL_TAG: Severity.INFO,
    IssueCode.UNEVEN_SPACING: Severity.INFO,
    IssueCode.MULTIPLE_STACKS: Severity.WARNING,
    IssueCode.MIXED_SHAPES: Severity.WARNING,
    IssueCode.DUPLICATE_POSITIONS: Severity.WARNING,
    IssueCode.SLICE_GAP: Severity.WARNING,
    IssueCode.UNLISTED_SERIES: Severity.WARNING,
    IssueCode.NO_AXIAL: Severity.WARNING,
}


@dataclass(frozen=True)
class Issue:
    """One recorded problem. ``study_id``/``series_id`` are -1 when unknown, ``path`` may be ''."""

    code: IssueCode
    message: str
    study_id: int = -1
    series_id: int = -1
    path: str = ""

    @property
    def severity(self) -> Severity:
        return _SEVERITY.get(self.code, Severity.ERROR)

    def where(self) -> str:
        parts = [f"study {self.study_id}", f"series {self.series_id}"]
        if self.path:
            parts.append(f"file {self.path}")
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.where()}: {self.message}"

    def as_row(self) -> dict:
        row = asdict(self)
        row["code"] = self.code.value
        row["severity"] = self.severity.value
        return row


ISSUE_COLUMNS: tuple[str, ...] = ("study_id", "series_id", "path", "code", "severity", "message")


class DicomReadError(Exception):
    """A DICOM file, series or study cannot be used; ``issue`` says which and why."""

    def __init__(self, issue: Issue):
        super().__init__(str(issue))
        self.issue = issue


class UnreadableFileError(DicomReadError):
    """Truncated, non-DICOM or unparsable file. Re-copy it or delete it from the split."""


class MissingTagError(DicomReadError):
    """A tag needed for geometry (ImagePositionPatient, ImageOrientationPatient, …) is absent."""


class DecodeError(DicomReadError):
    """Pixel data present but not decodable (missing codec plugin or corrupt stream)."""


class SeriesError(DicomReadError):
    """A whole series is unusable: empty folder, absent from disk, no stack."""


class StudyError(DicomReadError):
    """A study lacks something a stage needs, e.g. an axial series for registration."""


_EXCEPTION = {
    IssueCode.UNREADABLE_FILE: UnreadableFileError,
    IssueCode.MISSING_TAG: MissingTagError,
    IssueCode.DECODE_FAILED: DecodeError,
    IssueCode.EMPTY_SERIES: SeriesError,
    IssueCode.MISSING_SERIES: SeriesError,
    IssueCode.NO_AXIAL: StudyError,
}


def exception_for(issue: Issue) -> DicomReadError:
    """The typed exception that carries ``issue``."""
    return _EXCEPTION.get(issue.code, DicomReadError)(issue)


class ReadPolicy(str, enum.Enum):
    """What to do with an issue of severity warning or error."""

    RAISE = "raise"
    WARN = "warn"
    SKIP = "skip"

    @classmethod
    def parse(cls, value: str | ReadPolicy) -> ReadPolicy:
        try:
            return cls(value)
        except ValueError:
            msg = f"unknown read policy {value!r}; use one of {[p.value for p in cls]}"
            raise ValueError(msg) from None


def report(issue: Issue, policy: ReadPolicy | str = ReadPolicy.WARN) -> Issue:
    """Apply ``policy`` to ``issue``: raise it, log it, or keep it quiet. Returns the issue.

    Only ``error``-severity issues raise under ``raise``; warnings are logged, info is debug.
    """
    policy = ReadPolicy.parse(policy)
    if issue.severity is Severity.ERROR and policy is ReadPolicy.RAISE:
        raise exception_for(issue)
    if issue.severity is Severity.INFO or policy is ReadPolicy.SKIP:
        _LOG.debug("%s", issue)
    else:
        _LOG.warning("%s", issue)
    return issue
