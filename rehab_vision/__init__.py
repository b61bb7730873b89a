"""Pose estimation, exercise specs, rep counting and form scoring for guided rehab.

``setup(app)`` wires the live part into the server (see :mod:`rehab_vision.service`); the
offline part (specs, counting, scoring, ``score-video``) needs none of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


def setup(app: web.Application) -> None:
    """Register rehab sessions with the server application (after the SFU's setup)."""
    from .service import setup as service_setup

    service_setup(app)
