"""Online repetition counter: a causal hysteresis state machine on one smoothed signal.

The input is the exercise's joint angle turned into a "depth" that grows during the movement
(``sign * angle``). A rep is rest -> away from rest by at least ``enter`` -> back towards rest by
``exit_frac`` of its own excursion. The thresholds adapt to the patient: ``enter`` is a fraction
of the typical amplitude of the reps done so far (never below the spec's ``min_rom_deg``), and
the return is relative to this rep's own excursion, so a patient with a small range still counts
and a large one does not count a wobble. Reps shorter than ``min_rep_s`` are discarded. Frames
without a pose (``None``) hold the state. After a short loss (up to ``max_gap_s``) the counter
waits ``bridge_frames`` frames, and if the movement reversed while unseen (rising before, falling
after, or the opposite) it inserts the extreme estimated where the two trends meet, so a rep
whose bottom (or whose return to rest) fell in the gap is neither lost nor doubled. A longer loss
drops the pending rep.
The count is emitted on the frame that completes the return: the delay is the filter lag plus the
time to travel ``1 - exit_frac`` of the way back, never a look-ahead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Phase = Literal["rest", "going", "peak", "returning"]


@dataclass(frozen=True, slots=True)
class RepEvent:
    """One counted repetition, in signal units (depth) and seconds."""

    index: int  # 1-based
    start_t: float
    peak_t: float
    end_t: float
    rest_depth: float
    peak_depth: float

    @property
    def excursion(self) -> float:
        return self.peak_depth - self.rest_depth

    @property
    def duration_s(self) -> float:
        return self.end_t - self.start_t


@dataclass(slots=True)
class CounterConfig:
    min_rom: float = 30.0  # degrees of excursion a rep needs at least
    enter_frac: float = 0.4  # of the typical amplitude, to leave rest
    exit_frac: float = 0.6  # of this rep's excursion, to count the return
    min_rep_s: float = 0.4
    max_gap_s: float = 1.5
    amp_alpha: float = 0.5  # weight of the newest rep in the typical amplitude
    rest_tol_frac: float = 0.2  # of min_rom: still counts as being at rest
    bridge_after_s: float = 0.25  # a loss at least this long is bridged
    bridge_frames: int = 4  # frames after a loss used to measure the new trend


class RepCounter:
    """Feed ``update(t, depth)`` once per frame; it returns the reps that ended (usually none,
    at most a few when frames held back after a loss of tracking are released)."""

    def __init__(self, config: CounterConfig | None = None) -> None:
        self.config = config or CounterConfig()
        self.count = 0
        self.amplitude: float | None = None  # typical excursion of the reps so far
        self._active = False
        self._rest: float | None = None  # lowest depth since the last rep ended
        self._rest_t = 0.0
        self._peak = 0.0
        self._peak_t = 0.0
        self._last_t: float | None = None
        self._last: float | None = None
        self._lo_seen = math.inf
        self._hi_seen = -math.inf
        self._velocity = 0.0  # depth per second, smoothed, over consecutive frames
        self._bridge: list[tuple[float, float]] | None = None  # frames after a loss
        self._before: tuple[float, float, float] | None = None  # (t, depth, velocity)
        self.phase: Phase = "rest"

    @property
    def enter_threshold(self) -> float:
        c = self.config
        amp = self.amplitude if self.amplitude is not None else 0.0
        return max(c.min_rom, c.enter_frac * amp)

    def reset_pending(self) -> None:
        """Drop a rep in progress (long loss of tracking)."""
        self._active = False
        self._rest = None
        self.phase = "rest"

    def rebase(self, rest_depth: float, t: float | None = None) -> None:
        """Take ``rest_depth`` as the rest level (the signal moved to another body side)."""
        if not self._active and math.isfinite(rest_depth):
            self._rest = rest_depth
            if t is not None:
                self._rest_t = t
            self._lo_seen = min(self._lo_seen, rest_depth)

    def update(self, t: float, depth: float | None) -> list[RepEvent]:
        c = self.config
        if depth is None:
            if self._last_t is not None and t - self._last_t > c.max_gap_s:
                self.reset_pending()
                self._bridge = None
            return []
        if self._bridge is not None:
            self._bridge.append((t, depth))
            if len(self._bridge) < c.bridge_frames:
                return []
            return self._close_bridge()
        if self._last_t is not None and self._last is not None:
            gap = t - self._last_t
            if gap > c.max_gap_s:
                self.reset_pending()
                self._velocity = 0.0
            elif gap >= c.bridge_after_s and self._rest is not None:
                self._before = (self._last_t, self._last, self._velocity)
                self._bridge = [(t, depth)]
                return []
            elif gap > 0:
                self._velocity = 0.5 * self._velocity + 0.5 * (depth - self._last) / gap
        ev = self._step(t, depth)
        return [ev] if ev else []

    def flush(self) -> list[RepEvent]:
        """End of stream: release frames held back after a loss of tracking."""
        return self._close_bridge() if self._bridge else []

    def _close_bridge(self) -> list[RepEvent]:
        """Feed the frames after a loss, with the extreme estimated inside it if any."""
        assert self._bridge is not None and self._before is not None
        post, self._bridge = self._bridge, None
        t1, d1, v1 = self._before
        (t2, d2), (tk, dk) = post[0], post[-1]
        v2 = (dk - d2) / (tk - t2) if tk > t2 else 0.0
        events: list[RepEvent] = []
        if v1 * v2 < 0 and abs(v1 - v2) > 1e-6:
            tau = (d2 - d1 - v2 * t2 + v1 * t1) / (v1 - v2)
            if t1 < tau < t2:
                # Never beyond what this patient has shown (one min_rom more on a first rep).
                lo = min(self._lo_seen, d1, d2)
                hi = max(self._hi_seen, max(d1, d2) + self.config.min_rom)
                extreme = min(max(d1 + v1 * (tau - t1), lo), hi)
                ev = self._step(tau, extreme)
                if ev:
                    events.append(ev)
        self._velocity = v2
        for pt, pd in post:
            ev = self._step(pt, pd)
            if ev:
                events.append(ev)
        return events

    def _step(self, t: float, depth: float) -> RepEvent | None:
        c = self.config
        self._last_t, self._last = t, depth
        self._lo_seen = min(self._lo_seen, depth)
        self._hi_seen = max(self._hi_seen, depth)
        if self._rest is None:
            self._rest, self._rest_t = depth, t
            return None
        if not self._active:
            if depth < self._rest:
                self._rest, self._rest_t = depth, t
            elif depth - self._rest <= c.rest_tol_frac * c.min_rom:
                self._rest_t = t  # still at rest: the rep starts when the patient leaves it
            if depth - self._rest >= self.enter_threshold:
                self._active = True
                self._peak, self._peak_t = depth, t
                self.phase = "going"
            else:
                self.phase = "going" if depth - self._rest >= 0.5 * c.min_rom else "rest"
            return None
        if depth > self._peak:
            self._peak, self._peak_t = depth, t
        excursion = self._peak - self._rest
        back = self._peak - depth
        if back < c.exit_frac * excursion:
            if not (t == self._peak_t and self.phase == "going"):  # else still on the way out
                self.phase = "peak" if back <= 0.15 * excursion else "returning"
            return None
        # Returned: a rep, unless too short to be a real movement.
        event = None
        if t - self._rest_t >= c.min_rep_s:
            self.count += 1
            amp = excursion
            self.amplitude = (
                amp
                if self.amplitude is None
                else (c.amp_alpha * amp + (1 - c.amp_alpha) * self.amplitude)
            )
            event = RepEvent(self.count, self._rest_t, self._peak_t, t, self._rest, self._peak)
        self._active = False
        self._rest, self._rest_t = depth, t
        self.phase = "rest"
        return event
