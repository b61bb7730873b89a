"""HTTP route of the consult record: the export (FHIR or summary); ``record_reader`` also
guards the recording files (recording/routes.py).

Who may read a room's record: the admin API key (the hospital's systems), or the join token of
a host or clinician of that room: valid, not revoked, and of someone who was admitted to the
consult and not removed from it. Both are audited (`record.export`, `record.file`).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from kernel.access import bearer_of
from kernel.errors import SignalingError
from kernel.grants import Role
from kernel.http import error
from kernel.keys import ACCESS, AUDIT, RECORD_CONTRIBUTORS, RECORDS
from kernel.records.consult_record import (
    FHIR_MIME,
    gather_record,
    to_fhir_bundle,
    to_summary,
)
from kernel.tokens import verify_token

log = logging.getLogger(__name__)

ROOM = r"{room:[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}}"
READER_ROLES = (Role.HOST, Role.CLINICIAN)


class Refused(Exception):
    """The caller may not read this record: status, code and a reason to show."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def record_reader(request: web.Request, room: str) -> str:
    """Who reads the record ("admin" or a clinician's identity); raises Refused."""
    access = request.app[ACCESS]
    bearer = bearer_of(request)
    if not bearer:
        raise Refused(401, "unauthorized", "A join token or the admin API key is required.")
    if access.is_admin(bearer):
        return "admin"
    try:
        claims = verify_token(access.secret, bearer)
    except SignalingError as exc:
        raise Refused(401, exc.code, exc.message) from exc
    store = request.app[RECORDS]
    if claims.room != room:
        raise Refused(403, "permission_denied", "The token is for another room.")
    if await store.is_revoked(claims.jti):
        raise Refused(401, "token_revoked", "This join link has been withdrawn.")
    if claims.role not in READER_ROLES:
        raise Refused(403, "permission_denied", "Only the consult's clinicians read its record.")
    if claims.identity not in await store.known_identities(room):
        raise Refused(403, "permission_denied", "You did not take part in this consult.")
    if claims.identity in await store.bans(room):
        raise Refused(403, "permission_denied", "You were removed from this consult.")
    return claims.identity


async def reader_or_response(request: web.Request, room: str, action: str) -> str | web.Response:
    try:
        return await record_reader(request, room)
    except Refused as exc:
        audit = request.app[AUDIT]
        # a flood of refusals costs one row per window, as on the other refusal paths
        if audit.aggregate(action, "anonymous", f"room:{room}", exc.code, request.remote or ""):
            log.warning("record: refused %s of a room to %s", action, request.remote)
            await audit.append(
                action, "anonymous", f"room:{room}", exc.code, {"ip": request.remote}
            )
        return error(exc.status, exc.code, exc.message)


async def export_record(request: web.Request) -> web.Response:
    """The consult record as a FHIR R4 Bundle (default; ``?bundle=transaction`` for a FHIR
    server) or a Markdown summary (``?format=summary``)."""
    room = request.match_info["room"]
    who = await reader_or_response(request, room, "record.export")
    if isinstance(who, web.Response):
        return who
    fmt = request.query.get("format", "fhir")
    kind = request.query.get("bundle", "collection")
    if fmt not in ("fhir", "summary"):
        return error(400, "invalid_payload", "format: use fhir or summary")
    if kind not in ("collection", "transaction"):
        return error(400, "invalid_payload", "bundle: use collection or transaction")
    try:
        record = await gather_record(request.app[RECORDS], room, request.app[RECORD_CONTRIBUTORS])
    except LookupError as exc:
        return error(404, "not_found", str(exc))
    await request.app[AUDIT].append(
        "record.export",
        who,
        f"room:{room}",
        "ok",
        {"format": fmt, "bundle": kind, "ip": request.remote},
    )
    if fmt == "summary":
        return web.Response(text=to_summary(record), content_type="text/markdown")
    # absolute URLs: the configured public URL, else the address this request came to
    base = request.app[ACCESS].public_url or f"{request.scheme}://{request.host}"
    bundle = to_fhir_bundle(record, base, kind)
    body = json.dumps(bundle, ensure_ascii=False).encode()
    return web.Response(body=body, headers={"Content-Type": f"{FHIR_MIME}; charset=utf-8"})


def setup(app: web.Application) -> None:
    """Register the record route."""
    app.router.add_get(f"/api/rooms/{ROOM}/record", export_record)
