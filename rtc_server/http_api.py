"""HTTP endpoints: health, Prometheus metrics, and the admin token API."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text

from kernel.access import bearer_of
from kernel.grants import Grants, Role
from kernel.http import admin_body, admin_refusal, error, invalid
from kernel.routing import ROUTER
from kernel.tokens import (
    MRN_PATTERN,
    NAME_PATTERN,
    SYSTEM_PATTERN,
    CareTeam,
    mint_token,
    verify_token,
)
from rtc_server import __version__
from rtc_server.config import Settings, signing_secret
from rtc_server.keys import (
    AUDIT,
    METRICS,
    NAMESPACE,
    RECORDS,
    RETENTION,
    ROOMS,
    SETTINGS,
)

log = logging.getLogger(__name__)
#: the runner of the separate metrics listener (`metrics_port`), for its bound address
METRICS_SITE = web.AppKey("metrics_site", web.AppRunner)


class TokenRequest(BaseModel):
    """Body of POST /api/tokens."""

    model_config = ConfigDict(extra="forbid")

    room: str = Field(pattern=NAME_PATTERN)
    identity: str = Field(pattern=NAME_PATTERN)
    role: Role
    name: str | None = Field(default=None, min_length=1, max_length=128)
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 24 * 3600)
    grants: Grants | None = None
    # the hospital's identifier of the person (MRN, staff number) for the consult record
    mrn: str | None = Field(default=None, pattern=MRN_PATTERN)
    mrn_system: str | None = Field(default=None, pattern=SYSTEM_PATTERN)
    care_team: CareTeam | None = None


class RevokeRequest(BaseModel):
    """Body of POST /api/tokens/revoke."""

    model_config = ConfigDict(extra="forbid")

    jti: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class PurgeRequest(BaseModel):
    """Body of POST /api/records/purge."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = True


async def healthz(request: web.Request) -> web.Response:
    """Liveness and a glance at load."""
    rooms, participants, waiting = request.app[ROOMS].totals()
    return web.json_response(
        {
            "status": "ok",
            "version": __version__,
            "rooms": rooms,
            "participants": participants,
            "waiting": waiting,
        }
    )


READY_TIMEOUT_S = 2.0


async def _probe(check: Any) -> str:
    """'ok', or what went wrong (the exception's type: no URLs or secrets)."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await check()
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT_S:.0f} s"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the records database answers (and Redis, in cluster mode); 503 otherwise,
    and while shutting down. `/healthz` stays a liveness probe that touches nothing."""
    store = request.app[RECORDS]

    async def database() -> None:
        async with store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    checks = {"database": await _probe(database)}
    redis = getattr(request.app[ROUTER], "redis", None)
    if redis is not None:
        checks["redis"] = await _probe(redis.ping)
    if request.app[NAMESPACE].closing:
        checks["accepting"] = "shutting down"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def metrics_refusal(request: web.Request, settings: Settings) -> web.Response | None:
    """None if this request may read /metrics: with `metrics_token` set, only a request
    bearing it; without one, only a direct loopback request (a reverse proxy on the same host
    shows as loopback, so proxied requests, which carry its headers, are refused)."""
    if settings.metrics_token is not None:
        given = bearer_of(request)
        expected = settings.metrics_token.get_secret_value()
        if hmac.compare_digest(given.encode(), expected.encode()):
            return None
        return error(401, "unauthorized", "A valid metrics token is required.")
    if request.remote in LOOPBACK and not any(h in request.headers for h in PROXY_HEADERS):
        return None
    return error(
        403, "forbidden", "Metrics are served to loopback only unless metrics_token is set."
    )


def metrics_response(request: web.Request, registry: Any, settings: Settings) -> web.Response:
    """Prometheus text exposition, or the refusal."""
    refused = metrics_refusal(request, settings)
    if refused is not None:
        return refused
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition on the main port (unless metrics have a port of their own)."""
    settings: Settings = request.app[SETTINGS]
    if settings.metrics_port is not None:
        raise web.HTTPNotFound()
    return metrics_response(request, request.app[METRICS].registry, settings)


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """`metrics_port`: serve /metrics on a listener of its own (e.g. an internal interface)."""
    settings: Settings = app[SETTINGS]
    if settings.metrics_port is None:
        yield
        return
    registry = app[METRICS].registry
    side = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return metrics_response(request, registry, settings)

    side.router.add_get("/metrics", handler)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    app[METRICS_SITE] = runner
    log.info("metrics on http://%s:%s/metrics", settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()


async def create_token(request: web.Request) -> web.Response:
    """Mint a join token for the hospital's own systems (admin API key required)."""
    settings: Settings = request.app[SETTINGS]
    raw = await admin_body(request, "token_mint")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = TokenRequest.model_validate_json(raw)
    except ValidationError as exc:
        return invalid(exc)
    if body.mrn_system and not body.mrn:
        return error(400, "invalid_payload", "mrn_system: given without an mrn")
    ttl = body.ttl_s or settings.token_ttl_s
    token = mint_token(
        signing_secret(settings),
        room=body.room,
        identity=body.identity,
        role=body.role,
        name=body.name,
        ttl_s=ttl,
        grants=body.grants,
        mrn=body.mrn,
        mrn_system=body.mrn_system,
        care_team=body.care_team,
    )
    jti = verify_token(signing_secret(settings), token).jti
    await request.app[AUDIT].append(
        "admin.token_mint",
        "admin",
        f"room:{body.room}/{body.identity}",
        "ok",
        {"role": body.role.value, "jti": jti, "ttl_s": ttl, "ip": request.remote},
    )
    log.info("admin API: minted a %s token for room %s", body.role.value, body.room)
    return web.json_response(
        {
            "token": token,
            "jti": jti,
            "url": settings.join_url(token),
            "expires_at": int(time.time()) + ttl,
        },
        status=201,
    )


async def revoke_token(request: web.Request) -> web.Response:
    """Withdraw a join token by its jti; its live connections are closed."""
    raw = await admin_body(request, "token_revoke")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = RevokeRequest.model_validate_json(raw)
    except ValidationError as exc:
        return invalid(exc)
    kicked = await request.app[NAMESPACE].revoke(body.jti, "admin", body.reason)
    return web.json_response({"revoked": body.jti, "disconnected": kicked})


async def purge_records(request: web.Request) -> web.Response:
    """Apply the retention period now (dry run by default): list or delete expired consults."""
    raw = await admin_body(request, "records_purge")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = PurgeRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        return invalid(exc)
    return web.json_response(await request.app[RETENTION].run_once(dry_run=body.dry_run))


def _room_summary(room: Any, node: str) -> dict[str, Any]:
    return {
        "name": room.name,
        "created_at": room.created_at,
        "locked": room.locked,
        "lobby_policy": room.lobby_policy,
        "ended": room.ended,
        "participants": len(room.participants),
        "waiting": len(room.lobby),
        "node": node,
    }


async def list_rooms(request: web.Request) -> web.Response:
    """The rooms this node hosts now (admin API key; LiveKit's ListRooms)."""
    refused = await admin_refusal(request, "rooms_list")
    if refused is not None:
        return refused
    settings: Settings = request.app[SETTINGS]
    registry = request.app[ROOMS]
    rooms = [_room_summary(room, settings.node_id) for room in list(registry.rooms.values())]
    await request.app[AUDIT].append(
        "admin.rooms_list", "admin", "api", "ok", {"rooms": len(rooms), "ip": request.remote}
    )
    return web.json_response({"node": settings.node_id, "rooms": rooms})


async def list_participants(request: web.Request) -> web.Response:
    """Who is in a room hosted here, and who waits in its lobby (admin API key)."""
    refused = await admin_refusal(request, "participants_list")
    if refused is not None:
        return refused
    name = request.match_info["room"]
    room = request.app[ROOMS].get(name)
    if room is None:
        return error(404, "not_found", f"Room {name} is not active on this node.")
    participants = [
        {k: v for k, v in p.public().items() if k != "grants"}
        for p in list(room.participants.values())
    ]
    waiting = [
        {
            "identity": e.identity,
            "name": e.name,
            "role": e.role.value,
            "requested_at": e.requested_at,
        }
        for e in room.lobby_order()
    ]
    await request.app[AUDIT].append(
        "admin.participants_list", "admin", f"room:{name}", "ok", {"ip": request.remote}
    )
    return web.json_response(
        {
            "room": _room_summary(room, request.app[SETTINGS].node_id),
            "participants": participants,
            "waiting": waiting,
        }
    )


def setup(app: web.Application) -> None:
    """Register the HTTP API routes."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_metrics_listener)
    app.router.add_post("/api/tokens", create_token)
    app.router.add_post("/api/tokens/revoke", revoke_token)
    app.router.add_post("/api/records/purge", purge_records)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_get(
        r"/api/rooms/{room:[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}}/participants", list_participants
    )
