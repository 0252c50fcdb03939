"""Write small DICOM series with pydicom, with the geometry given explicitly.

A shared helper for tests (and benchmarks) that need DICOM files whose true answers are known:
the caller states every ``ImageOrientationPatient``, ``ImagePositionPatient``, ``PixelSpacing``,
``InstanceNumber`` and pixel value, so the expected world positions can be computed by hand.

Typical use::

    from tests.dicom_factory import SeriesSpec, write_series, parallel_positions

    iop = (0, 1, 0, 0, 0, -1)                      # sagittal
    ipp = parallel_positions((-20, -100, 80), iop, n=15, spacing=3.5)
    write_series(tmp_path / "images/1/2", SeriesSpec(orientation=iop, positions=ipp,
                 rows=64, columns=48, pixel_spacing=(0.8, 0.7)))

``write_split`` writes a whole competition-layout split (``{split}_images/…`` plus
``{split}_series_descriptions.csv``). Nothing here imports the code under test.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
COMPRESSED = (RLELossless, JPEG2000Lossless)


def rotation(axis: str, degrees: float) -> np.ndarray:
    """3×3 right-handed rotation about the LPS ``"x"``, ``"y"`` or ``"z"`` axis."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    i = "xyz".index(axis)
    j, k = (i + 1) % 3, (i + 2) % 3
    r = np.eye(3)
    r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
    return r


def rotate_orientation(orientation: Sequence[float], matrix: np.ndarray) -> tuple[float, ...]:
    """Apply a 3×3 rotation to both direction cosines of an ImageOrientationPatient."""
    iop = np.asarray(orientation, dtype=float)
    return tuple(np.concatenate([matrix @ iop[:3], matrix @ iop[3:]]).tolist())


def parallel_positions(
    first: Sequence[float], orientation: Sequence[float], n: int, spacing: float
) -> np.ndarray:
    """(n, 3) positions starting at ``first``, stepping ``spacing`` mm along row×column."""
    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    return np.asarray(first, dtype=float) + np.arange(n)[:, None] * spacing * normal


@dataclass
class SeriesSpec:
    """Everything one written series needs; positions are listed in the order they are written.

    Attributes:
        orientation: ImageOrientationPatient shared by all slices (or one per slice, (S, 6)).
        positions: (S, 3) ImagePositionPatient in LPS mm.
        rows, columns: image matrix (Rows, Columns).
        pixel_spacing: ``[row spacing, column spacing]`` mm.
        instance_numbers: one per slice (default 1..S in position order).
        pixels: (S, rows, columns) stored values (default: a ramp that encodes the slice and
            pixel index, see :func:`default_pixels`). Stored before rescale.
        transfer_syntax: any of ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless.
        photometric: ``MONOCHROME2`` or ``MONOCHROME1``.
        rescale: ``(slope, intercept)`` written as RescaleSlope/Intercept, or None to omit them.
        slice_thickness, spacing_between_slices: written when not None.
        file_names: one per slice (default ``{instance_number}.dcm``).
        description: SeriesDescription tag (the competition reads it from the CSV instead).
    """

    orientation: Sequence[float] | np.ndarray
    positions: np.ndarray
    rows: int = 32
    columns: int = 32
    pixel_spacing: Sequence[float] = (1.0, 1.0)
    instance_numbers: Sequence[int] | None = None
    pixels: np.ndarray | None = None
    transfer_syntax: str = ExplicitVRLittleEndian
    photometric: str = "MONOCHROME2"
    rescale: tuple[float, float] | None = None
    slice_thickness: float | None = 3.0
    spacing_between_slices: float | None = None
    file_names: Sequence[str] | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)


def default_pixels(n: int, rows: int, columns: int) -> np.ndarray:
    """uint16 (n, rows, columns) with value ``1000*s + 10*r + c`` modulo 65536: self-locating."""
    s, r, c = np.meshgrid(np.arange(n), np.arange(rows), np.arange(columns), indexing="ij")
    return ((1000 * s + 10 * r + c) % 65536).astype(np.uint16)


def _dataset(spec: SeriesSpec, k: int, study_uid: str, series_uid: str, ids: tuple) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.PatientID = str(ids[0])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(ids[0])
    ds.SeriesNumber = int(ids[1]) % 100000
    ds.SeriesDescription = spec.description
    orientation = np.asarray(spec.orientation, dtype=float)
    iop = orientation[k] if orientation.ndim == 2 else orientation
    ds.ImageOrientationPatient = [f"{v:.10g}" for v in iop]
    ds.ImagePositionPatient = [f"{v:.10g}" for v in np.asarray(spec.positions[k], float)]
    ds.PixelSpacing = [f"{v:.10g}" for v in spec.pixel_spacing]
    if spec.slice_thickness is not None:
        ds.SliceThickness = f"{spec.slice_thickness:.10g}"
    if spec.spacing_between_slices is not None:
        ds.SpacingBetweenSlices = f"{spec.spacing_between_slices:.10g}"
    if spec.rescale is not None:
        ds.RescaleSlope = f"{spec.rescale[0]:.10g}"
        ds.RescaleIntercept = f"{spec.rescale[1]:.10g}"
    numbers = spec.instance_numbers or range(1, len(spec.positions) + 1)
    ds.InstanceNumber = int(list(numbers)[k])
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    for key, value in spec.extra.items():
        setattr(ds, key, value)
    return ds


def write_series(
    folder: str | Path,
    spec: SeriesSpec,
    *,
    study_id: int = 1,
    series_id: int = 1,
) -> list[Path]:
    """Write one file per slice of ``spec`` into ``folder``; returns the paths in write order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    positions = np.asarray(spec.positions, dtype=float).reshape(-1, 3)
    n = len(positions)
    pixels = spec.pixels if spec.pixels is not None else default_pixels(n, spec.rows, spec.columns)
    numbers = list(spec.instance_numbers or range(1, n + 1))
    names = list(spec.file_names or [f"{num}.dcm" for num in numbers])
    study_uid, series_uid = generate_uid(), generate_uid()
    paths = []
    for k in range(n):
        ds = _dataset(spec, k, study_uid, series_uid, (study_id, series_id))
        ds.PixelData = np.ascontiguousarray(pixels[k], dtype=np.uint16).tobytes()
        if spec.transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(spec.transfer_syntax)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its size (a fraction) to simulate an interrupted copy."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@dataclass
class StudySpec:
    """One study of a competition split: ``{series_id: (description, SeriesSpec)}``."""

    study_id: int
    series: dict[int, tuple[str, SeriesSpec]]


def write_split(root: str | Path, split: str, studies: Sequence[StudySpec]) -> Path:
    """Write ``{root}/{split}_images/{study}/{series}/*.dcm`` and the series-descriptions CSV.

    Returns ``root``. Rows of the CSV follow the order given.
    """
    root = Path(root)
    rows = []
    for study in studies:
        for series_id, (description, spec) in study.series.items():
            folder = root / f"{split}_images" / str(study.study_id) / str(series_id)
            write_series(folder, spec, study_id=study.study_id, series_id=series_id)
            rows.append((study.study_id, series_id, description))
    write_descriptions(root, split, rows)
    return root


def write_descriptions(root: str | Path, split: str, rows: Sequence[tuple[int, int, str]]) -> Path:
    """Write ``{split}_series_descriptions.csv`` with the competition's header."""
    path = Path(root) / f"{split}_series_descriptions.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_id", "series_id", "series_description"])
        writer.writerows(rows)
    return path


def read_back(path: str | Path) -> Dataset:
    """``pydicom.dcmread`` shorthand for assertions on what was written."""
    return pydicom.dcmread(path)
