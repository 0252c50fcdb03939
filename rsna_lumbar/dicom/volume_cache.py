"""Decode each stack once per run: decoded :class:`Volume` objects kept in a scratch folder.

``predict`` localises a chunk of studies (which decodes their sagittal and axial stacks) and then
cuts their crops in worker processes (which need the same stacks). With a :class:`VolumeCache`
both read through :meth:`VolumeCache.read`: the first reader decodes the DICOM files and leaves
the volume in the folder as a pickle; every later reader, in this process or a worker, loads it.
The folder is scratch for one run (``predict`` removes a chunk's volumes when the chunk is
done); nothing in it outlives the run, so its key is only which stack of which study:
``{study}_{series}_{stack}.pkl``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from rsna_lumbar.atomic import atomic_path
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.dicom.stacks import Stack
from rsna_lumbar.dicom.volume import Volume


class VolumeCache:
    """A scratch folder of decoded stacks shared by the stages (and processes) of one run.

    ``folder``: where the pickles live.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, stack: Stack) -> Path:
        return self.folder / f"{stack.study_id}_{stack.series_id}_{stack.stack_index}.pkl"

    def read(self, stack: Stack, root: str | os.PathLike) -> Volume:
        """The decoded volume of ``stack`` (files relative to ``root``): from the folder when a
        reader of this run decoded it already, else decoded now and left there.

        Raises:
            whatever :func:`rsna_lumbar.dicom.reader.read_stack` raises on unreadable files.
        """
        path = self.path(stack)
        if path.is_file():
            with open(path, "rb") as handle:
                return pickle.load(handle)
        volume = read_stack(stack, root)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            pickle.dump(volume, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return volume

    def forget(self, study_ids) -> None:
        """Remove the volumes of ``study_ids`` (their stages are done)."""
        for study_id in study_ids:
            for path in self.folder.glob(f"{int(study_id)}_*.pkl"):
                path.unlink(missing_ok=True)
