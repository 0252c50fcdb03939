"""The deadline's decisions on measured costs: what is shed, in which order, and when to stop."""

import pytest

from rsna_lumbar.inference.budget import Deadline, Plan


class Clock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _plan() -> Plan:
    """Three members (2, 1 and 1 s per study), a localiser of 5 models (0.2 s each per study)
    and 0.5 s per study of decoding: 5.5 s per study with everything in use."""
    plan = Plan(["a", "b", "c"], localiser_models=5, localiser_floor=1)
    plan.record_chunk(10, wall_s=55.0, localiser_s=10.0, member_s={"a": 20.0, "b": 10.0, "c": 10.0})
    return plan


def test_a_chunk_is_split_into_localiser_members_and_the_rest():
    plan = _plan()
    assert plan.localiser_cost.per_study == pytest.approx(0.2)  # per model
    assert plan.other_cost.per_study == pytest.approx(0.5)
    assert plan.per_study() == pytest.approx(5.5)


def test_nothing_is_shed_while_the_projection_fits():
    clock = Clock(100.0)
    plan = _plan()
    assert plan.shed_to_fit(Deadline(1000.0, 0.0, clock), studies_left=100) == []  # 100 + 550
    assert plan.members == ["a", "b", "c"]


def test_members_go_last_first_then_the_localisers_extra_models():
    clock = Clock(100.0)
    deadline = Deadline(400.0, 0.0, clock)
    plan = _plan()
    # 100 studies left: 5.5 → 4.5 (c) → 3.5 (b) → 2.7 (localiser 5 → 1) s per study: fits
    went = plan.shed_to_fit(deadline, studies_left=100)
    assert went == ["ensemble member c", "ensemble member b",
                    "the localiser's extra models (down to 1 per task)"]
    assert plan.members == ["a"] and plan.localiser_models == 1
    assert plan.per_study() == pytest.approx(2.7)


def test_the_first_member_is_never_shed_and_chunks_stop_when_even_one_runs_late():
    clock = Clock(390.0)
    deadline = Deadline(400.0, 0.0, clock)
    plan = _plan()
    plan.shed_to_fit(deadline, studies_left=100)
    assert plan.members == ["a"]
    assert plan.next_chunk_fits(deadline, studies=3, first=False)  # 390 + 8.1
    assert not plan.next_chunk_fits(deadline, studies=4, first=False)  # 390 + 10.8
    clock.now = 401.0
    assert not plan.next_chunk_fits(deadline, studies=1, first=True)  # the budget is spent
    clock.now = 399.0
    assert plan.next_chunk_fits(deadline, studies=1000, first=True)  # no pace yet: start


def test_the_budget_counts_from_started_at_not_from_construction():
    clock = Clock(5000.0)
    deadline = Deadline(3600.0, started_at=2000.0, clock=clock)
    assert deadline.elapsed == 3000.0 and deadline.left == 600.0
    assert deadline.fits(600.0) and not deadline.fits(601.0)


def test_test_time_augmentation_is_shed_first_and_its_cost_goes_with_it():
    clock = Clock(100.0)
    plan = Plan(["a", "b"], localiser_models=1, localiser_floor=1, tta=True)
    # a: 3 s per study of which 1 s mirrored passes; b: 1.5 s of which 0.5 s; 0.5 s the rest
    plan.record_chunk(10, wall_s=50.0, localiser_s=0.0, member_s={"a": 30.0, "b": 15.0},
                      tta_s={"a": 10.0, "b": 5.0})  # fmt: skip
    assert plan.per_study() == pytest.approx(5.0)
    # 100 studies left, 400 s: 5.0 → 3.5 without the mirrored passes: fits with both members
    assert plan.shed_to_fit(Deadline(500.0, 0.0, clock), studies_left=100) == ["test-time augmentation"]
    assert plan.members == ["a", "b"] and not plan.tta and plan.per_study() == pytest.approx(3.5)
    plan.record_chunk(10, wall_s=35.0, localiser_s=0.0, member_s={"a": 20.0, "b": 10.0})
    assert plan.per_study() == pytest.approx(3.5)  # plain passes only, measured again
