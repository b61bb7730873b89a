"""The forwarding fast path: a frame's RTP packets written as bytes, protected and sent at once.

aiortc's sender builds an ``RtpPacket`` object per packet, serializes it with its header
extensions, reads the NTP clock, and awaits a coroutine chain per packet (sender, DTLS
transport, ICE transport, aioice connection, protocol). On a forwarding sender,
:class:`FastSender` takes over from the packer's payloads on: per packet it packs a 12-byte
header (SSRC, sequence number, timestamp, marker) in front of the frame's header-extension
block (mid and abs-send-time, laid out once by aiortc's own serializer), protects it with the
DTLS transport's outbound SRTP session and hands it to the selected ICE pair's datagram
transport, with no coroutine per packet. Once the sender's task has sent a first frame, a
frame the forwarder queues is sent at once from the forwarder's own stack
(:func:`direct_sender`): no task wake-up per frame and subscriber either; the task remains
for the first frame, a link that is down, and TURN pairs. aiortc keeps ICE, DTLS, SDP and RTCP:
the sender's RTCP task still sends its reports from the counts written back here, and NACKs
are answered by aiortc's ``_retransmit`` from the same RTX history (over RTX when negotiated).

All access to aiortc's internals goes through :class:`~media.aiortc_patch.SenderWire`.
Enabled by ``media.fast_path`` (settings.py); ``false`` keeps aiortc's own send path.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import HeaderExtensions, RtpPacket

from . import native_send
from .aiortc_patch import SenderWire, fast_sender, install_fast_sender, srtp_session
from .frames import VP8_PICTURE_ID_AT, with_picture_id
from .native_send import MTU

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")
_RTP_HISTORY_SIZE = 128  # aiortc.rtcrtpsender.RTP_HISTORY_SIZE (checked by the tests)
#: bytes queued in asyncio's datagram transport (the kernel refused them) above which a
#: packet is dropped instead of queued: a stalled socket must not grow memory without bound
MAX_WRITE_BUFFER = 256 * 1024


class SentPacket(RtpPacket):
    """A sent packet as aiortc's RTX history holds it, built without ``RtpPacket.__init__``.

    ``_retransmit`` reads ``sequence_number``, ``wrap_rtx`` the header fields, payload, csrc
    and extensions, and ``serialize`` the rest; the defaults are class attributes.
    """

    version = 2
    padding_size = 0
    csrc: list[int] = []  # read only (wrap_rtx copies the reference)

    def __init__(
        self,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        extensions: HeaderExtensions,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.extensions = extensions


class FrameHistory(dict[int, Any]):
    """aiortc's RTX history (sequence number % 128 -> packet) kept as frames, not packets.

    The fast path records each frame once (its shared payloads, picture id and header fields);
    a packet object is made only when aiortc's ``_retransmit`` (``get``) or a padding probe
    (``values``) asks for it. Anything stored the dict way is kept too (``get`` falls back).
    """

    def __init__(self) -> None:
        super().__init__()
        #: (first seq, payloads, picture id or None, pt, ts, ssrc, extensions), oldest first;
        #: every frame has a packet, so the last 128 frames hold at least the 128 packets
        #: aiortc's history answers for (the newest per ``seq % 128``: older ones never are)
        self._frames: deque[tuple[int, list[bytes], int | None, int, int, int, Any]] = deque(
            maxlen=_RTP_HISTORY_SIZE
        )
        #: ``record`` without the method call (the fast path's per-frame step)
        self.append = self._frames.append

    def record(
        self,
        first_seq: int,
        payloads: list[bytes],
        picture_id: int | None,
        pt: int,
        ts: int,
        ssrc: int,
        extensions: HeaderExtensions | tuple[str | None, int],
    ) -> None:
        """Hold a frame sent from ``first_seq`` on; ``extensions`` are its header extensions,
        or ``(mid, abs-send-time)`` to make them from when a packet is asked for."""
        self._frames.append((first_seq, payloads, picture_id, pt, ts, ssrc, extensions))

    def get(self, key: int, default: Any = None) -> Any:
        for first, payloads, picture_id, pt, ts, ssrc, extensions in reversed(self._frames):
            i = (key - first) % _RTP_HISTORY_SIZE
            if i < len(payloads):
                payload = payloads[i]
                if picture_id is not None:
                    payload = with_picture_id([payload], picture_id)[0]
                marker = 1 if i == len(payloads) - 1 else 0
                seq = (first + i) & 0xFFFF
                if type(extensions) is tuple:  # (mid, abs-send-time), as the fast path keeps it
                    values = HeaderExtensions()
                    values.mid, values.abs_send_time = extensions
                    extensions = values
                return SentPacket(pt, marker, seq, ts, ssrc, payload, extensions)
        return super().get(key, default)

    def newest(self, n: int) -> list[Any]:
        """The ``n`` packets sent last, newest first (padding probes copy them)."""
        found: list[Any] = []
        for first, payloads, *_ in reversed(self._frames):
            for i in range(len(payloads) - 1, -1, -1):
                if len(found) == n:
                    return found
                found.append(self.get((first + i) % _RTP_HISTORY_SIZE))
        return found

    def __getitem__(self, key: int) -> Any:
        packet = self.get(key)
        if packet is None:
            raise KeyError(key)
        return packet

    def _keys(self) -> dict[int, None]:
        keys = dict.fromkeys(super().keys())
        for first, payloads, *_ in self._frames:
            for i in range(len(payloads)):
                keys[(first + i) % _RTP_HISTORY_SIZE] = None
        return keys

    def values(self) -> Any:  # type: ignore[override]
        """Every packet held (the newest per key), as packets."""
        return [self.get(key) for key in self._keys()]

    def __len__(self) -> int:
        return len(self._keys())

    def __bool__(self) -> bool:
        return bool(self._frames) or super().__len__() > 0

    def clear(self) -> None:
        self._frames.clear()
        super().clear()


class ExtensionTemplate:
    """The header-extension block aiortc's sender writes (mid, abs-send-time), as bytes.

    Laid out once with aiortc's own ``HeaderExtensionsMap`` (same ids, order and padding);
    per frame only the 3 bytes of abs-send-time are patched in.
    """

    def __init__(self, ext_map: Any, mid: str | None) -> None:
        self.mid = mid

        def block(abs_send_time: int | None) -> bytes:
            values = HeaderExtensions()
            values.mid = mid
            values.abs_send_time = abs_send_time
            profile, value = ext_map.set(values)
            return struct.pack("!HH", profile, len(value) >> 2) + value if value else b""

        low, high = block(0), block(0xFFFFFF)
        self.block = low
        diff = [i for i in range(len(low)) if low[i] != high[i]]
        self.abs_at: int | None = diff[0] if diff else None
        if diff and diff != [diff[0], diff[0] + 1, diff[0] + 2]:
            raise ValueError("unexpected abs-send-time layout")

    def build(self, abs_send_time: int) -> bytes:
        at = self.abs_at
        if at is None:
            return self.block
        return self.block[:at] + abs_send_time.to_bytes(3, "big") + self.block[at + 3 :]


class _Armed:
    """What a sender's direct frames need that does not change between them (gathered by the
    frame that armed it; :meth:`SenderWire.holds` tells when it no longer stands)."""

    __slots__ = (
        "abs_at",
        "first",
        "history",
        "link",
        "packer",
        "pt",
        "snapshot",
        "ssrc",
        "template",
        "transport",
    )

    def __init__(
        self,
        snapshot: tuple[Any, ...],
        transport: Any,
        link: native_send.Link,
        packer: Any,
        history: FrameHistory,
        template: ExtensionTemplate,
        pt: int,
        ssrc: int,
    ) -> None:
        self.snapshot = snapshot
        self.transport = transport
        self.link = link
        self.packer = packer
        self.history = history
        self.template = template
        self.abs_at = -1 if template.abs_at is None else template.abs_at
        self.first = 0x90 if template.block else 0x80  # (the extension bit)
        self.pt = pt
        self.ssrc = ssrc


class FastSender:
    """The fast path of one forwarding sender (lives as long as the sender: m-line reuse keeps
    its sequence numbers and timestamp origin)."""

    def __init__(
        self, wire: SenderWire, native: native_send.Native | None = None, gso: bool = True
    ) -> None:
        self.wire = wire
        #: the compiled send (native_send.py), None: every packet is written here in Python
        self.native = native
        self._link: native_send.Link | None = None
        self._out = native.ffi.new("int[4]") if native is not None else None
        self.gso = gso  # the compiled send segments runs of packets (settings.udp_gso)
        self.native_frames = 0  # frames sent by the compiled send
        self.sequence = int.from_bytes(os.urandom(2), "big") % 32768  # as aiortc: no early wrap
        self.timestamp_origin = int.from_bytes(os.urandom(4), "big")
        self.template: ExtensionTemplate | None = None
        self.packets = 0
        self.direct_frames = 0  # sent from the forwarder's stack (direct_sender), not the task
        self.dropped = 0  # refused by a full socket (see MAX_WRITE_BUFFER)
        self.bytes_out = 0  # protected bytes handed to the socket
        self._protect: Any = None
        self._transport: Any = None
        self._addr: tuple[str, int] | None = None
        self._pending: list[bytes] = []  # protected datagrams for aioice (TURN relay pairs)
        self.codec: RTCRtpCodecParameters | None = None  # known once the task sent a frame
        #: set by a frame the compiled send took: what the next direct frames need, gathered
        #: once (see _send_armed); cleared by anything :meth:`SenderWire.holds` sees change
        self._armed: _Armed | None = None

    def transmit(self, data: bytes) -> None:
        """Protect one serialized RTP packet and send it on the selected pair (tests wrap it)."""
        datagram = self._protect(data)
        self.bytes_out += len(datagram)
        transport = self._transport
        if transport is None:
            self._pending.append(datagram)
        elif transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            self.dropped += 1
        else:
            transport.sendto(datagram, self._addr)

    async def send_frame(self, frame: Any, codec: RTCRtpCodecParameters) -> None:
        """Pack ``frame`` with the sender's packer and send its packets (what ``_run_rtp`` does
        per packet, once per frame); called by the sender's task."""
        self._armed = None  # the task's frames take the whole way (and may re-arm it)
        self._protect, self._transport, self._addr = self.wire.link()
        self.codec = codec
        self._send(frame, codec)
        if self._pending:
            pending, self._pending = self._pending, []
            for datagram in pending:
                await self.wire.send_via_ice(datagram)

    def forward(self, frame: Any) -> None:
        """Send ``frame`` from the caller's stack, once :meth:`ready` said so (see
        :func:`direct_sender`); an error is logged, never raised into the publisher's receive
        path."""
        self.direct_frames += 1
        try:
            if self._armed is not None:
                self._send_armed(frame)
            else:
                self._send(frame, self.codec)  # type: ignore[arg-type]
        except Exception:
            logger.exception("fast path: frame not sent")

    def ready(self) -> bool:
        """True when a frame can be sent now without the sender's task: the task has sent one
        (so the sender runs and DTLS is up), the link is up and is a plain UDP socket."""
        armed = self._armed
        if armed is not None:
            if self.wire.holds(armed.snapshot, armed.transport):
                return True
            self._armed = None
        if self.codec is None or not self.wire.enabled:
            return False
        try:
            self._protect, self._transport, self._addr = self.wire.link()
        except ConnectionError:
            return False  # the task finds out too, and ends as aiortc's loop does
        return self._transport is not None

    def _send(self, frame: Any, codec: RTCRtpCodecParameters) -> None:
        payloads, timestamp, picture_id = self.wire.packer.pack_shared(frame)
        if payloads:
            self._send_packed(frame, payloads, timestamp, picture_id, codec)

    def _send_packed(
        self,
        frame: Any,
        payloads: list[bytes],
        timestamp: int,
        picture_id: int | None,
        codec: RTCRtpCodecParameters,
    ) -> None:
        wire = self.wire
        template = self.template
        mid = wire.mid
        if template is None or template.mid != mid:
            template = self.template = ExtensionTemplate(*wire.header_extensions())
        if self.native is not None and self._native_ready(template, frame, payloads):
            # the compiled send takes it: arm the direct path with what it needs, and send
            self._armed = _Armed(
                wire.snapshot(),
                self._transport,
                self._link,  # type: ignore[arg-type]
                wire.packer,
                wire.history,
                template,
                codec.payloadType,
                wire.ssrc,
            )
            self._send_native(frame, payloads, timestamp, picture_id)
            return
        ntp = ntp_now()
        abs_send_time = (ntp >> 14) & 0xFFFFFF
        ext = template.build(abs_send_time)
        first = 0x90 if ext else 0x80
        pt = codec.payloadType
        ts = (self.timestamp_origin + timestamp) & 0xFFFFFFFF
        ssrc = wire.ssrc
        seq = self.sequence
        count = len(payloads)
        wire.history.record(seq, payloads, picture_id, pt, ts, ssrc, (mid, abs_send_time))
        bytes0 = self.bytes_out
        if picture_id is not None:
            payloads = with_picture_id(payloads, picture_id)
        pack = _HEADER.pack
        transmit = self.transmit
        last = count - 1
        for i, payload in enumerate(payloads):
            transmit(
                pack(first, ((i == last) << 7) | pt, (seq + i) & 0xFFFF, ts, ssrc) + ext + payload
            )
        self.sequence = (seq + count) & 0xFFFF
        self.packets += count
        wire.account(count, sum(map(len, payloads)), self.bytes_out - bytes0, ts, ntp)

    def _native_ready(self, template: ExtensionTemplate, frame: Any, payloads: list[bytes]) -> bool:
        """True when this frame can go through the compiled send: an open plain UDP socket
        with nothing queued in asyncio (order), a pylibsrtp session, packets within the MTU.
        (A closed transport's file descriptor number may already belong to another socket.)"""
        native, transport = self.native, self._transport
        if native is None or transport is None or self._pending:
            return False
        if transport.get_write_buffer_size() > 0 or transport.is_closing():
            return False
        if 12 + len(template.block) + native_send.frame_joined(frame, payloads)[3] > MTU:
            return False
        link = self._link
        if (
            link is None
            or link.transport is not transport
            or link.protect is not self._protect  # (SenderWire.link: the same while unchanged)
            or link.addr != self._addr
        ):
            link = self._link = native_send.Link.make(
                native,
                transport,
                self._addr,
                srtp_session(self._protect),
                self._protect,
                self.gso and (link is None or link.gso),  # a refusal holds for the sender
            )
            if link is None:
                self.native = None  # not a pylibsrtp session or socket: stay in Python
                return False
        return link.usable

    def _send_armed(self, frame: Any) -> None:
        """A direct frame on an armed sender (:meth:`ready` checked that what :class:`_Armed`
        holds still stands): packed, then sent by the compiled send unless too large."""
        armed = self._armed
        assert armed is not None
        payloads, timestamp, picture_id = armed.packer.pack_shared(frame)
        if not payloads:
            return
        joined = native_send.frame_joined(frame, payloads)
        if 12 + len(armed.template.block) + joined[3] > MTU:
            self._armed = None  # too large for the compiled send: aiortc-sized in Python
            self._send_packed(frame, payloads, timestamp, picture_id, self.codec)  # type: ignore[arg-type]
            return
        self._send_native(frame, payloads, timestamp, picture_id)

    def _send_native(
        self, frame: Any, payloads: list[bytes], timestamp: int, picture_id: int | None
    ) -> None:
        """Send a packed frame with the compiled send, by what :class:`_Armed` holds: the RTX
        history, one C call (headers, abs-send-time, picture id, SRTP, ``sendmmsg``), the
        counts aiortc's RTCP and ``getStats`` read. A refusal by libsrtp or a bad packet
        leaves this sender in Python from then on (the frame is in the RTX history)."""
        armed, native = self._armed, self.native
        assert armed is not None and native is not None
        joined = frame.joined
        template = armed.template
        ntp = ntp_now()
        abs_send_time = (ntp >> 14) & 0xFFFFFF
        ts = (self.timestamp_origin + timestamp) & 0xFFFFFFFF
        seq = self.sequence
        count = len(payloads)
        pt, ssrc, link, out = armed.pt, armed.ssrc, armed.link, self._out
        armed.history.append(
            (seq, payloads, picture_id, pt, ts, ssrc, (template.mid, abs_send_time))
        )
        rc = native.send_frame(
            link.fd, link.family, link.ip, link.port, native.protect_fn, link.srtp,
            armed.first, pt, seq, ts, ssrc, template.block, len(template.block),
            joined[0], joined[1], count, -1 if picture_id is None else picture_id,
            VP8_PICTURE_ID_AT, link.gso, armed.abs_at, abs_send_time, out,
        )  # fmt: skip
        if out[3]:
            native_send.gso_refused(link)
        sent, sent_bytes = (out[0], out[1]) if rc == 0 else (0, 0)
        if rc != 0:
            logger.error("native send failed (%d): this sender goes on in Python", rc)
            self.native = None
            self._armed = None
        self.native_frames += 1
        self.bytes_out += sent_bytes
        self.dropped += count - sent  # in the RTX history: a NACK repairs them
        self.sequence = (seq + count) & 0xFFFF
        self.packets += count
        self.wire.account(count, joined[2], sent_bytes, ts, ntp)


_NTP_EPOCH_S = 2_208_988_800  # 1900-01-01 to 1970-01-01


def ntp_now() -> int:
    """aiortc's ``clock.current_ntp_time()`` (64-bit NTP time, now) without datetimes."""
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    return ((sec + _NTP_EPOCH_S) << 32) | ((ns << 32) // 1_000_000_000)


def direct_sender(sender: Any) -> Callable[[Any], bool]:
    """``drain(track) -> bool``: send what ``track`` has queued from the caller's stack.

    Called when the forwarder queues a frame: instead of waking the sender's task (an event,
    a task switch and two coroutines per frame and subscriber), the frame is packed, protected
    and sent right away, in queue order. False (nothing taken) when the fast sender is not
    ready (:meth:`FastSender.ready`): the task then sends, as before.
    """
    fast: FastSender = fast_sender(sender)

    def drain(track: Any) -> bool:
        if not fast.ready():
            return False
        taken = False
        while (frame := track.take()) is not None:
            taken = True
            fast.forward(frame)
            track.sent(frame)
        return taken

    return drain


def attach(sender: Any, native: bool = True, gso: bool = True) -> FastSender:
    """Put ``sender`` (a forwarding sender holding a FramePacker) on the fast path; with
    ``native``, through the compiled send when it is built (:func:`media.native_send.load`),
    with ``gso`` segmenting runs of packets in the kernel."""
    lib = native_send.load() if native else None

    def make(wire: SenderWire) -> FastSender:
        wire.use_history(FrameHistory())
        return FastSender(wire, lib, gso)

    fast: FastSender = install_fast_sender(sender, make)
    return fast
