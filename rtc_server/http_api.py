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
from rtc_server.keys import (
    AUDIT,
    METRICS,
    RECORD_CONTRIBUTORS,
    RECORDS,
    RETENTION,
    ROOMS,
    SETTINGS,
    SIGNALING,
)
from rtc_server.records.consult_record import gather_record, to_fhir_bundle, to_summary
from signaling.grants import Grants, Role
from signaling.tokens import NAME_PATTERN, mint_token, verify_token

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


class RevokeRequest(BaseModel):
    """Body of POST /api/tokens/revoke."""

    model_config = ConfigDict(extra="forbid")

    jti: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class PurgeRequest(BaseModel):
    """Body of POST /api/records/purge."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = True


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


async def _check_admin(request: web.Request, action: str) -> web.Response | None:
    """None if the request carries the admin API key, else the 401 to send (audited)."""
    settings: Settings = request.app[SETTINGS]
    expected = settings.admin_api_key.get_secret_value() if settings.admin_api_key else ""
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        return None
    log.warning("admin API: refused %s from %s", action, request.remote)
    await request.app[AUDIT].append(
        f"admin.{action}", "admin", "api", "unauthorized", {"ip": request.remote}
    )
    return _error(401, "unauthorized", "A valid admin API key is required.")


async def _admin_body(request: web.Request, action: str) -> bytes | web.Response:
    """Check the admin API key and read a bounded body."""
    refused = await _check_admin(request, action)
    if refused is not None:
        return refused
    if request.content_length is not None and request.content_length > 16384:
        return _error(413, "payload_too_large", "The request body is too large.")
    body = await request.content.read(16385)
    if len(body) > 16384:
        return _error(413, "payload_too_large", "The request body is too large.")
    return body


def _invalid(exc: ValidationError) -> web.Response:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return _error(400, "invalid_payload", f"{where}: {first['msg']}")


async def create_token(request: web.Request) -> web.Response:
    """Mint a join token for the hospital's own systems (admin API key required)."""
    settings: Settings = request.app[SETTINGS]
    raw = await _admin_body(request, "token_mint")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = TokenRequest.model_validate_json(raw)
    except ValidationError as exc:
        return _invalid(exc)
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
    raw = await _admin_body(request, "token_revoke")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = RevokeRequest.model_validate_json(raw)
    except ValidationError as exc:
        return _invalid(exc)
    kicked = await request.app[SIGNALING].revoke(body.jti, "admin", body.reason)
    return web.json_response({"revoked": body.jti, "disconnected": kicked})


async def export_record(request: web.Request) -> web.Response:
    """The consult record of a room as a FHIR Bundle (default) or a Markdown summary."""
    refused = await _check_admin(request, "record_export")
    if refused is not None:
        return refused
    room = request.match_info["room"]
    fmt = request.query.get("format", "fhir")
    if fmt not in ("fhir", "summary"):
        return _error(400, "invalid_payload", "format: use fhir or summary")
    try:
        record = await gather_record(request.app[RECORDS], room, request.app[RECORD_CONTRIBUTORS])
    except LookupError as exc:
        return _error(404, "not_found", str(exc))
    await request.app[AUDIT].append(
        "record.export", "admin", f"room:{room}", "ok", {"format": fmt, "ip": request.remote}
    )
    if fmt == "summary":
        return web.Response(text=to_summary(record), content_type="text/markdown")
    return web.json_response(to_fhir_bundle(record), content_type="application/fhir+json")


async def purge_records(request: web.Request) -> web.Response:
    """Apply the retention period now (dry run by default): list or delete expired consults."""
    raw = await _admin_body(request, "records_purge")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = PurgeRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        return _invalid(exc)
    return web.json_response(await request.app[RETENTION].run_once(dry_run=body.dry_run))


def setup(app: web.Application) -> None:
    """Register the HTTP API routes."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/tokens", create_token)
    app.router.add_post("/api/tokens/revoke", revoke_token)
    app.router.add_post("/api/records/purge", purge_records)
    app.router.add_get(
        r"/api/rooms/{room:[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}}/record", export_record
    )
