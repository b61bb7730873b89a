"""Audit of document HTTP routes: uploads, views, exports and sends to a PACS, with the
caller's identity."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from kernel.access import bearer_of
from kernel.errors import SignalingError
from kernel.tokens import verify_token
from rtc_server.keys import ACCESS, AUDIT

DOCUMENT_PATH = re.compile(
    r"^/api/rooms/(?P<room>[^/]+)/documents(?:/(?P<doc>[^/]+)(?P<rest>/.*)?)?$"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _action(method: str, doc: str | None, rest: str | None) -> str | None:
    if method == "POST" and doc is None:
        return "document.upload"
    if method == "POST" and rest == "/send-to-pacs":
        return "document.send_to_pacs"  # documents leave for another system
    if method != "GET" or doc is None:
        return None  # listing a room's documents is not audited
    if rest and rest.startswith("/export"):
        return "document.export"
    if rest and rest.startswith("/frames/"):
        return None  # every slice scrolled past: the open (doc:open) is the audited view
    return "document.view"


def middleware(secret: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """An aiohttp middleware writing one audit entry per document upload, view, export and
    send to a PACS."""

    @web.middleware
    async def audit_documents(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = DOCUMENT_PATH.match(request.path)
        action = _action(request.method, match["doc"], match["rest"]) if match else None
        if action is None or match is None:
            return await handler(request)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            token = bearer_of(request)
            subject = "anonymous"
            if token:
                try:
                    subject = verify_token(secret, token).identity
                except SignalingError:
                    # the admin key reads documents for the consult record's attachment URLs
                    admin = request.app[ACCESS].is_admin(token)
                    subject = "admin" if admin else "invalid-token"
            obj = f"room:{match['room']}" + (f"/doc:{match['doc']}" if match["doc"] else "")
            result = "ok" if status < 400 else str(status)
            audit = request.app[AUDIT]
            ip = request.remote or ""
            # refused requests (unauthenticated floods above all): the first of a kind per
            # window, then a count (AuditLog.aggregate)
            if result == "ok" or audit.aggregate(action, subject, obj, result, ip):
                await audit.append(action, subject, obj, result, {"ip": ip, "path": request.path})

    return audit_documents
