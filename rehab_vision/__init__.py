"""Pose estimation, exercise specs, rep counting and form scoring for guided rehab.

``setup(app, host, media, store, settings)`` wires the live part into the server (see
:mod:`rehab_vision.service`); the offline part (specs, counting, scoring, ``score-video``)
needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from kernel.records.store import RecordStore
    from signaling.extensions import FeatureHost

    from .service import TapSource
    from .settings import RehabSettings


def setup(
    app: web.Application,
    host: FeatureHost,
    media: TapSource,
    store: RecordStore,
    settings: RehabSettings,
) -> None:
    """Register rehab sessions with the server application (after the SFU's setup)."""
    from .service import setup as service_setup

    service_setup(app, host, media, store, settings)
