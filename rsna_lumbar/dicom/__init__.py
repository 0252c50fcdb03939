"""DICOM → geometry-true Volumes: header index, stacks, decoding, NIfTI export.

Reading order: :mod:`.index` (one header pass → per-instance table), :mod:`.stacks` (group,
sort by position, split, flag), :mod:`.reader` (decode a stack → :class:`Volume`),
:mod:`.volume` (pixels + LPS affine + provenance), :mod:`.nifti` (RAS export), :mod:`.errors`
(typed issues and the raise/warn/skip policy). Importing this package never imports torch;
nibabel is imported only by :mod:`.nifti`.
"""

from rsna_lumbar.dicom.errors import DicomReadError, Issue, IssueCode, ReadPolicy
from rsna_lumbar.dicom.index import index_split, read_index, write_index
from rsna_lumbar.dicom.reader import load_series, load_stacks, read_stack, read_volumes
from rsna_lumbar.dicom.stacks import Stack, build_stacks, iter_series_stacks, stacks_containing
from rsna_lumbar.dicom.volume import CompetitionPoints, Volume

__all__ = [
    "CompetitionPoints",
    "DicomReadError",
    "Issue",
    "IssueCode",
    "ReadPolicy",
    "Stack",
    "Volume",
    "build_stacks",
    "index_split",
    "iter_series_stacks",
    "load_series",
    "load_stacks",
    "read_index",
    "read_stack",
    "read_volumes",
    "stacks_containing",
    "write_index",
]
