"""Online repetition counter: a causal hysteresis state machine on one smoothed signal.

The input is the exercise's joint angle turned into a "depth" that grows during the movement
(``sign * angle``). A rep is rest -> away from rest by at least ``enter`` -> back towards rest by
``exit_frac`` of its own excursion. The thresholds adapt to the patient: ``enter`` is a fraction
of the typical amplitude of the reps done so far (never below the spec's ``min_rom_deg``), and
the return is relative to this rep's own excursion, so a patient with a small range still counts
and a large one does not count a wobble. Reps shorter than ``min_rep_s`` are discarded. Frames
without a pose (``None``) hold the state. After a short loss (up to ``max_gap_s``) the counter
waits ``bridge_frames`` frames (fewer if the pose is lost again), and if the movement clearly
reversed while unseen (rising before, falling after, or the opposite: both trends robust slopes
of at least ``min_trend`` per second) it inserts the extreme estimated where the two trends meet,
so a rep whose bottom (or whose return to rest) fell in the gap is neither lost nor doubled. A
rep that was seen leaving rest survives a longer loss too (up to ``keep_pending_s``): it is
counted when the return is seen, once, whatever happened unseen.
Leaving rest and coming back are both confirmed: a rep starts on two frames in a row past
``enter``, and the return must hold past ``exit_frac`` for ``confirm_s`` (one frame below it
meanwhile is passed over, two cancel it), so the one or two wrong poses a compressed stream
gives at a time neither start nor end a rep; frames further apart than ``confirm_within_s``
(an overloaded agent) are taken as they come. The rep's end time is its first frame back; the
count is emitted when the return is confirmed. The delay is the filter lag, the time to travel
``1 - exit_frac`` of the way back and ``confirm_s``, never a look-ahead.
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
    max_gap_s: float = 1.5  # a longer loss is not bridged
    keep_pending_s: float = 6.0  # a rep seen leaving rest survives a loss up to this long
    amp_alpha: float = 0.5  # weight of the newest rep in the typical amplitude
    rest_tol_frac: float = 0.2  # of min_rom: still counts as being at rest
    bridge_after_s: float = 0.25  # a loss at least this long is bridged
    bridge_frames: int = 4  # frames after a loss used to measure the new trend
    # A trend (before or after a loss) is a robust slope of at least this many units (degrees)
    # per second: noise around a level (a compressed stream's pose jitter) is no turn.
    min_trend: float = 30.0
    trend_window_s: float = 0.2  # the frames before a loss that give its trend (2 at least)
    # A return must hold for ``confirm_s`` (two frames at least): a frame or two that jump
    # back (a pose glitch on a compressed, low-rate stream: 2 frames at 12 fps were seen) do
    # not end a rep; the rep ends at the first frame back. One frame that falls below the exit
    # level meanwhile is a glitch too (it does not cancel the return; two in a row do).
    confirm_return: bool = True
    confirm_s: float = 0.15
    # ... as long as frames follow within this time; frames further apart (a slow or
    # overloaded stream: the agent processes only the newest frame) are far enough apart that
    # the patient may well have turned again, so the frame back stands.
    confirm_within_s: float = 0.15
    # The same for leaving rest: one frame that jumps out (a wrong pose right after the model
    # finds the person again) does not start a rep; a frame out and then no pose is nothing.
    confirm_enter: bool = True


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
        self._recent: list[tuple[float, float]] = []  # the last frames, for the trend
        self._bridge: list[tuple[float, float]] | None = None  # frames after a loss
        self._before: list[tuple[float, float]] | None = None  # frames before it
        self._returned: tuple[float, float] | None = None  # first frame back, unconfirmed
        self._leaving: tuple[float, float] | None = None  # first frame out, unconfirmed
        self._fell_back = False  # the frame after a pending return fell below the exit level
        self._any_t: float | None = None  # the last frame, with a pose or not
        self._frame_gap = 0.0  # time from the frame before to the one being stepped
        self.phase: Phase = "rest"

    @property
    def enter_threshold(self) -> float:
        c = self.config
        amp = self.amplitude if self.amplitude is not None else 0.0
        return max(c.min_rom, c.enter_frac * amp)

    def reset_pending(self) -> None:
        """Drop a rep in progress (long loss of tracking)."""
        self._active = False
        self._returned, self._fell_back = None, False
        self._leaving = None
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
            # Lost again while frames after a loss were being gathered: use what came.
            events = self._close_bridge() if self._bridge else []
            self._leaving = None  # one frame out, then lost: nothing says it was a movement
            self._any_t = t
            if self._active and self._returned is not None and t - self._returned[0] >= c.confirm_s:
                # Back, then no pose until confirm_s has passed (the pose model often drops a
                # person standing up on a blurred stream): the return stands. A shorter loss
                # is waited out: the frames after it confirm the return or show a glitch.
                ev = self._complete(*self._returned)
                return events + ([ev] if ev else [])
            if self._last_t is not None and t - self._last_t > self._hold_s():
                self.reset_pending()
            return events
        self._frame_gap = t - self._any_t if self._any_t is not None else 0.0
        # frames without a pose came since the last one with a pose: a short loss
        after_loss = (
            self._any_t is not None and self._last_t is not None and self._any_t > self._last_t
        )
        self._any_t = t
        if self._bridge is not None:
            self._bridge.append((t, depth))
            if len(self._bridge) < c.bridge_frames:
                return []
            return self._close_bridge()
        if self._last_t is not None and self._last is not None:
            gap = t - self._last_t
            if gap > self._hold_s():
                self.reset_pending()
                self._recent.clear()
            elif gap > c.max_gap_s:
                self._recent.clear()  # no bridge: the state (a pending rep) goes on as it is
            elif gap >= c.bridge_after_s and self._rest is not None:
                self._before, self._recent = self._recent, []
                self._bridge = [(t, depth)]
                return []
            elif after_loss and not self._active:
                # back after a loss too short to bridge: nothing shows the patient left rest
                # before this frame, so a rep is timed from here (a wrong pose or two when
                # the model finds the person again is not a rep of min_rep_s)
                self._rest_t = max(self._rest_t, t)
        ev = self._step(t, depth)
        return [ev] if ev else []

    def _hold_s(self) -> float:
        """How long a loss may last before the state is dropped: longer while a rep that was
        seen leaving rest is pending (its return, when seen, still counts it)."""
        c = self.config
        return max(c.max_gap_s, c.keep_pending_s) if self._active else c.max_gap_s

    def flush(self) -> list[RepEvent]:
        """End of stream: release frames held back after a loss of tracking, and count a
        return seen on the very last frame."""
        events = self._close_bridge() if self._bridge else []
        if self._active and self._returned is not None:
            ev = self._complete(*self._returned)
            if ev:
                events.append(ev)
        return events

    def _close_bridge(self) -> list[RepEvent]:
        """Feed the frames after a loss, with the extreme estimated inside it if any."""
        assert self._bridge is not None and self._before is not None
        post, self._bridge = self._bridge, None
        pre, self._before = self._before, None
        c = self.config
        v1, v2 = _trend(pre), _trend(post)
        t1, d1 = (self._last_t or post[0][0]), (self._last or 0.0)
        t2, d2 = post[0]
        events: list[RepEvent] = []
        if (
            v1 * v2 < 0
            and min(abs(v1), abs(v2)) >= c.min_trend
            and self._last_t is not None
            and self._last is not None
        ):
            tau = (d2 - d1 - v2 * t2 + v1 * t1) / (v1 - v2)
            if self._last_t < tau < post[0][0]:
                # Never beyond what this patient has shown (one min_rom more on a first rep).
                lo = min(self._lo_seen, d1, d2)
                hi = max(self._hi_seen, max(d1, d2) + self.config.min_rom)
                extreme = min(max(d1 + v1 * (tau - t1), lo), hi)
                ev = self._step(tau, extreme, confirmed=True)
                if self._active and self._returned is not None:
                    ev = self._complete(*self._returned)  # the turn inside the gap: no 2nd frame
                if ev:
                    events.append(ev)
        self._frame_gap = 0.0  # frames gathered after a loss: consecutive
        for pt, pd in post:
            ev = self._step(pt, pd)
            if ev:
                events.append(ev)
        return events

    def _step(self, t: float, depth: float, confirmed: bool = False) -> RepEvent | None:
        c = self.config
        self._last_t, self._last = t, depth
        self._recent.append((t, depth))
        while len(self._recent) > 2 and t - self._recent[0][0] > c.trend_window_s:
            del self._recent[0]
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
            first, self._leaving = self._leaving, None
            if first is not None and t - first[0] > c.confirm_within_s:
                # Too far apart to judge: the first frame out stands (a slow stream).
                self._enter(*first)
                return self._step(t, depth)
            if depth - self._rest >= self.enter_threshold:
                if c.confirm_enter and first is None and not confirmed:
                    self._leaving = (t, depth)  # a rep starts on two frames in a row
                    self.phase = "going"
                    return None
                self._enter(*(first if first is not None and first[1] > depth else (t, depth)))
            else:
                self.phase = "going" if depth - self._rest >= 0.5 * c.min_rom else "rest"
            return None
        if self._returned is not None and self._frame_gap > c.confirm_within_s:
            ev = self._complete(*self._returned)  # too far apart to judge: the return stands
            self._step(t, depth)  # this frame, from rest (it cannot end another rep)
            return ev
        if depth > self._peak:
            self._peak, self._peak_t = depth, t
        excursion = self._peak - self._rest
        back = self._peak - depth
        if back < c.exit_frac * excursion:
            if self._returned is not None and not self._fell_back:
                self._fell_back = True  # one frame down again: a glitch either way, wait
                return None
            self._returned, self._fell_back = None, False  # a glitch back, not a return
            if not (t == self._peak_t and self.phase == "going"):  # else still on the way out
                self.phase = "peak" if back <= 0.15 * excursion else "returning"
            return None
        self._fell_back = False
        if c.confirm_return:
            if self._returned is None:
                self._returned = (t, depth)
                self.phase = "returning"
                return None
            if t - self._returned[0] < c.confirm_s:
                self._returned = (self._returned[0], min(self._returned[1], depth))
                return None
        first_t, first_depth = self._returned or (t, depth)
        return self._complete(first_t, min(first_depth, depth), rest_t=t)

    def _enter(self, t: float, depth: float) -> None:
        """Left rest: a rep is under way, its deepest point so far at ``t``."""
        self._active = True
        self._peak, self._peak_t = depth, t
        self.phase = "going"

    def _complete(
        self,
        t: float,
        depth: float,
        rest_t: float | None = None,
    ) -> RepEvent | None:
        """Returned at ``t``: a rep, unless too short to be a real movement."""
        c = self.config
        excursion = self._peak - self._rest
        self._returned, self._fell_back = None, False
        event = None
        if t - self._rest_t >= c.min_rep_s:
            self.count += 1
            self.amplitude = (
                excursion
                if self.amplitude is None
                else (c.amp_alpha * excursion + (1 - c.amp_alpha) * self.amplitude)
            )
            event = RepEvent(self.count, self._rest_t, self._peak_t, t, self._rest, self._peak)
        self._active = False
        self._rest, self._rest_t = depth, rest_t if rest_t is not None else t
        self.phase = "rest"
        return event


def _trend(points: list[tuple[float, float]]) -> float:
    """Robust slope (Theil-Sen: the median of the pairwise slopes) of a few (t, value) points;
    0 with fewer than two."""
    slopes = [
        (b - a) / (tb - ta)
        for i, (ta, a) in enumerate(points)
        for tb, b in points[i + 1 :]
        if tb > ta
    ]
    if not slopes:
        return 0.0
    slopes.sort()
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else 0.5 * (slopes[mid - 1] + slopes[mid])
