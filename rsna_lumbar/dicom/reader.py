"""Decode stacks into Volumes: pixels (S, R, C) float32 with their patient affine.

Per slice: ``stored × RescaleSlope + RescaleIntercept`` (1 and 0 when absent). A MONOCHROME1
stack (low values displayed bright) is inverted over the whole stack, ``v → min + max − v``, so
every Volume reads "bright = high signal" and keeps its value range. Uncompressed little-endian
pixel data is read straight from the file at the offset the header index recorded (masked or
sign-extended to BitsStored exactly as pydicom does), so the header is parsed once per file;
everything else goes through ``Dataset.pixel_array`` and therefore pydicom's decoders and the
installed pylibjpeg plugins (JPEG, JPEG-LS, JPEG 2000; RLE is native).

A slice that cannot be decoded is zero-filled and recorded as ``DECODE_FAILED`` (policy
``warn``/``skip``) or raises :class:`~rsna_lumbar.dicom.errors.DecodeError` (``raise``); a stack
whose every slice fails raises regardless, since nothing usable is left.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rsna_lumbar.dicom.errors import DicomReadError, Issue, IssueCode, ReadPolicy, report
from rsna_lumbar.dicom.index import index_series
from rsna_lumbar.dicom.stacks import Stack, build_stacks
from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.parallel import ordered_map

_LOG = logging.getLogger(__name__)
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_INT_TYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4",
              (32, 1): "<i4"}  # fmt: skip


def _fix_bits(values: np.ndarray, bits: int, stored: int, signed: int) -> np.ndarray:
    """Mask unsigned / sign-extend signed values to BitsStored, as pydicom does."""
    if stored >= bits:
        return values
    shift = bits - stored
    return (values << shift) >> shift if signed else values & ((1 << stored) - 1)


def _raw_values(path: Path, h: dict) -> np.ndarray | None:
    """Stored values (R, C) read at the offset the header index recorded, or None when the
    slice needs pydicom (compressed, big endian, multi-frame, colour, or no offset known)."""
    bits, signed = int(h.get("bits_allocated", 0)), int(h.get("pixel_representation", 0))
    dtype = _INT_TYPES.get((bits, signed))
    if (h.get("transfer_syntax") not in _NATIVE_LE or dtype is None
            or int(h.get("pixel_offset", -1)) < 0 or int(h.get("frames", 1)) != 1
            or int(h.get("samples_per_pixel", 1)) != 1):  # fmt: skip
        return None
    rows, cols = int(h["rows"]), int(h["columns"])
    size = rows * cols * bits // 8
    if int(h["pixel_length"]) < size:
        msg = f"pixel data has {h['pixel_length']} bytes, {rows}×{cols}×{bits // 8} expected"
        raise ValueError(msg)
    with open(path, "rb") as handle:
        handle.seek(int(h["pixel_offset"]))
        buffer = handle.read(size)
    if len(buffer) < size:
        msg = f"truncated: {len(buffer)} of {size} pixel bytes present"
        raise ValueError(msg)
    values = np.frombuffer(buffer, dtype=dtype).reshape(rows, cols)
    return _fix_bits(values, bits, int(h.get("bits_stored", bits)), signed)


def _dataset_values(ds: pydicom.Dataset) -> np.ndarray:
    """Stored values (R, C) of a parsed single-frame greyscale dataset."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    bits, signed = int(ds.BitsAllocated), int(ds.get("PixelRepresentation", 0))
    dtype = _INT_TYPES.get((bits, signed))
    if syntax in _NATIVE_LE and dtype is not None and int(ds.get("NumberOfFrames", 1) or 1) == 1:
        rows, cols = int(ds.Rows), int(ds.Columns)
        raw = ds.PixelData
        if len(raw) >= rows * cols * bits // 8 and ds.get("SamplesPerPixel", 1) == 1:
            values = np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(rows, cols)
            return _fix_bits(values, bits, int(ds.get("BitsStored", bits)), signed)
    return ds.pixel_array


def _number(value, default: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return default
    return value if np.isfinite(value) else default


def decode_slice(path: str | os.PathLike, header: dict | None = None) -> tuple[np.ndarray, dict]:
    """Stored values (R, C) of one file and the header fields needed to rescale them.

    With ``header`` (a Stack's per-slice :data:`~.stacks.DECODE_FIELDS`) uncompressed
    little-endian pixels are read straight at the indexed offset; otherwise the file is parsed
    with pydicom and decoded through its decoders/plugins.
    """
    path = Path(path)
    values = _raw_values(path, header) if header else None
    if values is not None:
        return values, header
    ds = pydicom.dcmread(path)
    fields = {"rescale_slope": ds.get("RescaleSlope", 1.0),
              "rescale_intercept": ds.get("RescaleIntercept", 0.0),
              "photometric": str(ds.get("PhotometricInterpretation", "MONOCHROME2"))}
    return _dataset_values(ds), fields


def read_stack(
    stack: Stack, root: str | os.PathLike = ".", policy: ReadPolicy | str = ReadPolicy.WARN
) -> Volume:
    """Decode every slice of ``stack`` (paths relative to ``root``) into a :class:`Volume`.

    Raises:
        DecodeError: every slice failed, or one failed under policy ``raise``.
    """
    root = Path(root)
    pixels = np.zeros((stack.n_slices, stack.rows, stack.columns), dtype=np.float32)
    issues = list(stack.issues)
    photometric = set()
    failed = 0
    headers = stack.headers or ({},) * stack.n_slices
    for k, (rel, header) in enumerate(zip(stack.paths, headers)):
        try:
            values, fields = decode_slice(root / rel, header)
            if values.shape != pixels.shape[1:]:
                msg = f"decoded shape {values.shape} differs from the header's {pixels.shape[1:]}"
                raise ValueError(msg)
        except Exception as exc:
            failed += 1
            issue = Issue(IssueCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}; slice "
                          "zero-filled. Install pylibjpeg plugins for compressed data, or "
                          "re-copy the file", stack.study_id, stack.series_id, rel)  # fmt: skip
            issues.append(report(issue, policy))
            continue
        pixels[k] = values
        slope = _number(fields.get("rescale_slope"), 1.0)
        intercept = _number(fields.get("rescale_intercept"), 0.0)
        if slope != 1.0:
            pixels[k] *= np.float32(slope)
        if intercept != 0.0:
            pixels[k] += np.float32(intercept)
        photometric.add(str(fields.get("photometric", "")))
    if failed == stack.n_slices:
        issue = Issue(IssueCode.DECODE_FAILED, f"none of the {failed} slices could be decoded",
                      stack.study_id, stack.series_id)  # fmt: skip
        raise DicomReadError(issue)
    if "MONOCHROME1" in photometric:
        pixels = np.float32(pixels.min() + pixels.max()) - pixels
    return Volume(
        pixels=pixels, affine=stack.affine, study_id=stack.study_id, series_id=stack.series_id,
        description=stack.description, instance_numbers=stack.instance_numbers.copy(),
        stack_index=stack.stack_index, issues=tuple(issues),
    )  # fmt: skip


def _read_task(args: tuple) -> tuple[Volume | None, list[Issue]]:
    stack, root, policy = args
    try:
        return read_stack(stack, root, policy), []
    except DicomReadError as exc:
        return None, [exc.issue]


def read_volumes(
    stacks: Iterable[Stack],
    root: str | os.PathLike = ".",
    *,
    workers: int | None = None,
    policy: ReadPolicy | str = ReadPolicy.WARN,
    progress: bool = False,
) -> Iterator[tuple[Stack, Volume | None, list[Issue]]]:
    """Decode many stacks; yields ``(stack, volume or None, issues)`` in input order.

    A stack that cannot be read yields ``None`` and its issues (policy ``raise`` re-raises).
    ``workers=None`` picks the pool only where it pays: all cores when some slice needs a
    codec (compressed transfer syntax), else this process, since a raw read is cheaper than
    sending the float32 volume back from a worker. 1 forces in-process, N a pool of N.
    """
    stacks = list(stacks)
    tasks = [(stack, Path(root), ReadPolicy.parse(policy)) for stack in stacks]
    if workers is None:
        compressed = any(h.get("transfer_syntax") not in _NATIVE_LE
                         for stack in stacks for h in (stack.headers or ({},)))  # fmt: skip
        workers = (os.cpu_count() or 1) if compressed else 1
    results = ordered_map(_read_task, tasks, workers=workers, desc="volumes", unit="stack",
                          progress=progress)  # fmt: skip
    for stack, (volume, issues) in zip(stacks, results):
        for issue in issues:
            report(issue, policy)
        yield stack, volume, issues


def load_series(
    folder: str | os.PathLike,
    *,
    study_id: int = -1,
    series_id: int = -1,
    description: str = "",
    policy: ReadPolicy | str = ReadPolicy.WARN,
) -> list[Volume]:
    """Read a folder of DICOM slices into Volumes, one per stack (library entry point).

    Bad files are reported and left out under ``warn``/``skip``; under ``raise`` the first
    problem raises. An empty or unusable folder gives ``[]`` (or raises under ``raise``).
    """
    folder = Path(folder)
    rows, issues = index_series(folder, folder, study_id, series_id)
    for issue in issues:
        report(issue, policy)
    if not rows:
        return []
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["series_description"] = description
    return [read_stack(stack, folder, policy) for stack in build_stacks(frame)]


def load_stacks(stacks: Sequence[Stack], root: str | os.PathLike, **kwargs) -> list[Volume]:
    """Volumes of the stacks that could be read (others reported and skipped)."""
    return [volume for _, volume, _ in read_volumes(stacks, root, **kwargs) if volume is not None]
