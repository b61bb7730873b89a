"""The HTTP routes' shared answers: the error body, a bounded JSON body, the admin-key check.

Every route of the root and of the features answers errors as ``{"error": {code, message}}``
and checks the admin API key the same way (audited; a flood of refusals is aggregated)."""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import ValidationError

from .access import bearer_of
from .keys import ACCESS, AUDIT

log = logging.getLogger(__name__)

MAX_BODY = 16384  # bytes of a JSON request body, unless a route says otherwise


def error(status: int, code: str, message: str) -> web.Response:
    """The project's error body: {"error": {code, message}}."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def invalid(exc: ValidationError) -> web.Response:
    """400 naming the first invalid field of a request body."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return error(400, "invalid_payload", f"{where}: {first['msg']}")


async def bounded_body(request: web.Request, limit: int = MAX_BODY) -> bytes | web.Response:
    """The request body, or the 413 to send when it is larger than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return error(413, "payload_too_large", "The request body is too large.")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return error(413, "payload_too_large", "The request body is too large.")
    return body


async def admin_refusal(request: web.Request, action: str) -> web.Response | None:
    """None if the request carries the admin API key, else the 401 to send. Refusals are
    audited as ``admin.<action>``; a flood is aggregated (the first per window, then a count:
    ``AuditLog.aggregate``)."""
    if request.app[ACCESS].is_admin(bearer_of(request)):
        return None
    audit = request.app[AUDIT]
    if audit.aggregate(f"admin.{action}", "admin", "api", "unauthorized", request.remote or ""):
        log.warning("admin API: refused %s from %s", action, request.remote)
        await audit.append(
            f"admin.{action}", "admin", "api", "unauthorized", {"ip": request.remote}
        )
    return error(401, "unauthorized", "A valid admin API key is required.")


async def admin_body(request: web.Request, action: str) -> bytes | web.Response:
    """The admin-key check, then a bounded body (or the response to send)."""
    refused = await admin_refusal(request, action)
    return refused if refused is not None else await bounded_body(request)
