"""Typed keys of the composition root's own objects; the kernel's are in kernel/keys.py
(re-exported here for the root's modules)."""

from __future__ import annotations

import socketio
from aiohttp import web

from kernel.keys import (
    ACCESS,
    AUDIT,
    METRICS,
    RECORD_CONTRIBUTORS,
    RECORDS,
    RETENTION,
    ROOMS,
    SIGNALING,
)
from rtc_server.config import Settings
from signaling.namespace import ConsultNamespace

SETTINGS = web.AppKey("settings", Settings)
SIO = web.AppKey("sio", socketio.AsyncServer)
#: the concrete namespace (connections, revocation, shutdown): the root's view of SIGNALING
NAMESPACE = web.AppKey("namespace", ConsultNamespace)

__all__ = [
    "ACCESS",
    "AUDIT",
    "METRICS",
    "NAMESPACE",
    "RECORDS",
    "RECORD_CONTRIBUTORS",
    "RETENTION",
    "ROOMS",
    "SETTINGS",
    "SIGNALING",
    "SIO",
]
