"""The compiled send (media/native): the same SRTP datagrams as the Python fast path."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from media import native_send
from media.aiortc_patch import srtp_session
from media.fastpath import FastSender, FrameHistory
from media.frames import EncodedFrame, FramePacker

_SO_NO_CHECK = 11  # Linux: no UDP checksums on this socket (so no segmentation offload)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
KEY = bytes(range(30))  # AES128_CM_SHA1_80: 16-byte key + 14-byte salt


def _native() -> native_send.Native:
    native = native_send.load()
    if native is None:
        pytest.fail(f"{native_send.LIBRARY} is not built: run scripts/setup-venv.sh")
    return native


def _session(direction: str) -> Session:
    kind = Policy.SSRC_ANY_OUTBOUND if direction == "out" else Policy.SSRC_ANY_INBOUND
    return Session(Policy(key=KEY, ssrc_type=kind))


class _Wire:
    """A SenderWire stand-in over a real socket and a real pylibsrtp session."""

    def __init__(self, transport: Any, addr: tuple[str, int]) -> None:
        self.ext_map = HeaderExtensionsMap()
        self.ext_map.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(
                        id=4, uri="urn:ietf:params:rtp-hdrext:sdes:mid"
                    ),
                    RTCRtpHeaderExtensionParameters(
                        id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                    ),
                ]
            )
        )
        self.packer = FramePacker("video/vp8")
        self.ssrc = 0x11223344
        self.history = FrameHistory()
        self.session = _session("out")
        self.transport, self.addr = transport, addr
        self.accounted: list[tuple[int, ...]] = []

    mid = "1"
    enabled = True

    def header_extensions(self) -> tuple[Any, str | None]:
        return self.ext_map, "1"

    def link(self) -> tuple[Any, Any, Any]:
        return self.session.protect, self.transport, self.addr

    def account(self, *args: int) -> None:
        self.accounted.append(args)

    def snapshot(self) -> tuple[Any, ...]:
        return (self.packer,)

    def holds(self, snapshot: tuple[Any, ...], transport: Any) -> bool:
        return (
            snapshot[0] is self.packer
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        )


@pytest.fixture
async def udp() -> AsyncIterator[tuple[Any, socket.socket]]:
    """(asyncio datagram transport, a blocking receiving socket it sends to)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5.0)  # every receive below is bounded
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    yield transport, rx
    transport.close()
    rx.close()


_DATA = os.urandom(40_000)


@pytest.fixture
def native_sender(
    udp: tuple[Any, socket.socket],
) -> tuple[FastSender, Any, socket.socket]:
    """(a fast sender on the compiled send, its datagram transport, the receiving socket)."""
    transport, rx = udp
    return FastSender(_Wire(transport, rx.getsockname()), _native()), transport, rx  # type: ignore[arg-type]


def _frames() -> list[EncodedFrame]:
    rng = _DATA
    return [
        EncodedFrame(data=rng[:30_000], timestamp=3000, keyframe=True, arrival=0.0),  # 25+ packets
        EncodedFrame(data=rng[30_000:31_000], timestamp=6000, keyframe=False, arrival=0.0),
        EncodedFrame(data=rng[31_000:], timestamp=9000, keyframe=False, arrival=0.0),
    ]


async def _send_all(fast: FastSender, rx: socket.socket, direct: bool = False) -> list[bytes]:
    """Send the frames through the sender's task, or (``direct``) the first through the task
    and the rest from the caller's stack, as the forwarder does (the armed path)."""
    for i, frame in enumerate(_frames()):
        if direct and i:
            assert fast.ready()
            fast.forward(frame)
        else:
            await fast.send_frame(frame, VP8)
    return [rx.recv(2048) for _ in range(fast.packets)]


@pytest.mark.parametrize("direct", [False, True], ids=["task", "direct"])
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
async def test_native_datagrams_equal_the_python_fast_path(
    udp: tuple[Any, socket.socket], gso: bool, direct: bool
) -> None:
    """With UDP segmentation the kernel cuts each run of packets into the very datagrams the
    Python path sends one by one (what the subscriber receives is all that counts); a frame
    sent from the forwarder's stack once the compiled send is armed is the same too."""
    transport, rx = udp
    addr = rx.getsockname()
    python_wire, native_wire = _Wire(transport, addr), _Wire(transport, addr)
    python = FastSender(python_wire)  # type: ignore[arg-type]
    native = FastSender(native_wire, _native(), gso=gso)  # type: ignore[arg-type]
    for fast in (python, native):  # same starting points, so the same bytes are expected
        fast.sequence, fast.timestamp_origin = 65530, 0xFFFFFF00  # both wrap
    python_wire.packer._picture_id = native_wire.packer._picture_id = 100
    by_python = await _send_all(python, rx, direct)
    by_native = await _send_all(native, rx, direct)
    assert native.native_frames == 3 and python.native_frames == 0
    assert (native._armed is not None) and (python._armed is None)
    assert len(by_native) == len(by_python) > 30
    # abs-send-time differs between the two runs (3 bytes, protected): compare what it covers
    inbound_p, inbound_n = _session("in"), _session("in")
    for i, (p, n) in enumerate(zip(by_python, by_native, strict=True)):
        assert len(p) == len(n)
        plain_p, plain_n = inbound_p.unprotect(p), inbound_n.unprotect(n)  # both authentic
        rp = RtpPacket.parse(plain_p, python_wire.ext_map)
        rn = RtpPacket.parse(plain_n, native_wire.ext_map)
        assert (rn.sequence_number, rn.timestamp, rn.marker, rn.ssrc, rn.payload_type) == (
            rp.sequence_number,
            rp.timestamp,
            rp.marker,
            rp.ssrc,
            rp.payload_type,
        ), i
        assert rn.payload == rp.payload and rn.extensions.mid == "1"
        assert rn.extensions.abs_send_time is not None
        # the RTX history holds what was sent, for aiortc's _retransmit
        held = native_wire.history[rn.sequence_number % 128]
        assert held.serialize(native_wire.ext_map) == plain_n
    # the counts aiortc's RTCP sender report and getStats read
    assert [a[:2] for a in native_wire.accounted] == [a[:2] for a in python_wire.accounted]
    assert sum(a[2] for a in native_wire.accounted) == sum(map(len, by_native))
    assert native.dropped == 0 and native.sequence == python.sequence
    assert native._link is not None and native._link.gso is gso


async def test_a_path_that_refuses_segmentation_is_sent_packet_by_packet(
    native_sender: tuple[FastSender, Any, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """Linux refuses UDP_SEGMENT on a socket without UDP checksums (as on a path without
    checksum offload): the frame still arrives whole and in order, and that link stops asking."""
    fast, transport, rx = native_sender
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, _SO_NO_CHECK, 1)
    caplog.set_level("INFO", logger="media.native_send")
    for frame in _frames():
        await fast.send_frame(frame, VP8)
    assert fast.native_frames == 3 and fast.dropped == 0
    assert fast._link is not None and not fast._link.gso
    assert "refused UDP segmentation" in caplog.text
    got = [rx.recv(2048) for _ in range(fast.packets)]
    inbound = _session("in")
    seqs = [RtpPacket.parse(inbound.unprotect(d)).sequence_number for d in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))] and len(seqs) > 30


async def test_a_backlog_in_asyncio_keeps_order_by_staying_in_python(
    native_sender: tuple[FastSender, Any, socket.socket],
) -> None:
    fast, transport, rx = native_sender
    real = transport.get_write_buffer_size
    transport.get_write_buffer_size = lambda: 1  # datagrams asyncio still holds go first
    try:
        await fast.send_frame(_frames()[1], VP8)
    finally:
        transport.get_write_buffer_size = real
    assert fast.native_frames == 0 and fast.packets > 0
    await fast.send_frame(_frames()[2], VP8)
    assert fast.native_frames == 1
    got = [rx.recv(2048) for _ in range(fast.packets)]
    inbound = _session("in")
    seqs = [RtpPacket.parse(inbound.unprotect(d)).sequence_number for d in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]


async def test_a_closed_transport_is_never_written_by_descriptor_number(
    native_sender: tuple[FastSender, Any, socket.socket],
) -> None:
    fast, transport, _rx = native_sender
    await fast.send_frame(_frames()[1], VP8)
    assert fast.native_frames == 1
    transport.close()  # its fd number may be reused by the next socket opened
    await fast.send_frame(_frames()[2], VP8)
    assert fast.native_frames == 1  # asyncio's closed transport got it (and dropped it)


async def test_an_armed_sender_stands_down_when_its_link_changes(
    native_sender: tuple[FastSender, Any, socket.socket],
) -> None:
    """Once armed, direct frames skip the per-frame link walk; a backlog in asyncio or a
    closed transport still sends them the whole way (order kept, no write by stale fd)."""
    fast, transport, rx = native_sender
    frames = _frames()
    await fast.send_frame(frames[1], VP8)
    assert fast._armed is not None and fast.native_frames == 1
    real = transport.get_write_buffer_size
    transport.get_write_buffer_size = lambda: 1  # datagrams asyncio still holds go first
    try:
        assert fast.ready()  # the link is up: the frame goes, in Python behind the backlog
        fast.forward(frames[2])
    finally:
        transport.get_write_buffer_size = real
    assert fast._armed is None and fast.native_frames == 1 and fast.direct_frames == 1
    assert fast.ready()
    fast.forward(frames[2])  # the backlog gone: through the compiled send, armed again
    assert fast.native_frames == 2 and fast._armed is not None
    got = [rx.recv(2048) for _ in range(fast.packets)]
    inbound = _session("in")
    seqs = [RtpPacket.parse(inbound.unprotect(d)).sequence_number for d in got]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    transport.close()
    fast.ready()
    fast.forward(frames[1])
    assert fast._armed is None and fast.native_frames == 2  # never by descriptor number


def test_a_session_that_is_not_pylibsrtp_stays_in_python() -> None:
    native = _native()

    class _T:
        def get_extra_info(self, name: str) -> Any:
            return None

    assert srtp_session(lambda d: d) is None
    assert native_send.Link.make(native, _T(), ("127.0.0.1", 9), None) is None
    assert native_send.Link.make(native, _T(), ("127.0.0.1", 9), _session("out")) is None
