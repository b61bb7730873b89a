"""Typed keys of the aiohttp Application's shared kernel objects (features read these).

The composition root's own keys (settings, the Socket.IO server, the concrete namespace) are
in ``rtc_server/keys.py``."""

from __future__ import annotations

from aiohttp import web

from kernel.access import Access
from kernel.extensions import FeatureHost
from kernel.metrics import Metrics
from kernel.records.audit import AuditLog
from kernel.records.consult_record import RecordContributor
from kernel.records.retention import RetentionTask
from kernel.records.store import RecordStore
from kernel.rooms import RoomRegistry

RECORDS = web.AppKey("records", RecordStore)
ROOMS = web.AppKey("rooms", RoomRegistry)
METRICS = web.AppKey("metrics", Metrics)
AUDIT = web.AppKey("audit", AuditLog)
RECORD_CONTRIBUTORS = web.AppKey("record_contributors", list[RecordContributor])
RETENTION = web.AppKey("retention", RetentionTask)
ACCESS = web.AppKey("access", Access)
#: the signaling host features register with (the same object as rtc_server.keys.NAMESPACE)
SIGNALING = web.AppKey("signaling", FeatureHost)
