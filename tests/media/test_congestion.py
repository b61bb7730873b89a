"""Congestion feedback to publishers: one REMB per connection for peers without transport-cc,
transport-cc accepted in the answer when offered."""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci

from media.aiortc_patch import TWCC_URI, answer_transport_cc
from media.client import SyntheticVideoTrack
from media.native_send import load
from media.remb_filters import CompiledEstimator

from .conftest import Harness, wait_for


async def test_one_remb_per_connection_covers_both_camera_layers(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    await harness.join("bob", publish=False, decode=False)
    await alice.publish(
        {"camera": SyntheticVideoTrack(320, 240), "camera_low": SyntheticVideoTrack(160, 120)}
    )
    assert alice.pub_pc is not None
    senders = [t.sender for t in alice.pub_pc.getTransceivers() if t.kind == "video"]
    rembs: list[list[int]] = []
    for sender in senders:
        original = sender._handle_rtcp_packet

        async def handle(packet: Any, _orig: Any = original) -> None:
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                rembs.append(sorted(unpack_remb_fci(packet.fci)[1]))
            await _orig(packet)

        sender._handle_rtcp_packet = handle
    await wait_for(lambda: len(rembs) >= 3, 30)
    both = sorted(s._ssrc for s in senders)
    # every REMB lists both streams (aiortc's own: one REMB per stream, each from its bytes)
    assert all(r == both for r in rembs), (rembs, both)
    feedback = harness.room.sessions["alice"].pub_feedback
    assert feedback is not None and feedback.rembs[0] >= 2  # (each went to both senders)
    if load() is not None:  # built: the compiled estimator (remb.c) made them
        assert isinstance(feedback._estimator._estimator, CompiledEstimator)


async def test_answer_accepts_transport_cc_when_offered() -> None:
    client, server = RTCPeerConnection(), RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        # what Chromium adds: the header extension and rtcp-fb transport-cc on each codec
        lines = []
        for line in offer.split("\r\n"):
            lines.append(line)
            if line.startswith("a=rtpmap:") and "rtx" not in line:
                pt = line.split(":")[1].split()[0]
                lines.append(f"a=rtcp-fb:{pt} transport-cc")
            if line.startswith("a=mid:"):
                lines.append(f"a=extmap:5 {TWCC_URI}")
        offer = "\r\n".join(lines)
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        assert answer_transport_cc(server, offer)
        await server.setLocalDescription(await server.createAnswer())
        answer = server.localDescription.sdp
        assert f"a=extmap:5 {TWCC_URI}" in answer
        assert "transport-cc" in answer and "goog-remb" not in answer
        codec = server.getTransceivers()[0]._codecs[0]
        assert RTCRtcpFeedback(type="transport-cc") in codec.rtcpFeedback
    finally:
        await client.close()
        await server.close()


async def test_answer_without_transport_cc_in_the_offer_is_unchanged() -> None:
    client, server = RTCPeerConnection(), RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        offer = client.localDescription.sdp
        await server.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        assert not answer_transport_cc(server, offer)
        await server.setLocalDescription(await server.createAnswer())
        assert "goog-remb" in server.localDescription.sdp
        assert TWCC_URI not in server.localDescription.sdp
    finally:
        await client.close()
        await server.close()


def test_remb_goes_out_at_most_every_200_ms_unless_the_estimate_halves() -> None:
    """aiortc's estimator returns an estimate per packet while it sees overuse: the throttle
    (libwebrtc's RembThrottler) lets one through per 200 ms, or at once when it halves."""
    from media.congestion import ThrottledRemb

    class Overusing:  # aiortc's estimator while it detects overuse: an estimate per packet
        bitrate = 1_000_000

        def add(
            self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
        ) -> tuple[int, list[int]]:
            return self.bitrate, [ssrc]

    estimator = Overusing()
    remb = ThrottledRemb(estimator)
    sent = [
        t
        for t in range(0, 1000, 5)  # a packet every 5 ms for a second
        if remb.add(arrival_time_ms=t, abs_send_time=0, payload_size=1200, ssrc=1)
    ]
    assert sent == [0, 200, 400, 600, 800]
    assert (remb.sent, remb.suppressed) == (5, 195)
    estimator.bitrate = 400_000  # less than half of the last one sent: at once
    assert remb.add(arrival_time_ms=1001, abs_send_time=0, payload_size=1200, ssrc=1) == (
        400_000,
        [1],
    )
