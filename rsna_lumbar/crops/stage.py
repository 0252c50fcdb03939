"""The ``crops`` stage: every study of a split → its patches, cached, atomic and resumable.

Input points come from a table in ``train_label_coordinates.csv``'s schema: the real labels
(the default for the train split) or the output of ``rsna-lumbar localize``. Each labelled point
becomes a world point through the stack that holds its instance; the spinal point is also
registered into the study's axial stacks (:mod:`rsna_lumbar.dicom.placement`) for the axial canal
view. The layout written is documented in :mod:`rsna_lumbar.crops`.

A study is written as ``{study}.npz`` + ``{study}.json`` (the JSON last). The JSON's
``made_from`` is the study's cache key (:func:`study_key`): the data folder, digests of the
study's rows of the header index and of the points table, and the crop settings. A re-run skips
a study only when its JSON has the same key and at least one view was cut; a study whose inputs
changed, or that failed entirely (its task raised, or no view could be cut), is cut again, as
is every study with ``force``. ``index.csv`` is rebuilt from the JSON files at the end. Nothing
about one study can stop the others: failures are logged and recorded in the study's JSON, and
its samples simply lack the views that failed (a partial result, kept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.atomic import atomic_path, write_csv, write_text
from rsna_lumbar.crops.recipes import DEFAULT_GEOMETRY, Geometry, geometry_from_settings, geometry_settings, recipes_for
from rsna_lumbar.crops.sampling import extract_patch, intensity_scale
from rsna_lumbar.dicom.index import read_index, write_index
from rsna_lumbar.dicom.reader import read_stack
from rsna_lumbar.dicom.stacks import Stack, build_stacks
from rsna_lumbar.dicom.volume_cache import VolumeCache
from rsna_lumbar.layout import CompetitionFolder
from rsna_lumbar.parallel import ordered_map
from rsna_lumbar.points import POINT_COLUMNS, read_points
from rsna_lumbar.dicom.placement import choose, competition_to_world, place_in_stack
from rsna_lumbar.tables import read_train, split_study_ids
from rsna_lumbar.vocabulary import TARGETS, Condition, Level, SeriesDescription, Severity

LOGGER = logging.getLogger(__name__)
INDEX_COLUMNS = ("study_id", "condition", "level", "family", "side", "file", "label", "views")
CROPS_VERSION = 1  # bump when crop_study cuts other patches from the same inputs: caches recompute
GEOMETRY_FILE = "geometry.json"  # the geometry a cache was cut at (read_geometry)


def _read_points(path: str | os.PathLike) -> pd.DataFrame:
    """A points table (:func:`rsna_lumbar.points.read_points`) with conditions and levels in
    ``train.csv``'s spellings (the crop keys')."""
    frame = read_points(path)
    frame["condition"] = [Condition.from_title(c).value for c in frame["condition"]]
    frame["level"] = [Level.from_title(lv).value for lv in frame["level"]]
    return frame


class _Study:
    """One study's stacks, volumes (decoded on first use) and normalisations."""

    def __init__(self, data: Path, index_rows: pd.DataFrame, read=read_stack):
        self.data = data
        self.read = read
        self.stacks: dict[int, list[Stack]] = {
            int(series): build_stacks(rows) for series, rows in index_rows.groupby("series_id")
        }
        self._volumes: dict[tuple[int, int], tuple] = {}

    def of_type(self, description: SeriesDescription) -> list[Stack]:
        return [s for stacks in self.stacks.values() for s in stacks
                if s.description == description.value]  # fmt: skip

    def volume(self, stack: Stack):
        key = (stack.series_id, stack.stack_index)
        if key not in self._volumes:
            volume = self.read(stack, self.data)
            self._volumes[key] = (volume, intensity_scale(volume))
        return self._volumes[key]


def _place(study: _Study, point: dict, description: SeriesDescription):
    """(stack, world point) for a view, or raise ``LookupError`` saying why there is none."""
    series = int(point["series_id"])
    world = point["world"]
    own = study.stacks.get(series, [])
    if own and own[0].description == description.value:
        holder = [s for s in own if int(point["instance_number"]) in s]
        if holder:
            return holder[0], world
    candidates = [s for s in study.of_type(description) if s.n_slices > 0]
    placements = [(s, choose(place_in_stack(world[None], s))) for s in candidates]
    placements = [(s, p) for s, p in placements if p is not None]
    if not placements:
        msg = f"no {description.value} stack shows the point"
        raise LookupError(msg)
    stack, best = min(placements, key=lambda sp: abs(sp[1].distance_mm))
    if abs(best.distance_mm) > best.slice_spacing / 2 + 0.5:
        msg = f"{description.value} does not cover the point ({abs(best.distance_mm):.1f} mm away)"
        raise LookupError(msg)
    return stack, world


def _world_points(study: _Study, points: pd.DataFrame, issues: list[str]) -> dict:
    """(condition, level) → {world, series_id, instance_number} for every usable point."""
    found = {}
    has_world = {"world_x", "world_y", "world_z"} <= set(points.columns)
    for row in points.itertuples(index=False):
        key = (row.condition, row.level)
        try:
            if has_world and np.isfinite(row.world_x):
                world = np.array([row.world_x, row.world_y, row.world_z], dtype=np.float64)
            else:
                stacks = study.stacks.get(int(row.series_id))
                if not stacks:
                    raise LookupError(f"series {row.series_id} is not on disk or unreadable")
                world = competition_to_world(stacks, int(row.instance_number), row.x, row.y)
        except (LookupError, ValueError) as error:
            issues.append(f"{row.condition}/{row.level}: point unusable: {error}")
            continue
        found[key] = {"world": world, "series_id": int(row.series_id),
                      "instance_number": int(row.instance_number)}  # fmt: skip
    return found


def crop_study(data: Path, study_id: int, index_rows: pd.DataFrame, points: pd.DataFrame,
               read=read_stack, geometry: Geometry = DEFAULT_GEOMETRY):
    """Cut every view of every target of one study, each view sized by ``geometry``.

    ``read(stack, data) -> Volume`` decodes a stack (default :func:`read_stack`; ``predict``
    passes :meth:`rsna_lumbar.dicom.volume_cache.VolumeCache.read` so no stack is decoded twice).

    Returns:
        ``(arrays, meta)``: ``{condition/level/view: float16 (S, H, W)}`` and a JSON-able dict
        with per-view provenance and the issues met.
    """
    issues: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    views: dict[str, dict] = {}
    study = _Study(data, index_rows, read)
    world_points = _world_points(study, points, issues)
    for condition, level in TARGETS:
        for recipe in recipes_for(condition, geometry):
            if recipe.point_family is condition.family:
                point = world_points.get((condition.value, level.value))
            else:
                point = world_points.get((Condition.SPINAL_CANAL_STENOSIS.value, level.value))
            key = f"{condition.value}/{level.value}/{recipe.view}"
            if point is None:
                continue
            try:
                stack, world = _place(study, point, recipe.series)
                volume, scale = study.volume(stack)
                patch, info = extract_patch(  # the view and its context (PatchSpec.cut)
                    volume, world, recipe.spec.cut, recipe.axes(condition.side), normalisation=scale
                )
            except Exception as error:  # noqa: BLE001 - one view must never stop the study
                issues.append(f"{key}: {type(error).__name__}: {error}")
                continue
            arrays[key] = patch.astype(np.float16)
            views[key] = {"series_id": stack.series_id, "stack": stack.stack_index,
                          "center_lps": [round(float(c), 3) for c in world], **info}  # fmt: skip
    return arrays, {"study_id": study_id, "views": views, "issues": issues}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_key(geometry: Geometry = DEFAULT_GEOMETRY) -> str:
    """The crop settings in a study's key: code version and a digest of the geometry."""
    return f"v{CROPS_VERSION} {_digest(json.dumps(geometry_settings(geometry), sort_keys=True))}"


def study_key(data: Path, index_rows: pd.DataFrame, points: pd.DataFrame,
              geometry: Geometry = DEFAULT_GEOMETRY) -> dict:
    """What one study's crops are made from (``made_from`` in its JSON): the data folder's
    resolved path, digests of the CSV text of the study's header-index rows (file paths,
    geometry, pixel offsets and descriptions, from the index keyed on the data fingerprint) and
    of its points (every column, sorted), and :func:`settings_key` (crop code version, crop
    geometry)."""
    points = points.sort_values(list(POINT_COLUMNS), kind="stable")
    return {"data_folder": str(Path(data).resolve()),
            "index": _digest(index_rows.to_csv(index=False)),
            "points": _digest(points.to_csv(index=False)), "settings": settings_key(geometry)}


def read_geometry(root: str | os.PathLike) -> Geometry:
    """The crop geometry of the cache at ``root`` (its ``geometry.json``; a cache written
    before the file existed was cut with :data:`DEFAULT_GEOMETRY`)."""
    path = Path(root) / GEOMETRY_FILE
    if not path.is_file():
        return DEFAULT_GEOMETRY
    return geometry_from_settings(json.loads(path.read_text(encoding="utf-8")))


def crop_data_folders(out: str | os.PathLike) -> set[str]:
    """The data folders the studies of crop cache ``out`` were cut from (their ``made_from``)."""
    folders = set()
    for meta_path in Path(out).glob("*.json"):
        try:
            made = json.loads(meta_path.read_text()).get("made_from") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if made.get("data_folder"):
            folders.add(made["data_folder"])
    return folders


def _stale(meta_path: Path, key: dict) -> str | None:
    """Why the study of ``meta_path`` must be cut (again); None when its crops are done."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return "new"
    made = meta.get("made_from") or {}
    changed = [name for name in key if made.get(name) != key[name]]
    if changed:
        return f"{changed[0]} changed"
    return None if meta.get("views") else "failed before"


def _task(args) -> tuple[int, list[str]]:
    data, out, study_id, index_rows, points, key, volumes, geometry = args
    npz, meta_path = out / f"{study_id}.npz", out / f"{study_id}.json"
    try:
        arrays, meta = crop_study(data, study_id, index_rows, points,
                                  volumes.read if volumes is not None else read_stack, geometry)
    except Exception as error:  # noqa: BLE001 - a study must never stop the split
        arrays, meta = {}, {"study_id": study_id, "views": {},
                            "issues": [f"study failed: {type(error).__name__}: {error}"]}  # fmt: skip
    meta["made_from"] = key
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return study_id, meta["issues"]


def _index_rows(study_id: int, meta: dict, labels: dict) -> list[dict]:
    rows = []
    for condition, level in TARGETS:
        prefix = f"{condition.value}/{level.value}/"
        views = sorted(k[len(prefix):] for k in meta["views"] if k.startswith(prefix))
        rows.append({
            "study_id": study_id, "condition": condition.value, "level": level.value,
            "family": condition.family.value, "side": condition.side.value if condition.side else "",
            "file": f"{study_id}.npz", "label": labels.get((study_id, condition.value, level.value), -1),
            "views": ";".join(views),
        })  # fmt: skip
    return rows


def _labels(folder: CompetitionFolder, split: str) -> dict:
    if split != "train" or not folder.train_csv.is_file():
        return {}
    train = read_train(folder.train_csv)
    grade = {s.value: s.index for s in Severity}
    return {(int(row["study_id"]), c.value, lv.value): grade[row[f"{c.value}_{lv.value}"]]
            for _, row in train.iterrows() for c, lv in TARGETS
            if isinstance(row[f"{c.value}_{lv.value}"], str)}  # fmt: skip


def _issue_kind(issue: str) -> str:
    """An issue without its study-specific parts: the view key and the numbers."""
    text = issue.split(": ", 1)[1] if "/" in issue.split(": ", 1)[0] else issue
    return re.sub(r"(?<![A-Za-z])\d+(\.\d+)?", "N", text)


def build_crops(
    data: str | os.PathLike,
    split: str,
    out: str | os.PathLike,
    *,
    points: str | os.PathLike | None = None,
    work: str | os.PathLike = "work",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    montages: int = 3,
    on_study: Callable[[int], None] | None = None,
    studies: list[int] | None = None,
    volumes: VolumeCache | None = None,
    index: pd.DataFrame | None = None,
    geometry: Geometry = DEFAULT_GEOMETRY,
) -> Path:
    """Run the stage; returns the path of ``index.csv``. See the module docstring.

    ``montages``: write ``{study}.png`` (every crop's middle slice, see
    :mod:`rsna_lumbar.crops.montage`) for the first that many studies.
    ``on_study``: called in this process with each study id once its crops are on disk —
    cached studies first, then the others as the worker processes finish them, so the caller
    (``predict``: the models) works while the pool decodes the next studies.
    ``studies``: only these studies of the split (default: all); ``index.csv`` lists them.
    ``volumes``: read stacks through this cache (the workers too), so stacks an earlier stage of
    the run decoded are not decoded again.
    ``index``: the split's header index, already read (``predict`` reads it once per run);
    default: built or reused in ``work``.
    ``geometry``: each view's size in mm and pixels and its slice count (a recipe's ``crops``,
    a model folder's ``model.json``); written to ``OUT/geometry.json`` (:func:`read_geometry`)
    and part of every study's key, so a cache cut at another geometry is cut again.
    """
    folder = CompetitionFolder(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points_path = Path(points) if points else folder.label_coordinates_csv
    if not points_path.is_file():
        msg = (f"{points_path} not found: crops need points; pass --points with the output of "
               "'rsna-lumbar localize' (train_label_coordinates.csv's schema)")  # fmt: skip
        raise FileNotFoundError(msg)
    table = _read_points(points_path)
    if index is None:
        index = read_index(write_index(data, split, work, workers=workers, progress=progress))
    if studies is None:
        studies = split_study_ids(data, split)
    by_study = dict(iter(index.groupby("study_id")))
    points_by_study = dict(iter(table.groupby("study_id")))
    inputs = {s: (by_study.get(s, index.iloc[:0]), points_by_study.get(s, table.iloc[:0]))
              for s in studies}  # fmt: skip
    keys = {s: study_key(folder.root, *inputs[s], geometry) for s in studies}
    reasons = {s: "--force" if force else _stale(out / f"{s}.json", keys[s]) for s in studies}
    todo = [s for s in studies if reasons[s] is not None]
    why = ", ".join(f"{n} {r}" for r, n in Counter(reasons[s] for s in todo).most_common())
    LOGGER.info("crops: %d studies, %d to cut%s, %d cached in %s", len(studies), len(todo),
                f" ({why})" if why else "", len(studies) - len(todo), out)  # fmt: skip
    tasks = [(folder.root, out, s, *inputs[s], keys[s], volumes, geometry) for s in todo]
    pending = set(todo)
    if on_study is not None:
        for study_id in (s for s in studies if s not in pending):
            on_study(study_id)
    results = ordered_map(_task, tasks, workers=workers, desc="crops", unit="study",
                          progress=progress)  # fmt: skip
    kinds: Counter = Counter()
    for study_id, issues in results:
        for issue in issues:
            LOGGER.debug("study %s: %s", study_id, issue)
            kinds[_issue_kind(issue)] += 1
        if on_study is not None:
            on_study(study_id)
    for kind, count in kinds.most_common():
        LOGGER.warning("crops: %d × %s (per-study details in OUT/{study}.json)", count, kind)
    from rsna_lumbar.crops.montage import save_montage

    for study_id in studies[:montages]:
        if study_id in pending or not (out / f"{study_id}.png").is_file():
            save_montage(out / f"{study_id}.npz", out / f"{study_id}.png", f"study {study_id}")
    labels = _labels(folder, split)
    rows = []
    for study_id in studies:
        meta = json.loads((out / f"{study_id}.json").read_text())
        rows.extend(_index_rows(study_id, meta, labels))
    index_path = out / "index.csv"  # written last, with the geometry its studies were cut at
    write_text(out / GEOMETRY_FILE, json.dumps(geometry_settings(geometry), indent=1) + "\n")
    write_csv(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), index_path)
    return index_path
