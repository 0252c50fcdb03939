"""Write one rendered series as DICOM files with pydicom: ``{series_dir}/{instance_number}.dcm``.

Every file is a valid MR Image Storage instance (file meta, explicit VR little endian) with
the geometry the pixels were rendered from: ImagePositionPatient, ImageOrientationPatient,
PixelSpacing ``[row, column]``, SliceThickness, SpacingBetweenSlices, Rows/Columns,
InstanceNumber; 16-bit unsigned MONOCHROME2 pixels. UIDs derive from the generator seed and the
ids (``pydicom.uid.generate_uid(entropy_srcs=...)``), and no date or time comes from the clock,
so the same seed writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from rsna_lumbar.geometry.affine import plane_normal
from rsna_lumbar.synth.series import SeriesPlan

_SEQUENCE_TIMING = {"T1": (550.0, 10.0, None), "T2": (3500.0, 100.0, None), "STIR": (4000.0, 50.0, 160.0)}


def _fmt(values) -> list[str]:
    return [f"{float(v):.6f}".rstrip("0").rstrip(".") if abs(float(v)) > 1e-9 else "0" for v in values]


# Elements that change from slice to slice, in tag order; everything else is encoded once per
# stack. (7FE0,0010) is written as OW, what pydicom resolves "OB or OW" to at 16 bits.
_PER_SLICE = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x00281050, 0x00281051, 0x7FE00010)


def _buffer() -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = False, True  # explicit VR little endian
    return fp


def _encode(ds: Dataset) -> bytes:
    """``ds``'s elements as ``dcmwrite`` encodes them (no preamble, no file meta)."""
    fp = _buffer()
    write_dataset(fp, ds)
    return fp.getvalue()


def _encode_element(elem) -> bytes:
    fp = _buffer()
    write_data_element(fp, elem)
    return fp.getvalue()


def _constant_runs(ds: Dataset) -> list[bytes]:
    """``ds`` encoded as ``len(_PER_SLICE) + 1`` runs: run ``i`` holds the elements whose tags
    lie between per-slice tags ``i - 1`` and ``i``. Joining the runs with the per-slice
    elements gives exactly what ``dcmwrite`` writes, since elements are written in tag order."""
    bounds = (-1, *_PER_SLICE, 0x1_0000_0000)
    runs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = Dataset()
        for elem in ds:
            if lo < elem.tag < hi:
                part.add(elem)
        runs.append(_encode(part))
    return runs


def _file_meta_bytes(meta: FileMetaDataset) -> bytes:
    fp = _buffer()
    write_file_meta_info(fp, meta, enforce_standard=True)
    return fp.getvalue()


def write_series(
    series_dir: Path,
    plan: SeriesPlan,
    stacks_pixels: list[np.ndarray],
    study_id: int,
    seed: int,
    series_number: int,
    rescale: bool,
) -> None:
    """Write every slice of ``plan`` (pixels per stack, each (S, R, C) uint16) into ``series_dir``.

    The bytes are those of pydicom's ``dcmwrite(..., enforce_file_format=True)`` of the full
    dataset; the elements shared by a stack's slices are encoded once, not per file.
    """
    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(entropy_srcs=[str(seed), str(study_id)])
    series_uid = generate_uid(entropy_srcs=[str(seed), str(study_id), str(plan.series_id)])
    frame_uid = generate_uid(entropy_srcs=[str(seed), str(study_id), "frame"])
    tr, te, ti = _SEQUENCE_TIMING[plan.sequence]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["rsna-lumbar-synth"])
    meta.ImplementationVersionName = "RSNA_LUMBAR_SYN"
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = "MR"
    ds.Manufacturer = "rsna-lumbar synthetic"
    ds.PatientID = str(study_id)
    ds.PatientName = f"SYNTH^{study_id}"
    ds.StudyID = str(study_id)[-8:]
    ds.StudyDate = "20240101"
    ds.SeriesDescription = plan.description.value
    ds.SeriesNumber = series_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
    ds.ScanningSequence = "SE" if plan.sequence != "STIR" else ["SE", "IR"]
    ds.RepetitionTime = tr
    ds.EchoTime = te
    if ti is not None:
        ds.InversionTime = ti
    ds.MagneticFieldStrength = 1.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if rescale:
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "0"
        ds.RescaleType = "US"
    for stack, pixels in zip(plan.stacks, stacks_pixels):
        normal = plane_normal(stack.orientation)
        ds.ImageOrientationPatient = _fmt(stack.orientation)
        ds.PixelSpacing = _fmt(stack.pixel_spacing)
        ds.SliceThickness = _fmt([stack.thickness])[0]
        ds.SpacingBetweenSlices = _fmt([stack.spacing])[0]
        ds.Rows, ds.Columns = int(stack.rows), int(stack.cols)
        runs = _constant_runs(ds)
        for k in range(len(stack.positions)):
            inst = int(stack.instances[k])
            sop_uid = generate_uid(entropy_srcs=[str(seed), str(plan.series_id), str(inst)])
            meta.MediaStorageSOPInstanceUID = sop_uid
            image = np.ascontiguousarray(pixels[k])
            sample = image[::4, ::4]
            one = Dataset()
            one.SOPInstanceUID = sop_uid
            one.InstanceNumber = inst
            one.ImagePositionPatient = _fmt(stack.positions[k])
            one.SliceLocation = _fmt([stack.positions[k] @ normal])[0]
            one.WindowCenter = int(np.percentile(sample, 60))
            one.WindowWidth = max(int(np.percentile(sample, 99.5)), 2)
            one.add_new(0x7FE00010, "OW", image.tobytes())
            parts = [b"\x00" * 128, b"DICM", _file_meta_bytes(meta), runs[0]]
            for elem, run in zip(one, runs[1:], strict=True):
                parts += [_encode_element(elem), run]
            (series_dir / f"{inst}.dcm").write_bytes(b"".join(parts))

