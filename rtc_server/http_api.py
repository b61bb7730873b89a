"""HTTP endpoints: health, Prometheus metrics, and the admin token API."""

from __future__ import annotations

import hmac
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rtc_server import __version__
from rtc_server.config import Settings, signing_secret
from rtc_server.keys import METRICS, ROOMS, SETTINGS
from signaling.grants import Grants, Role
from signaling.tokens import NAME_PATTERN, mint_token

log = logging.getLogger(__name__)


class TokenRequest(BaseModel):
    """Body of POST /api/tokens."""

    model_config = ConfigDict(extra="forbid")

    room: str = Field(pattern=NAME_PATTERN)
    identity: str = Field(pattern=NAME_PATTERN)
    role: Role
    name: str | None = Field(default=None, min_length=1, max_length=128)
    ttl_s: int | None = Field(default=None, ge=60, le=30 * 24 * 3600)
    grants: Grants | None = None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


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


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def create_token(request: web.Request) -> web.Response:
    """Mint a join token for the hospital's own systems (admin API key required)."""
    settings: Settings = request.app[SETTINGS]
    expected = settings.admin_api_key.get_secret_value() if settings.admin_api_key else ""
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("admin API: refused token request from %s", request.remote)
        return _error(401, "unauthorized", "A valid admin API key is required.")
    if request.content_length is not None and request.content_length > 16384:
        return _error(413, "payload_too_large", "The request body is too large.")
    try:
        body = TokenRequest.model_validate_json(await request.read())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        return _error(400, "invalid_payload", f"{where}: {first['msg']}")
    ttl = body.ttl_s or settings.token_ttl_s
    token = mint_token(
        signing_secret(settings),
        room=body.room,
        identity=body.identity,
        role=body.role,
        name=body.name,
        ttl_s=ttl,
        grants=body.grants,
    )
    log.info("admin API: minted a %s token for room %s", body.role.value, body.room)
    return web.json_response(
        {"token": token, "url": settings.join_url(token), "expires_at": int(time.time()) + ttl},
        status=201,
    )


def setup(app: web.Application) -> None:
    """Register the HTTP API routes."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/tokens", create_token)
