"""Guided plan runs in the server: a :class:`PlanRunner` driven by real time and by the rep
counts of one live counting session per set, announced to the room as ``rehab:guide``.

One asyncio task per run owns every state change (the counting callback only records the
latest rep count and wakes it), so a set never completes twice and stopping is one flag.
Every wait is bounded by ``GuideSettings.tick_s``; a set that never reaches its reps is
skipped after ``max_set_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from kernel.errors import SignalingError

from . import plans
from .plan import PlanEvent, PlanRunner, RehabPlan
from .specs import get_spec

log = logging.getLogger(__name__)

Phase = Literal["countdown", "exercise", "rest", "done", "stopped"]


class GuideSettings(BaseModel):
    """Timers of guided runs (tests shorten them)."""

    model_config = ConfigDict(extra="forbid")

    countdown_s: float = Field(5.0, ge=0, le=60)  # before the first set
    tick_s: float = Field(1.0, gt=0, le=5)  # timer resolution and seconds_left announcements
    max_set_s: float = Field(300.0, gt=0, le=3600)  # a set still short of its reps is skipped
    rest_scale: float = Field(1.0, ge=0, le=1)  # multiplies the plan's rests (tests: 0.01)
    max_runs: int = Field(8, ge=1, le=100)  # guided runs at once on this node


class Counting(Protocol):
    """Starts and stops the live rep counting of one set (the VisionAgent in the server)."""

    async def start(self, guide: Guide) -> str:
        """Start counting the guide's current set; its session id. Raises SignalingError."""
        ...

    async def stop(self, session_id: str, reason: str) -> dict[str, Any] | None:
        """Stop it; the session report, or None when it had already ended."""
        ...

    def alive(self, session_id: str) -> bool: ...


Emit = Callable[[dict[str, Any]], Awaitable[None]]


def scaled(plan: RehabPlan, scale: float) -> RehabPlan:
    if scale == 1.0:
        return plan
    items = tuple(i.model_copy(update={"rest_s": i.rest_s * scale}) for i in plan.items)
    return plan.model_copy(
        update={"items": items, "rest_between_exercises_s": plan.rest_between_exercises_s * scale}
    )


class Guide:
    """One patient's guided run of their plan."""

    def __init__(
        self,
        *,
        plan_id: str,
        plan: RehabPlan,
        room: str,
        patient: str,
        started_by: str,
        lang: str,
        settings: GuideSettings,
        counting: Counting,
        emit: Emit,
        store: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = plans.new_id()
        self.plan_id = plan_id
        self.plan = plan
        self.room = room
        self.patient = patient
        self.started_by = started_by
        self.lang = lang
        self.settings = settings
        self.counting = counting
        self.emit = emit
        self.store = store
        self.clock = clock
        self.runner = PlanRunner(scaled(plan, settings.rest_scale))
        self.phase: Phase = "countdown"
        self.phase_until: float | None = None
        self.session_id: str | None = None
        self.reps = 0  # latest count of the current set's session
        self.set_started_at = 0.0
        self.error: dict[str, str] | None = None
        self.stopping: str | None = None
        self.end_reason: str | None = None
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._next_start_try = 0.0

    # -- inputs ------------------------------------------------------------------------------
    def on_update(self, payload: dict[str, Any]) -> None:
        """A ``rehab:update`` of a counting session (called from the agent's callback)."""
        if payload.get("session_id") == self.session_id and payload.get("rep", 0) > self.reps:
            self.reps = int(payload["rep"])
            self.wake.set()

    def stop(self, reason: str) -> None:
        if self.stopping is None:
            self.stopping = reason
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"rehab-guide-{self.id}")

    # -- the loop ----------------------------------------------------------------------------
    async def _wait(self, until: float | None) -> None:
        timeout = self.settings.tick_s
        if until is not None:
            timeout = max(0.0, min(timeout, until - self.clock()))
        try:  # asyncio.timeout: wait_for (3.11) may swallow a cancel landing with a wakeup
            async with asyncio.timeout(timeout):
                await self.wake.wait()
        except TimeoutError:
            pass
        self.wake.clear()

    async def _run(self) -> None:
        try:
            self.phase_until = self.clock() + self.settings.countdown_s
            while self.stopping is None and self.clock() < self.phase_until:
                await self.announce()
                await self._wait(self.phase_until)
            if self.stopping is None:
                await self._apply(self.runner.start(self.clock()))
            while self.stopping is None and self.runner.state != "done":
                await self._step()
            self.end_reason = self.stopping or "completed"
        except asyncio.CancelledError:
            self.end_reason = self.stopping or "cancelled"
            raise
        except Exception:
            log.exception("rehab guide %s failed", self.id)
            self.end_reason = "error"
        finally:
            await asyncio.shield(self._finish())

    async def _step(self) -> None:
        now = self.clock()
        runner = self.runner
        events: list[PlanEvent] = []
        if runner.state == "exercising":
            if self.session_id is None or not self.counting.alive(self.session_id):
                await self._start_counting(now)
            if self.reps > runner.results[-1].reps:
                events = runner.reps_done(self.reps, now)
                if not events:
                    await self.announce()
            elif now - self.set_started_at >= self.settings.max_set_s:
                events = runner.skip(now)
            until = self.set_started_at + self.settings.max_set_s
        else:  # resting
            events = runner.tick(now)
            until = runner.rest_until
        if events:
            await self._apply(events)
            return
        if runner.state == "resting":
            await self.announce()
        await self._wait(until)

    async def _start_counting(self, now: float) -> None:
        if now < self._next_start_try:
            return
        self._next_start_try = now + self.settings.tick_s
        self.session_id = None
        try:
            self.session_id = await self.counting.start(self)
            self.error = None
        except SignalingError as exc:
            if self.error is None or self.error["code"] != exc.code:
                self.error = {"code": str(exc.code), "message": exc.message}
                await self.announce()

    async def _stop_counting(self, reason: str) -> dict[str, Any] | None:
        sid, self.session_id = self.session_id, None
        if sid is None:
            return None
        try:
            return await self.counting.stop(sid, reason)
        except Exception:
            log.exception("rehab guide %s: stopping session %s", self.id, sid)
            return None

    async def _apply(self, events: list[PlanEvent]) -> None:
        for ev in events:
            if ev.kind == "set_started":
                self.reps = 0
                self.set_started_at = ev.at
                self.phase, self.phase_until = "exercise", None
                self._next_start_try = 0.0
                await self._start_counting(ev.at)
                await self.announce()
            elif ev.kind == "set_complete":
                await self._record_set(await self._stop_counting("set_complete"))
            elif ev.kind == "rest_started":
                self.phase, self.phase_until = "rest", self.runner.rest_until
                await self.announce()
            elif ev.kind == "plan_complete":
                self.phase, self.phase_until = "done", None

    async def _record_set(self, report: dict[str, Any] | None) -> None:
        res = self.runner.results[-1]
        wall = time.time()
        row = {
            "run_id": self.id,
            "item": res.item,
            "set": res.set,
            "exercise": self.plan.items[res.item].exercise,
            "session_id": report["session_id"] if report else None,
            "target_reps": res.target_reps,
            "reps": min(res.reps, res.target_reps),
            "skipped": res.skipped,
            "started_at": wall - (self.clock() - res.started_at),
            "ended_at": wall,
        }
        try:
            await plans.add_set(self.store, row)
        except Exception:
            log.exception("rehab guide %s: set not stored", self.id)

    async def _finish(self) -> None:
        reason = self.end_reason or "stopped"
        if self.runner.state == "exercising" and self.session_id is not None:
            res = self.runner.results[-1]
            res.ended_at, res.skipped = self.clock(), True
            await self._record_set(await self._stop_counting(reason))
        else:
            await self._stop_counting(reason)
        if reason != "completed":
            self.phase, self.phase_until = "stopped", None
        ad = self.runner.adherence()
        try:
            await plans.end_run(
                self.store,
                self.id,
                {
                    "ended_at": time.time(),
                    "end_reason": reason,
                    "sets_done": ad["sets_completed"],
                    "reps_done": ad["reps_done"],
                },
            )
        except Exception:
            log.exception("rehab guide %s: run end not stored", self.id)
        try:
            await self.announce(end_reason=reason, adherence=ad)
        except Exception:
            log.exception("rehab guide %s: last announcement", self.id)

    # -- what the room sees ------------------------------------------------------------------
    def _next(self) -> dict[str, Any] | None:
        r = self.runner
        if r.state != "resting":
            return None
        item, set_ = (r.item + 1, 1) if r.set >= r.current.sets else (r.item, r.set + 1)
        if item >= len(self.plan.items):
            return None
        return {"step": item + 1, "exercise": self.plan.items[item].exercise, "set": set_}

    def payload(self) -> dict[str, Any]:
        r = self.runner
        item = self.plan.items[r.item]
        spec = get_spec(item.exercise)
        left = None
        if self.phase_until is not None:
            left = round(max(0.0, self.phase_until - self.clock()), 1)
        return {
            "run_id": self.id,
            "plan_id": self.plan_id,
            "patient": self.patient,
            "title": self.plan.title,
            "phase": self.phase,
            "seconds_left": left,
            "step": r.item + 1,
            "steps": len(self.plan.items),
            "exercise": item.exercise,
            "exercise_title": {"en": spec.title.en, "zh-CN": spec.title.zh_cn},
            "demo": plans.demo_texts().get(item.exercise, {"en": "", "zh-CN": ""}),
            "instructions": item.instructions,
            "side": item.side or spec.side,
            "set": r.set,
            "sets": item.sets,
            "target_reps": item.reps,
            "reps": min(self.reps, item.reps)
            if r.state == "exercising"
            else (r.results[-1].reps if r.results else 0),
            "session_id": self.session_id,
            "next": self._next(),
            "error": self.error,
        }

    async def announce(self, **extra: Any) -> None:
        await self.emit({**self.payload(), **extra})
