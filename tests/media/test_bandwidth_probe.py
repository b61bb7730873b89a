"""Padding probes: the chooser asks for one instead of switching, and switches only on success."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from media import probe as probe_mod
from media.bandwidth import CameraDemand, LayerChooser

KEY = ("alice", "camera")


def cam(
    current: str = "low", loss: float | None = None, high: float | None = 600_000
) -> CameraDemand:
    return CameraDemand(KEY, high, 120_000, current, loss)  # type: ignore[arg-type]


def chooser(asked: list[tuple[tuple[str, str], float]], **kw: Any) -> LayerChooser:
    return LayerChooser(
        grace_s=5, probe_after_s=15, probe_window_s=6, probe_max_s=60,
        start_probe=lambda key, rate: asked.append((key, rate)), **kw,
    )  # fmt: skip


def test_a_low_start_probes_with_padding_and_switches_once_it_carried() -> None:
    asked: list[tuple[tuple[str, str], float]] = []
    c = chooser(asked, first_probe_s=0)
    assert c.choose(0.0, [cam(high=None)]) == {KEY: "low"}  # high rate unknown: no probe yet
    assert asked == []
    assert c.choose(2.0, [cam()]) == {KEY: "low"}  # the probe runs; the layer stays
    assert asked == [(KEY, pytest.approx(600_000 * 1.15 - 120_000))]
    assert c.choose(4.0, [cam()]) == {KEY: "low"}  # still under way: no second probe
    assert len(asked) == 1
    c.probe_done(KEY, True, 4.5)
    assert c.choose(6.0, [cam()]) == {KEY: "high"}
    assert c.choose(8.0, [cam("high")]) == {KEY: "high"}


def test_a_failed_padding_probe_costs_no_switch_and_backs_off() -> None:
    asked: list[tuple[tuple[str, str], float]] = []
    c = chooser(asked, first_probe_s=0)
    c.choose(0.0, [cam()])
    c.probe_done(KEY, False, 1.0)
    # the next one waits probe_after_s (15 s) from the failure, then twice that
    assert c.choose(2.0, [cam()]) == {KEY: "low"}
    assert c.choose(15.0, [cam()]) == {KEY: "low"} and len(asked) == 1
    assert c.choose(16.0, [cam()]) == {KEY: "low"} and len(asked) == 2
    c.probe_done(KEY, False, 17.0)
    assert c.choose(46.0, [cam()]) == {KEY: "low"} and len(asked) == 2
    assert c.choose(47.0, [cam()]) == {KEY: "low"} and len(asked) == 3


def test_a_skipped_probe_is_asked_again_and_no_padding_means_switch_to_find_out() -> None:
    asked: list[tuple[tuple[str, str], float]] = []
    c = chooser(asked, first_probe_s=0)
    c.choose(0.0, [cam()])
    c.probe_skipped(KEY)  # nothing forwarded yet
    c.choose(2.0, [cam()])
    assert len(asked) == 2
    c.probe_done(KEY, None, 2.5)  # no RTX: switch, watched as a probe
    assert c.choose(4.0, [cam()]) == {KEY: "high"}
    # it falls back within the window: the next probe waits longer
    assert c.choose(6.0, [cam("high", loss=0.3)]) == {KEY: "low"}
    assert c.choose(20.0, [cam()]) == {KEY: "low"} and len(asked) == 2
    c.choose(21.0, [cam()])
    assert len(asked) == 3


def test_loss_after_a_probe_that_carried_keeps_the_camera_low() -> None:
    asked: list[tuple[tuple[str, str], float]] = []
    c = chooser(asked, first_probe_s=0)
    c.choose(0.0, [cam()])
    c.probe_done(KEY, True, 1.0)
    assert c.choose(2.0, [cam(loss=0.2)]) == {KEY: "low"}
    assert c.choose(4.0, [cam()]) == {KEY: "low"}  # the success was used up by the loss


def test_late_results_for_a_gone_camera_are_ignored() -> None:
    asked: list[tuple[tuple[str, str], float]] = []
    c = chooser(asked, first_probe_s=0)
    c.choose(0.0, [cam()])
    c.choose(2.0, [])
    c.probe_done(KEY, True, 3.0)
    c.probe_skipped(KEY)
    assert c.choose(4.0, [cam()]) == {KEY: "low"}  # a new probe is asked, no switch


async def test_the_probe_stops_at_the_first_nacks(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[int] = []
    nacks = [0]

    async def fake_padding(sender: Any, budget: int, cursor: int) -> tuple[int, int]:
        sent.append(budget)
        nacks[0] += 1  # every portion of padding costs a lost media packet
        return budget, cursor + 1

    monkeypatch.setattr(probe_mod, "send_padding", fake_padding)
    carried = await probe_mod.run_padding_probe(
        object(),
        lambda: nacks[0],
        1_000_000,
        duration_s=30,
        settle_s=0,
        max_nacks=1,  # type: ignore[arg-type]
    )
    assert carried is False
    assert len(sent) == 2  # stopped after the second lost packet, long before 30 s


async def test_the_probe_without_rtx_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_padding(sender: Any, budget: int, cursor: int) -> tuple[int, int]:
        return 0, cursor

    monkeypatch.setattr(probe_mod, "send_padding", no_padding)
    carried = await probe_mod.run_padding_probe(
        object(),
        lambda: 0,
        1_000_000,
        duration_s=30,
        settle_s=0,  # type: ignore[arg-type]
    )
    assert carried is None


def test_probe_failed_on_nacks_or_a_falling_estimate() -> None:
    assert not probe_mod.probe_failed(1, 1)
    assert probe_mod.probe_failed(2, 1)
    assert not probe_mod.probe_failed(0, 1, 480_000, 500_000)  # 4 % down: noise
    assert probe_mod.probe_failed(0, 1, 400_000, 500_000)  # a queue builds
    assert not probe_mod.probe_failed(0, 1, 900_000, 500_000)
    assert not probe_mod.probe_failed(0, 1, 400_000, None)  # no estimate before: NACKs only


def test_padding_ramps_up_then_holds_the_rate() -> None:
    due = [probe_mod.padding_due(800_000, t / 10, 0.6) for t in range(13)]
    assert due == sorted(due) and due[0] == 0
    steps = [b - a for a, b in itertools.pairwise(due)]
    assert steps[0] < steps[3] < steps[5]  # ramping
    assert abs(steps[8] - 10_000) <= 1 and abs(steps[11] - 10_000) <= 1  # 800 kbit/s x 0.1 s
