"""HTTP hardening: security headers and CSP on every response, TLS context."""

from __future__ import annotations

import ssl

from aiohttp import web

from rtc_server.config import Settings

PERMISSIONS = "camera=(self), microphone=(self), display-capture=(self), speaker-selection=(self)"


def content_security_policy(host: str) -> str:
    """CSP for the browser app: only this server's own scripts, styles, media and sockets."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob: mediastream:",
            f"connect-src 'self' ws://{host} wss://{host}",
            "worker-src 'self' blob:",
            "font-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def setup(app: web.Application, settings: Settings) -> None:
    """Add security headers to every response, errors and websockets included."""
    tls = settings.tls_cert is not None

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        # join links carry tokens in the query: never send them on as a referrer
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Permissions-Policy", PERMISSIONS)
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        headers.setdefault("Content-Security-Policy", content_security_policy(request.host))
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
