"""MediaService: plugs RoomMedia into the Socket.IO signaling layer and /metrics.

One RoomMedia per live room, created at the first ``participant_joined`` and closed with the
room (or when its last participant leaves). Client ``rtc:*`` events are registered on the
namespace with their grants; a :class:`MediaError` becomes a typed ``SignalingError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel

from kernel.errors import SignalingError
from kernel.metrics import Metrics
from signaling.extensions import Caller, FeatureHost

from .echo import EchoService
from .ice import client_ice_servers
from .messages import CLIENT_EVENTS, EVENT_GRANTS, MediaError
from .room import RoomMedia
from .settings import MediaSettings
from .tap import DecodingTap

logger = logging.getLogger(__name__)


class MediaService:
    """All rooms' media in this process."""

    def __init__(self, ns: FeatureHost, settings: MediaSettings) -> None:
        self.ns = ns
        self.settings = settings
        self.rooms: dict[str, RoomMedia] = {}
        self.closed_totals = {"audio": [0, 0], "video": [0, 0]}  # forwarded, dropped

    # -- wiring -----------------------------------------------------------------------------
    def register(self) -> None:
        ns = self.ns
        for event, model in CLIENT_EVENTS.items():
            big = event in ("rtc:offer", "rtc:answer")
            ns.add_handler(
                event,
                model,
                self._handler(event),
                grant=EVENT_GRANTS[event],
                max_bytes=self.settings.max_sdp_bytes + 4096 if big else 4096,
            )
        ns.listen("participant_joined", self.on_joined)
        ns.listen("participant_left", self.on_left)
        ns.listen("room_closed", self.on_room_closed)
        ns.listen("mute_changed", self.set_forced_mute)
        ns.add_join_extra(self._join_extra)

    def _handler(
        self, event: str
    ) -> Callable[[Caller, BaseModel], Awaitable[dict[str, Any] | None]]:
        async def handle(caller: Caller, msg: BaseModel) -> dict[str, Any] | None:
            room = self.rooms.get(caller.room)
            if room is None or caller.identity not in room.sessions:
                raise SignalingError("not_joined", "no media session: join the room first")
            try:
                return await room.handle(caller.identity, event, msg)
            except MediaError as exc:
                raise SignalingError(exc.code, exc.message) from None

        return handle

    async def _join_extra(self, caller: Caller) -> dict[str, Any]:
        return {"ice_servers": client_ice_servers(self.settings, caller.identity)}

    # -- lifecycle --------------------------------------------------------------------------
    def room(self, name: str) -> RoomMedia:
        room = self.rooms.get(name)
        if room is None or room.closed:
            room = self.rooms[name] = RoomMedia(name, self.settings)
        return room

    async def on_joined(self, caller: Caller) -> None:
        ns, room_name, identity = self.ns, caller.room, caller.identity

        async def send(event: str, payload: dict[str, Any]) -> None:
            await ns.emit_to_identity(room_name, identity, event, payload)

        await self.room(room_name).add_participant(
            identity, send, caller.grants.has("publish"), caller.grants.has("subscribe")
        )

    async def on_left(self, caller: Caller, reason: str) -> None:
        room = self.rooms.get(caller.room)
        if room is None:
            return
        await room.remove_participant(caller.identity, reason)
        if not room.sessions:
            await self._close_room(caller.room)

    async def on_room_closed(self, name: str) -> None:
        await self._close_room(name)

    async def set_forced_mute(self, room: str, identity: str, kind: str, muted: bool) -> None:
        """Host mute (or its release): stop/restart forwarding ``identity``'s ``kind``."""
        media = self.rooms.get(room)
        if media is None or identity not in media.sessions:
            return
        await media.set_forced_mute(identity, kind, muted)

    def open_tap(self, room: str, identity: str, source: str = "camera") -> DecodingTap:
        """Decoded frames of ``identity``'s video (``async recv() -> av.VideoFrame``).

        For server-side consumers such as the rehab VisionAgent; ``tap.stop()`` detaches it.
        """
        media = self.rooms.get(room)
        if media is None:
            raise MediaError("not_found", f"no media in room {room}")
        return media.open_tap(identity, source)

    async def _close_room(self, name: str) -> None:
        room = self.rooms.pop(name, None)
        if room is None:
            return
        for session in room.sessions.values():
            for sub in session.subscriptions.values():
                self.closed_totals[sub.kind][0] += sub.frames_forwarded
                self.closed_totals[sub.kind][1] += sub.frames_dropped
        await room.close()

    async def close(self) -> None:
        for name in list(self.rooms):
            await self._close_room(name)


class MediaCollector(Collector):
    """Media figures for /metrics, read from the live rooms at scrape time."""

    def __init__(self, service: MediaService, per_participant: bool = False) -> None:
        self.service = service
        # per-participant series are labelled with room and identity: off by default
        self.per_participant = per_participant

    def collect(self) -> Iterator[Any]:
        rooms = [r for r in self.service.rooms.values() if not r.closed]
        g_rooms = GaugeMetricFamily("teleconsult_media_rooms", "Rooms with live media")
        g_rooms.add_metric([], len(rooms))
        g_pubs = GaugeMetricFamily("teleconsult_media_publications", "Published tracks")
        g_pubs.add_metric([], sum(len(r.publications) for r in rooms))
        g_subs = GaugeMetricFamily("teleconsult_media_subscriptions", "Forwarded streams")
        g_subs.add_metric([], sum(len(s.subscriptions) for r in rooms for s in r.sessions.values()))
        g_idle = GaugeMetricFamily(
            "teleconsult_media_idle_transceivers",
            "Subscriber m-lines of ended subscriptions kept for reuse (a parked sender each)",
        )
        g_idle.add_metric([], sum(s.idle_transceivers for r in rooms for s in r.sessions.values()))
        fwd = CounterMetricFamily(
            "teleconsult_media_frames_forwarded", "Encoded frames forwarded", labels=["kind"]
        )
        drop = CounterMetricFamily(
            "teleconsult_media_frames_dropped",
            "Frames dropped for slow/paused subscribers",
            labels=["kind"],
        )
        per = {
            "frames_in": GaugeMetricFamily(
                "teleconsult_media_participant_frames_in",
                "Frames received from a participant",
                labels=["room", "identity"],
            ),
            "forwarded": GaugeMetricFamily(
                "teleconsult_media_participant_frames_forwarded",
                "Frames forwarded to a participant",
                labels=["room", "identity"],
            ),
            "dropped": GaugeMetricFamily(
                "teleconsult_media_participant_frames_dropped",
                "Frames dropped for a participant",
                labels=["room", "identity"],
            ),
            "rtt": GaugeMetricFamily(
                "teleconsult_media_participant_rtt_ms",
                "Worst RTT to a participant (RTCP)",
                labels=["room", "identity"],
            ),
            "loss": GaugeMetricFamily(
                "teleconsult_media_participant_fraction_lost",
                "Worst loss reported by a participant (RTCP)",
                labels=["room", "identity"],
            ),
        }
        totals = {k: list(v) for k, v in self.service.closed_totals.items()}
        for room in rooms:
            for identity, session in room.sessions.items():
                if self.per_participant:  # built only when exposed (it sorts latency samples)
                    self._participant(per, room, identity)
                for sub in session.subscriptions.values():
                    totals[sub.kind][0] += sub.frames_forwarded
                    totals[sub.kind][1] += sub.frames_dropped
        for kind, (f, d) in totals.items():
            fwd.add_metric([kind], f)
            drop.add_metric([kind], d)
        yield from (g_rooms, g_pubs, g_subs, g_idle, fwd, drop)
        if self.per_participant:
            yield from per.values()

    @staticmethod
    def _participant(per: dict[str, GaugeMetricFamily], room: Any, identity: str) -> None:
        stats = room.participant_stats(identity)
        labels = [room.room, identity]
        per["frames_in"].add_metric(
            labels, sum(p["frames_in"] for p in stats["publications"].values())
        )
        subs = list(stats["subscriptions"].values())
        per["forwarded"].add_metric(labels, sum(s["frames_forwarded"] for s in subs))
        per["dropped"].add_metric(labels, sum(s["frames_dropped"] for s in subs))
        rtts = [s["rtt_ms"] for s in subs if s["rtt_ms"] is not None]
        losses = [s["fraction_lost"] for s in subs if s["fraction_lost"] is not None]
        if rtts:
            per["rtt"].add_metric(labels, max(rtts))
        if losses:
            per["loss"].add_metric(labels, max(losses))


MEDIA = web.AppKey("media", MediaService)


def setup(
    app: web.Application,
    host: FeatureHost,
    settings: MediaSettings,
    metrics: Metrics | None = None,
    participant_labels: bool = False,
) -> MediaService:
    """Register the SFU with the app: rtc:* handlers and their audit policy, lifecycle
    listeners, metrics (per participant with ``participant_labels``), cleanup."""
    service = MediaService(host, settings)
    service.register()
    host.audit_events({"rtc:offer": "summary"})
    app[MEDIA] = service
    echo = EchoService(host, settings)  # the device check's media loopback
    echo.register()
    if metrics is not None:
        metrics.registry.register(MediaCollector(service, per_participant=participant_labels))

    async def _close(_app: web.Application) -> None:
        await echo.close()
        await service.close()

    app.on_shutdown.append(_close)
    return service
