"""Shared documents of a room and their live annotation (pycrdt/Yjs), DICOM, export.

``setup(app)`` registers the HTTP routes, the ``doc:*`` Socket.IO events and the shutdown hook.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from aiohttp import web

Authenticate = Callable[[str, str], tuple[str, str, Callable[[str], bool]]]


def token_authenticator(secret: str) -> Authenticate:
    """Verify a join token for a room: (identity, name, has_grant)."""
    from signaling.errors import ErrorCode, SignalingError
    from signaling.tokens import verify_token

    def authenticate(room: str, token: str) -> tuple[str, str, Callable[[str], bool]]:
        claims = verify_token(secret, token)
        if claims.room != room:
            raise SignalingError(ErrorCode.TOKEN_INVALID, "The token is for another room.")
        return claims.identity, claims.name, claims.grants.has

    return authenticate


def setup(app: web.Application) -> None:
    """Register documents and annotation with the server application."""
    from rtc_server.config import signing_secret
    from rtc_server.keys import RECORD_CONTRIBUTORS, RECORDS, RETENTION, SETTINGS, SIGNALING

    from . import tables  # noqa: F401  (tables on the shared metadata before create_all)
    from .record import record_section
    from .routes import Routes
    from .service import ANNOTATION, AnnotationService

    settings = app[SETTINGS]
    service = AnnotationService(app[RECORDS], settings.data_dir)
    service.register(app[SIGNALING])
    Routes(service, token_authenticator(signing_secret(settings))).add_to(app)
    app[ANNOTATION] = service
    app[RECORD_CONTRIBUTORS].append(partial(record_section, service))
    app[RETENTION].cleanups.append(service.collect_blobs)

    async def _close(_app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_close)
