"""RoomMedia: the SFU side of one room, driven by the signaling layer through a small API.

Transport-agnostic: each participant comes with a ``send(event, payload)`` coroutine; client
events arrive through :meth:`RoomMedia.handle` as validated pydantic models. ``close()`` is
idempotent and cascades (sessions -> publications -> subscriptions), mediasoup style.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from pydantic import BaseModel

from .bandwidth import CameraDemand
from .forwarder import Publication, Subscription
from .ice import IcePolicy, client_ice_servers
from .kinds import KIND_SOURCES
from .messages import (
    ActiveSpeaker,
    MediaError,
    RtcAnswer,
    RtcCandidate,
    RtcConfig,
    RtcLayer,
    RtcMute,
    RtcOffer,
    RtcPause,
    RtcStatsRequest,
    RtcSubscribe,
    RtcUnpublish,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from .session import PeerSession, Send, SessionCallbacks
from .settings import MediaSettings
from .tap import DecodingTap

logger = logging.getLogger(__name__)


def _rate_kbps(mark: tuple[float, int] | None, now: float, total: int) -> float | None:
    if mark is None or now <= mark[0]:
        return None
    return round((total - mark[1]) * 8 / (now - mark[0]) / 1000, 1)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RoomMedia:
    """All media of one room: peer sessions, publications, subscriptions."""

    def __init__(
        self, room: str, settings: MediaSettings | None = None, ice: IcePolicy | None = None
    ) -> None:
        self.room = room
        self.settings = settings or MediaSettings()
        self.ice = ice or IcePolicy(self.settings)
        self.closed = False
        self.sessions: dict[str, PeerSession] = {}
        self.publications: dict[tuple[str, str], Publication] = {}
        self.active_speaker: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops_started = False
        self.created_at = time.monotonic()
        self._callbacks = SessionCallbacks(
            on_published=self.publish,
            on_unpublished=self.unpublish,
            on_failed=self.reset_session,
            spawn=self.spawn,
        )

    # -- plumbing ---------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this room (kept until done; a failure is logged)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("room media task %s failed: %r", task.get_name(), exc, exc_info=exc)

    def _assert_open(self) -> None:
        if self.closed:
            raise MediaError("room_closed", "room media is closed")

    def _start_loops(self) -> None:
        if not self._loops_started:
            self._loops_started = True
            self.spawn(self._speaker_loop())
            self.spawn(self._stats_loop())

    async def broadcast(self, event: str, payload: dict[str, Any], skip: str | None = None) -> None:
        for identity, session in list(self.sessions.items()):
            if identity != skip:
                await session.emit(event, payload)

    def _new_session(
        self, identity: str, send: Send, can_publish: bool, can_subscribe: bool
    ) -> PeerSession:
        return PeerSession(
            identity,
            send,
            can_publish,
            can_subscribe,
            settings=self.settings,
            ice=self.ice,
            callbacks=self._callbacks,
        )

    def _session(self, identity: str) -> PeerSession:
        session = self.sessions.get(identity)
        if session is None:
            raise MediaError("not_joined", f"{identity} has no media session")
        return session

    # -- participants -----------------------------------------------------------------------
    async def add_participant(
        self, identity: str, send: Send, can_publish: bool, can_subscribe: bool
    ) -> dict[str, Any]:
        """Register a participant; sends it ``rtc:config`` and the current publications."""
        self._assert_open()
        if identity in self.sessions:
            await self.remove_participant(identity, "replaced")
        session = self._new_session(identity, send, can_publish, can_subscribe)
        self.sessions[identity] = session
        self._start_loops()
        config = RtcConfig(
            ice_servers=client_ice_servers(self.settings, identity),
            can_publish=can_publish,
            can_subscribe=can_subscribe,
            auto_subscribe=self.settings.auto_subscribe,
            max_tracks=self.settings.max_tracks_per_publisher,
        ).model_dump()
        await session.emit("rtc:config", config)
        for pub in list(self.publications.values()):
            if pub.source != "camera_low":
                await session.emit("rtc:track_published", self._published(pub))
        if can_subscribe and self.settings.auto_subscribe:
            for pub in list(self.publications.values()):
                self._maybe_subscribe(session, pub)
        return config

    async def remove_participant(self, identity: str, reason: str) -> None:
        """Tear down everything of ``identity`` (leave, kick, end, network loss)."""
        session = self.sessions.pop(identity, None)
        if session is None:
            return
        await self._drop_session_media(session, reason)
        await session.close()

    async def reset_session(self, identity: str, reason: str) -> None:
        """Drop a participant's media but keep it in the room (it may publish/subscribe anew)."""
        old = self.sessions.get(identity)
        if old is None or old.closed:
            return
        fresh = self._new_session(identity, old.send, old.can_publish, old.can_subscribe)
        fresh.blocked = set(old.blocked)
        fresh.forced_mute = set(old.forced_mute)
        self.sessions[identity] = fresh
        await self._drop_session_media(old, reason)
        await old.close()
        await fresh.emit("rtc:disconnected", {"reason": reason})
        if fresh.can_subscribe and self.settings.auto_subscribe:
            for pub in list(self.publications.values()):
                self._maybe_subscribe(fresh, pub)

    async def _drop_session_media(self, session: PeerSession, reason: str) -> None:
        """Unpublish ``session``'s tracks (its own subscriptions end with its close())."""
        for source in list(session.publications):
            await self.unpublish(session.identity, source, reason)

    # -- publications -----------------------------------------------------------------------
    def _published(self, pub: Publication) -> dict[str, Any]:
        return TrackPublished(
            publisher=pub.publisher,
            source=pub.source,  # type: ignore[arg-type]
            kind=pub.kind,
            codec=pub.mime,
            track_id=pub.id,
            muted=pub.muted or pub.forced_muted,
        ).model_dump()

    async def publish(self, pub: Publication) -> None:
        """Called by a session once a published track is negotiated."""
        if self.closed:
            pub.close()
            return
        key = (pub.publisher, pub.source)
        old = self.publications.get(key)
        if old is not None and old is not pub:
            await self.unpublish(pub.publisher, pub.source, "replaced")
        self.publications[key] = pub
        if pub.source == "camera_low":
            high = self.publications.get((pub.publisher, "camera"))
            if high is not None and high.mime != pub.mime:
                logger.warning("media: %s camera_low codec differs, ignored", pub.publisher)
                return
            self._apply_layers(pub.publisher)
            return
        await self.broadcast("rtc:track_published", self._published(pub), skip=pub.publisher)
        for session in list(self.sessions.values()):
            try:
                self._maybe_subscribe(session, pub)
            except Exception:  # one broken session must not fail the publisher's request
                logger.exception("media: subscribing %s to %s failed", session.identity, pub.id)

    async def unpublish(self, publisher: str, source: str, reason: str) -> None:
        pub = self.publications.pop((publisher, source), None)
        session = self.sessions.get(publisher)
        if session is not None and session.publications.get(source) is pub:
            session.publications.pop(source, None)
        if pub is None:
            return
        if source == "camera_low":
            high = self.publications.get((publisher, "camera"))
            for sub in self._subs_of(publisher, "camera"):
                if sub.pending is pub:
                    sub.switch_to(sub.current)  # cancel the pending switch
                elif sub.current is pub and high is not None:
                    sub.switch_to(high)
                    sub.complete_switch(high)  # low is gone: restart from high's keyframe
            pub.close()
            return
        pub.close()  # closes its subscriptions; their sessions retire the m-lines and re-offer
        low = self.publications.get((publisher, "camera_low")) if source == "camera" else None
        if low is not None:  # subscriptions on the low layer close with it
            await self.unpublish(publisher, "camera_low", reason)
        await self.broadcast(
            "rtc:track_unpublished",
            TrackUnpublished(publisher=publisher, source=source, reason=reason).model_dump(),  # type: ignore[arg-type]
            skip=publisher,
        )

    def _subs_of(self, publisher: str, source: str) -> list[Subscription]:
        return [
            s.subscriptions[(publisher, source)]
            for s in self.sessions.values()
            if (publisher, source) in s.subscriptions
        ]

    def _maybe_subscribe(
        self, session: PeerSession, pub: Publication, explicit: bool = False
    ) -> None:
        if (
            session.closed
            or not session.can_subscribe
            or pub.publisher == session.identity
            or pub.source == "camera_low"
            or pub.closed
            or (pub.publisher, pub.source) in session.subscriptions
        ):
            return
        if not explicit and (
            not self.settings.auto_subscribe
            or (pub.publisher, pub.source) in session.blocked
            or (pub.publisher, None) in session.blocked
        ):
            return
        sub = Subscription(session.identity, pub, self.settings)
        session.add_subscription(sub)
        if pub.source == "camera":
            self._apply_layer(sub)

    # -- layers -----------------------------------------------------------------------------
    def _apply_layers(self, publisher: str) -> None:
        for sub in self._subs_of(publisher, "camera"):
            self._apply_layer(sub)

    def _apply_layer(self, sub: Subscription) -> None:
        high = self.publications.get((sub.publisher, "camera"))
        low = self.publications.get((sub.publisher, "camera_low"))
        want = sub.layer_request or (sub.auto_layer if self.settings.auto_layer else "high")
        target = low if want == "low" and low is not None and low.mime == sub.mime else high
        if target is not None and not target.closed:
            sub.switch_to(target)

    def open_tap(self, publisher: str, source: str = "camera") -> DecodingTap:
        """A decoded view of a video publication for server-side analysis (rehab agent)."""
        self._assert_open()
        pub = self.publications.get((publisher, source))
        if pub is None or pub.kind != "video":
            raise MediaError("not_published", f"{publisher} has no {source} video")
        return DecodingTap(pub)

    # -- client events ----------------------------------------------------------------------
    async def handle(self, identity: str, event: str, payload: BaseModel) -> dict[str, Any] | None:
        """Handle one validated client event; returns the ack payload (or None)."""
        self._assert_open()
        session = self._session(identity)
        if isinstance(payload, RtcOffer) and event == "rtc:offer":
            return await session.on_publisher_offer(payload)
        if isinstance(payload, RtcAnswer) and event == "rtc:answer":
            await session.on_subscriber_answer(payload)
            return None
        if isinstance(payload, RtcCandidate) and event == "rtc:candidate":
            await session.on_candidate(payload)
            return None
        if isinstance(payload, RtcSubscribe) and event == "rtc:subscribe":
            return self._subscribe(session, payload)
        if isinstance(payload, RtcSubscribe) and event == "rtc:unsubscribe":
            return await self._unsubscribe(session, payload)
        if isinstance(payload, RtcPause) and event == "rtc:pause":
            sub = session.subscriptions.get((payload.publisher, payload.source))
            if sub is None:
                raise MediaError("not_subscribed", "no such subscription")
            sub.set_paused(payload.paused)
            return {"paused": sub.paused}
        if isinstance(payload, RtcLayer) and event == "rtc:layer":
            sub = session.subscriptions.get((payload.publisher, "camera"))
            if sub is None:
                raise MediaError("not_subscribed", "not subscribed to that camera")
            sub.layer_request = payload.layer
            self._apply_layer(sub)
            return {"layer": payload.layer or "auto"}
        if isinstance(payload, RtcMute) and event == "rtc:mute":
            return await self._self_mute(session, payload)
        if isinstance(payload, RtcUnpublish) and event == "rtc:unpublish":
            if payload.source not in session.publications:
                raise MediaError("not_published", f"{payload.source} is not published")
            await self.unpublish(identity, payload.source, "unpublished")
            return None
        if isinstance(payload, RtcStatsRequest) and event == "rtc:stats":
            return {"stats": self.participant_stats(identity)}
        raise MediaError("unknown_event", f"unknown media event {event}")

    def _subscribe(self, session: PeerSession, msg: RtcSubscribe) -> dict[str, Any]:
        if not session.can_subscribe:
            raise MediaError("permission_denied", "no subscribe grant")
        if msg.publisher not in self.sessions:
            raise MediaError("not_found", "no such participant")
        sources = msg.sources or [s for (p, s) in self.publications if p == msg.publisher]
        subscribed = []
        for source in sources:
            session.blocked.discard((msg.publisher, source))
            session.blocked.discard((msg.publisher, None))
            pub = self.publications.get((msg.publisher, source))
            if pub is not None and source != "camera_low":
                self._maybe_subscribe(session, pub, explicit=True)
                subscribed.append(source)
        return {"subscribed": subscribed}

    async def _unsubscribe(self, session: PeerSession, msg: RtcSubscribe) -> dict[str, Any]:
        removed = []
        if msg.sources is None:
            session.blocked.add((msg.publisher, None))
            keys = [k for k in session.subscriptions if k[0] == msg.publisher]
        else:
            keys = []
            for source in msg.sources:
                session.blocked.add((msg.publisher, source))
                keys.append((msg.publisher, source))
        for key in keys:
            if key in session.subscriptions:
                await session.remove_subscription(key)
                removed.append(key[1])
        return {"unsubscribed": removed}

    async def _self_mute(self, session: PeerSession, msg: RtcMute) -> dict[str, Any]:
        pub = session.publications.get(msg.source)
        if pub is None:
            raise MediaError("not_published", f"{msg.source} is not published")
        if not msg.muted and pub.forced_muted:
            raise MediaError("forced_mute", "a host muted this source")
        targets = [pub]
        if msg.source == "camera" and "camera_low" in session.publications:
            targets.append(session.publications["camera_low"])
        for p in targets:
            was = p.forwarding
            p.muted = msg.muted
            if p.forwarding and not was:
                p.request_keyframe("unmute")
        await self.broadcast(
            "rtc:track_muted",
            TrackMuted(
                publisher=session.identity, source=msg.source, muted=msg.muted, forced=False
            ).model_dump(),  # type: ignore[arg-type]
        )
        return {"muted": msg.muted}

    async def set_forced_mute(self, identity: str, kind: str, muted: bool) -> None:
        """Host mute: stop forwarding ``identity``'s audio or video (or one source)."""
        self._assert_open()
        if kind not in KIND_SOURCES:
            raise MediaError("bad_request", f"unknown kind {kind}")
        session = self._session(identity)
        if muted:
            session.forced_mute.add(kind)
        else:
            session.forced_mute.discard(kind)
        for source in KIND_SOURCES[kind]:
            pub = session.publications.get(source)
            if pub is None:
                continue
            was = pub.forwarding
            pub.forced_muted = muted
            if pub.forwarding and not was:
                pub.request_keyframe("unmute")
            if source != "camera_low":
                await self.broadcast(
                    "rtc:track_muted",
                    TrackMuted(
                        publisher=identity, source=source, muted=muted or pub.muted, forced=muted
                    ).model_dump(),  # type: ignore[arg-type]
                )

    # -- periodic work ----------------------------------------------------------------------
    async def _speaker_loop(self) -> None:
        interval = self.settings.active_speaker_interval_s
        while not self.closed:
            await asyncio.sleep(interval)
            now = time.monotonic()
            levels: dict[str, float] = {}
            for (publisher, source), pub in list(self.publications.items()):
                if source != "microphone" or not pub.forwarding:
                    continue
                if now - pub.last_level_at > 1.0:
                    continue  # no audio (or no level extension) lately
                levels[publisher] = round(max(0.0, (127.0 - pub.level) / 127.0), 3)
            loud = {
                p: v
                for p, v in levels.items()
                if 127.0 - v * 127.0 <= self.settings.active_speaker_min_level
            }
            speaker = max(loud, key=lambda p: loud[p]) if loud else None
            if speaker != self.active_speaker:
                self.active_speaker = speaker
                await self.broadcast(
                    "rtc:active_speaker",
                    ActiveSpeaker(identity=speaker, levels=levels).model_dump(),
                )

    async def _stats_loop(self) -> None:
        interval = self.settings.stats_interval_s or 2.0
        while not self.closed:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.refresh_stats()
            if self.settings.stats_interval_s:
                for identity, session in list(self.sessions.items()):
                    await session.emit("rtc:stats", self.participant_stats(identity))

    async def refresh_stats(self) -> None:
        """Bitrates; RTT/loss from the senders' RTCP reports; automatic layer choice."""
        now = time.monotonic()
        for pub in list(self.publications.values()):
            pub.bitrate_kbps = _rate_kbps(pub.rate_mark, now, pub.assembler.bytes)
            pub.rate_mark = (now, pub.assembler.bytes)
        for session in list(self.sessions.values()):
            for sub in list(session.subscriptions.values()):
                if sub.sender is None or sub.closed:
                    continue
                sub.bitrate_kbps = _rate_kbps(sub.rate_mark, now, sub.bytes_forwarded)
                sub.rate_mark = (now, sub.bytes_forwarded)
                if sub.nack_mark is not None:
                    sent = sub.packer.packets - sub.nack_mark[1]
                    asked = sub.nacks - sub.nack_mark[0]
                    sub.nack_ratio = round(min(asked / sent, 1.0), 4) if sent > 0 else None
                sub.nack_mark = (sub.nacks, sub.packer.packets)
                report = await sub.sender.getStats()
                for stat in report.values():
                    if getattr(stat, "type", None) == "remote-inbound-rtp":
                        rtt = getattr(stat, "roundTripTime", None)
                        sub.rtt_ms = round(rtt * 1000, 1) if rtt is not None else None
                        sub.fraction_lost = round((stat.fractionLost or 0) / 256, 4)
            if self.settings.auto_layer:
                self._choose_layers(session, now)

    def _choose_layers(self, session: PeerSession, now: float) -> None:
        """Camera layers from the subscriber's estimate (REMB) and loss (bandwidth.py)."""
        subs = [s for s in session.subscriptions.values() if not s.closed]
        session.layers.update_estimate(now, session.estimate())
        audio = sum((s.bitrate_kbps or 0) * 1000 for s in subs if s.kind == "audio")
        other = sum(
            (s.bitrate_kbps or 0) * 1000 for s in subs if s.kind == "video" and s.source != "camera"
        )
        demands = []
        for sub in subs:
            if sub.source != "camera" or sub.layer_request is not None:
                continue
            high = self.publications.get((sub.publisher, "camera"))
            low = self.publications.get((sub.publisher, "camera_low"))
            demands.append(
                CameraDemand(
                    key=sub.key,
                    high_bps=(high.bitrate_kbps or 0) * 1000 if high else None,
                    low_bps=(low.bitrate_kbps or 0) * 1000 if low else None,
                    current=sub.auto_layer,
                    # RR loss hides what NACK recovered: a saturated link shows in NACKs
                    fraction_lost=max(sub.fraction_lost or 0.0, sub.nack_ratio or 0.0),
                    has_low=low is not None and low.mime == sub.mime,
                )
            )
        rates = {d.key: (d.high_bps, d.low_bps) for d in demands}
        for key, layer in session.layers.choose(now, demands, audio, other).items():
            sub = session.subscriptions.get(key)
            if sub is not None and sub.auto_layer != layer:
                high_bps, low_bps = rates.get(key, (None, None))
                logger.info(
                    "media: %s layer %s -> %s (estimate %s kbit/s, layers %s/%s kbit/s, "
                    "loss %s, nacks %s)",
                    key[1],
                    sub.auto_layer,
                    layer,
                    round((session.layers.estimate_bps or 0) / 1000),
                    round((high_bps or 0) / 1000),
                    round((low_bps or 0) / 1000),
                    sub.fraction_lost,
                    sub.nack_ratio,
                )
                sub.auto_layer = layer
                sub.layer_switches += 1
                self._apply_layer(sub)

    def participant_stats(self, identity: str) -> dict[str, Any]:
        session = self.sessions.get(identity)
        if session is None:
            return {}
        pubs = {}
        for source, pub in session.publications.items():
            a = pub.assembler
            pubs[source] = {
                "kind": pub.kind,
                "codec": pub.mime,
                "packets_in": a.packets,
                "frames_in": a.frames,
                "bytes_in": a.bytes,
                "bitrate_kbps": pub.bitrate_kbps,
                "keyframes": a.keyframes,
                "losses_unrepaired": a.losses,
                "plis_sent": pub.plis_sent,
                "muted": pub.muted,
                "forced_muted": pub.forced_muted,
                "subscribers": len(pub.subscriptions),
            }
        subs = {}
        for (publisher, source), sub in session.subscriptions.items():
            lat = list(sub.latencies)
            subs[f"{publisher}/{source}"] = {
                "kind": sub.kind,
                "layer": sub.layer,
                "layer_switches": sub.layer_switches,
                "paused": sub.paused,
                "frames_forwarded": sub.frames_forwarded,
                "frames_dropped": sub.frames_dropped,
                "bytes_forwarded": sub.bytes_forwarded,
                "queue": len(sub.queue),
                "bitrate_kbps": sub.bitrate_kbps,
                "rtt_ms": sub.rtt_ms,
                "fraction_lost": sub.fraction_lost,
                "nack_ratio": sub.nack_ratio,
                "remb_kbps": round(sub.packer.target_bitrate / 1000, 1)
                if sub.packer.target_bitrate
                else None,
                "latency_ms_p95": round(p * 1000, 2)
                if (p := _percentile(lat, 0.95)) is not None
                else None,
            }
        return {"identity": identity, "publications": pubs, "subscriptions": subs}

    def stats(self) -> dict[str, Any]:
        """Room-wide media statistics (for /metrics and the benchmark)."""
        participants = {i: self.participant_stats(i) for i in self.sessions}
        lat = {"audio": [], "video": []}  # type: dict[str, list[float]]
        forwarded = dropped = 0
        for session in self.sessions.values():
            for sub in session.subscriptions.values():
                lat[sub.kind].extend(sub.latencies)
                forwarded += sub.frames_forwarded
                dropped += sub.frames_dropped
        return {
            "room": self.room,
            "participants": participants,
            "publications": len(self.publications),
            "subscriptions": sum(len(s.subscriptions) for s in self.sessions.values()),
            "frames_forwarded": forwarded,
            "frames_dropped": dropped,
            "latency_ms_p95": {
                k: round(p * 1000, 2) if (p := _percentile(v, 0.95)) is not None else None
                for k, v in lat.items()
            },
            "active_speaker": self.active_speaker,
        }

    # -- teardown ---------------------------------------------------------------------------
    async def close(self) -> None:
        """Close every session and publication; idempotent."""
        if self.closed:
            return
        self.closed = True
        for session in self.sessions.values():
            session.halt()
        for identity in list(self.sessions):
            session = self.sessions.pop(identity)
            for pub in session.publications.values():
                self.publications.pop((pub.publisher, pub.source), None)
            await session.close()
        for pub in self.publications.values():
            pub.close()
        self.publications.clear()
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
