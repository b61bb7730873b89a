"""Congestion feedback to publishers: transport-cc, or one REMB per connection as a fallback.

The browser's encoder rate comes from its own estimator. With transport-cc (as Chromium offers
it, and as LiveKit and mediasoup answer it) the server only reports when each packet of the
connection arrived; Chromium's GoogCC then runs delay-based and loss-based control and probes
for more bandwidth. A peer that offers no transport-cc gets REMB instead, from ONE estimator
fed by all video streams of the connection (aiortc's default, one per stream, sends
contradicting values that each cover only part of the traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiortc import RTCPeerConnection

from .aiortc_patch import (
    answer_transport_cc,
    kernel_arrival_times,
    new_remb_estimator,
    observe_transport_rtp,
    rtcp_sender_ssrc,
    send_rtcp,
    share_remb_estimator,
)
from .native_send import load as load_native
from .remb_filters import CompiledEstimator
from .twcc import TwccRecorder

logger = logging.getLogger(__name__)

FEEDBACK_INTERVAL_S = 0.05  # libwebrtc sends transport feedback every 50-100 ms
REMB_INTERVAL_MS = 200  # libwebrtc's RembThrottler: at most one REMB per 200 ms


class ThrottledRemb:
    """aiortc's REMB estimator, sending as libwebrtc's ``RembThrottler`` does.

    aiortc's estimator returns a new estimate for every packet while it detects overuse (each
    0.85 x the measured throughput), and aiortc sends each as an RTCP REMB: thousands per
    second from a busy publisher, and a tenth of the server's CPU in the 720p room bench. Here
    a REMB goes out at most every :data:`REMB_INTERVAL_MS`, or at once when the estimate has
    halved since the last one sent (libwebrtc's ``TimeToReduceFurther``). The estimator still
    sees every packet; a suppressed estimate is carried by the next REMB.
    """

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator
        self._last_ms: int | None = None
        self._last_bps = 0
        self.sent = 0
        self.suppressed = 0

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        remb = self._estimator.add(arrival_time_ms, abs_send_time, payload_size, ssrc)
        if remb is None:
            return None
        bitrate = remb[0]
        last = self._last_ms
        if (
            last is not None
            and arrival_time_ms - last < REMB_INTERVAL_MS
            and bitrate * 2 >= self._last_bps
        ):
            self.suppressed += 1
            return None
        self._last_ms, self._last_bps = arrival_time_ms, bitrate
        self.sent += 1
        return remb


class PublisherFeedback:
    """Bandwidth feedback for one publisher peer connection (the server only receives)."""

    def __init__(self, pc: RTCPeerConnection, remb: bool = True, compiled: bool = True) -> None:
        self.pc = pc
        self.remb = remb
        self.compiled = compiled  # the REMB estimator in C when built (remb_filters.py)
        self.transport_cc = False
        self.recorder = TwccRecorder()
        self._media_ssrc = 0
        self._estimator: Any | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def on_offer(self, offer_sdp: str) -> None:
        """After ``setRemoteDescription(offer)``, before ``createAnswer()``: choose the mode."""
        self.transport_cc = answer_transport_cc(self.pc, offer_sdp) or self.transport_cc
        if self.transport_cc:
            share_remb_estimator(self.pc, None)
            observe_transport_rtp(self.pc, self._on_rtp)
            if self._task is None and not self._closed:
                self._task = asyncio.ensure_future(self._run())
        elif self.remb:
            if self._estimator is None:
                native = load_native() if self.compiled else None
                estimator = CompiledEstimator(native) if native else new_remb_estimator()
                self._estimator = ThrottledRemb(estimator)
            share_remb_estimator(self.pc, self._estimator)
        else:
            share_remb_estimator(self.pc, None)

    def after_gathering(self) -> None:
        """Once the ICE sockets exist: take arrival times from the kernel (transport-cc only)."""
        if self.transport_cc:
            kernel_arrival_times(self.pc)

    @property
    def rembs(self) -> tuple[int, int]:
        """REMBs (sent, suppressed by the throttle) so far."""
        if isinstance(self._estimator, ThrottledRemb):
            return self._estimator.sent, self._estimator.suppressed
        return 0, 0

    def _on_rtp(self, packet: Any, arrival_us: int) -> None:
        seq = packet.extensions.transport_sequence_number
        if seq is not None:
            self.recorder.record(seq, arrival_us)
            self._media_ssrc = packet.ssrc

    def _sender(self) -> Any | None:
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if rtcp_sender_ssrc(receiver) is not None:
                return receiver
        return None

    async def _run(self) -> None:
        while not self._closed:
            await asyncio.sleep(FEEDBACK_INTERVAL_S)
            if not self.recorder.pending:
                continue
            receiver = self._sender()
            if receiver is None:
                continue
            ssrc = rtcp_sender_ssrc(receiver)
            assert ssrc is not None
            try:
                packets = self.recorder.feedback(ssrc, self._media_ssrc)
            except ValueError:  # a bug here must not end the feedback for good
                logger.exception("media: transport feedback could not be built")
                self.recorder = TwccRecorder()
                continue
            for packet in packets:
                try:
                    await send_rtcp(receiver, packet)
                except Exception:  # the connection is going away
                    logger.debug("media: transport feedback not sent", exc_info=True)
                    break

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
