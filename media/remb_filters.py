"""The per-packet parts of aiortc's REMB estimator, with the same results and less work.

aiortc's ``RemoteBitrateEstimator`` runs for every video packet a publisher sends with
abs-send-time (aiortc publishers, and browsers without transport-cc). Two of its parts do most
of its per-packet work in the 8-party room bench (py-spy: the estimator was 13 % of the
server's main thread):

- ``RateCounter`` keeps 1 ms buckets over a 1 s window and clears the buckets that fall out
  of it one by one, each a Python object: 33 loop turns for the first packet of a 30 fps
  frame. :class:`RateWindow` keeps two lists and clears a span with slices.
- ``InterArrival`` goes through four methods and two ``uint32_*`` helpers per packet.
  :class:`GroupedArrivals` does the same arithmetic in one method.
- ``OveruseEstimator`` finds the shortest of the last 60 frame periods with 60 calls of
  ``min`` per packet group; :class:`FramePeriodEstimator` with one.

Both are drop-in: same attributes the estimator reads, same return values, checked against
aiortc's own classes on random packet sequences (tests/media/test_remb_filters.py). The Kalman
filter, detector and rate control (run per packet group or per estimate) stay aiortc's.
:func:`~media.aiortc_patch.new_remb_estimator` puts them into the estimator.

Even so the estimator remained the largest single part of the server's interpreter time in the
room, so the whole of it is also compiled (``media/native/remb.c``, aiortc's arithmetic step for
step): :class:`CompiledEstimator`, used when the library is built and ``media.native_send`` is
on; this module's Python parts are the fallback. Both are compared with aiortc's own estimator,
estimate for estimate.
"""

from __future__ import annotations

from typing import Any

from aiortc.rate import (
    BURST_DELTA_THRESHOLD_MS,
    MIN_FRAME_PERIOD_HISTORY_LENGTH,
    InterArrival,
    InterArrivalDelta,
    OveruseEstimator,
    TimestampGroup,
)


class RateWindow:
    """aiortc's ``RateCounter``: amounts in 1 ms buckets over ``window_size`` ms."""

    __slots__ = (
        "_counts",
        "_origin_index",
        "_origin_ms",
        "_scale",
        "_total_count",
        "_total_value",
        "_values",
        "_window_size",
    )

    def __init__(self, window_size: int, scale: int = 8000) -> None:
        self._scale = scale
        self._window_size = window_size
        self.reset()

    def reset(self) -> None:
        self._counts = [0] * self._window_size
        self._values = [0] * self._window_size
        self._origin_index = 0
        self._origin_ms: int | None = None
        self._total_count = 0
        self._total_value = 0

    def add(self, value: int, now_ms: int) -> None:
        if self._origin_ms is None:
            self._origin_ms = now_ms
        else:
            self._erase_old(now_ms)
        index = (self._origin_index + now_ms - self._origin_ms) % self._window_size
        self._counts[index] += 1
        self._values[index] += value
        self._total_count += 1
        self._total_value += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is not None:
            self._erase_old(now_ms)
            active_window_size = now_ms - self._origin_ms + 1
            if self._total_count > 0 and active_window_size > 1:
                return round(self._scale * self._total_value / active_window_size)
        return None

    def _erase_old(self, now_ms: int) -> None:
        """Clear the buckets that left the window (aiortc walks them one by one)."""
        origin = self._origin_ms
        assert origin is not None
        steps = now_ms - self._window_size + 1 - origin
        if steps <= 0:
            return
        size = self._window_size
        start = self._origin_index
        if steps >= size:  # every bucket passed at least once
            self._counts = [0] * size
            self._values = [0] * size
            self._total_count = self._total_value = 0
        else:
            end = start + steps
            spans = ((start, end),) if end <= size else ((start, size), (0, end - size))
            counts, values = self._counts, self._values
            for a, b in spans:
                self._total_count -= sum(counts[a:b])
                self._total_value -= sum(values[a:b])
                counts[a:b] = values[a:b] = [0] * (b - a)
        self._origin_index = (start + steps) % size
        self._origin_ms = origin + steps


class GroupedArrivals(InterArrival):
    """aiortc's ``InterArrival`` (packets grouped by send time, deltas between groups), its
    per-packet steps in one method."""

    def compute_deltas(
        self, timestamp: int, arrival_time: int, packet_size: int
    ) -> InterArrivalDelta | None:
        deltas = None
        group = self.current_group
        if group is None:
            group = self.current_group = TimestampGroup(timestamp)
        else:
            from_first = (timestamp - group.first_timestamp) & 0xFFFFFFFF  # type: ignore[operator]
            if from_first >= 0x80000000:
                return None  # out of order
            last = group.last_timestamp
            assert last is not None and group.arrival_time is not None
            from_last = (timestamp - last) & 0xFFFFFFFF
            from_last_ms = round(self.timestamp_to_ms * from_last)
            arrival_delta = arrival_time - group.arrival_time
            burst = from_last_ms == 0 or (
                arrival_delta - from_last_ms < 0 and arrival_delta <= BURST_DELTA_THRESHOLD_MS
            )
            if not burst and from_first > self.group_length:
                previous = self.previous_group
                if previous is not None:
                    deltas = InterArrivalDelta(
                        timestamp=(last - previous.last_timestamp) & 0xFFFFFFFF,  # type: ignore[operator]
                        arrival_time=group.arrival_time - previous.arrival_time,  # type: ignore[operator]
                        size=group.size - previous.size,
                    )
                self.previous_group = group
                group = self.current_group = TimestampGroup(timestamp=timestamp)
            elif 0 < from_last < 0x80000000:  # aiortc's uint32_gt(timestamp, last)
                group.last_timestamp = timestamp
        group.size += packet_size
        group.arrival_time = arrival_time
        return deltas


class FramePeriodEstimator(OveruseEstimator):
    """aiortc's ``OveruseEstimator`` (the Kalman filter on the groups' delay), its shortest
    recent frame period found with one ``min`` over the history instead of a loop."""

    def update_min_frame_period(self, ts_delta: float) -> float:
        history = self.ts_delta_hist
        if len(history) >= MIN_FRAME_PERIOD_HISTORY_LENGTH:
            history.pop(0)
        shortest = min(history) if history else ts_delta
        history.append(ts_delta)
        return shortest if shortest < ts_delta else ts_delta


class CompiledEstimator:
    """aiortc's ``RemoteBitrateEstimator`` in C (``media/native/remb.c``): the same ``add``,
    the same estimates; the SSRCs a REMB names are kept here, as aiortc keeps them."""

    def __init__(self, native: Any) -> None:
        state = native.lib.tc_remb_new()
        if state == native.ffi.NULL:
            raise MemoryError("tc_remb_new")
        self._state = native.ffi.gc(state, native.lib.tc_remb_free)
        self._add = native.lib.tc_remb_add
        self._lib = native.lib
        self._bitrate = native.ffi.new("int64_t *")
        self.ssrcs: dict[int, int] = {}

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        ssrcs = self.ssrcs
        if ssrc not in ssrcs:  # (aiortc updates the time too; only the keys are ever read)
            ssrcs[ssrc] = arrival_time_ms
        if self._add(self._state, arrival_time_ms, abs_send_time, payload_size, self._bitrate):
            return self._bitrate[0], list(self.ssrcs)
        return None

    @property
    def hypothesis(self) -> int:
        """The overuse detector's state (aiortc's ``BandwidthUsage`` value)."""
        return int(self._lib.tc_remb_hypothesis(self._state))

    def state(self) -> tuple[float, ...]:
        """(offset, slope, noise variance, detector threshold, current bitrate, max-throughput
        variance): what the tests compare with aiortc's objects."""
        return tuple(float(self._lib.tc_remb_state(self._state, i)) for i in range(6))
