"""Sim-to-real check: the real sagittal exams as Volumes, their disc truth, and the measurement of
the canal points against it. Two collections (:func:`real_exams`): five T2 exams with their discs
segmented (``ivd_*.npz``, ``shared/data/real-lumbar``, :func:`rsna_lumbar.layout.real_exams_dir`)
and twenty-nine water-fat exams with their vertebral bodies segmented (``vb3_*.npz``,
``shared/data/real-lumbar-vb3``, :func:`rsna_lumbar.layout.real_vb3_dir`; their disc points come
from the bodies, :func:`_vb3_discs`). Both wrap the same way.

Wrapping (our choice of geometry; the source has no header). A source array ``image`` has
axes (superior→inferior rows, anterior→posterior columns, left–right), 1 mm isotropic. The
Volume takes every 4th left–right plane starting at :data:`FIRST` (about 17 slices 4 mm apart,
like the 4 mm acquisition the exams were resampled from) as ``pixels[slice, row, col]`` with
ImageOrientationPatient ``[0, 1, 0, 0, 0, -1]`` (columns run posterior, rows run inferior),
1 mm pixels, slice step +4 mm along LPS x, origin at LPS (0, 0, 0). Sides are unknown in the
source, so only the canal points are measured.

Truth per level of an ivd exam (source labels 1 = L5/S1 … 5 = L1/L2): on the mid-sagittal plane ``m`` (median
left–right index of all disc voxels) and its two neighbours, the disc's *posterior edge* is
the point at the most posterior column ``c_max + 0.5`` and the mean row of the disc voxels
within 1 mm of that column.

Training points (:func:`canal_truth`, :func:`real_sample`): the exams may also train the
``sag_t2`` model, out of fold. Their canal point per level is the centre of the dural sac behind
the disc: on the mid-sagittal plane, along the edge's row (±2 rows averaged), the first bright
(cerebrospinal fluid) run starting within 4 mm behind the posterior edge, its centre clipped to
2–9 mm behind the edge (4.5 mm when no such run is found).

Framing. The exams are measured as acquired and *tightly framed*: the rows more than
:data:`TIGHT_ABOVE_MM` above the L1/L2 disc and :data:`TIGHT_BELOW_MM` below the L5/S1 disc are
blanked — the tightest lumbar field of view a reader would still accept (the top of the sacrum
in view). A localiser that counts levels from an image edge rather than from the sacrum fails
there; as acquired the exams differ in how much of T12 and the sacrum they show. A third
framing, ``top_cut``, blanks only the rows above (a field of view that starts just above L1/L2
with all of the sacrum below it, common in lumbar protocols); it is reported, not required.

Criterion (:func:`measure`): a predicted canal point for level L "lands on" the disc whose
posterior-edge point is nearest to it in the sagittal plane (rows and columns, left–right
ignored), provided that edge is within :data:`LANDING_MM` (a point farther from every disc, e.g.
on the subcutaneous fat, lands on none); the level is right when that disc is L. ``error_mm`` is the 3-D distance to disc L's
posterior edge, ``cc_error_mm`` its cranio-caudal (row) part. The competition's canal point is
the centre of the dural sac behind the disc, a few mm posterior to the edge, so ``error_mm``
has a floor of about the sac's half depth (5–8 mm) even for a perfect canal point.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from rsna_lumbar.dicom.volume import Volume
from rsna_lumbar.layout import real_exams_dir, real_vb3_dir
from rsna_lumbar.vocabulary import LEVELS, SeriesDescription

FIRST = 1
STEP = 4
FRAMINGS = ("acquired", "tight", "top_cut")
TIGHT_ABOVE_MM = 10.0  # tight framing: kept above the L1/L2 disc
TIGHT_BELOW_MM = 20.0  # … and below the L5/S1 disc (the top of the sacrum)
LANDING_MM = 20.0  # the canal point sits 2–9 mm behind the edge; 20 mm leaves room, not the fat


def real_exams(folder: str | os.PathLike | None = None) -> list[Path]:
    """The real exams: the disc-segmented ``ivd_*.npz`` of :func:`rsna_lumbar.layout.real_exams_dir`
    (``RSNA_REAL_LUMBAR``, else ``shared/data/real-lumbar``), then the vertebra-segmented water-fat
    ``vb3_*.npz`` of :func:`rsna_lumbar.layout.real_vb3_dir` (``RSNA_REAL_LUMBAR_VB3``, else
    ``shared/data/real-lumbar-vb3``); both kinds from ``folder`` alone when it is given."""
    if folder is not None:
        return sorted(Path(folder).glob("ivd_*.npz")) + sorted(Path(folder).glob("vb3_*.npz"))
    return sorted(real_exams_dir().glob("ivd_*.npz")) + sorted(real_vb3_dir().glob("vb3_*.npz"))


def exam_number(path: str | os.PathLike) -> int:
    """The exam's id as a study and series id: ``ivd_NN`` → NN, ``vb3_NN`` → 100 + NN."""
    kind, number = Path(path).stem.split("_")
    return int(number) + (100 if kind == "vb3" else 0)


def _affine() -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 1.0, 0.0]  # column index → posterior (+y), 1 mm
    affine[:3, 1] = [0.0, 0.0, -1.0]  # row index → inferior (−z), 1 mm
    affine[:3, 2] = [float(STEP), 0.0, 0.0]  # slice index → +x, 4 mm
    affine[:3, 3] = [float(FIRST), 0.0, 0.0]  # so world x = source left–right index
    return affine


def _to_world(col: float, row: float, plane: float) -> np.ndarray:
    """A source voxel position (column, row, left–right plane; 1 mm) → LPS mm (our geometry)."""
    return (_affine() @ [col, row, (plane - FIRST) / STEP, 1.0])[:3]


def _mid_plane(mask: np.ndarray) -> int:
    return int(np.rint(np.median(np.nonzero(mask)[2])))


def _ivd_discs(discs: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Mid plane, posterior edges ``(5, 2)`` (row, column of the edge voxel) and centres
    ``(5, 3)`` (row, column, plane) of the five segmented discs, L1/L2 first."""
    m = _mid_plane(discs)
    edges, centres = [], []
    for level in LEVELS:
        label = 5 - level.index
        r, c, _ = np.nonzero(discs[:, :, m - 1:m + 2] == label)
        edge_col = c.max()
        edges.append((r[c >= edge_col - 1].mean(), edge_col))
        centres.append(np.argwhere(discs == label).mean(axis=0))
    return m, np.array(edges, float), np.array(centres, float)


def _vb3_discs(vertebrae: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """As :func:`_ivd_discs`, from the vertebral bodies L1–L5 (labels 41–45) on the mid plane and
    its two neighbours (``real-lumbar-vb3/README.md``): u runs along the spine (head → foot,
    between the neighbouring bodies' centroids), p is its perpendicular pointing posterior; a
    body's posterior-inferior corner is the voxel of its lower half furthest along u + p, its
    posterior-superior corner the voxel of its upper half furthest along p − u. Disc Lk/Lk+1:
    posterior edge midway between the upper body's posterior-inferior and the lower body's
    posterior-superior corner, centre midway between the two centroids. L5/S1 (no sacrum is
    labelled): the edge lies half the L4/L5 corner-to-corner gap below L5's posterior-inferior
    corner along L5's u, the centre half the L4→L5 centroid step below L5's centroid."""
    m = _mid_plane(vertebrae)
    near = vertebrae[:, :, m - 1:m + 2]
    bodies = [np.argwhere(near == 41 + i)[:, :2].astype(float) for i in range(5)]  # (row, col)
    centroid = np.array([b.mean(axis=0) for b in bodies])
    corners = []
    for i, body in enumerate(bodies):
        u = centroid[min(i + 1, 4)] - centroid[max(i - 1, 0)]
        u /= np.linalg.norm(u)
        p = np.array([-u[1], u[0]]) if u[0] >= 0 else np.array([u[1], -u[0]])
        p = p if p[1] > 0 else -p  # posterior = increasing column
        along = (body - centroid[i]) @ u
        lower, upper = body[along > 0], body[along <= 0]
        corners.append((lower[np.argmax((lower - centroid[i]) @ (u + p))],
                        upper[np.argmax((upper - centroid[i]) @ (p - u))], u))
    edges = [(corners[i][0] + corners[i + 1][1]) / 2 for i in range(4)]
    gap = np.linalg.norm(corners[4][1] - corners[3][0])
    edges.append(corners[4][0] + 0.5 * gap * corners[4][2])
    centres2 = [(centroid[i] + centroid[i + 1]) / 2 for i in range(4)]
    centres2.append(centroid[4] + (centroid[4] - centroid[3]) / 2)
    centres = np.c_[np.array(centres2), np.full(5, float(m))]
    return m, np.array(edges, float), centres


def _source(path: str | os.PathLike) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """``(image, mid plane, edges (5, 2), centres (5, 3))`` of an exam, source voxel units."""
    source = np.load(path)
    found = _ivd_discs(source["discs"]) if "discs" in source.files else _vb3_discs(source["vertebrae"])
    return (source["image"], *found)


def _disc_span(path: str | os.PathLike, edges: np.ndarray) -> tuple[float, float]:
    """Source rows of the top of the L1/L2 disc and the bottom of L5/S1: the segmented discs'
    extent, else (vertebral bodies only) the posterior edges' rows ∓ 5 mm."""
    with np.load(path) as source:
        if "discs" in source.files:
            rows = np.nonzero(source["discs"])[0]
            return float(rows.min()), float(rows.max())
    return float(edges[0, 0] - 5), float(edges[-1, 0] + 5)


def real_volume(path: str | os.PathLike, study_id: int | None = None, framing: str = "acquired") -> Volume:
    """One real exam as a sagittal T2 :class:`Volume` (see module docstring for the geometry),
    ``framing`` one of :data:`FRAMINGS`."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}; got {framing!r}")
    source, _, edges, _ = _source(path)
    image = source.astype(np.float32)
    top, bottom = _disc_span(path, edges)
    if framing in ("tight", "top_cut"):
        image[: max(int(top - TIGHT_ABOVE_MM), 0)] = 0
    if framing == "tight":
        image[int(bottom + TIGHT_BELOW_MM) + 1:] = 0
    pixels = np.ascontiguousarray(np.moveaxis(image[:, :, FIRST::STEP], 2, 0))
    number = exam_number(path)
    return Volume(pixels=pixels, affine=_affine(), study_id=study_id or number, series_id=number,
                  description=SeriesDescription.SAGITTAL_T2.value)  # fmt: skip


def real_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Per level: posterior-edge and centre world points of the disc (LPS mm, our geometry)."""
    _, m, edges, centres = _source(path)
    rows = []
    for level, (row, col), (c_row, c_col, c_plane) in zip(LEVELS, edges, centres):
        edge, centre = _to_world(col + 0.5, row, m), _to_world(c_col, c_row, c_plane)
        rows.append({"level": level.title, "edge_x": edge[0], "edge_y": edge[1], "edge_z": edge[2],
                     "centre_x": centre[0], "centre_y": centre[1], "centre_z": centre[2]})  # fmt: skip
    return pd.DataFrame(rows)


def canal_truth(path: str | os.PathLike) -> pd.DataFrame:
    """Per level: the canal (dural sac centre) training point, LPS mm (see module docstring)."""
    source, m, edges, _ = _source(path)
    image = source.astype(np.float32)
    rows = []
    for level, (row, col) in zip(LEVELS, edges):
        c0, r0 = int(round(col)), int(round(row))
        profile = image[max(r0 - 2, 0):r0 + 3, c0 + 1:c0 + 31, m].mean(axis=0)
        bright = profile >= 0.7 * profile.max()
        offset = 4.5
        starts = np.flatnonzero(bright[:4])
        if len(starts):
            end = starts[0]
            while end + 1 < len(bright) and bright[end + 1]:
                end += 1
            offset = float(np.clip(1 + (starts[0] + end) / 2, 2.0, 9.0))
        point = _to_world(col + offset, row, m)
        rows.append({"level": level.title, "x": point[0], "y": point[1], "z": point[2]})
    return pd.DataFrame(rows)


def real_sample(path: str | os.PathLike, task=None):
    """One real exam as a training :class:`~.dataset.SeriesSample` of the ``sag_t2`` task."""
    from rsna_lumbar.localize.keypoints.dataset import TASKS, SeriesSample, canonical_stack, invert

    task = task or TASKS["sag_t2"]
    volume = real_volume(path)
    stack, m = canonical_stack(volume, task)
    back = invert(m)
    points = []
    for level, world in zip(LEVELS, canal_truth(path)[["x", "y", "z"]].to_numpy(float)):
        col, row, k = volume.world_to_voxel(world)
        u, v = back @ [col, row, 1.0]
        points.append((level.index, u, v, k))
    return SeriesSample(volume.study_id, volume.series_id, stack, np.array(points, float),
                        float(volume.spacing[2]))  # fmt: skip


def measure(canal_rows: list[dict], truth: pd.DataFrame) -> pd.DataFrame:
    """Per predicted level: the disc it lands on, whether that is right, and its errors (mm)."""
    edges = truth[["edge_x", "edge_y", "edge_z"]].to_numpy(float)
    out = []
    for row in canal_rows:
        p = np.array([row["world_x"], row["world_y"], row["world_z"]])
        in_plane = np.linalg.norm(edges[:, 1:] - p[1:], axis=1)  # y (A–P) and z (S–I) only
        nearest = int(np.argmin(in_plane))
        landed = truth.level.iloc[nearest] if in_plane[nearest] <= LANDING_MM else None
        true_edge = edges[truth.level.tolist().index(row["level"])]
        out.append({"level": row["level"], "landed_on": landed, "correct": landed == row["level"],
                    "error_mm": round(float(np.linalg.norm(p - true_edge)), 2),
                    "cc_error_mm": round(float(abs(p[2] - true_edge[2])), 2),
                    "confidence": row["confidence"]})  # fmt: skip
    return pd.DataFrame(out)


def measure_exam(models: list, path: str | os.PathLike, framing: str = "acquired",
                 decoding=None) -> pd.DataFrame:  # fmt: skip
    """:func:`measure` of the sagittal T2 models on one exam, with ``exam`` and ``framing``
    columns first; ``decoding``: a :class:`~.predict.Decoding` (default: the kit's)."""
    from rsna_lumbar.localize.keypoints.predict import DECODING, canal_points

    points = canal_points(models, real_volume(path, framing=framing), decoding=decoding or DECODING)
    result = measure(points, real_truth(path))
    return result.assign(exam=Path(path).stem, framing=framing)[["exam", "framing", *result.columns]]


def summarise(result: pd.DataFrame) -> dict:
    """Headline figures of :func:`measure` rows: levels right (of all), mm errors."""
    return {"exams": int(result.exam.nunique()), "levels_right": int(result.correct.sum()),
            "levels": len(result), "median_mm": round(float(result.error_mm.median()), 2),
            "p95_mm": round(float(result.error_mm.quantile(0.95)), 2),
            "median_cc_mm": round(float(result.cc_error_mm.median()), 2)}  # fmt: skip


def measure_all(models: list | dict, folder=None, framing: str = "acquired",
                decoding=None) -> pd.DataFrame:  # fmt: skip
    """Run the sagittal T2 models on every real exam → one row per (exam, level).

    ``models``: one list for every exam, or ``{exam stem: list}`` (out-of-fold models);
    ``decoding``: a :class:`~.predict.Decoding` (default: the kit's).
    """
    frames = []
    for path in real_exams(folder):
        chosen = models[path.stem] if isinstance(models, dict) else models
        frames.append(measure_exam(chosen, path, framing, decoding))
    if not frames:
        msg = ("no real exams found: set RSNA_REAL_LUMBAR to the folder holding ivd_*.npz and "
               "RSNA_REAL_LUMBAR_VB3 to the one holding vb3_*.npz")
        raise FileNotFoundError(msg)
    return pd.concat(frames, ignore_index=True)[["exam", "framing", "level", "landed_on", "correct",
                                                 "error_mm", "cc_error_mm", "confidence"]]  # fmt: skip
