"""``LevelPoints``: where the five lumbar disc levels of one series are, in world coordinates.

This is the result type of every localiser in the kit (TotalSpineSeg, the learned localiser,
the synthetic truth), so downstream stages (register, crops) never care which one produced it.

Frame and shapes:

* All points are DICOM patient coordinates, **LPS millimetres** (see
  :mod:`rsna_lumbar.geometry.affine`); +x is the patient's left.
* :attr:`LevelPoints.points` is a float64 array of shape ``(5, 4, 3)``, indexed
  ``[level.index, kind.index, xyz]``: levels L1/L2 … L5/S1 (cranial to caudal, as
  :class:`~rsna_lumbar.vocabulary.Level`), kinds as :class:`PointKind`. A point that could not
  be placed is ``NaN`` in all three coordinates.
* :attr:`LevelPoints.level_confidence` is shape ``(5,)`` in ``[0, 1]`` (0 for a missing level);
  :attr:`LevelPoints.confidence` is the per-study (per-series) confidence in ``[0, 1]``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

import numpy as np

from rsna_lumbar.vocabulary import LEVELS, Level, Side


class PointKind(str, enum.Enum):
    """Which point of a level: the disc centre, its posterior edge on the canal, the foramina."""

    DISC_CENTRE = "disc_centre"
    DISC_POSTERIOR = "disc_posterior"
    FORAMEN_LEFT = "foramen_left"
    FORAMEN_RIGHT = "foramen_right"

    @property
    def index(self) -> int:
        return list(PointKind).index(self)

    @classmethod
    def foramen(cls, side: Side) -> PointKind:
        """The foramen point of a patient side."""
        return cls.FORAMEN_LEFT if side is Side.LEFT else cls.FORAMEN_RIGHT


POINT_KINDS: tuple[PointKind, ...] = tuple(PointKind)


class Flag(str, enum.Enum):
    """Sanity findings about a localisation; each lowers :attr:`LevelPoints.confidence`."""

    MISSING_LEVEL = "missing_level"  # fewer than five levels placed
    ORDER = "order"  # disc centres not strictly cranial-to-caudal
    SPACING = "spacing"  # a gap between neighbouring discs outside the plausible range
    OFF_BY_ONE = "off_by_one"  # numbering disagrees with the sacrum (e.g. L5/S1 not above it)
    NO_SACRUM = "no_sacrum"  # the sacrum check could not be made
    TRANSITIONAL = "transitional"  # an L6 / L5-L6 label (lumbosacral transitional anatomy)
    LEVELS_DISAGREE = "levels_disagree"  # the tool's own level points far from the disc edges
    FAILED = "failed"  # the localiser did not run or produced nothing usable


@dataclass(frozen=True)
class LevelPoints:
    """Five levels × four points (LPS mm) of one series, with confidence and provenance.

    Attributes:
        points: float64 ``(5, 4, 3)`` LPS mm, ``[level.index, kind.index]``; NaN = not placed.
        level_confidence: float64 ``(5,)`` in ``[0, 1]``; 0 where the level is missing.
        confidence: per-study confidence in ``[0, 1]``.
        source: which localiser produced it, e.g. ``"totalspineseg"``, ``"learned"``, ``"truth"``.
        flags: sanity findings (:class:`Flag`), in the order found.
        notes: human-readable details of the flags (one line each), e.g. the tool's error.
        study_id, series_id: provenance, when known.
    """

    points: np.ndarray
    level_confidence: np.ndarray
    confidence: float
    source: str
    flags: tuple[Flag, ...] = ()
    notes: tuple[str, ...] = ()
    study_id: int | None = None
    series_id: int | None = None
    extras: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        points = np.asarray(self.points, dtype=np.float64)
        if points.shape != (len(LEVELS), len(POINT_KINDS), 3):
            msg = f"LevelPoints.points must have shape (5, 4, 3) (level, kind, xyz); got {points.shape}"
            raise ValueError(msg)
        conf = np.asarray(self.level_confidence, dtype=np.float64).reshape(-1)
        if conf.shape != (len(LEVELS),):
            msg = f"LevelPoints.level_confidence must have shape (5,); got {conf.shape}"
            raise ValueError(msg)
        if not 0.0 <= float(self.confidence) <= 1.0:
            msg = f"LevelPoints.confidence must lie in [0, 1]; got {self.confidence}"
            raise ValueError(msg)
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "level_confidence", np.clip(conf, 0.0, 1.0))
        object.__setattr__(self, "confidence", float(self.confidence))
        object.__setattr__(self, "flags", tuple(Flag(f) for f in self.flags))
        object.__setattr__(self, "notes", tuple(str(n) for n in self.notes))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def empty(
        cls,
        source: str,
        *,
        reason: str = "",
        study_id: int | None = None,
        series_id: int | None = None,
    ) -> LevelPoints:
        """A result with no points and confidence 0, flagged :attr:`Flag.FAILED` with ``reason``."""
        return cls(
            points=np.full((len(LEVELS), len(POINT_KINDS), 3), np.nan),
            level_confidence=np.zeros(len(LEVELS)),
            confidence=0.0,
            source=source,
            flags=(Flag.FAILED,),
            notes=(reason,) if reason else (),
            study_id=study_id,
            series_id=series_id,
        )

    def with_provenance(self, study_id: int | None, series_id: int | None) -> LevelPoints:
        return replace(self, study_id=study_id, series_id=series_id)

    # -- access -------------------------------------------------------------------------------

    def point(self, level: Level, kind: PointKind = PointKind.DISC_POSTERIOR) -> np.ndarray:
        """One point, float64 ``(3,)`` LPS mm (NaN when not placed)."""
        return self.points[Level(level).index, PointKind(kind).index].copy()

    def kind(self, kind: PointKind) -> np.ndarray:
        """All five levels of one kind, float64 ``(5, 3)`` LPS mm, cranial to caudal."""
        return self.points[:, PointKind(kind).index].copy()

    def has(self, level: Level) -> bool:
        """Whether the level's disc centre was placed."""
        return bool(np.isfinite(self.points[Level(level).index, 0]).all())

    @property
    def present(self) -> tuple[Level, ...]:
        """Levels with a disc centre, cranial to caudal."""
        return tuple(level for level in LEVELS if self.has(level))

    @property
    def complete(self) -> bool:
        """All five levels have all four points."""
        return bool(np.isfinite(self.points).all())

    @property
    def ok(self) -> bool:
        """Complete and free of flags that mean the numbering or the run is wrong."""
        bad = {Flag.FAILED, Flag.MISSING_LEVEL, Flag.ORDER, Flag.OFF_BY_ONE}
        return self.complete and not bad.intersection(self.flags)

    def rows(self) -> list[dict]:
        """One dict per (level, kind) that was placed, for a table (e.g. a pandas DataFrame).

        Keys: ``study_id, series_id, level`` (``L4/L5`` spelling), ``point``
        (:class:`PointKind` value), ``world_x, world_y, world_z`` (LPS mm), ``source``,
        ``confidence`` (the level's confidence × the study's), ``flags`` (``;``-joined).
        """
        out = []
        for level in LEVELS:
            for kind in POINT_KINDS:
                xyz = self.points[level.index, kind.index]
                if not np.isfinite(xyz).all():
                    continue
                out.append(
                    {
                        "study_id": self.study_id,
                        "series_id": self.series_id,
                        "level": level.title,
                        "point": kind.value,
                        "world_x": float(xyz[0]),
                        "world_y": float(xyz[1]),
                        "world_z": float(xyz[2]),
                        "source": self.source,
                        "confidence": float(self.level_confidence[level.index] * self.confidence),
                        "flags": ";".join(f.value for f in self.flags),
                    }
                )
        return out

    def summary(self) -> str:
        """One line for logs: source, confidence, levels found, flags."""
        found = ",".join(lv.title for lv in self.present) or "none"
        flags = ",".join(f.value for f in self.flags) or "-"
        where = f"study {self.study_id} series {self.series_id}: " if self.study_id else ""
        return f"{where}{self.source} conf={self.confidence:.2f} levels={found} flags={flags}"
