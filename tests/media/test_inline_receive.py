"""Publishers' RTP handled in the socket callback (aiortc_receive.receive_rtp_inline)."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest
from aiortc import RTCRtpReceiver
from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtpPacket, wrap_rtx

from media.aiortc_patch import tap_receiver
from media.aiortc_receive import (
    LeanNackGenerator,
    RtpParser,
    inline_received,
    lean_rtp_handler,
    run_eagerly,
    vp8_payload,
)
from media.frames import EncodedFrame, VideoAssembler

from .conftest import Harness, camera_and_mic_flowing, wait_for


async def test_a_coroutine_that_never_waits_runs_to_its_end_at_once() -> None:
    done: list[str] = []

    async def handler() -> None:
        done.append("ran")

    run_eagerly(handler())
    assert done == ["ran"]  # no task, no loop iteration


async def test_a_coroutine_that_waits_goes_on_in_a_task() -> None:
    steps: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> None:
        steps.append("before")
        steps.append(f"got {await gate}")

    run_eagerly(handler())
    assert steps == ["before"]
    gate.set_result(7)
    await wait_for(lambda: len(steps) == 2, 5)
    assert steps == ["before", "got 7"]


async def test_an_error_before_the_first_wait_is_raised_to_the_caller() -> None:
    async def handler() -> None:
        raise ValueError("bad packet")

    with pytest.raises(ValueError, match="bad packet"):
        run_eagerly(handler())


async def test_publishers_packets_take_the_inline_path(harness: Harness) -> None:
    assert harness.room.settings.fast_receive  # the default
    await camera_and_mic_flowing(harness, 20)
    pc = harness.room.sessions["alice"].pub_pc
    assert pc is not None
    inline = inline_received(pc)
    pub = harness.room.publications[("alice", "camera")]
    assert inline > 0 and pub.assembler.packets > 0
    # most packets come this way (the queue path keeps order when aiortc's queue is not empty)
    audio = harness.room.publications[("alice", "microphone")].assembler.packets
    assert inline >= 0.8 * (pub.assembler.packets + audio)
    # aiortc's transport statistics still count every datagram
    report = await pc.getStats()
    transport = next(s for s in report.values() if s.type == "transport")
    assert transport.packetsReceived >= inline
    # RTP and RTCP go past aioice's STUN parse (STUN still reaches it: consent checks)
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    assert all("datagram_received" in p.__dict__ for p in connection._protocols)


class _Dtls:
    """What a receiver's RTCP goes through: records the datagrams."""

    state = "connected"

    def __init__(self) -> None:
        self.rtcp: list[bytes] = []

    async def _send_rtp(self, data: bytes) -> None:
        self.rtcp.append(data)


_VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
_RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96}
)


def _tapped_receiver() -> tuple[RTCRtpReceiver, _Dtls, list[EncodedFrame], list[str]]:
    dtls = _Dtls()
    receiver = RTCRtpReceiver("video", dtls)  # type: ignore[arg-type]
    receiver._RTCRtpReceiver__codecs = {96: _VP8, 97: _RTX}  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__rtx_ssrc = {2222: 1111}  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__rtcp_ssrc = 5555  # type: ignore[attr-defined]
    frames: list[EncodedFrame] = []
    losses: list[str] = []
    tap_receiver(receiver, VideoAssembler("video/VP8", frames.append, lambda: losses.append("x")))
    return receiver, dtls, frames, losses


def _stream() -> list[tuple[RtpPacket, int]]:
    """A VP8 stream at 30 fps with abs-send-time, one packet lost and repaired over RTX."""
    out: list[tuple[RtpPacket, int]] = []
    seq, lost = 65500, None
    for n in range(40):
        data = (b"\x10" if n == 0 else b"\x11") + os.urandom(2500 + 40 * n)
        payloads = Vp8Encoder._packetize(data, n)
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=3000 * n)
            packet.ssrc, packet.marker, packet.payload = 1111, int(i == len(payloads) - 1), payload
            packet.extensions.abs_send_time = (n * 33 * 262) & 0xFFFFFF
            arrival_ms = 3_900_000_000_000 + n * 33 + i
            if n == 10 and i == 1:
                lost = packet
            else:
                out.append((packet, arrival_ms))
            seq = (seq + 1) & 0xFFFF
        if n == 12 and lost is not None:  # repaired over RTX two frames later
            rtx = wrap_rtx(lost, payload_type=97, sequence_number=7, ssrc=2222)
            out.append((rtx, 3_900_000_000_000 + n * 33 + 20))
    return out


async def test_the_lean_handler_does_what_aiortcs_does() -> None:
    """The same packets through aiortc's ``_handle_rtp_packet`` and the lean handler: the same
    frames, receiver statistics, NACK state, and RTCP (the NACK and REMBs) sent."""
    slow, slow_dtls, slow_frames, slow_losses = _tapped_receiver()
    lean, lean_dtls, lean_frames, lean_losses = _tapped_receiver()
    handle = lean_rtp_handler(lean)
    for packet, arrival_ms in _stream():
        run_eagerly(slow._handle_rtp_packet(packet, arrival_time_ms=arrival_ms))
        copy = RtpPacket.parse(packet.serialize())
        copy.extensions = packet.extensions
        handle(copy, arrival_ms)
    await asyncio.sleep(0)  # (nothing waits on a recording transport; kept for clarity)

    def state(receiver: Any) -> Any:
        streams = receiver._RTCRtpReceiver__remote_streams
        nack = receiver._RTCRtpReceiver__nack_generator
        return (
            # (jitter is left out: aiortc reads the wall clock for it at each call)
            {s: (v.packets_received, v.max_seq, v.cycles, v.base_seq) for s, v in streams.items()},
            sorted(nack.missing),
            nack.max_seq,
            set(receiver._RTCRtpReceiver__active_ssrc),
        )

    assert [f.data for f in lean_frames] == [f.data for f in slow_frames]
    assert len(lean_frames) == 40 and not lean_losses and not slow_losses
    assert state(lean) == state(slow)
    kinds = [[type(p).__name__ for p in RtcpPacket.parse(d)] for d in lean_dtls.rtcp]
    assert kinds == [[type(p).__name__ for p in RtcpPacket.parse(d)] for d in slow_dtls.rtcp]
    assert lean_dtls.rtcp == slow_dtls.rtcp and ["RtcpRtpfbPacket"] in kinds  # the NACK


def test_the_lean_nack_generator_tracks_what_aiortcs_does() -> None:
    """Losses, reordering, duplicates, jumps past the 128 tracked and wrap-around: the same
    missing set, highest sequence number and answers after every packet."""
    rng = random.Random(5)
    ours, theirs = LeanNackGenerator(), NackGenerator()
    seq = 65000
    for i in range(30_000):
        step = rng.choice((1, 1, 1, 1, 2, 3, 0, -1, -5, 40, 200, 30_000, 32_768))
        seq = (seq + step) & 0xFFFF
        packet = RtpPacket(sequence_number=seq)
        assert ours.add(packet) == theirs.add(packet), i
        assert (ours.max_seq, ours.missing) == (theirs.max_seq, theirs.missing), i
    assert ours.missing  # (losses were still being tracked at the end)


_URIS = {
    1: "urn:ietf:params:rtp-hdrext:sdes:mid",
    2: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    3: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    4: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    5: "urn:ietf:params:rtp-hdrext:toffset",
    6: "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    7: "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
}
_VALUE_SIZES = {1: 1, 2: 3, 3: 1, 4: 2, 5: 3, 6: 2, 7: 2, 9: 4}  # 9: not negotiated


def _random_rtp(rng: random.Random) -> bytes:
    """An RTP packet as a publisher might send it, sometimes cut short or malformed."""
    cc = rng.choice((0, 0, 0, 1, 3))
    elements = [(i, bytes(rng.randrange(48, 122) for _ in range(_VALUE_SIZES[i])))
                for i in rng.sample(sorted(_VALUE_SIZES), rng.randrange(0, 5))]  # fmt: skip
    two_byte = rng.random() < 0.2
    block = b""
    for x_id, value in elements:
        if two_byte:
            block += bytes((x_id, len(value))) + value
        else:
            block += bytes(((x_id << 4) | (len(value) - 1),)) + value
        if rng.random() < 0.2:
            block += b"\x00"  # padding between elements
    block += b"\x00" * (-len(block) % 4)
    profile = 0x1000 if two_byte else rng.choice((0xBEDE, 0xBEDE, 0xBEDE, 0x1234))
    has_ext = bool(elements) or rng.random() < 0.1
    padding = rng.choice((0, 0, 0, 1, 4))
    first = 0x80 | (0x20 if padding else 0) | (0x10 if has_ext else 0) | cc
    data = bytes((first, rng.randrange(256))) + rng.randbytes(10)
    data += rng.randbytes(4 * cc)
    if has_ext:
        data += profile.to_bytes(2, "big") + (len(block) // 4).to_bytes(2, "big") + block
    data += rng.randbytes(rng.randrange(0, 40))
    if padding:
        data += bytes(padding - 1) + bytes((padding,))
    cut = rng.random()
    if cut < 0.05:
        data = data[: rng.randrange(len(data))]  # truncated anywhere
    elif cut < 0.07:
        data = bytes((data[0] & 0x3F,)) + data[1:]  # version 0
    elif cut < 0.09 and padding:
        data = data[:-1] + b"\xff"  # padding longer than the packet
    return data


def _outcome(parse: Any, data: bytes) -> Any:
    try:
        p = parse(data)
    except Exception as exc:  # the same error, or none
        return type(exc), str(exc)
    return (
        p.version, p.marker, p.payload_type, p.sequence_number, p.timestamp, p.ssrc,
        p.csrc, p.extensions, p.payload, p.padding_size,
    )  # fmt: skip


def test_the_rtp_parser_gives_aiortcs_packets_and_errors() -> None:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in _URIS.items()
            ]
        )
    )
    parser = RtpParser(ext_map)
    rng = random.Random(9)
    kinds = {"ok": 0, "error": 0}
    for i in range(20_000):
        data = _random_rtp(rng)
        ours, theirs = (
            _outcome(parser.parse, data),
            _outcome(lambda d: RtpPacket.parse(d, ext_map), data),
        )
        assert ours == theirs, (i, data.hex())
        kinds["error" if isinstance(ours[0], type) else "ok"] += 1
    assert kinds["ok"] > 10_000 and kinds["error"] > 500
    # a renegotiation (the map configured again) is followed: mid moves to id 8
    ext_map.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=8, uri=_URIS[1])])
    )
    packet = RtpPacket(payload_type=0, sequence_number=1, timestamp=2, ssrc=3, payload=b"x")
    packet.extensions.mid = "7"
    data = packet.serialize(ext_map)
    assert parser.parse(data).extensions.mid == "7" == RtpPacket.parse(data, ext_map).extensions.mid


def test_the_vp8_payload_is_what_aiortcs_depayloader_gives() -> None:
    """Every descriptor layout (X, I with short and long ids, L, T, K) and every cut short."""
    rng = random.Random(3)
    seen_errors = set()
    for _ in range(20_000):
        first = rng.randrange(256)
        bits = rng.randrange(256)
        body = rng.randbytes(rng.randrange(0, 8))
        payload = (bytes((first, bits)) + body)[: rng.randrange(0, 10)]
        try:
            theirs: Any = vp8_depayload(payload)
        except ValueError as exc:
            theirs = str(exc)
            seen_errors.add(theirs)
        try:
            ours: Any = vp8_payload(payload)
        except ValueError as exc:
            ours = str(exc)
        assert ours == theirs, payload.hex()
    assert len(seen_errors) == 6  # every check was reached
