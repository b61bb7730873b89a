"""create_app(settings): assemble the aiohttp application; no globals, cleanup contexts only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

import web_client
from annotation import setup as annotation_setup
from clinic import setup as clinic_setup
from kernel.access import Access
from kernel.metrics import Metrics
from kernel.records import identifiers, record_api
from kernel.records.audit import KEY_FILE, AuditLog, load_or_create_key
from kernel.records.retention import RetentionTask
from kernel.rooms import RoomRegistry
from kernel.routing import ROUTER
from media.service import setup as media_setup
from recording.service import setup as recording_setup
from rehab_vision import setup as rehab_setup
from rtc_server import audit_http, http_api, security
from rtc_server.config import Settings, prepare_data_dir, signing_secret
from rtc_server.keys import (
    ACCESS,
    AUDIT,
    METRICS,
    NAMESPACE,
    RECORD_CONTRIBUTORS,
    RECORDS,
    RETENTION,
    ROOMS,
    SETTINGS,
    SIGNALING,
    SIO,
)
from rtc_server.migrations import open_store
from rtc_server.token_watch import token_watch_ctx
from rtc_server.webhooks import WEBHOOKS, Webhooks
from rtc_server.workers import make_router
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
    store = open_store(settings.db_url, node=settings.node_id)
    registry = RoomRegistry(
        store, settings.lobby_policy, limits.max_rooms, limits.chat_history_on_join
    )
    metrics.track_totals(registry.totals)
    if settings.audit_key_file is None:
        # whoever can rewrite the database can then re-sign it: docs/operations.md, Security
        log.warning("the audit signing key is in the data dir; set audit_key_file elsewhere")
    audit = AuditLog(
        store,
        load_or_create_key(settings.audit_key_file or settings.data_dir / KEY_FILE),
        settings.audit_head_interval_s,
        log_id=settings.node_id,
    )
    # scale-out: where rooms live (one node by default); see kernel/routing.py
    router = make_router(settings, registry.totals, lambda: list(registry.rooms))

    # the engine-level bound closes a connection outright; below it, oversize events get a
    # typed error from the namespace instead
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        # browsers may connect from this server's own pages, and from listed origins only
        cors_allowed_origins=settings.cors_origins or None,
        max_http_buffer_size=max(1024 * 1024, 4 * limits.max_message_bytes),
        ping_interval=limits.ping_interval_s,
        ping_timeout=limits.ping_timeout_s,
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
    # webhooks to the hospital's systems: queued under locks, sent from their own task
    assert settings.webhook_key is not None
    webhooks = Webhooks(
        store, settings.webhooks, settings.webhook_key.get_secret_value(), settings.node_id
    )
    webhooks.listen(ns)
    app[WEBHOOKS] = webhooks
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
    app[SIGNALING] = ns  # what features see of it (FeatureHost)
    app[NAMESPACE] = ns
    app[ROUTER] = router
    app[ACCESS] = Access(
        secret=signing_secret(settings),
        admin_api_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else "",
        base_url=settings.base_url,
        public_url=settings.public_url,
        token_ttl_s=settings.token_ttl_s,
        lobby_policy=settings.lobby_policy,
    )

    security.setup(app, settings)
    http_api.setup(app)
    record_api.setup(app)  # the consult record's export
    identifiers.setup(ns, store)  # the hospital IDs (join token `mrn`) the record carries
    web_client.setup(app)
    # feature packages register here, each with what it needs: routes, handlers, listeners
    # and the audit policy of its events
    media = media_setup(
        app, ns, settings.media, metrics, participant_labels=settings.metrics_participant_labels
    )
    recording_setup(app, ns, store, settings.data_dir / "recordings", media)
    annotation_setup(app, ns, store, settings.data_dir, settings.uploads, settings.pacs)
    rehab_setup(app, ns, media, store, settings.rehab)
    clinic_setup(app, ns, store, settings.mqtt, media, webhooks.send)

    app.cleanup_ctx.append(_records_ctx)
    app.cleanup_ctx.append(_router_ctx)
    app.cleanup_ctx.append(token_watch_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(_loop_lag_ctx)
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


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    webhooks = app[WEBHOOKS]
    await webhooks.start()
    yield
    await webhooks.close()


async def _loop_lag_ctx(app: web.Application) -> AsyncIterator[None]:
    lag = app[METRICS].loop_lag
    lag.start()
    yield
    await lag.close()


async def _shutdown_signaling(app: web.Application) -> None:
    await app[NAMESPACE].shutdown()
