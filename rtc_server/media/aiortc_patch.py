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
   :class:`~rtc_server.media.frames.FramePacker`. ``_next_encoded_frame`` only creates an
   encoder when the slot is empty, and calls ``encoder.pack()`` for non-``av.Frame`` data, so
   the forwarding sender never owns a codec context (not even libopus).
3. The same function re-routes the sender's ``_send_keyframe`` (what aiortc calls on an RTCP
   PLI/FIR from the subscriber): on the pack path it only sets a flag nobody reads, so we send
   the request upstream to the publisher instead (throttled by the caller).
4. :func:`restrict_ice_ports` replaces an aioice ``Connection``'s host-candidate gathering so
   the server binds inside a configured UDP port range and on chosen interfaces (aioice 0.13
   always binds port 0 on every interface; aiortc exposes neither option).
5. :func:`enlarge_receive_buffers` raises SO_RCVBUF on those sockets after gathering, and
   :func:`disable_remb` (optional) drops a publisher receiver's pure-Python REMB estimator.

Each hook checks that the attribute it replaces exists, so an aiortc upgrade that renames
them fails loudly at the first publish instead of silently transcoding.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence
from typing import Any

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol
from aioice.turn import UDP_SOCKET_BUFFER_SIZE
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .frames import AudioAssembler, FramePacker, VideoAssembler

_JB_ATTR = "_RTCRtpReceiver__jitter_buffer"
_ENC_ATTR = "_RTCRtpSender__encoder"
_HISTORY_ATTR = "_RTCRtpSender__rtp_history"
_REMB_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"


class AiortcInternalsChanged(RuntimeError):
    """aiortc no longer has the internals this module hooks (pinned to aiortc 1.16)."""


def _require(obj: object, attr: str) -> None:
    if not hasattr(obj, attr):
        raise AiortcInternalsChanged(f"{type(obj).__name__} has no {attr}")


def tap_receiver(receiver: RTCRtpReceiver, assembler: VideoAssembler | AudioAssembler) -> None:
    """Make ``receiver`` hand encoded frames to ``assembler`` and never decode."""
    _require(receiver, _JB_ATTR)
    _require(receiver, "_send_rtcp_pli")
    setattr(receiver, _JB_ATTR, assembler)


def disable_remb(receiver: RTCRtpReceiver) -> None:
    """Stop a receiver from running aiortc's (pure-Python) REMB bandwidth estimator."""
    _require(receiver, _REMB_ATTR)
    setattr(receiver, _REMB_ATTR, None)


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Send an RTCP PLI for ``media_ssrc`` (the media SSRC, never the RTX one) upstream."""
    await receiver._send_rtcp_pli(media_ssrc)


def install_packer(
    sender: RTCRtpSender, packer: FramePacker, on_keyframe_request: Callable[[], None]
) -> None:
    """Make ``sender`` pack pre-encoded frames with ``packer`` and route PLI/FIR upstream."""
    _require(sender, _ENC_ATTR)
    _require(sender, "_send_keyframe")
    setattr(sender, _ENC_ATTR, packer)
    sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]


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
    sender.__dict__.pop("_send_keyframe", None)  # back to aiortc's own method
    getattr(sender, _HISTORY_ATTR).clear()


def sender_packer(sender: RTCRtpSender) -> Any:
    """The encoder object a sender currently holds (a FramePacker on forwarding senders)."""
    return getattr(sender, _ENC_ATTR, None)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """First non-RTX codec negotiated on ``transceiver`` (what its sender/receiver uses)."""
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
