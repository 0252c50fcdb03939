"""What a model folder was made from: ``provenance.json`` beside its weights.

Every trainer that writes a model folder calls :func:`write_provenance` with the competition
folder it trained on; ``make push-weights`` reads it back (:func:`read_provenance`) and refuses
folders trained on synthetic data. ``provenance.json``::

    {"data_folder": "/abs/path", "data_fingerprint": "3f9c...", "data_kind": "competition",
     "recipe": "--config default train.epochs=8", "kit_version": "0.1.0",
     "commit": "b8a1f5a...+dirty", "created": "2026-12-05T10:00:00+00:00"}

:func:`data_fingerprint` is the one identity of a competition folder in the kit: reuse it
wherever a result depends on which data it came from (cache keys, reports). It reads the CSV
tables' bytes but only the names and sizes of the image files, so it takes about a second on
the real 147k-file set.

Foundations module: stdlib, :mod:`rsna_lumbar.atomic` and :mod:`rsna_lumbar.layout` only.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
from pathlib import Path

from rsna_lumbar import __version__
from rsna_lumbar.atomic import write_text
from rsna_lumbar.layout import SPLITS, CompetitionFolder

PROVENANCE = "provenance.json"
SYNTHETIC, COMPETITION = "synthetic", "competition"
PACKAGED = "packaged"  # the localiser that ships with the kit (rsna_lumbar.localize.packaged)
KEYS = ("data_folder", "data_fingerprint", "data_kind", "recipe", "kit_version", "commit",
        "created")


def _tables(folder: CompetitionFolder) -> list[Path]:
    return [folder.train_csv, folder.label_coordinates_csv,
            *(folder.series_descriptions_csv(split) for split in SPLITS)]


def _walk(top: str, rel: str = ""):
    """``(relative path, size)`` of every file under ``top``, depth first, names sorted."""
    with os.scandir(top) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(entry.path, name)
            elif entry.is_file(follow_symlinks=True):
                yield name, entry.stat().st_size


def data_fingerprint(folder: str | os.PathLike, split: str | None = None) -> str:
    """A short sha256 (16 hex digits) of a competition folder.

    It covers the bytes of ``train.csv``, ``train_label_coordinates.csv`` and
    ``{train,test}_series_descriptions.csv`` (those present) and the sorted relative paths and
    sizes of the files under ``train_images/`` and ``test_images/``; DICOM bytes are never read.
    Same folder contents, same fingerprint, wherever the folder lives.

    ``split`` (``train`` or ``test``): only that split's ``{split}_series_descriptions.csv`` and
    ``{split}_images/``, what its header index is made from (the index cache's key), so the
    other split's files are neither walked nor part of it.
    """
    data = CompetitionFolder(folder)
    digest = hashlib.sha256()
    tables = _tables(data) if split is None else [data.series_descriptions_csv(split)]
    for table in tables:
        if table.is_file():
            digest.update(f"table {table.name}\n".encode())
            digest.update(table.read_bytes())
    for part in SPLITS if split is None else (split,):
        images = data.images(part)
        if images.is_dir():
            for name, size in _walk(str(images)):
                digest.update(f"{images.name}/{name} {size}\n".encode())
    return digest.hexdigest()[:16]


def data_kind(folder: str | os.PathLike) -> str:
    """``"synthetic"`` for a folder ``rsna-lumbar synth`` wrote (it has ``truth/manifest.json``),
    else ``"competition"``."""
    return SYNTHETIC if (Path(folder) / "truth" / "manifest.json").is_file() else COMPETITION


def kit_commit() -> str | None:
    """The git commit of the source checkout this package runs from (``+dirty`` when
    ``git status --porcelain`` lists changes); None for an installed wheel or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return f"{commit}+dirty" if git("status", "--porcelain") else commit or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_provenance(model_folder: str | os.PathLike, data: str | os.PathLike,
                     recipe: str | None = None, *, fingerprint: str | None = None) -> Path:
    """Write ``model_folder/provenance.json`` (atomically) for a model trained on ``data``;
    ``recipe`` is what the trainer knows of how (a config name or path and its overrides).
    ``fingerprint``: ``data_fingerprint(data)`` when the caller has it already."""
    record = {
        "data_folder": str(Path(data).resolve()),
        "data_fingerprint": fingerprint or data_fingerprint(data),
        "data_kind": data_kind(data),
        "recipe": recipe,
        "kit_version": __version__,
        "commit": kit_commit(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(model_folder) / PROVENANCE
    write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def read_provenance(folder: str | os.PathLike) -> dict | None:
    """The record :func:`write_provenance` left in ``folder``; None when there is none or it is
    not a JSON object."""
    try:
        record = json.loads((Path(folder) / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
