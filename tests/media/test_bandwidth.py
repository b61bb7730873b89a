"""LayerChooser: a subscriber's estimate decides its camera layers; audio first; probes back."""

from __future__ import annotations

from media.bandwidth import CameraDemand, LayerChooser

KEY = ("alice", "camera")


def cam(current: str = "high", loss: float | None = None, high: float = 1_500_000) -> CameraDemand:
    return CameraDemand(KEY, high, 150_000, current, loss)  # type: ignore[arg-type]


def test_no_estimate_yet_keeps_high_and_loss_goes_low() -> None:
    chooser = LayerChooser()
    assert chooser.choose(0.0, [cam()]) == {KEY: "high"}
    assert chooser.choose(0.0, [cam(loss=0.2)]) == {KEY: "low"}


def test_estimate_below_the_high_rate_with_loss_goes_low_after_the_grace() -> None:
    chooser = LayerChooser(grace_s=5)
    chooser.update_estimate(0.0, 800_000)
    assert chooser.choose(1.0, [cam(loss=0.05)]) == {KEY: "high"}  # ramping up: not trusted yet
    chooser.update_estimate(6.0, 800_000)
    assert chooser.choose(6.0, [cam(loss=0.0)]) == {KEY: "high"}  # no loss: delay only
    assert chooser.choose(6.0, [cam(loss=0.05)]) == {KEY: "low"}
    chooser.update_estimate(8.0, 3_000_000)
    assert chooser.choose(8.0, [cam("low")]) == {KEY: "high"}


def test_audio_is_served_first() -> None:
    chooser = LayerChooser(grace_s=0)
    chooser.update_estimate(0.0, 1_800_000)
    assert chooser.choose(0.0, [cam()]) == {KEY: "high"}
    # the same estimate with 300 kbit/s of audio no longer fits the high layer
    assert chooser.choose(0.0, [cam(loss=0.03)], audio_bps=300_000) == {KEY: "low"}


def test_budget_is_shared_between_cameras() -> None:
    chooser = LayerChooser(grace_s=0)
    chooser.update_estimate(0.0, 2_000_000)
    b = CameraDemand(("bob", "camera"), 1_000_000, 150_000, "high", 0.03)
    a = CameraDemand(("alice", "camera"), 1_000_000, 150_000, "high")
    assert chooser.choose(0.0, [a, b]) == {("alice", "camera"): "high", ("bob", "camera"): "low"}


def test_probe_up_with_backoff() -> None:
    chooser = LayerChooser(grace_s=0, probe_after_s=8, probe_window_s=6, probe_max_s=64)
    chooser.update_estimate(0.0, 300_000)  # what a low layer lets the estimate reach
    assert chooser.choose(0.0, [cam(loss=0.05)]) == {KEY: "low"}
    assert chooser.choose(7.0, [cam("low")]) == {KEY: "low"}
    assert chooser.choose(8.0, [cam("low")]) == {KEY: "high"}  # probe
    # the estimate stays low: back down within the window, the next probe waits twice as long
    assert chooser.choose(10.0, [cam("high", loss=0.05)]) == {KEY: "low"}
    assert chooser.choose(25.0, [cam("low")]) == {KEY: "low"}
    assert chooser.choose(26.0, [cam("low")]) == {KEY: "high"}
    # this time the estimate follows the layer up: the probe holds and the wait resets
    chooser.update_estimate(28.0, 2_500_000)
    assert chooser.choose(28.0, [cam("high")]) == {KEY: "high"}
    assert chooser.choose(33.0, [cam("high")]) == {KEY: "high"}
    chooser.update_estimate(40.0, 300_000)
    assert chooser.choose(40.0, [cam("high", loss=0.05)]) == {KEY: "low"}
    assert chooser.choose(47.0, [cam("low")]) == {KEY: "low"}
    assert chooser.choose(48.0, [cam("low")]) == {KEY: "high"}


def test_no_low_layer_means_high() -> None:
    chooser = LayerChooser(grace_s=0)
    chooser.update_estimate(0.0, 100_000)
    demand = CameraDemand(KEY, 1_500_000, None, "high", 0.3, has_low=False)
    assert chooser.choose(0.0, [demand]) == {KEY: "high"}


def test_hold_down_keeps_a_fresh_low_layer_from_flapping_back_up() -> None:
    chooser = LayerChooser(grace_s=0, hold_s=10)
    chooser.update_estimate(0.0, 3_000_000)
    assert chooser.choose(0.0, [cam(loss=0.2)]) == {KEY: "low"}  # loss forces low at once
    assert chooser.choose(4.0, [cam("low")]) == {KEY: "low"}  # room again, but held
    assert chooser.choose(9.0, [cam("low")]) == {KEY: "low"}
    assert chooser.choose(10.5, [cam("low")]) == {KEY: "high"}  # held long enough
    # loss still moves a camera down at once, held or not
    assert chooser.choose(11.0, [cam(loss=0.2)]) == {KEY: "low"}


def test_hold_down_covers_the_grace_period() -> None:
    """Start-up loss (the first keyframe burst) moves a camera low before any estimate is
    trusted; with no loss on the low layer it used to go straight back up (and down again)."""
    chooser = LayerChooser(grace_s=5, hold_s=10)
    assert chooser.choose(1.0, [cam(loss=0.5)]) == {KEY: "low"}
    chooser.update_estimate(3.0, 82_000)
    assert chooser.choose(3.0, [cam("low")]) == {KEY: "low"}  # was "high" without a hold
    assert LayerChooser(grace_s=5).choose(3.0, [cam("low")]) == {KEY: "low"}  # no evidence


def test_a_low_layer_goes_up_only_on_evidence() -> None:
    chooser = LayerChooser(grace_s=5, probe_after_s=15)
    assert chooser.choose(1.0, [cam(loss=0.5)]) == {KEY: "low"}  # start-up loss
    chooser.update_estimate(2.0, 150_000)
    assert chooser.choose(3.0, [cam("low")]) == {KEY: "low"}  # grace: no budget, no move
    chooser.update_estimate(8.0, 3_000_000)
    assert chooser.choose(8.0, [cam("low")]) == {KEY: "high"}  # the estimate holds high
