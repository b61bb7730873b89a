"""create_app(settings): assemble the aiohttp application; no globals, cleanup contexts only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

import web_client
from annotation import setup as annotation_setup
from rehab_vision import setup as rehab_setup
from rtc_server import audit_http, http_api, security
from rtc_server.config import Settings, prepare_data_dir, signing_secret
from rtc_server.keys import (
    AUDIT,
    METRICS,
    RECORD_CONTRIBUTORS,
    RECORDS,
    RETENTION,
    ROOMS,
    SETTINGS,
    SIGNALING,
    SIO,
)
from rtc_server.media.service import MEDIA
from rtc_server.media.service import setup as media_setup
from rtc_server.metrics import Metrics
from rtc_server.records.audit import KEY_FILE, AuditLog, load_or_create_key
from rtc_server.records.recording import setup as recording_setup
from rtc_server.records.retention import RetentionTask
from rtc_server.records.store import RecordStore
from rtc_server.rooms import RoomRegistry
from rtc_server.routing import ROUTER, make_router
from signaling.chat import Chat
from signaling.host_controls import HostControls
from signaling.lobby import Lobby
from signaling.namespace import ConsultNamespace

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the server: HTTP API, Socket.IO signaling, records, and the feature packages."""
    settings = prepare_data_dir(settings)
    limits = settings.limits
    app = web.Application(
        client_max_size=1024 * 1024,
        middlewares=[audit_http.middleware(signing_secret(settings))],
    )
    metrics = Metrics()
    store = RecordStore(settings.db_url, node=settings.node_id)
    registry = RoomRegistry(
        store, settings.lobby_policy, limits.max_rooms, limits.chat_history_on_join
    )
    metrics.track_totals(registry.totals)
    audit = AuditLog(
        store,
        load_or_create_key(settings.audit_key_file or settings.data_dir / KEY_FILE),
        settings.audit_head_interval_s,
        log_id=settings.node_id,
    )
    # scale-out: where rooms live (one node by default); see rtc_server/routing.py
    router = make_router(settings, registry.totals, lambda: list(registry.rooms))

    # the engine-level bound closes a connection outright; below it, oversize events get a
    # typed error from the namespace instead
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        # browsers may connect from this server's own pages, and from listed origins only
        cors_allowed_origins=settings.cors_origins or None,
        max_http_buffer_size=max(1024 * 1024, 4 * limits.max_message_bytes),
        logger=False,
        engineio_logger=False,
        # several nodes: Socket.IO emits to rooms reach connections on every node
        **(
            {"client_manager": socketio.AsyncRedisManager(settings.redis_url)}
            if settings.redis_url
            else {}
        ),
    )
    ns = ConsultNamespace(
        secret=signing_secret(settings),
        store=store,
        registry=registry,
        metrics=metrics,
        max_message_bytes=limits.max_message_bytes,
        rate_per_s=limits.rate_per_s,
        rate_burst=limits.rate_burst,
        max_participants=limits.max_participants_per_room,
        max_connections_per_ip=limits.max_connections_per_ip,
        trusted_proxies=frozenset(settings.trusted_proxies),
        audit=audit,
        router=router,
    )
    ns.listen("room_closed", router.release)
    Lobby(ns)
    HostControls(ns)
    Chat(ns, limits.chat_max_chars)
    sio.register_namespace(ns)
    sio.attach(app)

    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[RECORDS] = store
    app[AUDIT] = audit
    # feature packages append `async (room, encounter_url) -> RecordSection` here
    app[RECORD_CONTRIBUTORS] = []
    app[RETENTION] = RetentionTask(
        store,
        audit,
        settings.data_dir,
        settings.record_retention_years,
        settings.retention_check_interval_h * 3600,
    )
    app[ROOMS] = registry
    app[SIO] = sio
    app[SIGNALING] = ns
    app[ROUTER] = router

    security.setup(app, settings)
    http_api.setup(app)
    web_client.setup(app)
    # feature packages register here: each setup(app) adds routes, handlers and listeners
    media_setup(app)
    recording_setup(app, app[MEDIA])
    annotation_setup(app)
    rehab_setup(app)
    # feature events worth an audit entry each, or a per-connection count (high-rate ones)
    ns.audit_events(
        {
            "doc:open": "each",
            "doc:sync": "summary",
            "rehab:start": "each",
            "rehab:stop": "each",
            "rehab:plan_set": "each",
            "rehab:plan_run": "each",
            "rehab:plan_stop": "each",
            "rehab:progress": "each",
            "rtc:offer": "summary",
        }
    )

    app.cleanup_ctx.append(_records_ctx)
    app.cleanup_ctx.append(_router_ctx)
    app.on_shutdown.append(_shutdown_signaling)
    return app


async def _records_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[RECORDS]
    await store.start()
    await app[AUDIT].start()
    app[RETENTION].start()
    yield
    await app[RETENTION].close()
    await app[AUDIT].close()
    await store.close()


async def _router_ctx(app: web.Application) -> AsyncIterator[None]:
    router = app[ROUTER]
    await router.start()
    yield
    await router.close()


async def _shutdown_signaling(app: web.Application) -> None:
    await app[SIGNALING].shutdown()
