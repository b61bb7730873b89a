"""The online counter and the One Euro filter on synthetic signals."""

from __future__ import annotations

import math

import numpy as np

from rehab_vision.counter import CounterConfig, RepCounter
from rehab_vision.filters import OneEuroFilter


def wave(
    n_reps: int, period: float = 2.0, amp: float = 90.0, fps: float = 30.0, rest: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Depth signal: rest, then ``n_reps`` raised-cosine bumps, then rest."""
    t = np.arange(0, rest + n_reps * period + rest, 1 / fps)
    x = np.zeros_like(t)
    m = (t >= rest) & (t < rest + n_reps * period)
    x[m] = amp * 0.5 * (1 - np.cos(2 * math.pi * (t[m] - rest) / period))
    return t, x


def run(t: np.ndarray, x: np.ndarray, **cfg: float) -> list:
    c = RepCounter(CounterConfig(**cfg))
    events = []
    for ti, xi in zip(t, x, strict=True):
        events += c.update(float(ti), None if math.isnan(xi) else float(xi))
    events += c.flush()
    return events


def test_counts_bumps_with_bounded_delay() -> None:
    t, x = wave(5)
    ev = run(t, x, min_rom=30)
    assert len(ev) == 5
    for k, e in enumerate(ev):
        peak_t = 2.0 + k * 2.0 + 1.0
        assert abs(e.peak_t - peak_t) < 0.05
        assert 0 < e.end_t - peak_t < 0.75  # counted on the way back, well before the next rep


def test_small_wobble_is_not_a_rep() -> None:
    t, x = wave(4, amp=20)
    assert run(t, x, min_rom=30) == []


def test_spike_shorter_than_min_duration_is_ignored() -> None:
    t = np.arange(0, 4, 1 / 30)
    x = np.zeros_like(t)
    x[60:63] = 80  # 0.1 s spike
    assert run(t, x, min_rom=30, min_rep_s=0.4) == []


def test_patient_with_small_range_still_counts_and_large_range_adapts() -> None:
    t1, x1 = wave(3, amp=40)
    assert len(run(t1, x1, min_rom=30)) == 3
    c = RepCounter(CounterConfig(min_rom=30))
    t2, x2 = wave(4, amp=120)
    for ti, xi in zip(t2, x2, strict=True):
        c.update(float(ti), float(xi))
    assert c.count == 4
    assert c.enter_threshold > 30  # the threshold grew with the patient's range


def test_gap_over_the_peak_is_bridged() -> None:
    t, x = wave(3, period=2.0)
    x = x.copy()
    lost = (t > 4.5) & (t < 5.5)  # the second rep's peak (t=5) is never seen
    x[lost] = np.nan
    assert len(run(t, x, min_rom=30)) == 3


def test_long_loss_drops_the_pending_rep() -> None:
    t, x = wave(3, period=2.0)
    x = x.copy()
    x[(t > 4.2) & (t < 5.9)] = np.nan  # 1.7 s, more than max_gap_s: rep 2 is dropped
    assert len(run(t, x, min_rom=30, max_gap_s=1.5)) == 2


def test_phases() -> None:
    t, x = wave(1, period=3.0)
    c = RepCounter(CounterConfig(min_rom=30))
    seen = []
    for ti, xi in zip(t, x, strict=True):
        c.update(float(ti), float(xi))
        if not seen or seen[-1] != c.phase:
            seen.append(c.phase)
    assert seen == ["rest", "going", "peak", "returning", "rest"]


def test_one_euro_smooths_jitter_but_follows_motion() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0, 4, 1 / 30)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    still = [f(float(ti), 100 + float(rng.normal(0, 2))) for ti in t]
    assert np.std(still[30:]) < 1.0
    f.reset()
    ramp = [f(float(ti), 90 * float(ti)) for ti in t]
    assert abs(ramp[-1] - 90 * t[-1]) < 15
