"""Rehab plans: the model and the PlanRunner state machine."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rehab_vision.plan import PlanItem, PlanRunner, PlanStateError, RehabPlan


def plan() -> RehabPlan:
    return RehabPlan(
        title="Knee week 2",
        rest_between_exercises_s=90,
        items=(
            PlanItem(exercise="squat", sets=2, reps=3, rest_s=30, instructions="slowly"),
            PlanItem(exercise="knee_extension", side="left", sets=1, reps=2),
        ),
    )


def kinds(events: list) -> list[str]:
    return [e.kind for e in events]


def test_walk_through_a_plan() -> None:
    r = PlanRunner(plan())
    assert kinds(r.start(0.0)) == ["set_started"]
    assert r.current.exercise == "squat" and r.set == 1
    assert r.reps_done(2, 5.0) == []
    assert kinds(r.reps_done(3, 9.0)) == ["set_complete", "rest_started"]
    assert r.state == "resting"
    assert r.rest_remaining(19.0) == pytest.approx(20.0)
    assert r.tick(38.0) == []
    assert kinds(r.tick(39.0)) == ["rest_over", "set_started"]
    assert (r.item, r.set, r.state) == (0, 2, "exercising")
    assert kinds(r.reps_done(3, 50.0)) == ["set_complete", "exercise_complete", "rest_started"]
    assert r.rest_remaining(50.0) == pytest.approx(90.0)  # between exercises
    assert kinds(r.tick(140.0)) == ["rest_over", "set_started"]
    assert r.current.exercise == "knee_extension"
    assert kinds(r.reps_done(2, 150.0)) == ["set_complete", "exercise_complete", "plan_complete"]
    assert r.state == "done"
    assert r.adherence()["adherence"] == 1.0


def test_skip_and_adherence() -> None:
    r = PlanRunner(plan())
    r.start(0.0)
    r.reps_done(1, 3.0)
    assert kinds(r.skip(4.0)) == ["skipped", "set_complete", "rest_started"]
    assert kinds(r.skip(5.0)) == ["rest_over", "set_started"]  # rest cut short
    ad = r.adherence()
    assert ad["sets_completed"] == 0 and ad["reps_done"] == 1
    assert ad["reps_prescribed"] == 8


def test_guards_and_validation() -> None:
    r = PlanRunner(plan())
    with pytest.raises(PlanStateError):
        r.reps_done(1, 0.0)
    r.start(0.0)
    with pytest.raises(PlanStateError):
        r.start(1.0)
    with pytest.raises(ValidationError):
        PlanItem(exercise="moonwalk")
    with pytest.raises(ValidationError):
        RehabPlan(title="empty", items=())
    with pytest.raises(ValidationError):
        PlanItem(exercise="squat", reps=0)
