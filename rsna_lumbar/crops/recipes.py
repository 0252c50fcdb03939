"""Crop recipes: which series, which point, what size and orientation, per condition and view.

Directions are LPS unit vectors (+x patient left, +y posterior, +z superior). Sagittal patches
show anterior → posterior left to right and superior → inferior top to bottom; axial patches
show the patient's right → left left to right (the radiological view) and anterior → posterior
top to bottom. Lateral structures are mirrored so that both sides share one orientation:

* a foramen's slices run medial → lateral (``w`` toward its side), so the right foramen looks
  like the left one and one model serves both;
* a lateral recess's columns run medial → lateral toward its side (the right recess is flipped
  left–right onto the left one's orientation).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from rsna_lumbar.crops.sampling import PatchSpec
from rsna_lumbar.vocabulary import VIEWS, Condition, Family, SeriesDescription, Side

LEFT = np.array([1.0, 0.0, 0.0])
POSTERIOR = np.array([0.0, 1.0, 0.0])
SUPERIOR = np.array([0.0, 0.0, 1.0])


@dataclasses.dataclass(frozen=True)
class CropRecipe:
    """One view of one condition family.

    Attributes:
        view: name of the view in the crop cache (``sag_t2``, ``sag_t1``, ``axial``).
        series: the series type sampled.
        point_family: whose labelled point centres the crop (the spinal canal point for the
            spinal axial view, the condition's own point otherwise).
        spec: size and slice count.
    """

    view: str
    series: SeriesDescription
    point_family: Family
    spec: PatchSpec

    def axes(self, side: Side | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(u, v, w)`` patch column, row and slice directions for a condition on ``side``."""
        toward_side = -LEFT if side is Side.RIGHT else LEFT
        if self.series.is_sagittal:
            return POSTERIOR, -SUPERIOR, toward_side
        return toward_side, POSTERIOR, SUPERIOR


# Which views each family is cut on: (view, series, whose point centres it).
_VIEWS: dict[Family, tuple[tuple[str, SeriesDescription, Family], ...]] = {
    Family.SPINAL: (("sag_t2", SeriesDescription.SAGITTAL_T2, Family.SPINAL),
                    ("axial", SeriesDescription.AXIAL_T2, Family.SPINAL)),
    Family.FORAMINAL: (("sag_t1", SeriesDescription.SAGITTAL_T1, Family.FORAMINAL),),
    Family.SUBARTICULAR: (("axial", SeriesDescription.AXIAL_T2, Family.SUBARTICULAR),),
}  # fmt: skip

assert {f.value: tuple(v for v, _, _ in views) for f, views in _VIEWS.items()} == VIEWS  # one list

Geometry = dict[str, dict[str, PatchSpec]]  # family value → view → patch spec
# a view's geometry in settings: size_mm, size_px, n_slices, and the context cut around it
# (mm on each side, rounded to whole pixels; slices at each end) for re-cut training shifts
SPEC_KEYS = ("mm", "px", "slices", "context_mm", "context_slices")

DEFAULT_GEOMETRY: Geometry = {
    "spinal": {"sag_t2": PatchSpec(48.0, 64, 5), "axial": PatchSpec(48.0, 64, 3)},
    "foraminal": {"sag_t1": PatchSpec(40.0, 64, 5)},
    "subarticular": {"axial": PatchSpec(40.0, 64, 3)},
}
assert {f: tuple(views) for f, views in DEFAULT_GEOMETRY.items()} == VIEWS


def recipes_for(condition: Condition, geometry: Geometry = DEFAULT_GEOMETRY) -> tuple[CropRecipe, ...]:
    """The views cut for ``condition`` (by its family), sized by ``geometry``."""
    family = condition.family
    return tuple(CropRecipe(view, series, point_family, geometry[family.value][view])
                 for view, series, point_family in _VIEWS[family])  # fmt: skip


def crop_spec(family: str, view: str, geometry: Geometry = DEFAULT_GEOMETRY) -> PatchSpec:
    """The patch spec (mm, pixels, slices) of the crops of ``view`` cut for ``family``."""
    views = geometry[Family(family).value]
    if view not in views:
        msg = f"no {view!r} crop is cut for the {family} family; its views: {list(views)}"
        raise KeyError(msg)
    return views[view]


@functools.lru_cache(maxsize=None)  # pure; called for every crop array at test time
def mirror_axis(family: str, view: str) -> int | None:
    """The axis of a ``(S, H, W)`` crop of ``view`` that runs along the patient's left–right,
    when mirroring the crop along it leaves its grade unchanged: for a family without a side
    only (the canal is graded whole). A foramen's or a recess's crop mirrored would be the other
    side's, already folded onto this orientation, so those get ``None``, as does a view whose
    crops have no left–right axis. Test-time augmentation flips along it."""
    group = Family(family)
    if any(c.side is not None for c in Condition if c.family is group):
        return None
    recipe = CropRecipe(view, *next((s, p) for name, s, p in _VIEWS[group] if name == view),
                        DEFAULT_GEOMETRY[group.value][view])  # fmt: skip
    u, v, w = recipe.axes(None)
    for axis, direction in ((0, w), (1, v), (2, u)):
        if abs(float(direction @ LEFT)) > 0.99:
            return axis
    return None


def geometry_from_settings(settings: dict) -> Geometry:
    """:data:`DEFAULT_GEOMETRY` with ``{family: {view: {mm, px, slices}}}`` over it (any subset;
    a recipe's ``crops``, a cache's ``geometry.json``).

    Raises:
        KeyError: an unknown family, view or key (the message lists the known ones).
        ValueError: a size or slice count :class:`PatchSpec` refuses.
    """
    geometry = {family: dict(views) for family, views in DEFAULT_GEOMETRY.items()}
    for family, views in (settings or {}).items():
        if family not in geometry:
            raise KeyError(f"unknown family {family!r}; known: {sorted(geometry)}")
        for view, values in (views or {}).items():
            if view not in geometry[family]:
                raise KeyError(f"{family} is not cut on {view!r}; its views: {sorted(geometry[family])}")
            unknown = set(values or {}) - set(SPEC_KEYS)
            if unknown:
                raise KeyError(f"{family}.{view}: unknown key(s) {sorted(unknown)}; known: {list(SPEC_KEYS)}")
            old = geometry[family][view]
            values = {**_spec_settings(old), **values}
            pixel_mm = float(values["mm"]) / int(values["px"])
            geometry[family][view] = PatchSpec(float(values["mm"]), int(values["px"]), int(values["slices"]),
                                               int(round(float(values["context_mm"]) / pixel_mm)),
                                               int(values["context_slices"]))  # fmt: skip
    return geometry


def geometry_settings(geometry: Geometry) -> dict:
    """``geometry`` as plain settings (:func:`geometry_from_settings` reads them back)."""
    return {family: {view: _spec_settings(spec) for view, spec in views.items()}
            for family, views in geometry.items()}  # fmt: skip


def _spec_settings(spec: PatchSpec) -> dict:
    return {"mm": spec.size_mm, "px": spec.size_px, "slices": spec.n_slices,
            "context_mm": round(spec.context_px * spec.pixel_mm, 4), "context_slices": spec.context_slices}
