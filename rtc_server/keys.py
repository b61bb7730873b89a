"""Typed keys of the aiohttp Application's shared objects."""

from __future__ import annotations

import socketio
from aiohttp import web

from rtc_server.config import Settings
from rtc_server.metrics import Metrics
from rtc_server.records.audit import AuditLog
from rtc_server.records.consult_record import RecordContributor
from rtc_server.records.retention import RetentionTask
from rtc_server.records.store import RecordStore
from rtc_server.rooms import RoomRegistry
from signaling.namespace import ConsultNamespace

SETTINGS = web.AppKey("settings", Settings)
RECORDS = web.AppKey("records", RecordStore)
ROOMS = web.AppKey("rooms", RoomRegistry)
METRICS = web.AppKey("metrics", Metrics)
SIO = web.AppKey("sio", socketio.AsyncServer)
SIGNALING = web.AppKey("signaling", ConsultNamespace)
AUDIT = web.AppKey("audit", AuditLog)
RECORD_CONTRIBUTORS = web.AppKey("record_contributors", list[RecordContributor])
RETENTION = web.AppKey("retention", RetentionTask)
