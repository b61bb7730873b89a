"""Shared documents of a room and their live annotation (pycrdt/Yjs), DICOM, export.

``setup(app, host, ...)`` registers the HTTP routes, the ``doc:*`` Socket.IO events, their
audit policy and the shutdown hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from kernel.records.store import RecordStore
    from signaling.extensions import FeatureHost

    from .settings import PacsSettings, UploadSettings

#: (room, bearer token, write) -> (identity, name, grants.has), or SignalingError
Authenticate = Callable[[str, str, bool], Awaitable[tuple[str, str, Callable[[str], bool]]]]


def member_authenticator(app: web.Application) -> Authenticate:
    """Verify a bearer token for a room and the holder's current membership (not waiting,
    denied, removed or revoked: kernel.membership.room_member)."""
    from kernel.membership import room_member

    async def authenticate(
        room: str, token: str, write: bool
    ) -> tuple[str, str, Callable[[str], bool]]:
        claims = await room_member(app, room, token, write)
        return claims.identity, claims.name, claims.grants.has

    return authenticate


def admin_or_token(authenticate: Authenticate, is_admin: Callable[[str], bool]) -> Authenticate:
    """Also let the admin API key read (never write: it has no grant), so the consult record's
    attachment URLs can be fetched by the hospital's systems."""

    async def check(room: str, token: str, write: bool) -> tuple[str, str, Callable[[str], bool]]:
        if is_admin(token):
            return "admin", "admin", lambda _grant: False
        return await authenticate(room, token, write)

    return check


def setup(
    app: web.Application,
    host: FeatureHost,
    store: RecordStore,
    data_dir: Path,
    uploads: UploadSettings,
    pacs: PacsSettings | None = None,
) -> None:
    """Register documents and annotation: files under ``data_dir/documents``, uploads bounded
    by ``uploads``, exports sent to ``pacs`` if one is configured."""
    from kernel.keys import ACCESS, RECORD_CONTRIBUTORS, RETENTION

    from . import tables  # noqa: F401  (tables on the shared metadata before create_all)
    from .record import add_original_route, record_section
    from .routes import Routes
    from .service import ANNOTATION, AnnotationService
    from .uploads import UploadLimits

    service = AnnotationService(store, data_dir, limits=UploadLimits(**uploads.model_dump()))
    service.register(host)
    # document events worth an audit entry each, or a per-connection count (sync is high-rate)
    host.audit_events({"doc:open": "each", "doc:sync": "summary"})
    authenticate = admin_or_token(member_authenticator(app), app[ACCESS].is_admin)
    routes = Routes(service, authenticate, pacs)
    routes.add_to(app)
    add_original_route(app, service, routes.wrap)
    app[ANNOTATION] = service
    app[RECORD_CONTRIBUTORS].append(partial(record_section, service))
    app[RETENTION].cleanups.append(service.collect_blobs)

    async def _close(_app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_close)
