"""A deadline for ``predict``: measured pace, work shed in a fixed order, priors for the rest.

The budget counts from ``started_at`` (a Unix time: the Kaggle kernel passes the moment it
started, so installing wheels and loading models count too) and covers every stage of the
chain: localising, DICOM decoding, cropping and the models. ``predict`` works through the split
in chunks of studies; after each chunk the seconds it cost are split into

- the localiser (scales with the number of localiser models in use),
- each ensemble member (measured around its forward passes), with its test-time augmentation
  passes apart,
- the rest (index, decoding, cropping, bookkeeping),

and the projected finish is ``elapsed + studies_left × (sum of per-study costs)``. While that
passes the deadline, work is shed in this order, each step logged:

1. test-time augmentation (the mirrored passes, ``predict --tta``), for every member at once;
2. ensemble members, the last of the manifest first (the first member is never shed);
3. the localiser's extra models (fold copies and seeds): down to one fold's models.

The split's header index is built before the first chunk, so its one-off cost is not taken
for pace.

Before each chunk, if even that chunk at the current pace would end past the deadline, no more
chunks start: the studies left get the fallback priors, so every row is written in time. The
first chunk always starts unless the budget is already spent (there is no pace to judge by yet).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass
class Cost:
    """Seconds spent on a piece of work over the studies it ran on."""

    seconds: float = 0.0
    studies: int = 0

    def add(self, seconds: float, studies: int) -> None:
        self.seconds += seconds
        self.studies += studies

    @property
    def per_study(self) -> float:
        return self.seconds / self.studies if self.studies else 0.0


@dataclasses.dataclass
class Deadline:
    """Elapsed time against a budget that started at ``started_at`` (Unix seconds).

    ``clock`` returns the current Unix time (``time.time``; tests pass their own).
    """

    budget_s: float
    started_at: float = dataclasses.field(default_factory=time.time)
    clock: Callable[[], float] = time.time

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started_at

    @property
    def left(self) -> float:
        return self.budget_s - self.elapsed

    def fits(self, seconds: float) -> bool:
        """Whether ``seconds`` more work ends within the budget."""
        return self.elapsed + seconds <= self.budget_s


@dataclasses.dataclass
class Plan:
    """What is still in use and what each part costs per study.

    Attributes:
        members: names of the ensemble members in use, in manifest order.
        tta: whether the members still run their test-time augmentation passes.
        member_costs: per member, the measured :class:`Cost` of its plain passes;
            ``tta_costs``: of its test-time augmentation passes.
        localiser_models: localiser models in use now; ``localiser_floor``: the fewest allowed.
        localiser_cost: the localiser's :class:`Cost` per model in use (seconds are divided by
            the model count when recorded).
        other_cost: everything else per study.
    """

    members: list[str]
    localiser_models: int = 0
    localiser_floor: int = 0
    tta: bool = False
    member_costs: dict[str, Cost] = dataclasses.field(default_factory=dict)
    tta_costs: dict[str, Cost] = dataclasses.field(default_factory=dict)
    localiser_cost: Cost = dataclasses.field(default_factory=Cost)
    other_cost: Cost = dataclasses.field(default_factory=Cost)
    shed: list[str] = dataclasses.field(default_factory=list)

    def per_study(self) -> float:
        """Projected seconds per study with what is in use now."""
        members = sum(self.member_costs.get(m, Cost()).per_study for m in self.members)
        if self.tta:
            members += sum(self.tta_costs.get(m, Cost()).per_study for m in self.members)
        return (members + self.localiser_cost.per_study * self.localiser_models
                + self.other_cost.per_study)

    def record_chunk(self, studies: int, wall_s: float, localiser_s: float,
                     member_s: dict[str, float], tta_s: dict[str, float] | None = None) -> None:
        """Book one chunk: its wall seconds, the localiser's and each member's share
        (``member_s``: all its passes; ``tta_s``: the part spent on test-time augmentation)."""
        tta_s = tta_s or {}
        for name, seconds in member_s.items():
            self.member_costs.setdefault(name, Cost()).add(seconds - tta_s.get(name, 0.0), studies)
            if self.tta:
                self.tta_costs.setdefault(name, Cost()).add(tta_s.get(name, 0.0), studies)
        if self.localiser_models:
            self.localiser_cost.add(localiser_s / self.localiser_models, studies)
        self.other_cost.add(max(wall_s - localiser_s - sum(member_s.values()), 0.0), studies)

    def shed_to_fit(self, deadline: Deadline, studies_left: int) -> list[str]:
        """Shed work (module docstring order) until the projection fits; returns what went."""
        went = []
        while not deadline.fits(self.per_study() * studies_left):
            if self.tta:
                self.tta = False
                what = "test-time augmentation"
            elif len(self.members) > 1:
                name = self.members.pop()
                what = f"ensemble member {name}"
            elif self.localiser_models > self.localiser_floor:
                self.localiser_models = self.localiser_floor
                what = f"the localiser's extra models (down to {self.localiser_floor} per task)"
            else:
                break
            LOGGER.warning("time budget %.0f s: %.0f s spent, %d studies left at %.2f s each; "
                           "shedding %s", deadline.budget_s, deadline.elapsed, studies_left,
                           self.per_study(), what)  # fmt: skip
            went.append(what)
        self.shed += went
        return went

    def next_chunk_fits(self, deadline: Deadline, studies: int, first: bool) -> bool:
        """Whether a chunk of ``studies`` may start (the first one only needs time left)."""
        if first:
            return deadline.left > 0
        return deadline.fits(self.per_study() * studies)
