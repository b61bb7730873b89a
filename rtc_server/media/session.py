"""PeerSession: one participant's media connection to the SFU.

A session holds up to two RTCPeerConnections, as LiveKit does: a *publisher* PC (the client
offers, the server answers: it only receives) and a *subscriber* PC (the server offers, the
client answers: it only sends). Each PC is negotiated in one direction only, so offers can
never collide (no glare, no rollback, which aiortc lacks), and the server choosing the
subscriber offer lets it pin each forwarded track to its publisher's exact codec (aiortc's
sender uses the first codec of the answer; a mismatch would send H264 packed as VP8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .aiortc_patch import negotiated_codec, release_sender, sender_packer
from .forwarder import ForwardedTrack, Publication, Subscription
from .frames import SUPPORTED_CODECS
from .kinds import KIND_SOURCES
from .messages import (
    MediaError,
    OfferedTrack,
    RtcAnswer,
    RtcCandidate,
    RtcOffer,
    ServerOffer,
    kind_of,
)

if TYPE_CHECKING:
    from .room import RoomMedia

logger = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


def _codec_capabilities(codec: Any, kind: str) -> list[RTCRtpCodecCapability]:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [
        c
        for c in caps
        if c.mimeType.lower() == codec.mimeType.lower() and c.parameters == codec.parameters
    ]
    if not chosen:
        raise MediaError("codec_unsupported", f"cannot offer {codec.mimeType}")
    rtx = [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    return chosen[:1] + rtx[:1]


class PeerSession:
    """Publisher and subscriber peer connections of one participant."""

    def __init__(
        self,
        room: RoomMedia,
        identity: str,
        send: Send,
        can_publish: bool,
        can_subscribe: bool,
    ) -> None:
        self.room = room
        self.identity = identity
        self.send = send
        self.can_publish = can_publish
        self.can_subscribe = can_subscribe
        self.closed = False
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.blocked: set[tuple[str, str | None]] = set()  # explicit unsubscribes
        self.forced_mute: set[str] = set()  # kinds muted by a host (see room.KIND_SOURCES)
        self._mid_source: dict[str, str] = {}
        self._pub_lock = asyncio.Lock()
        self._neg_lock = asyncio.Lock()
        self._neg_task: asyncio.Task[None] | None = None
        self._neg_dirty = False
        self._offer_id = 0
        self._awaiting: int | None = None
        self._offered: list[Subscription] = []
        # transceivers of ended subscriptions: set inactive (not yet offered), inactive in the
        # pending offer, then (once answered) free for a subscription of the same kind and codec
        self._retiring: list[RTCRtpTransceiver] = []
        self._retiring_offered: list[RTCRtpTransceiver] = []
        self._free: list[RTCRtpTransceiver] = []
        self._early_candidates: dict[str, list[RtcCandidate]] = {}

    # -- helpers ----------------------------------------------------------------------------
    async def emit(self, event: str, payload: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self.send(event, payload)
        except Exception:  # the transport is gone; teardown comes from the signaling side
            logger.info("media: could not send %s to %s", event, self.identity, exc_info=True)

    def _watch(self, pc: RTCPeerConnection, which: str) -> None:
        @pc.on("connectionstatechange")
        async def _state() -> None:
            # "closed" without our close(): the peer sent DTLS close_notify, or ICE consent
            # expired (aioice: ~30 s without answers) and aiortc shut the PC down itself
            if pc.connectionState in ("failed", "closed") and not self.closed:
                logger.info("media: %s %s connection %s", self.identity, which, pc.connectionState)
                self.room.spawn(self.room.reset_session(self.identity, "network"))

    # -- publishing -------------------------------------------------------------------------
    async def on_publisher_offer(self, msg: RtcOffer) -> dict[str, Any]:
        if not self.can_publish:
            raise MediaError("permission_denied", "no publish grant")
        settings = self.room.settings
        if len(msg.sdp) > settings.max_sdp_bytes:
            raise MediaError("too_large", "SDP too large")
        async with self._pub_lock:
            if self.closed:
                raise MediaError("closed", "session closed")
            declared = self._check_offer(msg)
            if self.pub_pc is None:
                self.pub_pc = self.room.ice.new_peer_connection()
                self._watch(self.pub_pc, "publisher")
            pc = self.pub_pc
            if pc.signalingState != "stable":
                raise MediaError("negotiation_in_progress", "publisher PC is not stable")
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
            except Exception as exc:
                raise MediaError("bad_sdp", f"offer rejected: {exc}") from exc
            new_pubs, gone = self._collect_publications(pc, declared)
            answer = await pc.createAnswer()
            self.room.ice.before_gathering(pc)
            await pc.setLocalDescription(answer)
            self.room.ice.after_gathering(pc)
            sdp = self.room.ice.outgoing_sdp(pc.localDescription.sdp)
            await self._flush_candidates("publisher", pc)
        for source in gone:
            await self.room.unpublish(self.identity, source, "unpublished")
        for pub in new_pubs:
            await self.room.publish(pub)
        return {"sdp": sdp, "type": "answer"}

    def _check_offer(self, msg: RtcOffer) -> dict[str, str]:
        """Validate the offer's m-lines against the declared sources, before applying it."""
        lowered = msg.sdp.lower()
        if "a=simulcast" in lowered or "a=rid:" in lowered:
            raise MediaError("simulcast_unsupported", "publish a camera_low track instead")
        try:
            parsed = SessionDescription.parse(msg.sdp)
        except Exception as exc:
            raise MediaError("bad_sdp", f"unparseable offer: {exc}") from exc
        if not msg.sdp.startswith("v=0") or not parsed.media:
            raise MediaError("bad_sdp", "not an SDP offer with media sections")
        declared = {t.mid: t.source for t in msg.tracks}
        if len(set(declared.values())) != len(declared):
            raise MediaError("bad_request", "a source is declared twice")
        sending = 0
        for media in parsed.media:
            if media.kind not in ("audio", "video"):
                continue
            mid = media.rtp.muxId
            if media.direction not in ("sendonly", "sendrecv"):
                continue
            sending += 1
            source = declared.get(mid) or self._mid_source.get(mid)
            if source is None:
                raise MediaError("bad_request", f"m-line {mid} sends but declares no source")
            if kind_of(source) != media.kind:
                raise MediaError("bad_request", f"{source} cannot be {media.kind}")
        if sending > self.room.settings.max_tracks_per_publisher:
            raise MediaError("too_many_tracks", "too many published tracks")
        for mid, source in declared.items():
            owner = next((m for m, s in self._mid_source.items() if s == source), None)
            if owner is not None and owner != mid and source in self.publications:
                raise MediaError("already_published", f"{source} is already published")
        return declared

    def _collect_publications(
        self, pc: RTCPeerConnection, declared: dict[str, str]
    ) -> tuple[list[Publication], list[str]]:
        new: list[Publication] = []
        gone: list[str] = []
        settings = self.room.settings
        for t in pc.getTransceivers():
            if t.mid is None:
                continue
            source = declared.get(t.mid) or self._mid_source.get(t.mid)
            receiving = t._offerDirection in ("recvonly", "sendrecv")  # server side view
            if not receiving:
                if source in self.publications and self._mid_source.get(t.mid) == source:
                    gone.append(source)
                continue
            if source is None or source in self.publications:
                continue
            codec = negotiated_codec(t)
            if codec is None or codec.mimeType.lower() not in SUPPORTED_CODECS:
                raise MediaError("codec_unsupported", f"{source}: no VP8/H264/Opus offered")
            self._mid_source[t.mid] = source
            pub = Publication(self.identity, source, codec, settings, transceiver=t)
            pub.tap()
            if any(source in KIND_SOURCES.get(k, ()) for k in self.forced_mute):
                pub.forced_muted = True
            self.publications[source] = pub
            new.append(pub)
        return new, gone

    # -- subscribing ------------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        if self.closed:
            sub.close()
            return
        if self.sub_pc is None:
            self.sub_pc = self.room.ice.new_peer_connection()
            self._watch(self.sub_pc, "subscriber")
        dead = self.sub_pc.connectionState in ("failed", "closed")
        if dead or self.sub_pc.signalingState == "closed":
            # the connection died (or is shutting down after the peer's DTLS close, which
            # ends in a connectionstatechange that resets the session); the fresh session
            # subscribes again
            sub.close()
            if dead:
                self.room.spawn(self.room.reset_session(self.identity, "network"))
            return
        transceiver = self._take_free(sub)
        if transceiver is None:
            transceiver = self.sub_pc.addTransceiver(sub.track, direction="sendonly")
            transceiver.setCodecPreferences(_codec_capabilities(sub.codec, sub.kind))
            sub.bind(transceiver)
        else:
            track = transceiver.sender.track
            assert isinstance(track, ForwardedTrack)
            transceiver.direction = "sendonly"
            sub.adopt(transceiver, track, sender_packer(transceiver.sender))
        self.subscriptions[sub.key] = sub
        self.renegotiate()

    @property
    def idle_transceivers(self) -> int:
        """Subscriber m-lines of ended subscriptions, kept for reuse (each with a parked sender)."""
        return len(self._free) + len(self._retiring) + len(self._retiring_offered)

    def _take_free(self, sub: Subscription) -> RTCRtpTransceiver | None:
        """A negotiated-inactive transceiver of ``sub``'s kind and codec, to reuse its m-line.

        Reusing m-lines (as browsers and mediasoup-client do) keeps the subscriber's SDP and
        the server's per-transceiver state bounded by the most subscriptions held at once,
        not by every subscription a long session ever had.
        """
        for i, transceiver in enumerate(self._free):
            codec = negotiated_codec(transceiver)
            if (
                transceiver.kind == sub.kind
                and codec is not None
                and codec.mimeType.lower() == sub.mime
                and isinstance(transceiver.sender.track, ForwardedTrack)
            ):
                return self._free.pop(i)
        return None

    async def remove_subscription(self, key: tuple[str, str], renegotiate: bool = True) -> None:
        sub = self.subscriptions.pop(key, None)
        if sub is None:
            return
        sub.close()
        if sub.transceiver is not None:
            sub.transceiver.direction = "inactive"
            # reusable once the subscriber has answered an offer showing it inactive, so that
            # its next subscription is a new track there (a track event), never a silent swap
            self._retiring.append(sub.transceiver)
        if sub.sender is not None:
            release_sender(sub.sender)
        if renegotiate:
            self.renegotiate()

    def renegotiate(self) -> None:
        """(Re)offer the subscriber PC, coalescing bursts of changes into one offer."""
        if self.closed or self.sub_pc is None:
            return
        self._neg_dirty = True
        if self._neg_task is None or self._neg_task.done():
            self._neg_task = asyncio.ensure_future(self._negotiate())

    async def _negotiate(self) -> None:
        await asyncio.sleep(0)  # let a burst of subscription changes land first
        async with self._neg_lock:
            pc = self.sub_pc
            if self.closed or pc is None or not self._neg_dirty:
                return
            if pc.signalingState != "stable":
                return  # re-offered when the pending answer arrives
            self._neg_dirty = False
            # subscriptions added while this offer is gathered wait for the next offer
            offered = list(self.subscriptions.values())
            retiring, self._retiring = self._retiring, []
            offer = await pc.createOffer()
            self.room.ice.before_gathering(pc)
            await pc.setLocalDescription(offer)
            self.room.ice.after_gathering(pc)
            self._offer_id += 1
            self._awaiting = self._offer_id
            self._retiring_offered = retiring
            self._offered = [s for s in offered if s.transceiver and s.transceiver.mid]
            tracks = [
                OfferedTrack(
                    mid=s.transceiver.mid or "",
                    track_id=s.track.id,
                    publisher=s.publisher,
                    source=s.source,  # type: ignore[arg-type]
                    kind=s.kind,
                )
                for s in self._offered
                if s.transceiver is not None
            ]
            payload = ServerOffer(
                sdp=self.room.ice.outgoing_sdp(pc.localDescription.sdp),
                offer_id=self._offer_id,
                tracks=tracks,
            )
        await self.emit("rtc:offer", payload.model_dump())

    async def on_subscriber_answer(self, msg: RtcAnswer) -> None:
        if len(msg.sdp) > self.room.settings.max_sdp_bytes:
            raise MediaError("too_large", "SDP too large")
        async with self._neg_lock:
            pc = self.sub_pc
            if pc is None or self._awaiting is None or msg.offer_id != self._awaiting:
                raise MediaError("stale_answer", "no such pending offer")
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="answer"))
            except Exception as exc:
                raise MediaError("bad_sdp", f"answer rejected: {exc}") from exc
            self._awaiting = None
            for sub in self._offered:
                sub.activate()
            self._free.extend(self._retiring_offered)
            self._retiring_offered = []
            await self._flush_candidates("subscriber", pc)
            mismatched = []
            for sub in self._offered:
                if sub.transceiver is None or sub.closed:
                    continue
                codec = negotiated_codec(sub.transceiver)
                if codec is None or codec.mimeType.lower() != sub.mime:
                    mismatched.append(sub.key)
        for key in mismatched:
            logger.warning("media: %s answered %s with another codec", self.identity, key)
            await self.remove_subscription(key, renegotiate=False)
        if self._neg_dirty or mismatched:
            self.renegotiate()

    async def on_candidate(self, msg: RtcCandidate) -> None:
        pc = self.pub_pc if msg.pc == "publisher" else self.sub_pc
        negotiating = self._pub_lock.locked() if msg.pc == "publisher" else bool(self._awaiting)
        if pc is None or pc.remoteDescription is None or negotiating:
            # trickled before its offer/answer has landed (Socket.IO handlers run
            # concurrently): keep it, bounded, and apply it once the description is set
            pending = self._early_candidates.setdefault(msg.pc, [])
            if len(pending) >= 32:
                raise MediaError("too_many_candidates", "too many early candidates")
            pending.append(msg)
            return
        await self._add_candidate(pc, msg)

    async def _flush_candidates(self, which: str, pc: RTCPeerConnection) -> None:
        for msg in self._early_candidates.pop(which, []):
            with contextlib.suppress(MediaError):
                await self._add_candidate(pc, msg)

    async def _add_candidate(self, pc: RTCPeerConnection, msg: RtcCandidate) -> None:
        if msg.candidate is None or not msg.candidate.strip():
            await pc.addIceCandidate(None)  # type: ignore[arg-type]
            return
        text = msg.candidate.strip()
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        try:
            candidate = candidate_from_sdp(text)
        except Exception as exc:
            raise MediaError("bad_candidate", "unparseable ICE candidate") from exc
        if candidate.protocol.lower() != "udp":
            return  # aiortc has no ICE-TCP
        candidate.sdpMid = msg.sdp_mid
        candidate.sdpMLineIndex = msg.sdp_mline_index
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0
        await pc.addIceCandidate(candidate)

    # -- teardown ---------------------------------------------------------------------------
    async def close(self) -> None:
        """Close both peer connections. Publications/subscriptions are the room's to drop."""
        if self.closed:
            return
        self.closed = True
        if self._neg_task is not None and not self._neg_task.done():
            self._neg_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._neg_task
        for sub in self.subscriptions.values():
            sub.close()
        self.subscriptions.clear()
        for pub in self.publications.values():
            pub.close()
        self.publications.clear()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        self.pub_pc = None
        self.sub_pc = None
