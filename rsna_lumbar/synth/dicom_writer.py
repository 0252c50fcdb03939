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
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from rsna_lumbar.geometry.affine import plane_normal
from rsna_lumbar.synth.series import SeriesPlan

_SEQUENCE_TIMING = {"T1": (550.0, 10.0, None), "T2": (3500.0, 100.0, None), "STIR": (4000.0, 50.0, 160.0)}


def _fmt(values) -> list[str]:
    return [f"{float(v):.6f}".rstrip("0").rstrip(".") if abs(float(v)) > 1e-9 else "0" for v in values]


def write_series(
    series_dir: Path,
    plan: SeriesPlan,
    stacks_pixels: list[np.ndarray],
    study_id: int,
    seed: int,
    series_number: int,
    rescale: bool,
) -> None:
    """Write every slice of ``plan`` (pixels per stack, each (S, R, C) uint16) into ``series_dir``."""
    series_dir.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(entropy_srcs=[str(seed), str(study_id)])
    series_uid = generate_uid(entropy_srcs=[str(seed), str(study_id), str(plan.series_id)])
    frame_uid = generate_uid(entropy_srcs=[str(seed), str(study_id), "frame"])
    tr, te, ti = _SEQUENCE_TIMING[plan.sequence]
    for stack, pixels in zip(plan.stacks, stacks_pixels):
        normal = plane_normal(stack.orientation)
        for k in range(len(stack.positions)):
            inst = int(stack.instances[k])
            sop_uid = generate_uid(entropy_srcs=[str(seed), str(plan.series_id), str(inst)])
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = generate_uid(entropy_srcs=["rsna-lumbar-synth"])
            meta.ImplementationVersionName = "RSNA_LUMBAR_SYN"
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop_uid
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
            ds.InstanceNumber = inst
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
            ds.ScanningSequence = "SE" if plan.sequence != "STIR" else ["SE", "IR"]
            ds.RepetitionTime = tr
            ds.EchoTime = te
            if ti is not None:
                ds.InversionTime = ti
            ds.MagneticFieldStrength = 1.5
            ds.ImagePositionPatient = _fmt(stack.positions[k])
            ds.ImageOrientationPatient = _fmt(stack.orientation)
            ds.SliceLocation = _fmt([stack.positions[k] @ normal])[0]
            ds.PixelSpacing = _fmt(stack.pixel_spacing)
            ds.SliceThickness = _fmt([stack.thickness])[0]
            ds.SpacingBetweenSlices = _fmt([stack.spacing])[0]
            ds.Rows, ds.Columns = int(stack.rows), int(stack.cols)
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
            image = np.ascontiguousarray(pixels[k])
            sample = image[::4, ::4]
            ds.WindowCenter = int(np.percentile(sample, 60))
            ds.WindowWidth = max(int(np.percentile(sample, 99.5)), 2)
            ds.PixelData = image.tobytes()
            ds.save_as(series_dir / f"{inst}.dcm", enforce_file_format=True)
