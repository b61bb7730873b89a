"""aiortc's receive path for publishers, patched (``media.fast_receive``).

1. :func:`receive_rtp_inline` handles a publisher's SRTP packets in the socket callback
   instead of through aioice's queue and the DTLS transport's task.
2. :func:`lean_rtp_handler` is aiortc's ``RTCRtpReceiver._handle_rtp_packet`` as a plain call
   for a tapped receiver's media packets: the same steps on aiortc's own state (receiver
   statistics, NACK generator, REMB estimator), no coroutine per packet; RTCP it must send
   goes through aiortc's own coroutines, run eagerly (:func:`run_eagerly`).
3. :func:`skip_stun_parsing` hands RTP and RTCP datagrams (first byte 128-191, RFC 7983)
   straight to aioice's connection: aioice tries to parse every datagram as STUN first, and
   pays for the exception.

Like aiortc_patch.py, each hook checks that what it replaces exists (tests/media/
test_aiortc_internals.py allows private attributes in these two modules only).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import types
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCPeerConnection, RTCRtpReceiver, clock
from aiortc.codecs import is_rtx
from aiortc.codecs.h264 import h264_depayload
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpreceiver import RTP_HISTORY_SIZE, NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    HeaderExtensions,
    RtcpPsfbPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
)

from .aiortc_patch import _DTLS_CONNECTED, ArrivalClock, _require

logger = logging.getLogger(__name__)

_DTLS_RX = ("_RTCDtlsTransport__rx_bytes", "_RTCDtlsTransport__rx_packets")
_NTP_EPOCH_MS = 2_208_988_800_000  # aiortc's clock.current_ms() counts from 1900


def receive_rtp_inline(pc: RTCPeerConnection) -> int:
    """Handle ``pc``'s incoming SRTP packets as their datagrams arrive, not through aioice's
    queue and the DTLS transport's task.

    aiortc hands every datagram from the socket callback to an ``asyncio.Queue``; the DTLS
    transport's task then wakes for it and goes through four coroutines before the packet
    reaches its receiver. For an RTP packet (not RTCP, DTLS or STUN) that arrives while that
    queue is empty (order kept) on a connected transport, this does the same work right in the
    callback: counts, SRTP unprotect, parse (:class:`RtpParser`), route, and the receiver's
    ``_handle_rtp_packet``, run eagerly (:func:`run_eagerly`: to its end unless it really
    waits, then in a task). Arrival time: the kernel's when :func:`kernel_arrival_times` is
    on. Everything else takes aiortc's path. Call once the transceivers exist, before or after
    :func:`observe_transport_rtp`; idempotent. Returns how many connections were switched.
    """
    switched = 0
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        for attr in ("_rx_srtp", "_state", "_rtp_router", "_rtp_header_extensions_map"):
            _require(dtls, attr)
        for attr in _DTLS_RX:
            _require(dtls, attr)
        _require(dtls.transport, "_connection")
        connection = dtls.transport._connection
        _require(connection, "_queue")
        if getattr(connection, "_sfu_inline", False):
            continue
        connection._sfu_queue_path = connection.data_received
        connection._sfu_inline = True
        connection._sfu_inline_packets = 0
        queue = connection._queue
        state = dtls.__dict__
        parse = _parser(dtls).parse

        def data_received(
            data: bytes,
            component: int,
            _c: Any = connection,
            _d: Any = dtls,
            _q: Any = queue,
            _s: dict[str, Any] = state,
            _parse: Callable[[bytes], RtpPacket] = parse,
        ) -> None:
            srtp = _d._rx_srtp
            if (
                srtp is None
                or len(data) < 12
                or not 127 < data[0] < 192
                or is_rtcp(data)
                or not _q.empty()
                or _d._state is not _DTLS_CONNECTED
            ):
                _c._sfu_queue_path(data, component)
                return
            _c._sfu_inline_packets += 1
            clock: ArrivalClock | None = getattr(_c, "_sfu_clock", None)
            if clock is not None and clock.kernel_us is not None:
                arrival_us, clock.kernel_us = clock.kernel_us, None
            else:
                arrival_us = time.time_ns() // 1000
            _s[_DTLS_RX[0]] += len(data)
            _s[_DTLS_RX[1]] += 1
            try:
                plain = srtp.unprotect(data)
                packet = _parse(plain)
            except (pylibsrtp.Error, ValueError):
                return  # aiortc drops these too (logged at debug there)
            if clock is not None:
                clock.current_us = arrival_us  # what observe_transport_rtp's observer reads
            try:
                receiver = _d._rtp_router.route_rtp(packet)
                if receiver is not None:
                    arrival_ms = arrival_us // 1000 + _NTP_EPOCH_MS
                    handle = receiver.__dict__.get(_LEAN_ATTR)
                    if handle is None:
                        handle = lean_rtp_handler(receiver)
                    handle(packet, arrival_ms)
            except ConnectionError:  # RTCP on a transport going away: its task ends it
                logger.debug("media: inline RTP receive on a closing transport", exc_info=True)
            except Exception:  # never into the socket callback
                logger.exception("media: inline RTP receive failed")

        connection.data_received = data_received  # type: ignore[method-assign]
        switched += 1
    return switched


def _parser(dtls: Any) -> RtpParser:
    """The transport's :class:`RtpParser` (one per DTLS transport, made once)."""
    parser: RtpParser | None = dtls.__dict__.get("_sfu_rtp_parser")
    if parser is None:
        parser = dtls.__dict__["_sfu_rtp_parser"] = RtpParser(dtls._rtp_header_extensions_map)
    return parser


def inline_received(pc: RTCPeerConnection) -> int:
    """RTP packets :func:`receive_rtp_inline` handled on ``pc`` so far."""
    seen: set[int] = set()
    total = 0
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        if id(connection) not in seen:
            seen.add(id(connection))
            total += getattr(connection, "_sfu_inline_packets", 0)
    return total


_eager_tasks: set[asyncio.Task[Any]] = set()


@types.coroutine
def _resume(coro: Any, waiting_on: Any) -> Any:
    """Go on with a coroutine :func:`run_eagerly` started, from where it waits."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # thrown in by the task (cancel): pass it on
            try:
                waiting_on = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = coro.send(sent)
            except StopIteration:
                return


def run_eagerly(coro: Any) -> None:
    """Run ``coro`` now, to its end unless it really waits; the rest then runs in a task.

    aiortc's per-packet handlers are coroutines only because they may send RTCP, which on a
    UDP pair never waits: run this way they cost a call, not a task. (Python 3.12's eager task
    factory does the same for every task.) Exceptions propagate when raised before the first
    wait and are logged by asyncio after it.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return
    task = asyncio.ensure_future(_resume(coro, waiting_on))
    _eager_tasks.add(task)
    task.add_done_callback(_eager_tasks.discard)


_LEAN_ATTR = "_sfu_lean_handler"
_RX = "_RTCRtpReceiver__"
_RX_ATTRS = (
    "active_ssrc",
    "codecs",
    "decoder_error",
    "jitter_buffer",
    "kind",
    "nack_generator",
    "remote_bitrate_estimator",
    "remote_streams",
    "rtcp_ssrc",
)
#: getSynchronizationSources() reads when each SSRC was last seen: a datetime per packet costs
#: more than the rest of the bookkeeping, so it is refreshed at most this often
ACTIVE_SSRC_REFRESH_S = 0.1


def lean_rtp_handler(receiver: RTCRtpReceiver) -> Callable[[RtpPacket, int], None]:
    """``handle(packet, arrival_time_ms)``: aiortc's ``_handle_rtp_packet`` as a plain call.

    For a receiver whose jitter buffer is the SFU's assembler (:func:`~media.aiortc_patch.
    tap_receiver`) and a media payload type, it does aiortc's steps in aiortc's order on
    aiortc's own objects: REMB estimator, last-seen time of the SSRC, receiver statistics,
    NACK generator, depayload, assembler, PLI on a decoder error. It skips the coroutine per
    packet and the codec-name parsing per packet (a table per payload type), refreshes the
    last-seen datetime at most every :data:`ACTIVE_SSRC_REFRESH_S`, and puts a
    :class:`LeanNackGenerator` (the same state) in place of aiortc's NACK generator. RTX
    packets, unknown payload types and an untapped receiver take aiortc's own handler. Made
    once per receiver.
    """
    for attr in _RX_ATTRS:
        _require(receiver, _RX + attr)
    for attr in ("_enabled", "_handle_rtp_packet", "_send_rtcp", "_send_rtcp_nack"):
        _require(receiver, attr)
    _require(receiver, "_send_rtcp_pli")
    state = receiver.__dict__
    nack_state = state[_RX + "nack_generator"]
    if type(nack_state) is NackGenerator:  # the same state, less work per packet
        lean = state[_RX + "nack_generator"] = LeanNackGenerator()
        lean.max_seq, lean.missing = nack_state.max_seq, nack_state.missing
    slow = receiver._handle_rtp_packet
    video = state[_RX + "kind"] == "video"
    table: dict[int, tuple[int, Callable[[bytes], bytes]] | None] = {}
    seen: dict[int, float] = {}
    codecs_seen: Any = None

    def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        nonlocal codecs_seen
        if not receiver._enabled:
            return
        codecs = state[_RX + "codecs"]
        if codecs is not codecs_seen or len(codecs) != len(table):  # (re)negotiated
            table.clear()
            for pt, codec in codecs.items():
                table[pt] = None if is_rtx(codec) else (codec.clockRate, _depayloader(codec))
            codecs_seen = codecs
        entry = table.get(packet.payload_type)
        if entry is None or type(state[_RX + "jitter_buffer"]) is JitterBuffer:
            run_eagerly(slow(packet, arrival_time_ms=arrival_time_ms))
            return
        ssrc = packet.ssrc
        estimator = state[_RX + "remote_bitrate_estimator"]
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(  # (arrival_time_ms, abs_send_time, payload_size, ssrc)
                arrival_time_ms,
                packet.extensions.abs_send_time,
                len(packet.payload) + packet.padding_size,
                ssrc,
            )
            rtcp_ssrc = state[_RX + "rtcp_ssrc"]
            if rtcp_ssrc is not None and remb is not None:
                feedback = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                )
                run_eagerly(receiver._send_rtcp(feedback))
        now = time.monotonic()
        if now - seen.get(ssrc, -1.0) >= ACTIVE_SSRC_REFRESH_S:
            seen[ssrc] = now
            state[_RX + "active_ssrc"][ssrc] = clock.current_datetime()
        streams = state[_RX + "remote_streams"]
        stats = streams.get(ssrc)
        if stats is None:
            stats = streams[ssrc] = StreamStatistics(entry[0])
        stats.add(packet)
        nack = state[_RX + "nack_generator"]
        if nack is not None and nack.add(packet):
            run_eagerly(receiver._send_rtcp_nack(ssrc, sorted(nack.missing)))
        try:
            packet._data = entry[1](packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return  # aiortc drops these too (logged at debug there)
        pli, _frame = state[_RX + "jitter_buffer"].add(packet)  # the assembler: never a frame
        error = state[_RX + "decoder_error"]
        if error.is_set():
            error.clear()
            pli = pli or video
        if pli:
            run_eagerly(receiver._send_rtcp_pli(ssrc))

    state[_LEAN_ATTR] = handle
    return handle


_RTP_HEADER = struct.Struct("!BBHLL")
_U32 = struct.Struct("!L")
_I32 = struct.Struct("!l")
_U16 = struct.Struct("!H")
_U8 = struct.Struct("!B")
_PROFILE = struct.Struct("!HH")
#: aiortc's HeaderExtensionsMap.get checks the ids in this order (the first match wins)
_EXTENSION_KINDS = (
    "mid",
    "repaired_rtp_stream_id",
    "rtp_stream_id",
    "abs_send_time",
    "transmission_offset",
    "audio_level",
    "transport_sequence_number",
)


class RtpParser:
    """aiortc's ``RtpPacket.parse`` with one transport's header-extension map: the same
    packets and the same errors (tests/media/test_inline_receive.py), with less work per
    packet: one ``HeaderExtensions`` object instead of two, no keyword ``__init__``, a table
    from extension id to field instead of a chain of comparisons, no list of (id, value).
    The table follows the map: its ``configure`` (called by aiortc when a receiver or sender
    registers) is wrapped to rebuild it."""

    def __init__(self, ext_map: Any) -> None:
        _require(ext_map, "_HeaderExtensionsMap__ids")
        self._map = ext_map
        self._table: dict[int, str] = {}
        self._refresh()
        original = ext_map.configure

        def configure(parameters: Any, _o: Callable[[Any], None] = original) -> None:
            _o(parameters)
            self._refresh()

        ext_map.configure = configure

    def _refresh(self) -> None:
        ids = self._map._HeaderExtensionsMap__ids
        table: dict[int, str] = {}
        for kind in reversed(_EXTENSION_KINDS):  # earlier kinds win, as in aiortc's chain
            x_id = getattr(ids, kind)
            if x_id is not None:
                table[x_id] = kind
        self._table = table

    def parse(self, data: bytes) -> RtpPacket:
        size = len(data)
        if size < 12:
            raise ValueError("RTP packet length is less than 12 bytes")
        v_p_x_cc, m_pt, sequence_number, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if v_p_x_cc >> 6 != 2:
            raise ValueError("RTP packet has invalid version")
        cc = v_p_x_cc & 0x0F
        pos = 12 + 4 * cc
        if size < pos:
            raise ValueError("RTP packet has truncated CSRC")
        packet = RtpPacket.__new__(RtpPacket)
        packet.version = 2
        packet.marker = m_pt >> 7
        packet.payload_type = m_pt & 0x7F
        packet.sequence_number = sequence_number
        packet.timestamp = timestamp
        packet.ssrc = ssrc
        packet.csrc = [_U32.unpack_from(data, 12 + 4 * i)[0] for i in range(cc)] if cc else []
        values = packet.extensions = HeaderExtensions()
        packet.padding_size = 0
        if v_p_x_cc & 0x10:
            if size < pos + 4:
                raise ValueError("RTP packet has truncated extension profile / length")
            profile, length = _PROFILE.unpack_from(data, pos)
            length *= 4
            pos += 4
            if size < pos + length:
                raise ValueError("RTP packet has truncated extension value")
            self._extensions(values, profile, data[pos : pos + length])
            pos += length
        if v_p_x_cc & 0x20:
            padding = data[-1]
            if not padding or padding > size - pos:
                raise ValueError("RTP packet padding length is invalid")
            packet.padding_size = padding
            packet.payload = data[pos:-padding]
        else:
            packet.payload = data[pos:]
        return packet

    def _extensions(self, values: HeaderExtensions, profile: int, block: bytes) -> None:
        table = self._table
        end = len(block)
        pos = 0
        if profile == 0xBEDE:  # one-byte headers
            while pos < end:
                first = block[pos]
                if first == 0:  # padding
                    pos += 1
                    continue
                length = (first & 0x0F) + 1
                pos += 1
                if end < pos + length:
                    raise ValueError("RTP one-byte header extension value is truncated")
                kind = table.get(first >> 4)
                if kind is not None:
                    _decode(values, kind, block[pos : pos + length])
                pos += length
        elif profile == 0x1000:  # two-byte headers
            while pos < end:
                if block[pos] == 0:
                    pos += 1
                    continue
                if end < pos + 2:
                    raise ValueError("RTP two-byte header extension is truncated")
                x_id, length = block[pos], block[pos + 1]
                pos += 2
                if end < pos + length:
                    raise ValueError("RTP two-byte header extension value is truncated")
                kind = table.get(x_id)
                if kind is not None:
                    _decode(values, kind, block[pos : pos + length])
                pos += length


def _decode(values: HeaderExtensions, kind: str, value: bytes) -> None:
    """One extension's value, decoded as aiortc's HeaderExtensionsMap.get does."""
    if kind == "abs_send_time":
        values.abs_send_time = _U32.unpack(b"\x00" + value)[0]
    elif kind == "audio_level":
        vad_level = _U8.unpack(value)[0]
        values.audio_level = (vad_level & 0x80 == 0x80, vad_level & 0x7F)
    elif kind == "transport_sequence_number":
        values.transport_sequence_number = _U16.unpack(value)[0]
    elif kind == "mid":
        values.mid = value.decode("utf8")
    elif kind == "transmission_offset":
        values.transmission_offset = _I32.unpack(value + b"\x00")[0] >> 8
    else:  # repaired_rtp_stream_id, rtp_stream_id
        setattr(values, kind, value.decode("ascii"))


class LeanNackGenerator(NackGenerator):
    """aiortc's ``NackGenerator`` (missing sequence numbers, the last 128 kept) with its
    16-bit comparisons inlined, and no walk of the missing set while it is empty: the same
    ``max_seq``, ``missing`` and return values (tests/media/test_inline_receive.py)."""

    def add(self, packet: RtpPacket) -> bool:
        seq = packet.sequence_number
        max_seq = self.max_seq
        if max_seq is None:
            self.max_seq = seq
            return False
        missed = False
        if 0 < (seq - max_seq) & 0xFFFF < 0x8000:  # uint16_gt(seq, max_seq)
            nxt = (max_seq + 1) & 0xFFFF
            while 0 < (seq - nxt) & 0xFFFF < 0x8000:
                self.missing.add(nxt)
                missed = True
                nxt = (nxt + 1) & 0xFFFF
            self.max_seq = seq
        else:
            self.missing.discard(seq)
        if self.missing:
            self.truncate()
        return missed

    def truncate(self) -> None:
        if self.max_seq is not None and self.missing:
            min_seq = (self.max_seq - RTP_HISTORY_SIZE) & 0xFFFF
            for seq in list(self.missing):
                if 0 < (min_seq - seq) & 0xFFFF < 0x8000:  # uint16_gt(min_seq, seq)
                    self.missing.discard(seq)


def _depayloader(codec: Any) -> Callable[[bytes], bytes]:
    """aiortc's ``depayload(codec, payload)`` with its choice by codec name made once."""
    return {"VP8": vp8_payload, "H264": h264_depayload}.get(codec.name, _as_is)


def vp8_payload(payload: bytes) -> bytes:
    """aiortc's ``vp8_depayload``: the VP8 data after the payload descriptor (RFC 7741 4.2),
    with the same checks and errors, without building the descriptor object nobody reads
    here (tests/media/test_inline_receive.py compares the two)."""
    size = len(payload)
    if size < 1:
        raise ValueError("VPX descriptor is too short")
    pos = 1
    if payload[0] & 0x80:  # X: extended control bits
        if size < 2:
            raise ValueError("VPX descriptor has truncated extended bits")
        bits = payload[1]
        pos = 2
        if bits & 0x80:  # I: picture id
            if size < 3:
                raise ValueError("VPX descriptor has truncated PictureID")
            if payload[2] & 0x80:
                if size < 4:
                    raise ValueError("VPX descriptor has truncated long PictureID")
                pos = 4
            else:
                pos = 3
        if bits & 0x40:  # L: TL0PICIDX
            if size < pos + 1:
                raise ValueError("VPX descriptor has truncated TL0PICIDX")
            pos += 1
        if bits & 0x30:  # T or K
            if size < pos + 1:
                raise ValueError("VPX descriptor has truncated T/K")
            pos += 1
    return payload[pos:]


def _as_is(payload: bytes) -> bytes:
    return payload


def skip_stun_parsing(pc: RTCPeerConnection) -> int:
    """Hand ``pc``'s RTP and RTCP datagrams straight to aioice's connection (idempotent).

    aioice's ``StunProtocol.datagram_received`` parses every datagram as STUN and passes it
    on when that raises; a datagram whose first byte is 128-191 is RTP or RTCP (RFC 7983), so
    it goes to the connection's ``data_received`` at once, as aioice would have passed it.
    Call after gathering (the protocols exist then). Returns how many sockets were switched.
    """
    switched = 0
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in list(getattr(connection, "_protocols", [])):
            if "datagram_received" in protocol.__dict__ or type(protocol) is not StunProtocol:
                continue
            _require(protocol, "receiver")
            _require(protocol, "local_candidate")
            original = protocol.datagram_received

            def datagram_received(
                data: bytes,
                addr: tuple[Any, ...],
                _p: Any = protocol,
                _o: Callable[[bytes, tuple[Any, ...]], None] = original,
            ) -> None:
                if data and 127 < data[0] < 192:
                    _p.receiver.data_received(data, _p.local_candidate.component)
                else:
                    _o(data, addr)

            protocol.datagram_received = datagram_received
            switched += 1
    return switched
