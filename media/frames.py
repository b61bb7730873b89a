"""Encoded frames: assembling them from RTP packets, and packing them back into RTP payloads.

The SFU never decodes. A publisher's RTP packets are assembled into whole encoded frames
(:class:`VideoAssembler`, :class:`AudioAssembler`), fanned out as :class:`EncodedFrame`
objects, and re-packetized per subscriber by a :class:`FramePacker` standing in for the
sender's encoder (it only packs: it has no ``encode`` and owns no codec context).

Why not aiortc's ``JitterBuffer``: it hands out a frame only when the first packet of the
*next* frame arrives (one frame interval of added delay for video, 20 ms for audio on top of
its 4-packet audio prefetch, ~80 ms). A forwarder can release a video frame as soon as its
marker packet completes a contiguous run of packets, and an Opus packet as soon as it arrives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

from .aiortc_patch import depayloaded, h264_nal_units, h264_packetize

# How long a hole in a video frame may wait for its NACK-triggered retransmission before the
# assembler gives up, drops to the next keyframe and asks the publisher for one.
GAP_TIMEOUT_S = 0.5
# Hard bound on packets held while waiting for a hole to fill.
MAX_PENDING_PACKETS = 512

SUPPORTED_CODECS = ("video/vp8", "video/h264", "audio/opus")


@dataclass(slots=True)
class EncodedFrame:
    """One complete encoded frame as the publisher's encoder produced it."""

    data: bytes
    timestamp: int  # RTP clock units, unwrapped, publisher's origin (never negative)
    keyframe: bool
    arrival: float  # time.monotonic() when the frame became complete at the SFU
    audio_level: int | None = None  # RFC 6464 -dBov (0 loudest .. 127 silence), audio only
    meta: dict[str, Any] = field(default_factory=dict)
    #: the frame's RTP payloads, packetized once for every subscriber (FramePacker.pack_shared);
    #: VP8 ones carry picture id 0, which each subscriber's packer patches (VP8_PICTURE_ID_AT)
    rtp: list[bytes] | None = None
    #: what every subscriber's compiled send takes of ``rtp``, made by the first one:
    #: (payloads joined, their lengths as native uint16, total bytes, the largest)
    joined: tuple[bytes, bytes, int, int] | None = None


def _h264_nal_types(data: bytes) -> list[int]:
    return [nal[0] & 0x1F for nal in h264_nal_units(data) if nal]


def is_vp8_keyframe(data: bytes) -> bool:
    """VP8 frame tag: bit 0 of the first byte is 0 for a key frame (RFC 6386 9.1)."""
    return bool(data) and (data[0] & 0x01) == 0


def is_h264_keyframe(data: bytes) -> bool:
    """An access unit carrying an IDR slice or an SPS is a decoder entry point."""
    return any(t in (5, 7) for t in _h264_nal_types(data))


def is_keyframe(mime: str, data: bytes) -> bool:
    mime = mime.lower()
    if mime == "video/vp8":
        return is_vp8_keyframe(data)
    if mime == "video/h264":
        return is_h264_keyframe(data)
    return True


class _TimestampUnwrapper:
    """RTP timestamps relative to the first one, unwrapped past 2**32 (reordering-safe)."""

    def __init__(self) -> None:
        self._last: int | None = None
        self._value = 0

    def map(self, ts: int) -> int:
        if self._last is None:
            self._last = ts
            return 0
        delta = (ts - self._last) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 1 << 32
        if delta > 0:
            self._last = ts
            self._value += delta
            return self._value
        return max(0, self._value + delta)


FrameCallback = Callable[[EncodedFrame], None]  # the publication's on_frame


class VideoAssembler:
    """Reassembles depayloaded video RTP packets (:func:`depayloaded`) into whole frames.

    Drop-in for aiortc's ``JitterBuffer`` as far as ``RTCRtpReceiver._handle_rtp_packet`` is
    concerned: ``add(packet)`` returns ``(pli_flag, None)``; complete frames go to ``sink``
    synchronously, in order. After a loss that NACK could not repair, frames are skipped up
    to the next keyframe start and ``on_loss`` is called (the caller sends a throttled PLI).
    """

    def __init__(self, mime: str, sink: FrameCallback, on_loss: Callable[[], None]) -> None:
        self.mime = mime.lower()
        self._sink = sink
        self._on_loss = on_loss
        self._pending: dict[int, RtpPacket] = {}
        self._next: int | None = None  # first sequence number of the next frame
        #: where the scan of the frame at ``_next`` stopped (its first missing packet): each
        #: packet is looked at once, not once per later packet of its frame
        self._scan: int | None = None
        self._gap_since: float | None = None
        self._ts = _TimestampUnwrapper()
        self.media_ssrc: int | None = None
        self.frames = 0
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.losses = 0

    @property
    def capacity(self) -> int:  # JitterBuffer compatibility
        return MAX_PENDING_PACKETS

    def _is_frame_start(self, packet: RtpPacket) -> bool:
        data = depayloaded(packet)
        if not data:
            return False
        if self.mime == "video/vp8":
            try:
                descr, _ = VpxPayloadDescriptor.parse(packet.payload)
            except ValueError:
                return False
            return bool(descr.partition_start) and descr.partition_id == 0
        if self.mime == "video/h264":
            return data.startswith(b"\x00\x00\x00\x01") or data.startswith(b"\x00\x00\x01")
        return True

    def _is_keyframe_start(self, packet: RtpPacket) -> bool:
        if not self._is_frame_start(packet):
            return False
        return is_keyframe(self.mime, depayloaded(packet))

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        seq = packet.sequence_number
        self.media_ssrc = packet.ssrc
        self.packets += 1
        if self._next is not None and seq != self._next and uint16_gt(self._next, seq):
            return False, None  # late or duplicate: its frame was already released or skipped
        self._pending[seq] = packet
        if self._next is None:
            if self._is_keyframe_start(packet):
                self._resync(seq)
            elif len(self._pending) > MAX_PENDING_PACKETS:
                self._pending.clear()
            return False, None
        self._release()
        if self._pending:
            now = time.monotonic()
            if self._gap_since is None:
                self._gap_since = now
            elif now - self._gap_since > GAP_TIMEOUT_S or len(self._pending) > MAX_PENDING_PACKETS:
                self._give_up()
        else:
            self._gap_since = None
        return False, None

    def _resync(self, seq: int) -> None:
        self._next = seq
        self._scan = None
        for s in list(self._pending):
            if uint16_gt(seq, s):
                del self._pending[s]
        self._gap_since = None
        self._release()

    def _give_up(self) -> None:
        """Skip the stuck frame: resync at the first keyframe start after it, else wait for one.

        Only a keyframe *after* the stuck position counts: the stuck frame may itself be a
        keyframe with a packet missing, and resyncing to it again would leave the hole in
        place and call this for every later packet (it did: at 5 % loss on a 720p publisher
        that was 80 % of the server's CPU, bench/quality.py ``--only lossy``). One sort in
        sequence order from the stuck position, not a scan per packet.
        """
        stuck = self._next  # set: ``add`` calls this only once a frame is awaited
        assert stuck is not None
        self.losses += 1
        self._next = None
        self._scan = None
        self._gap_since = None
        self._on_loss()
        after = [s for s in self._pending if s != stuck]
        for seq in sorted(after, key=lambda s: (s - stuck) & 0xFFFF):
            if self._is_keyframe_start(self._pending[seq]):
                self._resync(seq)
                return
        # none yet: new packets wait for one (``add``'s resync branch, which bounds the held)

    def _release(self) -> None:
        pending = self._pending
        while (start := self._next) is not None and start in pending:
            ts = pending[start].timestamp
            seq = start if self._scan is None else self._scan
            end: int | None = None
            while (packet := pending.get(seq)) is not None and packet.timestamp == ts:
                if packet.marker:
                    end = seq
                    break
                seq = (seq + 1) & 0xFFFF
            else:
                if packet is not None:  # next frame started without a marker: ended before it
                    end = (seq - 1) & 0xFFFF
            if end is None:
                self._scan = seq  # the first packet missing: the next scan starts there
                return
            packets = [
                pending.pop((start + i) & 0xFFFF) for i in range(((end - start) & 0xFFFF) + 1)
            ]
            self._next = (end + 1) & 0xFFFF
            self._scan = None
            self._gap_since = None
            self._emit(packets)

    def _emit(self, packets: list[RtpPacket]) -> None:
        data = b"".join([depayloaded(p) for p in packets])
        key = is_keyframe(self.mime, data)
        self.frames += 1
        self.bytes += len(data)
        if key:
            self.keyframes += 1
        self._sink(
            EncodedFrame(
                data=data,
                timestamp=self._ts.map(packets[0].timestamp),
                keyframe=key,
                arrival=time.monotonic(),
            )
        )


class AudioAssembler:
    """One Opus packet is one frame: release it at once, in sequence order, dropping late ones."""

    def __init__(self, mime: str, sink: FrameCallback, on_loss: Callable[[], None]) -> None:
        self.mime = mime.lower()
        self._sink = sink
        self._last: int | None = None
        self._ts = _TimestampUnwrapper()
        self.media_ssrc: int | None = None
        self.frames = 0
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.losses = 0

    @property
    def capacity(self) -> int:
        return 1

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.media_ssrc = packet.ssrc
        self.packets += 1
        seq = packet.sequence_number
        if self._last is not None and not uint16_gt(seq, self._last):
            return False, None
        self._last = seq
        data = depayloaded(packet)
        if not data:
            return False, None
        level = packet.extensions.audio_level
        self.frames += 1
        self.bytes += len(data)
        self._sink(
            EncodedFrame(
                data=data,
                timestamp=self._ts.map(packet.timestamp),
                keyframe=True,
                arrival=time.monotonic(),
                audio_level=level[1] if level is not None else None,
            )
        )
        return False, None


def make_assembler(
    mime: str, sink: FrameCallback, on_loss: Callable[[], None]
) -> VideoAssembler | AudioAssembler:
    if mime.lower().startswith("video/"):
        return VideoAssembler(mime, sink, on_loss)
    return AudioAssembler(mime, sink, on_loss)


class FramePacker:
    """Stands in for an aiortc ``Encoder`` on a forwarding sender: ``pack`` only.

    ``RTCRtpSender._next_encoded_frame`` calls ``encoder.pack(data)`` for anything its track
    returns that is not an ``av.Frame``; our tracks return :class:`EncodedFrame`. The RTP
    payload formats come from aiortc's own packetizers (class/static methods, no codec context).
    ``target_bitrate`` receives the subscriber's REMB estimate (the sender sets it).
    """

    def __init__(self, mime: str, on_pack: Callable[[EncodedFrame], None] | None = None) -> None:
        mime = mime.lower()
        if mime not in SUPPORTED_CODECS:
            raise ValueError(f"cannot forward codec {mime}")
        self.mime = mime
        self._on_pack = on_pack
        self._picture_id = int.from_bytes(os.urandom(2), "big") & 0x7FFF
        self.target_bitrate: int | None = None
        self.timestamp_offset = 0  # set by the subscription when it switches source layers
        self.last_timestamp: int | None = None  # of the last frame packed, offset applied
        self.frames = 0
        self.packets = 0

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("the SFU forwards encoded frames; it never encodes")

    def pack(self, frame: EncodedFrame) -> tuple[list[bytes], int]:
        """This subscriber's payloads and RTP timestamp (aiortc's send path calls it)."""
        payloads, timestamp, picture_id = self.pack_shared(frame)
        if picture_id is not None:
            payloads = with_picture_id(payloads, picture_id)
        return payloads, timestamp

    def pack_shared(self, frame: EncodedFrame) -> tuple[list[bytes], int, int | None]:
        """``(payloads shared by every subscriber, RTP timestamp, picture id or None)``.

        The payloads are made once per frame and kept on it; for VP8 the caller writes this
        subscriber's 15-bit picture id at :data:`VP8_PICTURE_ID_AT` of each (the fast path does
        it while writing the packet, :func:`with_picture_id` otherwise).
        """
        if not isinstance(frame, EncodedFrame):
            raise TypeError(f"FramePacker packs EncodedFrame, not {type(frame).__name__}")
        if self._on_pack is not None:
            self._on_pack(frame)
        self.frames += 1
        payloads = frame.rtp
        if payloads is None:
            payloads = frame.rtp = _packetize(self.mime, frame.data)
        picture_id = None
        if self.mime == "video/vp8":
            picture_id = self._picture_id
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        self.packets += len(payloads)
        self.last_timestamp = frame.timestamp + self.timestamp_offset
        return payloads, self.last_timestamp & 0xFFFFFFFF, picture_id


#: where a VP8 payload descriptor made by aiortc's packetizer holds the 15-bit picture id
#: (X and I set, then M + 15 bits: always 4 bytes, whatever the id)
VP8_PICTURE_ID_AT = 2


#: aiortc's VP8 packetizer cuts a frame into payloads of this many bytes, descriptor included
VP8_PAYLOAD_MAX = 1300
#: the payload descriptors it writes with picture id 0: the frame's first packet (S set) and
#: the others (X and I set, then the M form of the id: always these 4 bytes)
_VP8_FIRST, _VP8_REST = b"\x90\x80\x80\x00", b"\x80\x80\x80\x00"


def vp8_payloads(data: bytes) -> list[bytes]:
    """What aiortc's ``Vp8Encoder._packetize(data, 0)`` returns, without a descriptor object
    per packet (tests/media/test_frames.py compares the two)."""
    step = VP8_PAYLOAD_MAX - len(_VP8_REST)
    return [
        (_VP8_REST if at else _VP8_FIRST) + data[at : at + step] for at in range(0, len(data), step)
    ]


def _packetize(mime: str, data: bytes) -> list[bytes]:
    if mime == "video/vp8":
        return vp8_payloads(data)
    if mime == "video/h264":
        return h264_packetize(h264_nal_units(data))
    return [data]


def with_picture_id(payloads: list[bytes], picture_id: int) -> list[bytes]:
    """Shared VP8 payloads with this subscriber's picture id written in."""
    at = VP8_PICTURE_ID_AT
    pid = (0x8000 | picture_id).to_bytes(2, "big")
    return [p[:at] + pid + p[at + 2 :] for p in payloads]
