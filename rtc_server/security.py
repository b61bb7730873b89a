"""HTTP hardening: security headers and CSP on every response, TLS context (the room
membership check of HTTP routes is kernel/membership.py)."""

from __future__ import annotations

import re
import ssl

from aiohttp import web

from rtc_server.config import Settings

#: what a Host header may be to appear in the CSP: a host name or IP (IPv6 in brackets), a port
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
PERMISSIONS = "camera=(self), microphone=(self), display-capture=(self), speaker-selection=(self)"


def content_security_policy(host: str, frame_ancestors: str = "'none'") -> str:
    """CSP for the browser app: only this server's own scripts, styles, media and sockets.

    The Host header is the client's to choose: it is named in connect-src only when it is a
    plain host[:port] (anything else, e.g. `;` or a space, could inject a directive)."""
    sockets = f" ws://{host} wss://{host}" if _HOST_RE.match(host or "") else ""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob: mediastream:",
            f"connect-src 'self'{sockets}",
            "worker-src 'self' blob:",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
        ]
    )


def setup(app: web.Application, settings: Settings) -> None:
    """Add security headers to every response, errors and websockets included."""
    tls = settings.tls_cert is not None
    # the hospital portal may embed the join page: `frame_ancestors` origins, else nobody
    ancestors = " ".join(settings.frame_ancestors) or "'none'"

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        # join links carry tokens in the query: never send them on as a referrer
        headers.setdefault("Referrer-Policy", "no-referrer")
        if not settings.frame_ancestors:
            headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Permissions-Policy", PERMISSIONS)
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault(
            "Content-Security-Policy", content_security_policy(request.host, ancestors)
        )
        if request.path in ("/", "/join"):
            headers["Cache-Control"] = "no-store"
        if tls:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    app.on_response_prepare.append(add_headers)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context from the configured certificate and key, or None."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
