"""Every place where the SFU reaches into aiortc 1.16's internals, and why.

aiortc is a WebRTC *endpoint*: its receiver decodes whatever arrives and its sender encodes
whatever it is given. An SFU must do neither. Rather than fork aiortc, a few narrow hooks are
installed on individual objects (never on classes, so aiortc clients in the same process keep
their stock behaviour):

1. :func:`tap_receiver` replaces a receiver's ``JitterBuffer`` with one of our assemblers.
   ``RTCRtpReceiver._handle_rtp_packet`` still does SRTP, RTX unwrapping, NACK generation,
   receiver statistics and depayloading; it then calls ``jitter_buffer.add(packet)``. Our
   assembler hands complete encoded frames to the forwarder and returns no frame, so nothing is
   ever queued for the receiver's ``decoder_worker`` thread: no decoder is created, the thread
   idles on its queue until the receiver stops, and the ``RemoteStreamTrack`` queue (unbounded
   in aiortc) never fills.
2. :func:`install_packer` presets a sender's private encoder slot with a
   :class:`~media.frames.FramePacker`. ``_next_encoded_frame`` only creates an
   encoder when the slot is empty, and calls ``encoder.pack()`` for non-``av.Frame`` data, so
   the forwarding sender never owns a codec context (not even libopus).
3. The same function re-routes the sender's ``_send_keyframe`` (what aiortc calls on an RTCP
   PLI/FIR from the subscriber): on the pack path it only sets a flag nobody reads, so we send
   the request upstream to the publisher instead (throttled by the caller).
   :func:`send_padding` sends RTX copies of a sender's recent packets: padding for a
   bandwidth probe on a subscriber's downlink (probe.py).
4. :func:`restrict_ice_ports` replaces an aioice ``Connection``'s host-candidate gathering so
   the server binds inside a configured UDP port range and on chosen interfaces (aioice 0.13
   always binds port 0 on every interface; aiortc exposes neither option).
5. :func:`enlarge_receive_buffers` raises SO_RCVBUF on those sockets after gathering.
6. Congestion control (driven by congestion.py): :func:`answer_transport_cc` adds transport-cc
   to a publisher answer (aiortc 1.16 never negotiates it), :func:`observe_transport_rtp` sees
   every RTP packet at the DTLS transport's router (for the transport-wide feedback), and
   :func:`share_remb_estimator` gives a connection's video receivers one REMB estimator (or
   none) instead of aiortc's one per stream.
7. Read-only helpers for what aiortc keeps private but the SFU must read: the depayloaded
   data of a received RTP packet (:func:`depayloaded`), the offered direction and the
   negotiated codecs of a transceiver, and aiortc's own RTP packetizer for H264
   (:func:`h264_packetize`, :func:`h264_nal_units`: static methods, no codec context; VP8
   payloads are cut by frames.vp8_payloads, byte for byte as aiortc's packetizer). Test
   clients (client.py) use :func:`use_encoder`, :func:`count_packets_only` and
   :func:`observe_decoder_input`.
8. The forwarding fast path (fastpath.py, ``media.fast_path``): :func:`install_fast_sender`
   replaces one forwarding sender's ``_next_encoded_frame`` so frames are sent as RTP bytes,
   protected with the DTLS transport's outbound SRTP session and handed to the selected ICE
   pair's datagram transport; :class:`SenderWire` is every private read and write that needs
   (SRTP session, selected pair, header-extension map and mid, RTX history, SR counts);
   :func:`srtp_session` and :func:`srtp_context` hand the compiled send (native_send.py)
   pylibsrtp's session pointer.
9. The receive fast path (``media.fast_receive``) is in aiortc_receive.py.

No other module of this package but aiortc_receive.py touches a private attribute of an aiortc
or aioice object (tests/media/test_aiortc_internals.py checks it).

Each hook checks that the attribute it replaces exists, so an aiortc upgrade that renames
them fails loudly at the first publish instead of silently transcoding.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import pylibsrtp
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol
from aioice.turn import UDP_SOCKET_BUFFER_SIZE
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver, clock
from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import wrap_rtx

_JB_ATTR = "_RTCRtpReceiver__jitter_buffer"
_ENC_ATTR = "_RTCRtpSender__encoder"
_HISTORY_ATTR = "_RTCRtpSender__rtp_history"
_REMB_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"
_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_RTX_PT_ATTR = "_RTCRtpSender__rtx_payload_type"
_RTX_SEQ_ATTR = "_RTCRtpSender__rtx_sequence_number"
_EXT_MAP_ATTR = "_RTCRtpSender__rtp_header_extensions_map"


class PacketSink(Protocol):
    """What stands in for a receiver's ``JitterBuffer`` (frames.VideoAssembler/AudioAssembler)."""

    @property
    def capacity(self) -> int: ...

    def add(self, packet: Any) -> tuple[bool, Any]: ...


class Packer(Protocol):
    """What stands in for a sender's encoder (frames.FramePacker): it packs, never encodes."""

    target_bitrate: int | None

    def pack(self, frame: Any) -> tuple[list[bytes], int]: ...


class AiortcInternalsChanged(RuntimeError):
    """aiortc no longer has the internals this module hooks (pinned to aiortc 1.16)."""


def _require(obj: object, attr: str) -> None:
    if not hasattr(obj, attr):
        name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise AiortcInternalsChanged(f"{name} has no {attr}")


# -- read-only access to aiortc's private data and packetizers ---------------------------------
for _cls, _name in (
    (H264Encoder, "_packetize"),
    (H264Encoder, "_split_bitstream"),
):
    _require(_cls, _name)  # at import: an aiortc without them fails before anything runs

#: ``NAL units -> RTP payloads`` (single NAL, STAP-A, FU-A): aiortc's H264 packetizer
h264_packetize: Callable[[Any], list[bytes]] = H264Encoder._packetize
#: an H264 access unit (Annex B) split into its NAL units
h264_nal_units: Callable[[bytes], Any] = H264Encoder._split_bitstream


def depayloaded(packet: Any) -> bytes:
    """The codec data aiortc's receiver depayloaded from an RTP packet (``packet._data``)."""
    try:
        return packet._data  # type: ignore[no-any-return]
    except AttributeError:
        raise AiortcInternalsChanged("RtpPacket has no _data after depayloading") from None


def offer_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """The direction the remote offer gave ``transceiver``, from this side's point of view."""
    _require(transceiver, "_offerDirection")
    return transceiver._offerDirection  # type: ignore[no-any-return]


def tap_receiver(receiver: RTCRtpReceiver, assembler: PacketSink) -> None:
    """Make ``receiver`` hand encoded frames to ``assembler`` and never decode."""
    _require(receiver, _JB_ATTR)
    _require(receiver, "_send_rtcp_pli")
    setattr(receiver, _JB_ATTR, assembler)


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send an RTCP PLI for ``media_ssrc`` (the media SSRC, never the RTX one) upstream."""
    await receiver._send_rtcp_pli(media_ssrc)


def install_packer(
    sender: RTCRtpSender,
    packer: Packer,
    on_keyframe_request: Callable[[], None],
    on_nack: Callable[[], None] | None = None,
) -> None:
    """Make ``sender`` pack pre-encoded frames with ``packer`` and route PLI/FIR upstream;
    ``on_nack()`` is called for each packet the subscriber asks to have retransmitted."""
    _require(sender, _ENC_ATTR)
    _require(sender, "_send_keyframe")
    _require(sender, "_retransmit")
    setattr(sender, _ENC_ATTR, packer)
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
    sender.__dict__.pop("_retransmit", None)
    if on_nack is not None:
        original = sender._retransmit

        async def retransmit(sequence_number: int) -> None:
            on_nack()
            await original(sequence_number)

        sender._retransmit = retransmit  # type: ignore[method-assign]


def release_sender(sender: RTCRtpSender) -> None:
    """Drop what a forwarding sender holds of the subscription it served.

    A removed subscription's transceiver stays in the subscriber's peer connection (inactive,
    then reused), so its sender outlives the subscription. Left alone, the PLI hook of
    :func:`install_packer` keeps the subscription alive, and through it the publisher's
    publication, receiver and whole (closed) peer connection: one leaked connection graph per
    participant who leaves. The RTP history (up to 128 packets kept for retransmission) is the
    old source's media: no use to anyone once the subscription ended.
    """
    _require(sender, _HISTORY_ATTR)
    sender.__dict__.pop("_send_keyframe", None)  # back to aiortc's own methods
    sender.__dict__.pop("_retransmit", None)
    getattr(sender, _HISTORY_ATTR).clear()


async def send_padding(
    sender: RTCRtpSender, budget_bytes: int, cursor: int = 0, newest: int = 1
) -> tuple[int, int]:
    """Send about ``budget_bytes`` of RTX copies of ``sender``'s ``newest`` RTP packets.

    Padding for a bandwidth probe, as libwebrtc's payload padding: the subscriber discards
    the copies of what it has, and a copy of a media packet that a full queue dropped repairs
    it before a NACK could, so a probe that overloads the link costs little media. Each copy
    gets a fresh abs-send-time (the receive-side estimator sees it as sent now). ``cursor``
    takes turns among the newest packets across calls. Returns (bytes sent, next cursor);
    sends nothing when RTX is not negotiated or nothing was sent yet.
    """
    for attr in (_HISTORY_ATTR, _RTX_PT_ATTR, _RTX_SEQ_ATTR, _EXT_MAP_ATTR, "_rtx_ssrc"):
        _require(sender, attr)
    rtx_pt = getattr(sender, _RTX_PT_ATTR)
    held = getattr(sender, _HISTORY_ATTR)
    if hasattr(held, "newest"):  # the fast path's fastpath.FrameHistory
        recent = held.newest(newest)
    else:
        history = list(held.values())
        if history:
            ref = history[0].sequence_number
            history.sort(key=lambda p: (p.sequence_number - ref + 0x8000) & 0xFFFF, reverse=True)
        recent = history[:newest]
    if rtx_pt is None or not recent:
        return 0, cursor
    ext_map = getattr(sender, _EXT_MAP_ATTR)
    sent = 0
    while sent < budget_bytes:
        packet = recent[cursor % len(recent)]
        cursor += 1
        seq = getattr(sender, _RTX_SEQ_ATTR)
        setattr(sender, _RTX_SEQ_ATTR, (seq + 1) & 0xFFFF)
        rtx = wrap_rtx(packet, payload_type=rtx_pt, sequence_number=seq, ssrc=sender._rtx_ssrc)
        rtx.extensions = copy.copy(packet.extensions)
        rtx.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        data = rtx.serialize(ext_map)
        await sender.transport._send_rtp(data)
        sent += len(data)
    return sent, cursor


def use_encoder(sender: RTCRtpSender, encoder: Any) -> None:
    """Make ``sender`` use ``encoder`` (an aiortc encoder object) instead of creating its own."""
    _require(sender, _ENC_ATTR)
    setattr(sender, _ENC_ATTR, encoder)


def count_packets_only(receiver: RTCRtpReceiver, handler: Callable[..., Awaitable[None]]) -> None:
    """Replace ``receiver``'s RTP handling (SRTP done) by ``handler(packet, arrival_time_ms)``.

    The cheapest receiving client for load tests: no jitter buffer, NACK, RTCP or decoding.
    """
    _require(receiver, "_handle_rtp_packet")
    receiver._handle_rtp_packet = handler  # type: ignore[method-assign]


def observe_decoder_input(receiver: RTCRtpReceiver, observer: Callable[[bytes], None]) -> None:
    """Call ``observer(encoded frame)`` for each frame ``receiver`` queues for its decoder."""
    _require(receiver, _DECODER_QUEUE_ATTR)
    q = getattr(receiver, _DECODER_QUEUE_ATTR)
    original_put = q.put

    def put(item: Any, *args: Any, **kwargs: Any) -> None:
        if item is not None:
            observer(bytes(item[1].data))
        original_put(item, *args, **kwargs)

    q.put = put


def sender_packer(sender: RTCRtpSender) -> Any:
    """The encoder object a sender currently holds (a FramePacker on forwarding senders)."""
    return getattr(sender, _ENC_ATTR, None)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """First non-RTX codec negotiated on ``transceiver`` (what its sender/receiver uses)."""
    _require(transceiver, "_codecs")
    for codec in transceiver._codecs:
        if codec.mimeType.lower() != f"{transceiver.kind}/rtx":
            return codec
    return None


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int) -> None:
    """Raise SO_RCVBUF of ``pc``'s ICE sockets (after gathering) to absorb event-loop stalls.

    asyncio reads one datagram per socket per loop iteration; while the loop is busy (DTLS
    handshakes, a burst of keyframes, a CPU-starved process) packets wait in the kernel, and
    aioice's 256 kB buffer overflows after ~0.2 s of video. The kernel caps the value at
    ``net.core.rmem_max`` (raise it on the server: docs/operations.md, "Media").
    """
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        for protocol in getattr(gatherer._connection, "_protocols", []):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None:
                continue
            try:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            except OSError:
                pass


class PortRange:
    """Hands out UDP ports from ``[low, high]``, round robin; the OS arbitrates conflicts."""

    def __init__(self, low: int, high: int) -> None:
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"bad UDP port range {low}-{high}")
        self.low = low
        self.high = high
        self._next = low

    def candidates(self) -> list[int]:
        size = self.high - self.low + 1
        start = self._next
        self._next = self.low + (start - self.low + 1) % size
        return [self.low + (start - self.low + i) % size for i in range(size)]


async def _bind_in_range(
    connection: Connection, address: str, ports: PortRange
) -> StunProtocol | None:
    loop = asyncio.get_running_loop()
    for port in ports.candidates():
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: StunProtocol(connection), local_addr=(address, port)
            )
        except OSError:
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        return protocol
    return None


def _unpatched_connections(pc: RTCPeerConnection, flag: str) -> list[Connection]:
    """The aioice connections of ``pc`` not yet patched under ``flag`` (marked as patched now)."""
    found: list[Connection] = []
    for transceiver in pc.getTransceivers():
        gatherer = transceiver.receiver.transport.transport.iceGatherer
        _require(gatherer, "_connection")
        connection: Connection = gatherer._connection
        if getattr(connection, flag, False):
            continue
        _require(connection, "get_component_candidates")
        _require(connection, "_protocols")
        setattr(connection, flag, True)
        found.append(connection)
    return found


def close_late_sockets(pc: RTCPeerConnection) -> None:
    """Close the ICE sockets ``pc``'s gathering binds once its connection is closing.

    aioice's ``Connection.close()`` closes the sockets it knows of. A gathering still in flight
    (the participant left while its offer was being answered) adds its sockets afterwards, and
    a gathering that is cancelled (the negotiation task is, at teardown) drops the ones already
    bound; nothing ever closes either: one leaked UDP socket each (found by the soak
    benchmark). Gathering is shielded from cancellation here, and whatever it bound is closed
    when it ends if the connection is closing by then. Call before ``setLocalDescription``;
    idempotent per ICE connection.
    """
    for connection in _unpatched_connections(pc, "_sfu_late_close"):
        _require(connection, "_closing")
        original = connection.get_component_candidates

        def cleanup(task: asyncio.Future[Any], conn: Connection = connection) -> None:
            if not task.cancelled():
                task.exception()  # retrieved here: the caller may be gone
            if conn._closing:
                for protocol in conn._protocols:
                    if getattr(protocol, "transport", None) is not None:
                        protocol.transport.close()
                conn._protocols.clear()

        async def gather(
            *args: Any,
            _conn: Connection = connection,
            _orig: Callable[..., Any] = original,
            _cleanup: Callable[[asyncio.Future[Any]], None] = cleanup,
            **kw: Any,
        ) -> list[Candidate]:
            task = asyncio.ensure_future(_orig(*args, **kw))
            task.add_done_callback(_cleanup)
            candidates = await asyncio.shield(task)
            return [] if _conn._closing else list(candidates)

        connection.get_component_candidates = gather  # type: ignore[method-assign]


def restrict_ice_ports(
    pc: RTCPeerConnection, ports: PortRange | None, addresses: Sequence[str] | None
) -> None:
    """Gather host candidates of ``pc`` only on ``addresses`` (all if None), within ``ports``.

    Call after the transceivers exist and before ``setLocalDescription``. Only host candidates
    are gathered on these connections (the server needs no STUN/TURN of its own: it announces
    its public address instead). Idempotent per ICE connection.
    """
    if ports is None and not addresses:
        return
    allowed = set(addresses) if addresses else None
    for connection in _unpatched_connections(pc, "_sfu_restricted"):
        original = connection.get_component_candidates

        async def gather(
            component: int,
            addresses: list[str],
            timeout: int = 5,
            *,
            _conn: Connection = connection,
            _orig: Callable[..., Any] = original,
        ) -> list[Candidate]:
            chosen = [a for a in addresses if allowed is None or a in allowed]
            if ports is None:
                return await _orig(component=component, addresses=chosen, timeout=timeout)
            candidates: list[Candidate] = []
            for address in chosen:
                protocol = await _bind_in_range(_conn, address, ports)
                if protocol is None:
                    continue
                host, port = protocol.transport.get_extra_info("sockname")[:2]
                protocol.local_candidate = Candidate(
                    foundation=candidate_foundation("host", "udp", host),
                    component=component,
                    transport="udp",
                    priority=candidate_priority(component, "host"),
                    host=host,
                    port=port,
                    type="host",
                )
                _conn._protocols.append(protocol)
                candidates.append(protocol.local_candidate)
            return candidates

        connection.get_component_candidates = gather  # type: ignore[method-assign]


# -- congestion control (see congestion.py) ---------------------------------------------------
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def answer_transport_cc(pc: RTCPeerConnection, offer_sdp: str) -> bool:
    """Accept the transport-cc the remote offer carries; True if any m-line now has it.

    aiortc 1.16 negotiates neither the transport-wide sequence number header extension nor
    ``a=rtcp-fb:* transport-cc`` (its answer keeps only what its global codec tables list).
    Call between ``setRemoteDescription(offer)`` and ``createAnswer()``: the transceivers'
    negotiated lists (what the answer and the receivers are built from) get the extension with
    the offer's id, and each codec the offer marks with transport-cc gets it, without goog-remb
    (transport-cc replaces REMB; a REMB would only cap the browser's estimate).
    """
    from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters
    from aiortc.sdp import SessionDescription

    offered = {m.rtp.muxId: m for m in SessionDescription.parse(offer_sdp).media}
    enabled = False
    for transceiver in pc.getTransceivers():
        _require(transceiver, "_headerExtensions")
        _require(transceiver, "_codecs")
        media = offered.get(transceiver.mid)
        if media is None:
            continue
        ext = next((e for e in media.rtp.headerExtensions if e.uri == TWCC_URI), None)
        fb_pts = {
            c.payloadType
            for c in media.rtp.codecs
            if any(f.type == "transport-cc" for f in c.rtcpFeedback)
        }
        if ext is None or not fb_pts:
            continue
        if all(e.uri != TWCC_URI for e in transceiver._headerExtensions):
            transceiver._headerExtensions.append(
                RTCRtpHeaderExtensionParameters(id=ext.id, uri=TWCC_URI)
            )
        for codec in transceiver._codecs:
            if codec.payloadType not in fb_pts:
                continue
            kept = [f for f in codec.rtcpFeedback if f.type not in ("goog-remb", "transport-cc")]
            codec.rtcpFeedback = [*kept, RTCRtcpFeedback(type="transport-cc")]
        enabled = True
    return enabled


def share_remb_estimator(pc: RTCPeerConnection, estimator: Any | None) -> None:
    """Give every video receiver of ``pc`` the same REMB estimator (None: no REMB at all).

    aiortc runs one estimator per receiver; a connection with two video streams then sends two
    REMBs, each from one stream's bytes, and the browser applies each to the whole connection.
    One shared estimator sees every stream's packets and sends one REMB listing all SSRCs.
    """
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        _require(receiver, _REMB_ATTR)
        if transceiver.kind == "video":
            setattr(receiver, _REMB_ATTR, estimator)


class ArrivalClock:
    """When the datagram the DTLS transport is now processing reached the ICE connection.

    aiortc reads datagrams from aioice's queue one at a time and handles each (SRTP, routing,
    receiver) before the next; a time taken while handling a packet includes how long it
    waited in that queue behind the others, which the browser's delay-based estimator would
    read as network queueing. :func:`observe_transport_rtp` stamps each datagram when the
    socket hands it to aioice (FIFO, like the queue) and reports that time instead.
    """

    def __init__(self) -> None:
        self._stamps: deque[int] = deque(maxlen=65536)
        self.current_us = 0
        self.kernel_us: int | None = None  # the socket's receive time of the datagram in hand

    def stamp(self) -> None:
        if self.kernel_us is not None:
            self._stamps.append(self.kernel_us)
            self.kernel_us = None
        else:
            self._stamps.append(time.time_ns() // 1000)

    def next(self) -> None:
        self.current_us = self._stamps.popleft() if self._stamps else time.time_ns() // 1000


_SO_TIMESTAMPNS = 35  # Linux (asm-generic/socket.h); also the SCM type of its control message
_TIMESPEC = struct.Struct("@qq")


def kernel_arrival_times(pc: RTCPeerConnection) -> int:
    """Read ``pc``'s ICE sockets with ``recvmsg`` and SO_TIMESTAMPNS: the arrival time of each
    datagram is then the kernel's, not when a busy event loop got round to reading it (a loop
    stall would otherwise look like network queueing to the browser's delay-based estimator,
    and spread or bunch its probe clusters). Call after gathering, after
    :func:`observe_transport_rtp`. Only for asyncio's selector datagram transports on Linux;
    elsewhere the stamps stay the loop's. Returns how many sockets were switched.
    """
    switched = 0
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        clock: ArrivalClock | None = getattr(connection, "_sfu_clock", None)
        if clock is None:
            continue
        for protocol in list(getattr(connection, "_protocols", [])):
            transport = getattr(protocol, "transport", None)
            if transport is None or getattr(transport, "_sfu_kernel_ts", False):
                continue
            if type(transport).__name__ != "_SelectorDatagramTransport":
                continue
            loop = transport._loop
            if not hasattr(loop, "_remove_reader") or not hasattr(transport, "_sock_fd"):
                continue
            sock = transport._sock
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                continue
            space = socket.CMSG_SPACE(_TIMESPEC.size)

            def read_ready(
                _t: Any = transport, _s: Any = sock, _c: ArrivalClock = clock, _n: int = space
            ) -> None:
                if _t._conn_lost:
                    return
                try:
                    data, ancdata, _flags, addr = _s.recvmsg(_t.max_size, _n)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    _t._protocol.error_received(exc)
                    return
                for level, kind, cdata in ancdata:
                    if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                        sec, nsec = _TIMESPEC.unpack(cdata[: _TIMESPEC.size])
                        _c.kernel_us = sec * 1_000_000 + nsec // 1000
                try:
                    _t._protocol.datagram_received(data, addr)
                finally:
                    _c.kernel_us = None

            loop._remove_reader(transport._sock_fd)
            loop._add_reader(transport._sock_fd, read_ready)
            transport._sfu_kernel_ts = True
            switched += 1
    return switched


def observe_transport_rtp(pc: RTCPeerConnection, observer: Callable[[Any, int], None]) -> None:
    """Call ``observer(packet, arrival_us)`` for every RTP packet ``pc``'s transports receive.

    Hooked on the DTLS transport's RTP router (one per bundled transport), which sees every
    decrypted, parsed packet (RTX and padding-only probes included) before it is routed to a
    receiver. ``arrival_us`` (wall clock, us) is when the ICE connection got the datagram
    (:class:`ArrivalClock`; the kernel's time once :func:`kernel_arrival_times` is on). Call
    before the connection starts; idempotent.
    """
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        _require(transport, "_rtp_router")
        router = transport._rtp_router
        _require(router, "route_rtp")
        if getattr(router, "_sfu_observed", False):
            continue
        ice = transport.transport
        _require(ice, "_recv")
        _require(ice, "_connection")
        connection = ice._connection
        _require(connection, "data_received")
        clock = ArrivalClock()
        connection._sfu_clock = clock
        original_received = getattr(connection, "_sfu_queue_path", connection.data_received)

        def data_received(
            data: bytes,
            component: int,
            _orig: Callable[..., None] = original_received,
            _clock: ArrivalClock = clock,
        ) -> None:
            _clock.stamp()
            _orig(data, component)

        original_recv = ice._recv

        async def recv(
            _orig: Callable[[], Any] = original_recv, _clock: ArrivalClock = clock
        ) -> bytes:
            data = await _orig()
            _clock.next()
            return data  # type: ignore[no-any-return]

        original_route = router.route_rtp

        def route(
            packet: Any,
            _orig: Callable[[Any], Any] = original_route,
            _clock: ArrivalClock = clock,
        ) -> Any:
            observer(packet, _clock.current_us)
            return _orig(packet)

        if getattr(connection, "_sfu_inline", False):  # stamp only what goes to the queue
            connection._sfu_queue_path = data_received
        else:
            connection.data_received = data_received  # type: ignore[method-assign]
        ice._recv = recv
        router.route_rtp = route
        router._sfu_observed = True


def rtcp_sender_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC a receiver writes as the sender of its RTCP (None before it started)."""
    return getattr(receiver, "_RTCRtpReceiver__rtcp_ssrc", None)


async def send_rtcp(receiver: RTCRtpReceiver, data: bytes) -> None:
    """Send one serialized RTCP packet through ``receiver``'s transport (SRTCP-protected)."""
    await receiver._send_rtcp(data)  # type: ignore[arg-type]  # bytes(data) is data


def new_remb_estimator() -> Any:
    """aiortc's (pure-Python, abs-send-time based) REMB estimator, its rate counter,
    inter-arrival filter and overuse estimator replaced by :mod:`media.remb_filters`' (same
    results, less work per packet)."""
    from aiortc.rate import InterArrival, OveruseEstimator, RateCounter, RemoteBitrateEstimator

    from .remb_filters import FramePeriodEstimator, GroupedArrivals, RateWindow

    estimator = RemoteBitrateEstimator()
    counter, arrivals = estimator.incoming_bitrate, estimator.inter_arrival
    if (
        type(counter) is not RateCounter
        or type(arrivals) is not InterArrival
        or type(estimator.estimator) is not OveruseEstimator
    ):
        raise AiortcInternalsChanged("RemoteBitrateEstimator's parts changed")
    estimator.incoming_bitrate = RateWindow(counter._window_size, counter._scale)
    estimator.inter_arrival = GroupedArrivals(arrivals.group_length, arrivals.timestamp_to_ms)
    estimator.estimator = FramePeriodEstimator()
    return estimator


# -- forwarding fast path (driven by fastpath.py) ----------------------------------------------
_MID_ATTR = "_RTCRtpSender__mid"
_TRANSPORT_ATTR = "_RTCRtpSender__transport"
#: read by SenderWire.holds() per frame from the instance dict (checked to be there)
_HELD_ATTRS = (_TRANSPORT_ATTR, _ENC_ATTR, _MID_ATTR, "_enabled")
_SR_ATTRS = (
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__packet_count",
)
_DTLS_TX = ("_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets")
_FAST_ATTR = "_sfu_fast_sender"
_DTLS_CONNECTED = DtlsState.CONNECTED


class SenderWire:
    """What a forwarding sender's fast path reaches in aiortc and aioice, each access guarded.

    aiortc keeps ICE, DTLS, SDP and RTCP; the fast path only borrows, per frame, the DTLS
    transport's outbound SRTP session and the selected ICE pair's datagram transport, and
    writes back what the sender's RTCP sender reports, ``getStats()`` and NACK answers read
    (packet/octet counts, last RTP/NTP timestamps, the RTX history).
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        for attr in (_ENC_ATTR, _HISTORY_ATTR, _EXT_MAP_ATTR, _MID_ATTR, *_SR_ATTRS):
            _require(sender, attr)
        for attr in (*_SR_ATTRS, *_HELD_ATTRS):  # account() and holds() use the instance dict
            if attr not in sender.__dict__:
                raise AiortcInternalsChanged(f"RTCRtpSender.{attr} is not an instance attribute")
        _require(sender, "_next_encoded_frame")
        _require(sender, "_enabled")
        dtls = sender.transport  # (checked once: a bundled replacement is the same class)
        _require(dtls, "_tx_srtp")
        _require(dtls, "_state")
        _require(dtls.transport, "_connection")
        _require(dtls.transport._connection, "_nominated")
        self.sender = sender
        #: aiortc's RTX history (sequence number % 128 -> packet), read by ``_retransmit``
        self.history: dict[int, Any] = getattr(sender, _HISTORY_ATTR)
        #: the last link: (the DTLS transport, what link() returned for it)
        self._link: tuple[Any, Any] | None = None

    def use_history(self, history: dict[int, Any]) -> None:
        """Put ``history`` (a dict subclass: fastpath.FrameHistory) in place of aiortc's RTX
        history, keeping what it holds."""
        history.update(self.history)
        setattr(self.sender, _HISTORY_ATTR, history)
        self.history = history

    @property
    def ssrc(self) -> int:
        return self.sender._ssrc

    @property
    def packer(self) -> Any:
        return getattr(self.sender, _ENC_ATTR)

    @property
    def enabled(self) -> bool:
        return bool(self.sender._enabled)

    @property
    def mid(self) -> str | None:
        """The sender's mid (set by ``send()``; the header-extension block carries it)."""
        return getattr(self.sender, _MID_ATTR)  # type: ignore[no-any-return]

    def header_extensions(self) -> tuple[Any, str | None]:
        """The sender's negotiated header-extension map and its mid (set by ``send()``)."""
        return getattr(self.sender, _EXT_MAP_ATTR), getattr(self.sender, _MID_ATTR)

    def link(self) -> tuple[Callable[[bytes], bytes], Any, tuple[str, int] | None]:
        """``(protect, datagram transport or None, remote address)`` of the connected sender.

        The transport is None when the selected pair is not a plain UDP socket (a TURN
        relay): the caller then sends through aioice (:meth:`send_via_ice`). Raises
        ``ConnectionError`` as aiortc's own send does when DTLS is not connected.
        """
        dtls = self.sender.transport
        last = self._link
        if (
            last is not None
            and last[0] is dtls
            and dtls._state is _DTLS_CONNECTED
            and (last[1][1] is None or not last[1][1].is_closing())
        ):
            # the same DTLS transport, still connected, on a socket still open: the same link
            # (its SRTP session is set once it connects; aioice never changes a nominated pair)
            return last[1]  # type: ignore[no-any-return]
        srtp = dtls._tx_srtp
        if srtp is None or dtls._state is not _DTLS_CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        protocol = pair.protocol
        transport = getattr(protocol, "transport", None)
        if type(protocol) is not StunProtocol or transport is None:
            link = (srtp.protect, None, None)
        else:
            link = (srtp.protect, transport, pair.remote_addr)
        self._link = (dtls, link)
        return link

    def snapshot(self) -> tuple[Any, ...]:
        """What :meth:`holds` compares: the DTLS transport, the packer and the mid (call after
        :meth:`link` returned a datagram transport)."""
        sender = self.sender
        return (sender.transport, getattr(sender, _ENC_ATTR), getattr(sender, _MID_ATTR))

    def holds(self, snapshot: tuple[Any, ...], transport: Any) -> bool:
        """True while what :meth:`snapshot` saw still stands and a frame may go on
        ``transport`` now: the same DTLS transport, connected, the sender enabled, the same
        packer and mid, the socket open with nothing queued in asyncio (order)."""
        dtls, packer, mid = snapshot
        state = self.sender.__dict__
        return (
            state[_TRANSPORT_ATTR] is dtls
            and dtls._state is _DTLS_CONNECTED
            and state["_enabled"]
            and state[_ENC_ATTR] is packer
            and state[_MID_ATTR] == mid
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        )

    async def send_via_ice(self, datagram: bytes) -> None:
        """Send an already protected datagram through aioice (TURN relays and other oddities)."""
        await self.sender.transport.transport._send(datagram)

    def account(
        self, packets: int, octets: int, datagram_bytes: int, rtp_ts: int, ntp: int
    ) -> None:
        """Count a frame's packets where aiortc's sender and DTLS transport count theirs."""
        sender = self.sender
        ntp_a, rtp_a, octet_a, packet_a = _SR_ATTRS
        state = sender.__dict__  # (plain instance attributes: checked at construction)
        state[ntp_a] = ntp
        state[rtp_a] = rtp_ts
        state[octet_a] += octets
        state[packet_a] += packets
        bytes_a, packets_a = _DTLS_TX
        dtls = sender.transport.__dict__
        if bytes_a in dtls:
            dtls[bytes_a] += datagram_bytes
            dtls[packets_a] += packets


def srtp_session(protect: Callable[[bytes], bytes]) -> Any | None:
    """The pylibsrtp ``Session`` whose ``protect`` :meth:`SenderWire.link` returned (None for
    anything else: test doubles)."""
    session = getattr(protect, "__self__", None)
    return session if isinstance(session, pylibsrtp.Session) else None


def srtp_context(session: Any) -> Any:
    """pylibsrtp's ``srtp_t`` of ``session`` (a cffi pointer, owned by the session)."""
    _require(session, "_srtp")
    return session._srtp[0]


def install_fast_sender(sender: RTCRtpSender, make: Callable[[SenderWire], Any]) -> Any:
    """Make ``sender``'s RTP loop hand each frame to a fast sender instead of sending packets.

    aiortc's ``_run_rtp`` keeps running (start/stop events, exit on ``ConnectionError``); only
    ``_next_encoded_frame`` is replaced on this object: it pulls the track, sends the frame
    through ``make(wire).send_frame(frame, codec)`` (one coroutine per frame, none per packet) and
    returns None, so the loop sends nothing itself. Idempotent: a reused sender keeps its
    fast sender (sequence numbers and timestamps carry on). Returns the fast sender.
    """
    existing = sender.__dict__.get(_FAST_ATTR)
    if existing is not None:
        return existing
    fast = make(SenderWire(sender))
    send_frame = fast.send_frame

    async def next_encoded_frame(codec: RTCRtpCodecParameters, _s: Any = sender) -> None:
        data = await _s.track.recv()
        if _s._enabled:
            await send_frame(data, codec)

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    setattr(sender, _FAST_ATTR, fast)
    return fast


def fast_sender(sender: RTCRtpSender) -> Any:
    """The fast sender installed on ``sender`` (None on aiortc's own send path)."""
    return sender.__dict__.get(_FAST_ATTR)
