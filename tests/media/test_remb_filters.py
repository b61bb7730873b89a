"""media/remb_filters.py gives aiortc's REMB estimator the very results of aiortc's own parts,
and the compiled estimator (media/native/remb.c) gives aiortc's estimates, every one."""

from __future__ import annotations

import random

import pytest
from aiortc.rate import InterArrival, RateCounter, RemoteBitrateEstimator

from media.aiortc_patch import new_remb_estimator
from media.native_send import load
from media.remb_filters import CompiledEstimator, GroupedArrivals, RateWindow


def _arrivals(seed: int, packets: int = 6000) -> list[tuple[int, int, int]]:
    """(arrival ms, abs-send-time, size) of a 30 fps publisher: bursts of 1-8 packets, jitter,
    a stretch of growing queueing delay (overuse) and one that drains, a 1.5 s gap, reordered
    packets, a clock step back, and abs-send-time wrapping (24 bits of 1/2^18 s: every 64 s)."""
    rng = random.Random(seed)
    out: list[tuple[int, int, int]] = []
    send_s = 63.0  # the 6.18 fixed-point abs-send-time wraps after 64 s
    arrival = 1_000_000
    queue_ms = 0.0
    frame = 0
    while len(out) < packets:
        frame += 1
        if 40 <= frame % 200 < 90:
            queue_ms += rng.uniform(0.5, 3.0)  # the link fills
        elif queue_ms > 0:
            queue_ms = max(0.0, queue_ms - rng.uniform(1.0, 6.0))
        gap = 1500 if frame == 500 else 0
        for i in range(rng.randint(1, 8)):
            abs_send = int((send_s + i * 0.0002) * (1 << 18)) & 0xFFFFFF
            at = arrival + gap + int(queue_ms + rng.uniform(0, 4) + i * 0.3)
            out.append((at, abs_send, rng.choice((1200, 1200, 1200, rng.randint(80, 1200)))))
        if rng.random() < 0.02 and len(out) > 2:
            out[-1], out[-2] = out[-2], out[-1]  # reordered on the way
        if rng.random() < 0.01:
            out.append((out[-1][0] - 1, out[-1][1], 300))  # the arrival clock steps back 1 ms
        send_s += 1 / 30
        arrival += gap + 33 + rng.choice((0, 0, 1))
    return out


def test_the_rate_window_counts_as_aiortcs_rate_counter() -> None:
    rng = random.Random(7)
    ours, theirs = RateWindow(1000, 8000), RateCounter(1000, 8000)
    now = 5000
    for step in range(20_000):
        now += rng.choice((0, 0, 1, 1, 2, 3, 17, 33, 250, 999, 1000, 1001, 2500, -1))
        if step % 97 == 0:
            ours.reset()
            theirs.reset()
        if rng.random() < 0.5:
            assert ours.rate(now) == theirs.rate(now), step
        value = rng.randint(0, 1500)
        ours.add(value, now)
        theirs.add(value, now)
        assert ours.rate(now) == theirs.rate(now), step


def test_the_grouped_arrivals_give_aiortcs_inter_arrival_deltas() -> None:
    fresh = RemoteBitrateEstimator().inter_arrival
    ours = GroupedArrivals(fresh.group_length, fresh.timestamp_to_ms)
    theirs = InterArrival(fresh.group_length, fresh.timestamp_to_ms)
    deltas = 0
    for seed in (1, 2, 3):
        for at, abs_send, size in _arrivals(seed):
            a = ours.compute_deltas(abs_send << 8, at, size)
            b = theirs.compute_deltas(abs_send << 8, at, size)
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                deltas += 1
                assert (a.timestamp, a.arrival_time, a.size) == (
                    b.timestamp,
                    b.arrival_time,
                    b.size,
                )
    assert deltas > 1000


def test_the_estimator_with_them_sends_the_same_rembs() -> None:
    """Every estimate (and so every REMB) equal, through overuse, recovery and wrap-around."""
    for seed in (11, 12, 13):
        ours, theirs = new_remb_estimator(), RemoteBitrateEstimator()
        assert type(ours.incoming_bitrate) is RateWindow
        estimates = 0
        for at, abs_send, size in _arrivals(seed):
            a = ours.add(arrival_time_ms=at, abs_send_time=abs_send, payload_size=size, ssrc=5)
            b = theirs.add(arrival_time_ms=at, abs_send_time=abs_send, payload_size=size, ssrc=5)
            assert a == b
            estimates += a is not None
        assert estimates > 20
        assert ours.detector.hypothesis == theirs.detector.hypothesis
        assert ours.estimator.offset() == theirs.estimator.offset()


def _state(estimator: RemoteBitrateEstimator) -> tuple[float, ...]:
    """What CompiledEstimator.state() gives, from aiortc's objects."""
    return (
        estimator.estimator.offset(),
        estimator.estimator.slope,
        estimator.estimator.var_noise,
        estimator.detector.threshold,
        estimator.rate_control.current_bitrate,
        estimator.rate_control.var_max_bitrate_kbps,
    )


def test_the_compiled_estimator_sends_the_same_rembs() -> None:
    """remb.c against aiortc's estimator: every estimate equal, and the detector's, Kalman
    filter's and rate control's state equal after each packet (a difference shows where it
    starts)."""
    native = load()
    if native is None:
        pytest.skip("media/native not built (scripts/setup-venv.sh builds it)")
    for seed in (21, 22, 23, 24):
        ours, theirs = CompiledEstimator(native), RemoteBitrateEstimator()
        estimates = 0
        states = set()
        for i, (at, abs_send, size) in enumerate(_arrivals(seed)):
            ssrc = 5 if i % 50 else 6  # (a REMB names every SSRC seen, in order)
            a = ours.add(arrival_time_ms=at, abs_send_time=abs_send, payload_size=size, ssrc=ssrc)
            b = theirs.add(arrival_time_ms=at, abs_send_time=abs_send, payload_size=size, ssrc=ssrc)
            assert a == b, (seed, i)
            assert ours.hypothesis == theirs.detector.hypothesis.value, (seed, i)
            assert ours.state() == _state(theirs), (seed, i)
            estimates += a is not None
            states.add(ours.hypothesis)
        assert estimates > 20 and states == {0, 1, 2}  # normal, underuse and overuse all seen


def test_the_compiled_estimator_at_ntp_scale_arrival_times() -> None:
    """The receive path hands arrival times in ms since 1900 (about 3.9e12): still equal."""
    native = load()
    if native is None:
        pytest.skip("media/native not built (scripts/setup-venv.sh builds it)")
    ours, theirs = CompiledEstimator(native), RemoteBitrateEstimator()
    epoch = 3_974_000_000_000
    for at, abs_send, size in _arrivals(31, 3000):
        kw = {"arrival_time_ms": epoch + at, "abs_send_time": abs_send, "payload_size": size}
        assert ours.add(ssrc=9, **kw) == theirs.add(ssrc=9, **kw)
