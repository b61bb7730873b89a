"""RTCP transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-01).

A browser that negotiated the transport-wide sequence number header extension numbers every RTP
packet of the connection (all its streams, RTX included) with one 16-bit counter. The receiver
reports back when each of them arrived (RTPFB, FMT=15); the browser's own send-side estimator
(GoogCC) turns those arrival times into delay-based and loss-based bandwidth estimates and
probes. This module is pure: :class:`TwccRecorder` keeps arrival times and builds the feedback
packets, :func:`parse_feedback` reads one back (tests, diagnostics). The wire format, built the
way libwebrtc's ``TransportFeedback`` and pion's interceptor do:

    header (V=2, FMT=15, PT=205, length) | sender SSRC | media SSRC
    base sequence number (16) | packet status count (16)
    reference time (24, multiples of 64 ms) | feedback packet count (8)
    packet chunks (16 bits each) | receive deltas (1 or 2 bytes each) | padding

Chunks are run-length (0 | symbol:2 | run:13) or status vectors (1 | 0 | 14 x 1 bit, or
1 | 1 | 7 x 2 bit). Symbols: 0 not received, 1 received with a small delta (one byte,
0..63.75 ms in 250 us ticks), 2 received with a large or negative delta (two bytes, signed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTCP_RTPFB = 205
FMT_TWCC = 15
TICK_US = 250  # receive delta resolution
REFERENCE_TICKS = 256  # reference time unit (64 ms) in ticks
NOT_RECEIVED, SMALL, LARGE = 0, 1, 2
MAX_RUN = 0x1FFF
MAX_STATUSES = 2000  # per feedback packet (chunks stay < 600 bytes even if every symbol alternates)
MAX_BYTES = 1100  # chunks + deltas per feedback packet (one datagram after SRTCP)
_WRAP = 1 << 16
_HALF = 1 << 15


class FeedbackError(ValueError):
    """A transport-cc feedback packet that cannot be parsed."""


@dataclass
class Feedback:
    """One parsed feedback packet: arrival time (us, None if lost) per sequence number."""

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    fb_count: int
    reference_us: int
    arrivals: list[tuple[int, int | None]] = field(default_factory=list)


def _symbol(delta: int) -> int:
    return SMALL if 0 <= delta <= 0xFF else LARGE


def _chunks(symbols: list[int]) -> list[int]:
    """Encode status symbols as 16-bit chunks (run-length where a run pays, else vectors)."""
    chunks: list[int] = []
    i, n = 0, len(symbols)
    while i < n:
        run = 1
        while i + run < n and symbols[i + run] == symbols[i] and run < MAX_RUN:
            run += 1
        if run >= 7 or i + run == n:
            chunks.append((symbols[i] << 13) | run)
            i += run
            continue
        window = symbols[i : i + 14]
        if LARGE not in window:
            value = 0x8000
            for k, s in enumerate(window):
                value |= s << (13 - k)
            chunks.append(value)
            i += len(window)
        else:
            value = 0xC000
            for k, s in enumerate(symbols[i : i + 7]):
                value |= s << (12 - 2 * k)
            chunks.append(value)
            i += min(7, n - i)
    return chunks


def build_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    fb_count: int,
    arrivals: list[int | None],
) -> bytes:
    """One feedback packet for ``arrivals`` (arrival ticks of 250 us, None: lost), the first
    for ``base_seq``. At least one arrival must be known; deltas must fit in 16 bits signed."""
    first = next((t for t in arrivals if t is not None), None)
    if first is None:
        raise ValueError("feedback needs at least one received packet")
    reference = first // REFERENCE_TICKS
    previous = reference * REFERENCE_TICKS
    symbols: list[int] = []
    deltas = bytearray()
    for ticks in arrivals:
        if ticks is None:
            symbols.append(NOT_RECEIVED)
            continue
        delta = ticks - previous
        previous = ticks
        symbol = _symbol(delta)
        symbols.append(symbol)
        if symbol == SMALL:
            deltas.append(delta)
        else:
            if not -_HALF <= delta < _HALF:
                raise ValueError("receive delta does not fit in 16 bits")
            deltas += struct.pack("!h", delta)
    body = struct.pack(
        "!LLHHL",
        sender_ssrc,
        media_ssrc,
        base_seq % _WRAP,
        len(arrivals),
        ((reference & 0xFFFFFF) << 8) | (fb_count & 0xFF),
    )
    body += b"".join(struct.pack("!H", c) for c in _chunks(symbols)) + bytes(deltas)
    padding = -len(body) % 4
    header_byte = 0x80 | FMT_TWCC
    if padding:
        header_byte |= 0x20  # P bit: the last padding byte holds the padding length
        body += bytes(padding - 1) + bytes([padding])
    return struct.pack("!BBH", header_byte, RTCP_RTPFB, len(body) // 4) + body


def parse_feedback(data: bytes) -> Feedback:
    """Parse one transport-cc feedback packet (header included)."""
    if len(data) < 20 or len(data) % 4:
        raise FeedbackError("too short or not 32-bit aligned")
    first, pt, length = struct.unpack("!BBH", data[:4])
    if first >> 6 != 2 or pt != RTCP_RTPFB or first & 0x1F != FMT_TWCC:
        raise FeedbackError("not an RTPFB FMT=15 packet")
    end = 4 + 4 * length
    if end > len(data):
        raise FeedbackError("length field exceeds the data")
    if first & 0x20:
        end -= data[end - 1]
    sender, media, base, count, ref_fb = struct.unpack("!LLHHL", data[4:20])
    reference = ref_fb >> 8
    if reference & 0x800000:
        reference -= 1 << 24
    pos = 20
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > end:
            raise FeedbackError("truncated packet chunks")
        (chunk,) = struct.unpack("!H", data[pos : pos + 2])
        pos += 2
        if not chunk & 0x8000:
            symbols += [(chunk >> 13) & 3] * (chunk & MAX_RUN)
        elif not chunk & 0x4000:
            symbols += [(chunk >> (13 - k)) & 1 for k in range(14)]
        else:
            symbols += [(chunk >> (12 - 2 * k)) & 3 for k in range(7)]
    symbols = symbols[:count]
    ticks = reference * REFERENCE_TICKS
    arrivals: list[tuple[int, int | None]] = []
    for i, symbol in enumerate(symbols):
        seq = (base + i) % _WRAP
        if symbol == NOT_RECEIVED:
            arrivals.append((seq, None))
            continue
        if symbol == SMALL:
            if pos + 1 > end:
                raise FeedbackError("truncated receive deltas")
            ticks += data[pos]
            pos += 1
        elif symbol == LARGE:
            if pos + 2 > end:
                raise FeedbackError("truncated receive deltas")
            ticks += struct.unpack("!h", data[pos : pos + 2])[0]
            pos += 2
        else:
            raise FeedbackError("reserved status symbol")
        arrivals.append((seq, ticks * TICK_US))
    return Feedback(sender, media, base, ref_fb & 0xFF, reference * 64_000, arrivals)


class TwccRecorder:
    """Arrival times of one connection's packets, drained into feedback packets.

    :meth:`record` takes the 16-bit transport-wide sequence number (unwrapped here) and the
    arrival time in microseconds of a monotonic clock. :meth:`feedback` reports everything from
    the first sequence number not yet reported to the highest received (gaps as lost), as one
    or more packets, like libwebrtc's periodic ``RemoteEstimatorProxy``. A packet arriving after
    its sequence number was reported is late: dropped, as there.
    """

    def __init__(self, window: int = 4096) -> None:
        self._arrivals: dict[int, int] = {}  # unwrapped seq -> arrival ticks
        self._last_unwrapped: int | None = None
        self._next_base: int | None = None  # first seq not yet reported
        self._fb_count = 0
        self._window = window
        self.packets = 0
        self.late = 0

    def _unwrap(self, seq: int) -> int:
        if self._last_unwrapped is None:
            self._last_unwrapped = seq
            return seq
        diff = (seq - self._last_unwrapped) % _WRAP
        if diff >= _HALF:
            diff -= _WRAP
        value = self._last_unwrapped + diff
        if diff > 0:
            self._last_unwrapped = value
        return value

    def record(self, seq: int, arrival_us: int) -> None:
        value = self._unwrap(seq)
        self.packets += 1
        if self._next_base is None:
            self._next_base = value
        if value < self._next_base:
            self.late += 1
            return
        self._arrivals.setdefault(value, arrival_us // TICK_US)
        if len(self._arrivals) > self._window:
            # nobody asked for feedback: keep the newest half, so that the sort is paid once
            # per window/2 packets, not on every packet from then on (this is the receive path)
            keep = sorted(self._arrivals)[-(self._window // 2) :]
            self._arrivals = {seq: self._arrivals[seq] for seq in keep}
            self._next_base = keep[0]

    @property
    def pending(self) -> int:
        return len(self._arrivals)

    def feedback(self, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """Feedback packets for everything received since the last call ([] if nothing)."""
        if not self._arrivals or self._next_base is None:
            return []
        highest = max(self._arrivals)
        seq = self._next_base
        out: list[bytes] = []
        while seq <= highest:
            while seq not in self._arrivals:  # a packet never starts with a gap of losses
                seq += 1
            base, arrivals, previous, size = seq, [], None, 0
            while seq <= highest and len(arrivals) < MAX_STATUSES and size < MAX_BYTES:
                ticks = self._arrivals.get(seq)
                if ticks is not None and previous is not None:
                    delta = ticks - previous
                    if not -_HALF <= delta < _HALF:
                        break  # starts the next packet, with a fresh reference time
                    size += 1 if 0 <= delta <= 0xFF else 2
                if ticks is not None:
                    previous = ticks
                arrivals.append(ticks)
                seq += 1
            out.append(build_feedback(sender_ssrc, media_ssrc, base, self._fb_count, arrivals))
            self._fb_count = (self._fb_count + 1) & 0xFF
        self._arrivals.clear()
        self._next_base = highest + 1
        return out
