"""PeerSession: one participant's media connection to the SFU.

A session holds up to two RTCPeerConnections, as LiveKit does: a *publisher* PC (the client
offers, the server answers: it only receives) and a *subscriber* PC (the server offers, the
client answers: it only sends). Each PC is negotiated in one direction only, so offers can
never collide (no glare, no rollback, which aiortc lacks), and the server choosing the
subscriber offer lets it pin each forwarded track to its publisher's exact codec (aiortc's
sender uses the first codec of the answer; a mismatch would send H264 packed as VP8).

A session knows nothing of the room it is in: it reports upward through the
:class:`SessionCallbacks` its owner (``RoomMedia``) passes in, mediasoup/LiveKit style.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver, RTCSessionDescription
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription, candidate_from_sdp

from .aiortc_patch import (
    negotiated_codec,
    offer_direction,
    release_sender,
    sender_packer,
)
from .aiortc_receive import receive_rtp_inline, skip_stun_parsing
from .bandwidth import LayerChooser
from .congestion import PublisherFeedback
from .forwarder import ForwardedTrack, Publication, Subscription
from .frames import SUPPORTED_CODECS
from .ice import IcePolicy
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
from .probe import run_padding_probe
from .settings import MediaSettings

logger = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], Awaitable[None]]


async def close_quietly(pc: RTCPeerConnection) -> None:
    """Close a peer connection that may be closing already (a concurrent closer that was
    cancelled leaves aiortc raising InvalidStateError): nothing to report, it is closed."""
    with contextlib.suppress(Exception):
        await pc.close()


@dataclass(frozen=True, slots=True)
class SessionCallbacks:
    """How a :class:`PeerSession` reports to its owner (one set per room, shared)."""

    #: a track this session publishes is negotiated: fan it out
    on_published: Callable[[Publication], Awaitable[None]]
    #: ``(identity, source, reason)``: the publisher's offer stopped sending ``source``
    on_unpublished: Callable[[str, str, str], Awaitable[None]]
    #: ``(identity, reason)``: a peer connection failed; the owner resets the session
    on_failed: Callable[[str, str], Awaitable[None]]
    #: run a coroutine as a task the owner tracks (and cancels when it closes)
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]


#: media sections a publisher offer may hold: sending ones and those of ended publications
MAX_PUBLISHER_MLINES = 64


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
        identity: str,
        send: Send,
        can_publish: bool,
        can_subscribe: bool,
        *,
        settings: MediaSettings,
        ice: IcePolicy,
        callbacks: SessionCallbacks,
    ) -> None:
        self.settings = settings
        self.ice = ice
        self.callbacks = callbacks
        self.identity = identity
        self.send = send
        self.can_publish = can_publish
        self.can_subscribe = can_subscribe
        self.closed = False
        self._closing = False
        self.pub_pc: RTCPeerConnection | None = None
        self.pub_feedback: PublisherFeedback | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.layers = LayerChooser(
            loss_down=settings.auto_layer_loss_down,
            loss_up=settings.auto_layer_loss_up,
            probe_after_s=settings.auto_layer_probe_s,
            hold_s=settings.auto_layer_hold_s,
            start_probe=self._start_probe if settings.auto_layer_padding_probe else None,
            first_probe_s=settings.auto_layer_first_probe_s,
        )
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.blocked: set[tuple[str, str | None]] = set()  # explicit unsubscribes
        self.forced_mute: set[str] = set()  # kinds muted by a host (see kinds.KIND_SOURCES)
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
                self._failed()

    def _failed(self) -> None:
        self.callbacks.spawn(self.callbacks.on_failed(self.identity, "network"))

    # -- publishing -------------------------------------------------------------------------
    async def on_publisher_offer(self, msg: RtcOffer) -> dict[str, Any]:
        if not self.can_publish:
            raise MediaError("permission_denied", "no publish grant")
        settings = self.settings
        if len(msg.sdp) > settings.max_sdp_bytes:
            raise MediaError("too_large", "SDP too large")
        async with self._pub_lock:
            if self.closed:
                raise MediaError("closed", "session closed")
            declared = self._check_offer(msg)
            if self.pub_pc is None:
                self.pub_pc = self.ice.new_peer_connection()
                self._watch(self.pub_pc, "publisher")
                self.pub_feedback = PublisherFeedback(
                    self.pub_pc, remb=settings.publisher_remb, compiled=settings.native_send
                )
            pc = self.pub_pc
            if pc.signalingState != "stable":
                raise MediaError("negotiation_in_progress", "publisher PC is not stable")
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=msg.sdp, type="offer"))
            except Exception as exc:
                raise MediaError("bad_sdp", f"offer rejected: {exc}") from exc
            new_pubs, gone = self._collect_publications(pc, declared)
            if self.pub_feedback is not None:
                self.pub_feedback.on_offer(msg.sdp)
            if settings.fast_receive:
                receive_rtp_inline(pc)  # the transceivers of this offer exist now
            try:
                answer = await pc.createAnswer()
                self.ice.before_gathering(pc)
                await pc.setLocalDescription(answer)
                self.ice.after_gathering(pc)
            except Exception as exc:
                # a PC left half-negotiated would refuse every later offer: start afresh
                # when it carries nothing yet
                if not self.publications:
                    self.pub_pc = None
                    if self.pub_feedback is not None:
                        self.callbacks.spawn(self.pub_feedback.close())
                        self.pub_feedback = None
                    self.callbacks.spawn(close_quietly(pc))  # not under the lock: DTLS/ICE
                raise MediaError("bad_sdp", f"answer failed: {exc}") from exc
            if self.pub_feedback is not None:
                self.pub_feedback.after_gathering()
            if settings.fast_receive:
                skip_stun_parsing(pc)  # the sockets exist now
            sdp = self.ice.outgoing_sdp(pc.localDescription.sdp)
            await self._flush_candidates("publisher", pc)
        for source in gone:
            await self.callbacks.on_unpublished(self.identity, source, "unpublished")
        for pub in new_pubs:
            await self.callbacks.on_published(pub)
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
        if len(parsed.media) > MAX_PUBLISHER_MLINES:
            # applied, they would stay in the publisher PC for good (m-lines are never removed)
            raise MediaError("too_many_tracks", f"over {MAX_PUBLISHER_MLINES} media sections")
        sending = 0
        for media in parsed.media:
            if media.direction == "recvonly":
                raise MediaError(
                    "bad_request", f"m-line {media.rtp.muxId} is recvonly: a publisher only sends"
                )
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
        if sending > self.settings.max_tracks_per_publisher:
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
        settings = self.settings
        for t in pc.getTransceivers():
            if t.mid is None:
                continue
            source = declared.get(t.mid) or self._mid_source.get(t.mid)
            receiving = offer_direction(t) in ("recvonly", "sendrecv")  # server side view
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

    # -- padding probes (bandwidth.py, probe.py) ---------------------------------------------
    def _start_probe(self, key: tuple[str, str], rate_bps: float) -> None:
        sub = self.subscriptions.get(key)
        if self.closed or sub is None or sub.closed or sub.sender is None:
            self.layers.probe_skipped(key)
            return
        if sub.frames_forwarded == 0:  # nothing to copy yet
            self.layers.probe_skipped(key)
            return
        self.callbacks.spawn(self._probe(key, sub.sender, rate_bps))

    def _video_nacks(self) -> int:
        return sum(s.nacks for s in self.subscriptions.values() if s.kind == "video")

    def estimate(self) -> int | None:
        """The subscriber's latest REMB (aiortc hands it to every video sender's packer)."""
        rembs = [
            s.packer.target_bitrate or 0 for s in self.subscriptions.values() if s.kind == "video"
        ]
        return max(rembs, default=0) or None

    async def _probe(self, key: tuple[str, str], sender: RTCRtpSender, rate_bps: float) -> None:
        carried: bool | None = False
        try:
            carried = await run_padding_probe(sender, self._video_nacks, rate_bps, self.estimate)
        finally:
            self.layers.probe_done(key, carried, time.monotonic())
            logger.info(
                "media: %s padding probe for %s at +%s kbit/s: %s (estimate %s kbit/s)",
                self.identity,
                key,
                round(rate_bps / 1000),
                {True: "carried", False: "failed", None: "not possible"}[carried],
                round((self.estimate() or 0) / 1000),
            )

    # -- subscribing ------------------------------------------------------------------------
    def add_subscription(self, sub: Subscription) -> None:
        if self.closed:
            sub.close()
            return
        if self.sub_pc is None:
            self.sub_pc = self.ice.new_peer_connection()
            self._watch(self.sub_pc, "subscriber")
        dead = self.sub_pc.connectionState in ("failed", "closed")
        if dead or self.sub_pc.signalingState == "closed":
            # the connection died (or is shutting down after the peer's DTLS close, which
            # ends in a connectionstatechange that resets the session); the fresh session
            # subscribes again
            sub.close()
            if dead:
                self._failed()
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
        sub.on_closed = self._subscription_closed
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

    async def remove_subscription(self, key: tuple[str, str]) -> None:
        sub = self.subscriptions.get(key)
        if sub is not None:
            sub.close()  # -> _subscription_closed

    def _subscription_closed(self, sub: Subscription) -> None:
        """A subscription ended (unsubscribed, or its publication closed): retire its m-line."""
        if self.closed or self.subscriptions.get(sub.key) is not sub:
            return
        del self.subscriptions[sub.key]
        if sub.transceiver is not None:
            sub.transceiver.direction = "inactive"
            # reusable once the subscriber has answered an offer showing it inactive, so that
            # its next subscription is a new track there (a track event), never a silent swap
            self._retiring.append(sub.transceiver)
        if sub.sender is not None:
            release_sender(sub.sender)
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
            self.ice.before_gathering(pc)
            await pc.setLocalDescription(offer)
            self.ice.after_gathering(pc)
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
                sdp=self.ice.outgoing_sdp(pc.localDescription.sdp),
                offer_id=self._offer_id,
                tracks=tracks,
            )
        await self.emit("rtc:offer", payload.model_dump())

    async def on_subscriber_answer(self, msg: RtcAnswer) -> None:
        if len(msg.sdp) > self.settings.max_sdp_bytes:
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
            await self.remove_subscription(key)
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
    def halt(self) -> None:
        """Stop offering and reacting to closed subscriptions; close() then finishes.

        A room closing halts every session first, so that one session's publications closing
        (and their subscriptions with them) sets off no renegotiation in the others.
        """
        self.closed = True

    async def close(self) -> None:
        """Close subscriptions, publications and both peer connections; idempotent."""
        if self._closing:
            return
        self._closing = True
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
        if self.pub_feedback is not None:
            await self.pub_feedback.close()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await close_quietly(pc)
        self.pub_pc = None
        self.sub_pc = None
