"""The forwarding fast path on its own: the bytes it writes, its accounting, a full socket."""

from __future__ import annotations

from typing import Any

import pytest
from aiortc import rtcrtpsender
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap, RtpPacket, wrap_rtx

from media import fastpath
from media.aiortc_patch import fast_sender
from media.fastpath import FastSender, FrameHistory
from media.frames import EncodedFrame, FramePacker, with_picture_id

from .conftest import Harness, camera_and_mic_flowing

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


class _Transport:
    def __init__(self, backlog: int = 0) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.backlog = backlog

    def get_write_buffer_size(self) -> int:
        return self.backlog

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class _Wire:
    """A SenderWire stand-in: identity "protection", a recording datagram transport."""

    def __init__(self, extensions: list[RTCRtpHeaderExtensionParameters], backlog: int = 0):
        self.ext_map = HeaderExtensionsMap()
        self.ext_map.configure(RTCRtpParameters(headerExtensions=extensions))
        self.packer = FramePacker("video/vp8")
        self.ssrc = 0x11223344
        self.history = FrameHistory()
        self.transport = _Transport(backlog)
        self.accounted: list[tuple[int, int, int, int, int]] = []

    mid = "1"

    def header_extensions(self) -> tuple[Any, str | None]:
        return self.ext_map, "1"

    def link(self) -> tuple[Any, Any, Any]:
        return (lambda data: data), self.transport, ("192.0.2.1", 5000)

    def account(self, *args: int) -> None:
        self.accounted.append(args)  # type: ignore[arg-type]


def _frame(size: int = 3000) -> EncodedFrame:
    return EncodedFrame(
        data=bytes(range(256)) * (size // 256), timestamp=3000, keyframe=True, arrival=0.0
    )


@pytest.mark.parametrize(
    "extensions",
    [
        [],
        [RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI)],
        [
            RTCRtpHeaderExtensionParameters(id=4, uri=MID_URI),
            RTCRtpHeaderExtensionParameters(id=3, uri=ABS_URI),
        ],
    ],
    ids=["none", "mid", "mid+abs-send-time"],
)
async def test_packets_are_the_bytes_aiortc_would_serialize(
    extensions: list[RTCRtpHeaderExtensionParameters],
) -> None:
    wire = _Wire(extensions)
    fast = FastSender(wire)  # type: ignore[arg-type]
    await fast.send_frame(_frame(), VP8)
    sent = wire.transport.sent
    assert len(sent) > 1 and all(addr == ("192.0.2.1", 5000) for _, addr in sent)
    for i, (data, _) in enumerate(sent):
        packet = RtpPacket.parse(data, wire.ext_map)
        assert packet.ssrc == wire.ssrc and packet.payload_type == VP8.payloadType
        assert packet.marker == (1 if i == len(sent) - 1 else 0)
        # what aiortc's _run_rtp would have written for the same fields
        expected = RtpPacket(
            payload_type=VP8.payloadType,
            marker=packet.marker,
            sequence_number=packet.sequence_number,
            timestamp=packet.timestamp,
            ssrc=wire.ssrc,
            payload=packet.payload,
        )
        expected.extensions.mid = "1"
        expected.extensions.abs_send_time = packet.extensions.abs_send_time
        assert data == expected.serialize(wire.ext_map)
        # the RTX history holds it for aiortc's _retransmit, wrapped and serialized alike
        held = wire.history[packet.sequence_number % rtcrtpsender.RTP_HISTORY_SIZE]
        assert held.serialize(wire.ext_map) == data
        rtx, want = (
            wrap_rtx(p, payload_type=98, sequence_number=7, ssrc=5) for p in (held, expected)
        )
        assert rtx.serialize(wire.ext_map) == want.serialize(wire.ext_map)
    seqs = [int.from_bytes(d[2:4], "big") for d, _ in sent]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    packets, octets, datagram_bytes, rtp_ts, _ntp = wire.accounted[-1]
    assert packets == len(sent) and datagram_bytes == sum(len(d) for d, _ in sent)
    assert octets == sum(len(RtpPacket.parse(d, wire.ext_map).payload) for d, _ in sent)
    assert rtp_ts == int.from_bytes(sent[0][0][4:8], "big")
    assert fastpath._RTP_HISTORY_SIZE == rtcrtpsender.RTP_HISTORY_SIZE


async def test_a_full_socket_drops_instead_of_queueing() -> None:
    wire = _Wire([], backlog=fastpath.MAX_WRITE_BUFFER + 1)
    fast = FastSender(wire)  # type: ignore[arg-type]
    await fast.send_frame(_frame(), VP8)
    assert wire.transport.sent == [] and fast.dropped == wire.accounted[-1][0] > 0


async def test_fast_path_carries_the_forwarded_media(harness: Harness) -> None:
    assert harness.room.settings.fast_path  # the default
    _alice, _bob, keys = await camera_and_mic_flowing(harness, 10)
    session = harness.room.sessions["bob"]
    for key in keys:
        sender = session.subscriptions[key].sender
        fast = fast_sender(sender)
        assert fast is not None and fast.packets > 0
        assert fast.direct_frames > 0  # most frames leave from the forwarder's stack
        assert fast.native_frames > 0  # through the compiled send (media/native), built by setup
        # aiortc's sender reports (RTCP SR, getStats) count what the fast path sent
        report = await sender.getStats()
        outbound = next(s for s in report.values() if s.type == "outbound-rtp")
        assert outbound.packetsSent >= fast.packets - 2  # (a frame may be on its way)


def test_frame_history_answers_like_aiortcs_packet_dict() -> None:
    """Frames in, packets out: the newest packet per ``seq % 128``, with its picture id."""
    history = FrameHistory()
    ext = HeaderExtensions()
    shared = [b"\x90\x80\x80\x00" + b"a" * 10, b"\x80\x80\x80\x00" + b"b" * 10]
    seq = 65534
    for n in range(100):  # 200 packets: more than the 128 held, wrapping the sequence number
        history.record((seq + 2 * n) & 0xFFFF, shared, 300 + n, 97, 1000 * n, 7, ext)
    last = (seq + 199) & 0xFFFF
    packet = history.get(last % 128)
    assert packet.sequence_number == last and packet.marker == 1 and packet.timestamp == 99_000
    assert packet.payload == with_picture_id([shared[1]], 399)[0]
    assert history[(last - 1) % 128].marker == 0
    oldest_held = (last - 127) & 0xFFFF
    assert history.get(oldest_held % 128).sequence_number == oldest_held
    held = history.values()
    assert len(held) == 128 and {p.sequence_number for p in held} == {
        (last - i) & 0xFFFF for i in range(128)
    }
    assert [p.sequence_number for p in history.newest(3)] == [
        last,
        (last - 1) & 0xFFFF,
        (last - 2) & 0xFFFF,
    ]
    assert len(history._frames) == 100  # every frame still answers for a key
    for n in range(100, 300):
        history.record((seq + 2 * n) & 0xFFFF, shared, 300 + n, 97, 1000 * n, 7, ext)
    assert len(history._frames) == 128  # older ones are let go (none answers for a key)
    assert len(history.values()) == 128
    history.clear()
    assert history.get(5) is None and not history and history.newest(1) == []
