"""Prescribed rehab plans and a pure state machine that walks a patient through one.

The runner is driven by explicit times (seconds, any monotonic clock) and by rep counts from the
vision session; it owns no timers and does no I/O, so the same code serves a browser-driven
session, a clinician-watched one and the tests. Storage and signaling come later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .specs import exercise_names

State = Literal["ready", "exercising", "resting", "done"]


class PlanItem(BaseModel):
    """One exercise of a plan: side, sets x reps, rest between sets, the clinician's words."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exercise: str
    side: Literal["left", "right", "both", "auto"] | None = None
    sets: int = Field(default=3, ge=1, le=20)
    reps: int = Field(default=10, ge=1, le=100)
    rest_s: float = Field(default=60.0, ge=0, le=900)
    target_deg: float | None = Field(default=None, ge=0, le=180)
    instructions: str = Field(default="", max_length=1000)

    @field_validator("exercise")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in exercise_names():
            raise ValueError(f"unknown exercise; known: {', '.join(exercise_names())}")
        return name


class RehabPlan(BaseModel):
    """A clinician's prescription: exercises in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, max_length=200)
    items: tuple[PlanItem, ...] = Field(min_length=1, max_length=30)
    rest_between_exercises_s: float = Field(default=90.0, ge=0, le=1800)
    prescribed_by: str | None = Field(default=None, max_length=128)


@dataclass(frozen=True, slots=True)
class PlanEvent:
    kind: Literal[
        "set_started",
        "set_complete",
        "rest_started",
        "rest_over",
        "exercise_complete",
        "plan_complete",
        "skipped",
    ]
    item: int  # 0-based index into plan.items
    set: int  # 1-based
    at: float


@dataclass(slots=True)
class SetResult:
    item: int
    set: int
    target_reps: int
    reps: int = 0
    started_at: float = 0.0
    ended_at: float | None = None
    skipped: bool = False


class PlanStateError(RuntimeError):
    """An action that the runner's current state does not allow."""


@dataclass
class PlanRunner:
    """Walks a patient through a :class:`RehabPlan`: exercise, set, rest countdown, next."""

    plan: RehabPlan
    state: State = "ready"
    item: int = 0
    set: int = 1
    rest_until: float | None = None
    results: list[SetResult] = field(default_factory=list)

    @property
    def current(self) -> PlanItem:
        return self.plan.items[self.item]

    def _guard(self, *allowed: State) -> None:
        if self.state not in allowed:
            raise PlanStateError(f"not allowed while {self.state}")

    def start(self, now: float) -> list[PlanEvent]:
        self._guard("ready")
        return self._begin_set(now)

    def _begin_set(self, now: float) -> list[PlanEvent]:
        self.state = "exercising"
        self.rest_until = None
        self.results.append(SetResult(self.item, self.set, self.current.reps, started_at=now))
        return [PlanEvent("set_started", self.item, self.set, now)]

    def reps_done(self, reps: int, now: float) -> list[PlanEvent]:
        """The vision session's count for the current set; completes the set at its target."""
        self._guard("exercising")
        res = self.results[-1]
        res.reps = max(res.reps, reps)
        if res.reps >= res.target_reps:
            return self._end_set(now, skipped=False)
        return []

    def skip(self, now: float) -> list[PlanEvent]:
        """End the current set (patient tired, clinician's call) or cut a rest short."""
        self._guard("exercising", "resting")
        if self.state == "resting":
            assert self.rest_until is not None
            return self.tick(self.rest_until)
        return [PlanEvent("skipped", self.item, self.set, now), *self._end_set(now, skipped=True)]

    def _end_set(self, now: float, skipped: bool) -> list[PlanEvent]:
        res = self.results[-1]
        res.ended_at, res.skipped = now, skipped
        events = [PlanEvent("set_complete", self.item, self.set, now)]
        last_set = self.set >= self.current.sets
        if last_set:
            events.append(PlanEvent("exercise_complete", self.item, self.set, now))
            if self.item + 1 >= len(self.plan.items):
                self.state = "done"
                return [*events, PlanEvent("plan_complete", self.item, self.set, now)]
            rest = self.plan.rest_between_exercises_s
        else:
            rest = self.current.rest_s
        self.state = "resting"
        self.rest_until = now + rest
        return [*events, PlanEvent("rest_started", self.item, self.set, now)]

    def rest_remaining(self, now: float) -> float:
        return (
            max(0.0, self.rest_until - now)
            if self.state == "resting" and self.rest_until is not None
            else 0.0
        )

    def tick(self, now: float) -> list[PlanEvent]:
        """Advance the clock: ends a rest when its countdown is over and starts the next set."""
        if self.state != "resting" or self.rest_until is None or now < self.rest_until:
            return []
        events = [PlanEvent("rest_over", self.item, self.set, now)]
        if self.set >= self.current.sets:
            self.item += 1
            self.set = 1
        else:
            self.set += 1
        return [*events, *self._begin_set(now)]

    def adherence(self) -> dict[str, float | int]:
        """Prescribed vs done: sets completed (not skipped) and reps, over the whole plan."""
        prescribed_sets = sum(i.sets for i in self.plan.items)
        prescribed_reps = sum(i.sets * i.reps for i in self.plan.items)
        done_sets = sum(1 for r in self.results if r.ended_at is not None and not r.skipped)
        reps = sum(min(r.reps, r.target_reps) for r in self.results)
        return {
            "sets_prescribed": prescribed_sets,
            "sets_completed": done_sets,
            "reps_prescribed": prescribed_reps,
            "reps_done": reps,
            "adherence": round(reps / prescribed_reps, 3) if prescribed_reps else 0.0,
        }
