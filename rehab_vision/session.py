"""Stateful online wrapper: landmarks frame by frame -> angle, phase, reps, scores, cues."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .counter import CounterConfig, Phase, RepCounter, RepEvent
from .cues import PRIORITY, Cue, CueLimiter
from .filters import OneEuroFilter
from .landmarks import Landmarks, PoseSequence
from .measures import FrameMeasures, combined_angle, measure
from .scoring import Fault, score_rep
from .specs import ExerciseSpec, Side
from .view import ViewStatus, ViewWatch, frame_view

LOST_CUE_AFTER_S = 1.5  # how long nobody / a cut-off body is seen before the patient is told
START_WINDOW_S = 0.3  # auto direction: the start position is the median angle over this time
BUFFER_S = 30.0
TRACE_STEP_S = 0.1  # the angle trace kept for the report's chart: at most 10 points a second
TRACE_MAX = 36_000  # one hour of it


@dataclass(frozen=True, slots=True)
class RepResult:
    index: int
    start_s: float
    peak_s: float
    end_s: float
    rom_deg: float
    peak_deg: float
    rom_fraction: float
    score: float
    components: dict[str, float]
    faults: tuple[Fault, ...]
    side: str

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "start_s": round(self.start_s, 3),
            "peak_s": round(self.peak_s, 3),
            "end_s": round(self.end_s, 3),
            "rom_deg": self.rom_deg,
            "peak_deg": self.peak_deg,
            "rom_fraction": self.rom_fraction,
            "score": self.score,
            "components": self.components,
            "side": self.side,
            "faults": [f.as_dict() for f in self.faults],
        }


@dataclass(frozen=True, slots=True)
class FrameUpdate:
    t: float
    tracked: bool
    angle: float | None  # smoothed joint angle, degrees
    phase: Phase
    reps: int
    new_reps: tuple[RepResult, ...] = ()  # reps completed on this frame
    cue: Cue | None = None
    view: ViewStatus = "ok"  # in view / step back / not in view (held for a while)

    @property
    def rep(self) -> RepResult | None:
        """The last rep completed on this frame, if any."""
        return self.new_reps[-1] if self.new_reps else None


@dataclass(slots=True)
class _SideChooser:
    """One decision, taken at rest: the clearly more visible side, else the side that clearly
    moves more (one-limb work); until then (or if never) both sides are measured together, so
    mirrored input gets mirrored choices.
    """

    vis: dict[str, float] = field(default_factory=lambda: {"left": 0.0, "right": 0.0})
    lo: dict[str, float] = field(default_factory=lambda: {"left": math.inf, "right": math.inf})
    hi: dict[str, float] = field(default_factory=lambda: {"left": -math.inf, "right": -math.inf})
    current: str | None = None
    min_range: float = 30.0
    first: dict[str, list[float]] = field(default_factory=lambda: {"left": [], "right": []})
    _t0: float | None = None

    def start_angle(self, side: str) -> float | None:
        """Median angle of ``side`` over the first moments of the set."""
        return float(np.median(self.first[side])) if self.first[side] else None

    def update(self, m: FrameMeasures, may_switch: bool) -> str | None:
        for s in ("left", "right"):
            self.vis[s] = 0.8 * self.vis[s] + 0.2 * m.vis[s]
            if m.usable(s):
                self.lo[s] = min(self.lo[s], m.angle[s])
                self.hi[s] = max(self.hi[s], m.angle[s])
                if self._t0 is None:
                    self._t0 = m.t
                if m.t - self._t0 <= START_WINDOW_S:
                    self.first[s].append(m.angle[s])
        if not may_switch or self.current is not None:
            return self.current  # decided once, at rest, then kept
        dv = self.vis["left"] - self.vis["right"]
        r = {s: self._range(s) for s in ("left", "right")}
        big, small = sorted(r, key=r.__getitem__, reverse=True)
        if abs(dv) >= 0.2:
            self.current = "left" if dv > 0 else "right"
        elif r[big] >= self.min_range and r[big] >= 2.0 * r[small]:
            self.current = big  # one arm/leg works, the other stays still
        return self.current

    def _range(self, s: str) -> float:
        return self.hi[s] - self.lo[s] if self.hi[s] >= self.lo[s] else 0.0


class ExerciseSession:
    """Feed one frame at a time with :meth:`feed`; read ``reps`` and :meth:`summary`."""

    def __init__(
        self,
        spec: ExerciseSpec,
        side: Side | None = None,
        counter: CounterConfig | None = None,
        cue_limiter: CueLimiter | None = None,
        min_cutoff: float = 1.5,
        beta: float = 0.05,
    ) -> None:
        self.spec = spec
        self.side: Side = side or spec.side
        self.counter = RepCounter(counter or CounterConfig(min_rom=spec.min_rom_deg))
        # With auto_direction the rest end is found from the first movement; until then the
        # smoothed angles wait here (bounded) and are replayed into the counter.
        self._direction_known = not spec.auto_direction
        self._pending: deque[tuple[float, float | None]] = deque(maxlen=900)
        self._start_angle: float | None = None
        self._rebase_t: float | None = None
        self.cues = cue_limiter or CueLimiter()
        self._filter_args = (min_cutoff, beta)
        self._filter = OneEuroFilter(min_cutoff, beta)
        self._chooser = _SideChooser(min_range=spec.min_rom_deg)
        self._chosen: str | None = None
        self._last_sides: tuple[str, ...] = ("left", "right")
        self._buffer: deque[FrameMeasures] = deque()
        self.view = ViewWatch(after_s=LOST_CUE_AFTER_S)
        self.reps: list[RepResult] = []
        self.trace: deque[tuple[float, float]] = deque(maxlen=TRACE_MAX)  # (t, smoothed deg)
        self.frames = 0
        self.tracked_frames = 0
        self.first_t: float | None = None
        self.last_t: float | None = None

    def _sides(self, m: FrameMeasures) -> tuple[str, ...]:
        if self.side == "both":
            return ("left", "right")
        if self.side in ("left", "right"):
            return (self.side,)
        chosen = self._chooser.update(m, may_switch=self.counter.phase == "rest")
        if chosen is not None and chosen != self._chosen:
            # Taken once, at rest: go on with the chosen side's signal from its own rest level.
            self._filter = OneEuroFilter(*self._filter_args)
            if self._direction_known:
                lo, hi = self._chooser.lo[chosen], self._chooser.hi[chosen]
                self.counter.rebase(lo if self.spec.sign > 0 else -hi)
            else:  # restart the direction search on this side, from its start position
                self._pending.clear()
                self._start_angle = self._chooser.start_angle(chosen)
                self._rebase_t = m.t
        self._chosen = chosen
        return (chosen,) if chosen else ("left", "right")

    def feed(self, t: float, lm: Landmarks | None, aspect: float = 1.0) -> FrameUpdate:
        """Process one frame taken at ``t`` seconds; ``lm`` None when no person was found."""
        self.frames += 1
        self.first_t = t if self.first_t is None else self.first_t
        self.last_t = t
        angle: float | None = None
        sides: tuple[str, ...] = ()
        if lm is not None:
            m = measure(self.spec, lm, t, aspect)
            sides = self._last_sides = self._sides(m)
            raw = combined_angle(m, sides)
            if raw is not None and not math.isnan(raw):
                angle = self._filter(t, raw)
                self._buffer.append(m)
        while self._buffer and t - self._buffer[0].t > BUFFER_S:
            self._buffer.popleft()
        events = self._count(t, angle)
        cue_keys: list[str] = []
        if angle is not None:
            self.tracked_frames += 1
            if not self.trace or t - self.trace[-1][0] >= TRACE_STEP_S:
                self.trace.append((t, angle))
        needed = [self.spec.angle.landmarks(s) for s in (sides or self._last_sides)]
        changed = self.view.update(t, frame_view(lm, needed, angle is not None))
        if changed == "not_in_view":
            cue_keys.append("step_into_view")
        elif changed == "step_back":
            cue_keys.append("step_back")
        new_reps = tuple(self._finish_rep(ev, sides or self._last_sides) for ev in events)
        for rep in new_reps:
            cue_keys.extend(sorted({f.cue for f in rep.faults}, key=lambda k: PRIORITY.get(k, 50)))
        cue = self.cues.pick(t, cue_keys) if cue_keys else None
        return FrameUpdate(
            t=t,
            tracked=angle is not None,
            angle=angle,
            phase=self.counter.phase,
            reps=self.counter.count,
            new_reps=new_reps,
            cue=cue,
            view=self.view.status,
        )

    def finish(self) -> tuple[RepResult, ...]:
        """End of the set: count what frames held back after a loss of tracking still show."""
        return tuple(self._finish_rep(ev, self._last_sides) for ev in self.counter.flush())

    def _count(self, t: float, angle: float | None) -> list[RepEvent]:
        if self._direction_known:
            return self.counter.update(t, None if angle is None else self.spec.sign * angle)
        self._pending.append((t, angle))
        if angle is None:
            return []
        # The start position: median of the first START_WINDOW_S of tracked angles.
        tracked = [(pt, pa) for pt, pa in self._pending if pa is not None]
        if self._start_angle is None:
            if t - tracked[0][0] < START_WINDOW_S:
                return []
            self._start_angle = float(np.median([pa for _, pa in tracked]))
        moved = angle - self._start_angle
        if abs(moved) < 0.5 * self.spec.min_rom_deg:
            return []
        if (moved > 0) != (self.spec.sign > 0):
            self.spec = self.spec.reversed()
        self._direction_known = True
        if self._rebase_t is not None:
            self.counter.rebase(self.spec.sign * self._start_angle, self._rebase_t)
        events: list[RepEvent] = []
        for pt, pa in self._pending:
            events += self.counter.update(pt, None if pa is None else self.spec.sign * pa)
        self._pending.clear()
        return events

    def _finish_rep(self, ev: RepEvent, sides: tuple[str, ...]) -> RepResult:
        frames = [m for m in self._buffer if ev.start_t <= m.t <= ev.end_t]
        sign = self.spec.sign
        rs = score_rep(
            self.spec,
            frames,
            sides or ("left", "right"),
            rest_deg=sign * ev.rest_depth,
            peak_deg=sign * ev.peak_depth,
            duration_s=ev.duration_s,
        )
        rep = RepResult(
            index=ev.index,
            start_s=ev.start_t,
            peak_s=ev.peak_t,
            end_s=ev.end_t,
            rom_deg=rs.rom_deg,
            peak_deg=rs.peak_deg,
            rom_fraction=rs.rom_fraction,
            score=rs.score,
            components=rs.components,
            faults=rs.faults,
            side="+".join(sides) if sides else "none",
        )
        self.reps.append(rep)
        return rep

    def summary(self) -> dict[str, object]:
        """Totals over the reps so far."""
        scores = [r.score for r in self.reps]
        faults: dict[str, int] = {}
        for r in self.reps:
            for f in r.faults:
                faults[f.kind] = faults.get(f.kind, 0) + 1
        return {
            "exercise": self.spec.name,
            "reps": len(self.reps),
            "score": round(sum(scores) / len(scores), 1) if scores else None,
            "reps_detail": [r.as_dict() for r in self.reps],
            "faults": faults,
            "frames": self.frames,
            "tracked_frames": self.tracked_frames,
            "duration_s": round((self.last_t or 0.0) - (self.first_t or 0.0), 3),
            "angle_trace": {
                "t": [round(t, 2) for t, _ in self.trace],
                "deg": [round(a, 1) for _, a in self.trace],
            },
            "rest_deg": self.spec.rest_deg,
            "target_deg": self.spec.target_deg,
        }


def analyze_sequence(
    seq: PoseSequence,
    spec: ExerciseSpec,
    side: Side | None = None,
) -> ExerciseSession:
    """Run a whole landmark sequence through a fresh session (pure: same input, same output)."""
    session = ExerciseSession(spec, side=side)
    h, w = seq.frame_size
    aspect = w / h if h and w else 1.0
    for i in range(len(seq)):
        session.feed(float(seq.t[i]), seq.frame(i), aspect)
    session.finish()
    return session


def count_reps(
    seq: PoseSequence,
    spec: ExerciseSpec,
    side: Side | None = None,
) -> list[RepResult]:
    """The reps of a landmark sequence."""
    return analyze_sequence(seq, spec, side).reps
