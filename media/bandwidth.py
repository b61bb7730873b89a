"""Per-subscriber bandwidth: which camera layer each of a subscriber's videos gets.

The subscriber's browser reports what its downlink carries: REMB (one estimate for the whole
connection, from Chromium's receive-side estimator, which aiortc's sender hands to the packer)
and loss in its receiver reports. :class:`LayerChooser` turns those into a layer per camera
subscription, as LiveKit's and mediasoup's allocators do with simulcast layers:

- audio comes first: its measured rate is taken off the estimate before any video;
- each camera gets the high layer while the remaining budget holds its measured rate (with a
  margin to go back up), else the low layer; a subscription losing >= ``loss_down`` goes low
  and comes back only below ``loss_up``;
- an estimate too small for the high layer moves a camera down only when the subscriber also
  reports loss (>= ``loss_up``). The receive-side estimator reads delay variation; on this
  leg it also sees the server's own event-loop stalls (aiortc stamps abs-send-time before the
  packet waits to be sent), and on a loaded server it sat at ~120 kbit/s while 460 kbit/s
  arrived without loss. A real bottleneck (a full queue) ends in loss;
- a receive-side estimate cannot rise much above what arrives (Chromium caps it near 1.5x the
  incoming rate), so on the low layer it can never show room for the high one. After
  ``probe_after_s`` on the low layer the chooser tries the high one again (a probe); if that
  falls back within ``probe_window_s`` the next try waits twice as long (up to
  ``probe_max_s``), a probe that holds resets the wait.
- with ``start_probe`` set (the server's default), a probe does not switch: it asks for a
  padding probe (probe.py) at the rate the high layer would add, and switches only once
  :meth:`LayerChooser.probe_done` reports that the link carried it (a failed padding probe
  costs no keyframe and doubles the wait as a failed switch did). The first probe comes
  ``first_probe_s`` after a camera is first seen low, so a subscriber can start on the low
  layer (no high keyframe burst into a link of unknown size) and move up within seconds;
- a low layer goes back up only on evidence: an estimate that holds the high layer, or a
  probe. Before an estimate is trusted (the grace period) it stays low: start-up loss (the
  first keyframe burst into a capped link) used to send a camera low and, with no loss on the
  low layer, straight back up two seconds later, and down again;
- ``hold_s`` (0: off) keeps a camera that moved down on the low layer that long, grace period
  included (probes aside): start-up loss otherwise sends it low and, with no loss on the low
  layer and no trusted estimate yet, straight back up.

Pure: no aiortc, no clock of its own (``now`` is passed in), so it is unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Layer = Literal["high", "low"]


@dataclass
class CameraDemand:
    """One camera subscription as the chooser sees it (rates in bit/s; None: not known)."""

    key: tuple[str, str]
    high_bps: float | None
    low_bps: float | None
    current: Layer
    fraction_lost: float | None = None
    has_low: bool = True


@dataclass
class _Probe:
    wait_s: float
    switched_at: float | None = None  # when the chooser last changed this camera's layer
    low_since: float | None = None
    probing_until: float | None = None
    padding: bool = False  # a padding probe is under way
    passed: bool = False  # a padding probe showed room: switch up at the next choice


@dataclass
class LayerChooser:
    """Layer choice for one subscriber connection."""

    loss_down: float = 0.10
    loss_up: float = 0.02  # a low layer goes back up only below this loss
    headroom: float = 0.9  # share of the estimate the video may use
    up_margin: float = 1.15  # the high layer's rate x this must fit to go back up
    grace_s: float = 5.0  # ignore estimates this long after the first one (they ramp up)
    probe_after_s: float = 15.0
    probe_window_s: float = 6.0
    probe_max_s: float = 120.0
    hold_s: float = 0.0  # after a switch, no estimate-driven move up for this long
    #: ``(camera key, extra bit/s)``: start a padding probe (None: probe by switching)
    start_probe: Callable[[tuple[str, str], float], None] | None = None
    first_probe_s: float | None = None  # the first probe's wait on low (None: probe_after_s)
    min_probe_bps: float = 100_000.0
    estimate_bps: float | None = None
    first_estimate_at: float | None = None
    _probes: dict[tuple[str, str], _Probe] = field(default_factory=dict)

    def update_estimate(self, now: float, remb_bps: float | None) -> None:
        if remb_bps is None or remb_bps <= 0:
            return
        if self.first_estimate_at is None:
            self.first_estimate_at = now
        self.estimate_bps = float(remb_bps)

    def _budget(self, now: float, audio_bps: float, other_bps: float) -> float | None:
        if self.estimate_bps is None or self.first_estimate_at is None:
            return None
        if now - self.first_estimate_at < self.grace_s:
            return None
        return self.estimate_bps * self.headroom - audio_bps - other_bps

    def choose(
        self,
        now: float,
        cameras: list[CameraDemand],
        audio_bps: float = 0.0,
        other_bps: float = 0.0,
    ) -> dict[tuple[str, str], Layer]:
        """The layer each camera should get now (callers switch only what changed)."""
        budget = self._budget(now, audio_bps, other_bps)
        out: dict[tuple[str, str], Layer] = {}
        for cam in cameras:
            probe = self._probes.setdefault(cam.key, _Probe(self._first_wait()))
            want: Layer = "high"
            loss = cam.fraction_lost or 0.0
            lossy = loss >= self.loss_down or (cam.current == "low" and loss > self.loss_up)
            if cam.has_low:
                if lossy:
                    want = "low"
                elif budget is not None:
                    need = cam.high_bps or 0.0
                    if cam.current == "low":
                        need *= self.up_margin
                    fits = budget >= need
                    # down only with loss to back the estimate: see the module docstring
                    clean = cam.current == "high" and loss < self.loss_up
                    want = "high" if fits or clean else "low"
                elif cam.current == "low":
                    want = "low"  # no trusted estimate yet: no evidence of room (probes aside)
                if want == "high" and self._holding(now, probe, cam.current):
                    want = "low"  # also in the grace period, where there is no budget yet
                if want == "low" and cam.current == "low" and not lossy:
                    want = self._maybe_probe(now, probe, cam)
                elif lossy:
                    probe.passed = False
                if want == "low" and cam.current == "high":
                    self._fell_back(now, probe)
                if want == "high" and cam.current == "high":
                    self._held(now, probe)
            if budget is not None:
                rate = cam.high_bps if want == "high" else cam.low_bps
                budget -= rate or 0.0
            if want == "low" and probe.low_since is None:
                probe.low_since = now
            if want != cam.current:
                probe.switched_at = now
            out[cam.key] = want
        for key in [k for k in self._probes if k not in {c.key for c in cameras}]:
            del self._probes[key]
        return out

    def _holding(self, now: float, probe: _Probe, current: Layer) -> bool:
        """A low layer reached less than ``hold_s`` ago does not go back up (probes aside)."""
        return (
            current == "low"
            and probe.switched_at is not None
            and now - probe.switched_at < self.hold_s
        )

    def _maybe_probe(self, now: float, probe: _Probe, cam: CameraDemand) -> Layer:
        if probe.passed:  # a padding probe showed room: switch, watched like a probe
            probe.passed = False
            probe.low_since = None
            probe.probing_until = now + self.probe_window_s
            return "high"
        if probe.padding:
            return "low"
        if probe.low_since is None:
            probe.low_since = now
        if now - probe.low_since < probe.wait_s:
            return "low"
        if self.start_probe is None:
            probe.low_since = None
            probe.probing_until = now + self.probe_window_s
            return "high"
        if not cam.high_bps:
            return "low"  # the high layer's rate is not measured yet
        probe.padding = True
        probe.low_since = None
        extra = max(cam.high_bps * self.up_margin - (cam.low_bps or 0.0), self.min_probe_bps)
        self.start_probe(cam.key, extra)
        return "low"

    def probe_done(self, key: tuple[str, str], carried: bool | None, now: float) -> None:
        """A padding probe ended: ``carried`` (None: none could be sent, switch to find out)."""
        probe = self._probes.get(key)
        if probe is None or not probe.padding:
            return
        probe.padding = False
        if carried is False:
            probe.wait_s = self._next_wait(probe.wait_s)
            probe.low_since = now
        else:
            probe.passed = True

    def probe_skipped(self, key: tuple[str, str]) -> None:
        """A padding probe could not start yet (nothing forwarded yet): try at the next choice."""
        probe = self._probes.get(key)
        if probe is not None:
            probe.padding = False

    def _first_wait(self) -> float:
        return self.probe_after_s if self.first_probe_s is None else self.first_probe_s

    def _next_wait(self, wait_s: float) -> float:
        return min(max(wait_s * 2, self.probe_after_s), self.probe_max_s)

    def _fell_back(self, now: float, probe: _Probe) -> None:
        if probe.probing_until is not None and now <= probe.probing_until:
            probe.wait_s = self._next_wait(probe.wait_s)
        probe.probing_until = None
        probe.low_since = now

    def _held(self, now: float, probe: _Probe) -> None:
        if probe.probing_until is not None and now > probe.probing_until:
            probe.probing_until = None
            probe.wait_s = self.probe_after_s
        probe.low_since = None
