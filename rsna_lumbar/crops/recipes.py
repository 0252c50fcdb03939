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

import numpy as np

from rsna_lumbar.crops.sampling import PatchSpec
from rsna_lumbar.vocabulary import Condition, Family, SeriesDescription, Side

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


DEFAULT_RECIPES: dict[Family, tuple[CropRecipe, ...]] = {
    Family.SPINAL: (
        CropRecipe("sag_t2", SeriesDescription.SAGITTAL_T2, Family.SPINAL, PatchSpec(48.0, 64, 5)),
        CropRecipe("axial", SeriesDescription.AXIAL_T2, Family.SPINAL, PatchSpec(48.0, 64, 3)),
    ),
    Family.FORAMINAL: (
        CropRecipe("sag_t1", SeriesDescription.SAGITTAL_T1, Family.FORAMINAL, PatchSpec(40.0, 64, 5)),
    ),
    Family.SUBARTICULAR: (
        CropRecipe("axial", SeriesDescription.AXIAL_T2, Family.SUBARTICULAR, PatchSpec(40.0, 64, 3)),
    ),
}


def recipes_for(condition: Condition) -> tuple[CropRecipe, ...]:
    """The views cut for ``condition`` (by its family)."""
    return DEFAULT_RECIPES[condition.family]


def crop_spec(family: str, view: str) -> PatchSpec:
    """The patch spec (mm, pixels, slices) of the crops of ``view`` cut for ``family``."""
    recipes = DEFAULT_RECIPES[Family(family)]
    for recipe in recipes:
        if recipe.view == view:
            return recipe.spec
    msg = f"no {view!r} crop is cut for the {family} family; its views: {[r.view for r in recipes]}"
    raise KeyError(msg)
