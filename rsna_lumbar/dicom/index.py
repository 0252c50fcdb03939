"""Header index: one header-only pass over a split → a per-instance table (CSV).

``index_split(data, "train")`` reads every ``{split}_images/{study}/{series}/*.dcm`` with the
pixel data deferred (never read; its declared length is only compared with the file size to
catch truncated copies) on all cores, and returns one row per readable instance:

=========================  =================================================================
column                     meaning
=========================  =================================================================
study_id, series_id        from the folder names (int)
series_description         from ``{split}_series_descriptions.csv`` ('' when unlisted)
instance_number            the header's InstanceNumber (file stem if the tag is absent)
path                       file path relative to the data folder (POSIX)
ipp_x, ipp_y, ipp_z        ImagePositionPatient, LPS mm (centre of pixel (0, 0))
iop_0 … iop_5              ImageOrientationPatient (row cosine, then column cosine)
row_spacing, col_spacing   PixelSpacing [0] (between rows) and [1] (between columns), mm
slice_thickness            SliceThickness mm (NaN when absent)
spacing_between_slices     SpacingBetweenSlices mm (NaN when absent; never used for geometry)
rows, columns              Rows, Columns
photometric                PhotometricInterpretation
transfer_syntax            TransferSyntaxUID
rescale_slope/intercept    RescaleSlope / RescaleIntercept (1 and 0 when absent)
bits_allocated, …          BitsAllocated, BitsStored, PixelRepresentation, SamplesPerPixel,
                           NumberOfFrames (``frames``)
pixel_offset, _length      byte offset and length of the PixelData value (-1 when
                           encapsulated/compressed); lets the reader fetch raw pixels directly
=========================  =================================================================

Problems are :class:`~rsna_lumbar.dicom.errors.Issue` s (see ``ISSUE_COLUMNS``): unreadable or
truncated files, missing geometry tags, empty series folders, series listed in the CSV but
absent on disk and the reverse. None is fatal for the split under the ``warn``/``skip`` policy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from rsna_lumbar.atomic import write_csv, write_text
from rsna_lumbar.dicom.errors import ISSUE_COLUMNS, Issue, IssueCode, ReadPolicy, report
from rsna_lumbar.parallel import ordered_map
from rsna_lumbar.provenance import data_fingerprint

_LOG = logging.getLogger(__name__)

INDEX_COLUMNS: tuple[str, ...] = (
    "study_id", "series_id", "series_description", "instance_number", "path",
    "ipp_x", "ipp_y", "ipp_z", "iop_0", "iop_1", "iop_2", "iop_3", "iop_4", "iop_5",
    "row_spacing", "col_spacing", "slice_thickness", "spacing_between_slices",
    "rows", "columns", "photometric", "transfer_syntax", "rescale_slope", "rescale_intercept",
    "bits_allocated", "bits_stored", "pixel_representation", "samples_per_pixel", "frames",
    "pixel_offset", "pixel_length",
)  # fmt: skip
INDEX_SCHEMA = 1  # bump when index_split's rows change for the same files: old indexes rebuild
IPP_COLUMNS = ("ipp_x", "ipp_y", "ipp_z")
IOP_COLUMNS = tuple(f"iop_{i}" for i in range(6))

_TAGS = [
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "SpacingBetweenSlices", "Rows", "Columns", "PhotometricInterpretation",
    "RescaleSlope", "RescaleIntercept", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "SamplesPerPixel", "NumberOfFrames", "PixelData",
]  # fmt: skip
_REQUIRED = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF


_KEYWORD_TAG = {kw: pydicom.datadict.tag_for_keyword(kw) for kw in _TAGS}
_US = {"Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"}
_MULTI = {"ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"}


def _value(ds: pydicom.Dataset, keyword: str):
    """A header value parsed straight from its raw bytes (about 5× cheaper than pydicom's
    element conversion): US → int, CS → str, DS/IS → float or list of floats; None if absent
    or empty. Values pydicom has already converted are returned as pydicom gives them."""
    element = ds.get_item(_KEYWORD_TAG[keyword], keep_deferred=True)
    if element is None:
        return None
    raw = element.value
    if not isinstance(raw, bytes):  # converted already (or deferred): use pydicom's value
        raw = ds.get(keyword)
        return None if raw in (None, "") else raw
    if keyword in _US:
        order = "little" if element.is_little_endian else "big"
        return int.from_bytes(raw[:2], order) if len(raw) >= 2 else None
    text = raw.decode("ascii", "replace").strip("\x00 ")
    if keyword == "PhotometricInterpretation" or not text:
        return text or None
    numbers = [float(part) for part in text.split("\\")]
    return numbers if keyword in _MULTI else numbers[0]


def _or(value, default: float) -> float:
    return default if value is None else float(value)


def read_header(path: Path, root: Path, study_id: int = -1, series_id: int = -1) -> dict:
    """Header row of one file (see module table); pixel data is not read.

    Raises:
        UnreadableFileError / MissingTagError (via :func:`report` with policy ``raise``).
    """
    rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def fail(code: IssueCode, message: str):
        report(Issue(code, message, study_id, series_id, rel), ReadPolicy.RAISE)

    try:
        ds = pydicom.dcmread(path, defer_size=1024, specific_tags=_TAGS)
        values = {keyword: _value(ds, keyword) for keyword in _TAGS[:-1]}
    except Exception as exc:  # pydicom raises many types for damaged files
        fail(IssueCode.UNREADABLE_FILE, f"not a readable DICOM file ({exc}); re-copy or delete it")
    missing = [tag for tag in _REQUIRED if values[tag] is None]
    if missing:
        fail(IssueCode.MISSING_TAG, f"missing {', '.join(missing)}; the slice cannot be placed")
    pixel = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if pixel is None:
        fail(IssueCode.UNREADABLE_FILE, "no PixelData element (truncated or not an image)")
    size = path.stat().st_size
    tell = getattr(pixel, "value_tell", None)
    if pixel.length != _UNDEFINED_LENGTH and tell is not None and tell + pixel.length > size:
        fail(
            IssueCode.UNREADABLE_FILE,
            f"truncated: pixel data needs {pixel.length} bytes but the file ends "
            f"{size - tell} bytes after its start; re-copy the file",
        )
    instance = values["InstanceNumber"]
    if instance is None:
        instance = int(path.stem) if path.stem.isdigit() else -1
    ipp, iop, spacing = (list(np.ravel(values[k])) for k in ("ImagePositionPatient",
                         "ImageOrientationPatient", "PixelSpacing"))  # fmt: skip
    if len(ipp) != 3 or len(iop) != 6 or len(spacing) != 2:
        fail(IssueCode.MISSING_TAG, f"malformed geometry IPP={ipp} IOP={iop} spacing={spacing}")
    bits = int(_or(values["BitsAllocated"], 16))
    encapsulated = pixel.length == _UNDEFINED_LENGTH or tell is None
    return {
        "study_id": study_id, "series_id": series_id, "series_description": "",
        "instance_number": int(instance), "path": rel,
        "ipp_x": float(ipp[0]), "ipp_y": float(ipp[1]), "ipp_z": float(ipp[2]),
        **{f"iop_{i}": float(iop[i]) for i in range(6)},
        "row_spacing": float(spacing[0]), "col_spacing": float(spacing[1]),
        "slice_thickness": _or(values["SliceThickness"], float("nan")),
        "spacing_between_slices": _or(values["SpacingBetweenSlices"], float("nan")),
        "rows": int(values["Rows"]), "columns": int(values["Columns"]),
        "photometric": str(values["PhotometricInterpretation"] or ""),
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
        "rescale_slope": _or(values["RescaleSlope"], 1.0),
        "rescale_intercept": _or(values["RescaleIntercept"], 0.0),
        "bits_allocated": bits,
        "bits_stored": int(_or(values["BitsStored"], bits)),
        "pixel_representation": int(_or(values["PixelRepresentation"], 0)),
        "samples_per_pixel": int(_or(values["SamplesPerPixel"], 1)),
        "frames": int(_or(values["NumberOfFrames"], 1)),
        "pixel_offset": -1 if encapsulated else int(tell),
        "pixel_length": -1 if pixel.length == _UNDEFINED_LENGTH else int(pixel.length),
    }  # fmt: skip


def index_series(
    folder: Path, root: Path, study_id: int, series_id: int
) -> tuple[list[dict], list[Issue]]:
    """Header rows of one series folder, plus the issues met (never raises for bad files)."""
    rows, issues = [], []
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for path in files:
        try:
            rows.append(read_header(path, root, study_id, series_id))
        except Exception as exc:
            issue = getattr(exc, "issue", None)
            issues.append(issue or Issue(IssueCode.UNREADABLE_FILE, str(exc), study_id, series_id,
                                         str(path)))  # fmt: skip
    if not rows:
        what = "no files" if not files else f"none of its {len(files)} files is usable"
        where = folder.relative_to(root) if folder.is_relative_to(root) else folder
        issues.append(Issue(IssueCode.EMPTY_SERIES, f"series folder has {what}", study_id,
                            series_id, where.as_posix()))  # fmt: skip
    elif any(np.isnan(r["slice_thickness"]) for r in rows):
        issues.append(Issue(IssueCode.MISSING_OPTIONAL_TAG, "SliceThickness absent on some files",
                            study_id, series_id))  # fmt: skip
    return rows, issues


def _index_task(args: tuple) -> tuple[list[dict], list[Issue]]:
    return index_series(*args)


@dataclass
class IndexResult:
    """The per-instance table (columns :data:`INDEX_COLUMNS`) and the issues of the pass."""

    frame: pd.DataFrame
    issues: list[Issue]


def read_descriptions(path: Path) -> pd.DataFrame:
    """``{split}_series_descriptions.csv``, validated by :mod:`rsna_lumbar.tables`."""
    from rsna_lumbar.tables import read_series_descriptions

    return read_series_descriptions(path)


def _series_on_disk(images: Path) -> tuple[dict[tuple[int, int], Path], list[Issue]]:
    found, issues = {}, []
    if not images.is_dir():
        return found, issues
    for study in sorted(images.iterdir()):
        for series in sorted(study.iterdir()) if study.is_dir() else []:
            if not (study.name.isdigit() and series.name.isdigit() and series.is_dir()):
                issues.append(Issue(IssueCode.UNREADABLE_FILE, "not a {study}/{series} folder of "
                                    "digits; ignored", path=str(series)))  # fmt: skip
                continue
            found[int(study.name), int(series.name)] = series
    return found, issues


def index_split(
    data: str | os.PathLike,
    split: str,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> IndexResult:
    """Index every DICOM header of ``{data}/{split}_images`` (see the module docstring).

    Args:
        data: the competition folder.
        split: ``train`` or ``test`` (any name whose ``{split}_images`` folder exists).
        workers: processes; default all cores, 1 reads in this process.
        progress: show a tqdm bar over series.
    """
    root = Path(data)
    images = root / f"{split}_images"
    csv_path = root / f"{split}_series_descriptions.csv"
    if not images.is_dir() and not csv_path.is_file():
        msg = (f"neither {images} nor {csv_path} exists; pass the competition folder as --data "
               f"and a split that it contains (train or test)")  # fmt: skip
        raise FileNotFoundError(msg)
    on_disk, issues = _series_on_disk(images)
    listed = read_descriptions(csv_path) if csv_path.is_file() else pd.DataFrame(
        columns=["study_id", "series_id", "series_description"])  # fmt: skip
    descriptions = {(int(r.study_id), int(r.series_id)): str(r.series_description)
                    for r in listed.itertuples()}  # fmt: skip
    for key in descriptions.keys() - on_disk.keys():
        issues.append(Issue(IssueCode.MISSING_SERIES, f"listed in {csv_path.name} but "
                            f"{images / str(key[0]) / str(key[1])} does not exist", *key))
    for key in on_disk.keys() - descriptions.keys():
        issues.append(Issue(IssueCode.UNLISTED_SERIES, f"not in {csv_path.name}; description "
                            "left empty", *key))  # fmt: skip
    tasks = [(folder, root, *key) for key, folder in sorted(on_disk.items())]
    rows = []
    results = ordered_map(_index_task, tasks, workers=workers, desc="index", unit="series",
                          progress=progress, chunksize=4, min_tasks=4)  # fmt: skip
    for series_rows, series_issues in results:
        rows.extend(series_rows)
        issues.extend(series_issues)
    frame = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    frame["series_description"] = [
        descriptions.get((s, r), "") for s, r in zip(frame.study_id, frame.series_id)
    ]
    frame = frame.sort_values(["study_id", "series_id", "instance_number", "path"])
    for issue in issues:
        report(issue, ReadPolicy.WARN)
    return IndexResult(frame.reset_index(drop=True), issues)


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """Load an index CSV written by :func:`write_index` with its column types."""
    frame = pd.read_csv(path, dtype={"series_description": str, "path": str, "photometric": str,
                                     "transfer_syntax": str}, keep_default_na=False,
                        na_values={c: ["", "nan", "NaN"] for c in ("slice_thickness",
                                   "spacing_between_slices")})  # fmt: skip
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        msg = f"{path} is not an index table (missing {missing}); rebuild it with --force"
        raise ValueError(msg)
    return frame[list(INDEX_COLUMNS)]


def issues_frame(issues: Iterable[Issue]) -> pd.DataFrame:
    """Issues as a table with columns :data:`~rsna_lumbar.dicom.errors.ISSUE_COLUMNS`."""
    return pd.DataFrame([i.as_row() for i in issues], columns=list(ISSUE_COLUMNS))


def index_paths(work: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """``(work/index/{split}.csv, work/index/{split}_issues.csv)``."""
    folder = Path(work) / "index"
    return folder / f"{split}.csv", folder / f"{split}_issues.csv"


def index_key(data: str | os.PathLike, split: str) -> dict:
    """What the index of ``split`` is made from, its cache key (``work/index/{split}.key.json``):
    the data folder's resolved path, :func:`~rsna_lumbar.provenance.data_fingerprint` of the
    split (its series-descriptions CSV bytes, its image files' names and sizes) and
    :data:`INDEX_SCHEMA`."""
    return {"data_folder": str(Path(data).resolve()),
            "data_fingerprint": data_fingerprint(data, split), "schema": INDEX_SCHEMA}


def _stale(key_path: Path, key: dict) -> str | None:
    """Why the index beside ``key_path`` was not made from ``key``; None when it was."""
    try:
        made = json.loads(key_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {key_path.name} says what it was made from"
    for name, what in (("data_folder", "another data folder"), ("data_fingerprint",
                       "other files (names, sizes or series descriptions changed)"),
                       ("schema", "an older version of the index")):  # fmt: skip
        if made.get(name) != key[name]:
            return f"it was made from {what}: {made.get(name)}"
    return None


def write_index(
    data: str | os.PathLike,
    split: str,
    work: str | os.PathLike = "work",
    *,
    force: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """The ``index`` stage: write ``work/index/{split}.csv`` (+ ``_issues.csv`` and
    ``.key.json``, see :func:`index_key`). An index made from the same key is reused; one made
    from another data folder, other files or an older schema is rebuilt (logged with the
    reason), never reused.

    Returns the index path. ``force`` rebuilds an index even when its key matches.
    """
    table, issues_path = index_paths(work, split)
    key_path = table.with_suffix(".key.json")
    key = index_key(data, split)
    if table.is_file() and not force:
        reason = _stale(key_path, key)
        if reason is None:
            _LOG.info("index %s was made from these files; reused (--force rebuilds)", table)
            return table
        _LOG.warning("index %s: rebuilding for %s, %s", table, Path(data), reason)
    result = index_split(data, split, workers=workers, progress=progress)
    key_path.unlink(missing_ok=True)  # the key goes last: an interrupted rebuild never matches
    write_csv(issues_frame(result.issues), issues_path)
    write_csv(result.frame, table)
    write_text(key_path, json.dumps(key, indent=1) + "\n")
    _LOG.info("indexed %d instances in %d series; %d issues → %s", len(result.frame),
              result.frame.groupby(["study_id", "series_id"]).ngroups, len(result.issues),
              issues_path)  # fmt: skip
    return table
