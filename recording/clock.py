"""RecordingTimeline: a publication's RTP timestamps mapped to milliseconds of the recording.

Every file of one recording shares one origin, the recording's start on the server's monotonic
clock, so the audio and video files of a participant line up when muxed together (``ffmpeg -i
cam.webm -i mic.webm -c copy``) and a file that starts late (consent given later) says so in
its start time.

* RTP clock units become milliseconds (the Matroska/WebM time base) at the codec's clock rate.
* Wrap-around: deltas are taken modulo 2**32, so raw 32-bit timestamps and the depacketizer's
  already unwrapped ones both map monotonically.
* Start offset: the first frame is placed at its arrival time after the origin. Since the
  first frames of a stream arrive late by different amounts (a video keyframe takes longer to
  encode and send than an Opus packet), ``prime`` takes the first half second of frames and
  anchors on the least delayed of them, which is what keeps audio and video in step.
* Pauses: while a publisher's RTP clock follows the wall clock (browsers: capture time) a pause
  is kept as the gap it was. If the RTP clock falls behind the wall clock by more than
  ``resync_s`` (timestamps that stood still while the publisher was paused), or jumps by more
  than ``resync_s`` in one step that no wall clock made (a publisher that restarted its RTP
  clock), the timeline re-anchors on the arrival time. It never moves back to catch up with an
  RTP clock that runs ahead (that is a burst after a stall of the server): what is written
  stays in order.
"""

from __future__ import annotations

import math

RESYNC_S = 2.0


def _signed(delta: int) -> int:
    """A 32-bit RTP timestamp difference as a signed number (wrap-around)."""
    delta &= 0xFFFFFFFF
    return delta - (1 << 32) if delta >= 0x80000000 else delta


class RecordingTimeline:
    """Map (RTP timestamp, arrival) pairs of one stream to increasing millisecond timestamps."""

    def __init__(self, clock_rate: int, origin: float, resync_s: float = RESYNC_S) -> None:
        self.clock_rate = clock_rate
        self.origin = origin
        self.resync_s = resync_s
        self.resyncs = 0
        self._primed: tuple[int, float] | None = None
        self._last_rtp: int | None = None
        self._last_arrival_ms = 0.0
        self._elapsed = 0  # RTP units since the anchor frame
        self._anchor_ms = 0.0
        self._last_ms = -1

    def prime(self, samples: list[tuple[int, float]]) -> None:
        """Anchor on the least delayed of the stream's first (RTP timestamp, arrival) pairs."""
        if not samples or self._last_rtp is not None:
            return
        first = samples[0][0]
        best = math.inf
        elapsed = 0
        prev = first
        for rtp_ts, arrival in samples:
            delta = _signed(rtp_ts - prev)
            if delta > 0:
                elapsed += delta
                prev = rtp_ts
            offset = (arrival - self.origin) * 1000.0 - elapsed * 1000.0 / self.clock_rate
            best = min(best, offset)
        self._primed = (first, best)

    def map(self, rtp_ts: int, arrival: float) -> int | None:
        """Milliseconds since the origin for this frame, or None for a late duplicate."""
        arrival_ms = (arrival - self.origin) * 1000.0
        limit_ms = self.resync_s * 1000.0
        if self._last_rtp is None:
            primed = self._primed
            self._anchor(rtp_ts, primed[1] if primed and primed[0] == rtp_ts else arrival_ms)
        else:
            delta = _signed(rtp_ts - self._last_rtp)
            step_ms = delta * 1000.0 / self.clock_rate
            if -limit_ms <= step_ms <= 0:
                return None  # reordered or repeated: the muxer needs increasing timestamps
            if step_ms < 0 or step_ms - (arrival_ms - self._last_arrival_ms) > limit_ms:
                self.resyncs += 1  # a jump no wall clock made: the RTP clock restarted
                self._anchor(rtp_ts, arrival_ms)
            else:
                self._last_rtp = rtp_ts
                self._elapsed += delta
                if arrival_ms - self._position() > limit_ms:
                    self.resyncs += 1  # the RTP clock stood still while time went on
                    self._anchor(rtp_ts, arrival_ms)
        self._last_arrival_ms = arrival_ms
        ms = round(self._position())
        if ms <= self._last_ms:
            return None  # two frames within one millisecond: keep the first
        self._last_ms = ms
        return ms

    def _position(self) -> float:
        return self._anchor_ms + self._elapsed * 1000.0 / self.clock_rate

    def _anchor(self, rtp_ts: int, at_ms: float) -> None:
        self._last_rtp = rtp_ts
        self._elapsed = 0
        # never before what is already written, so a re-anchor keeps the file in order
        self._anchor_ms = max(0.0, at_ms, self._last_ms + 1.0)
