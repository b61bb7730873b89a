"""Consented recording: a moderator asks, each participant answers, only consenters are recorded.

`record:start` (grant `record`) opens a recording and sends every joined participant a
`record:consent_request`; the starter consents by starting. `record:consent` answers (and may
be changed at any time: withdrawing closes that participant's files). Every change is
broadcast as `record:state`, which clients show as a recording indicator; newcomers get the
state in their joined payload and a consent request. Each consenting participant's published
tracks (camera, microphone, screen) are written by an EncodedFileSink without re-encoding.
`record:stop` (or the room ending) closes the files, lists them in the records with their
SHA-256, and writes each to the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from pydantic import Field
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.errors import ErrorCode, SignalingError
from kernel.keys import RECORD_CONTRIBUTORS
from kernel.records.card_fhir import LOINC
from kernel.records.consult_record import (
    RecordSection,
    fhir_time,
    person_ref,
    stable_uuid,
)
from kernel.records.store import RecordStore
from kernel.sources import kind_of
from recording import tables as rt
from recording.sink import EncodedFileSink, SinkResult
from signaling.extensions import Caller, FeatureHost
from signaling.schemas import Inbound, Reason

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.5
RECORDED_SOURCES = ("camera", "microphone", "screen")


class RecordStartIn(Inbound):
    """`record:start`: ask everyone in the room to consent to a recording."""

    reason: Reason | None = None


class RecordStopIn(Inbound):
    """`record:stop`: stop the recording and keep its files."""


class RecordConsentIn(Inbound):
    """`record:consent`: answer (or change the answer to) a consent request."""

    recording_id: str = Field(min_length=1, max_length=32)
    consent: bool


@dataclass
class Recording:
    """One recording of one room."""

    id: str
    room: str
    started_by: str
    reason: str | None
    started_at: float
    consents: dict[str, bool] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    sinks: dict[tuple[str, str], tuple[EncodedFileSink, float]] = field(default_factory=dict)
    files: list[SinkResult] = field(default_factory=list)
    counter: int = 0
    clock_origin: float = field(default_factory=time.monotonic)  # t=0 of every file
    task: asyncio.Task[None] | None = None

    def state(self) -> dict[str, Any]:
        return {
            "active": True,
            "recording_id": self.id,
            "by": self.started_by,
            "reason": self.reason or "",
            "started_at": self.started_at,
            "consented": sorted(i for i, c in self.consents.items() if c),
            "declined": sorted(i for i, c in self.consents.items() if not c),
        }


class MediaRooms(Protocol):
    """What recording needs of the media service: each room's media, whose ``publications``
    map (publisher, source) to a publication a sink can attach to."""

    @property
    def rooms(self) -> Mapping[str, Any]: ...


class RecordingService:
    """Recording with consent for every room of this process."""

    def __init__(
        self, ns: FeatureHost, store: RecordStore, root: Path, media: MediaRooms | None
    ) -> None:
        self.ns = ns
        self.store = store
        self.root = root
        self.media = media
        self.active: dict[str, Recording] = {}
        ns.add_handler("record:start", RecordStartIn, self.on_start, grant="record")
        ns.add_handler("record:stop", RecordStopIn, self.on_stop, grant="record")
        ns.add_handler("record:consent", RecordConsentIn, self.on_consent)
        ns.listen("participant_joined", self.on_joined)
        ns.listen("participant_left", self.on_left)
        ns.listen("room_closed", self.on_room_closed)
        ns.add_join_extra(self.join_extra)

    # -- events -------------------------------------------------------------------------------

    async def on_start(self, caller: Caller, msg: RecordStartIn) -> dict[str, Any]:
        if caller.room in self.active:
            raise SignalingError(ErrorCode.CONFLICT, "A recording is already running.")
        rec = Recording(
            id=uuid.uuid4().hex[:16],
            room=caller.room,
            started_by=caller.identity,
            reason=msg.reason,
            started_at=time.time(),
        )
        self.active[caller.room] = rec

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(rt.recordings).values(
                    id=rec.id,
                    room=rec.room,
                    started_by=rec.started_by,
                    reason=rec.reason,
                    started_at=rec.started_at,
                )
            )

        await self.store.write(run)
        await self.ns.audit(
            "recording.start",
            caller.identity,
            f"room:{caller.room}",
            recording=rec.id,
            reason=msg.reason,
        )
        await self._answer(rec, caller, True)
        request = {"recording_id": rec.id, "by": caller.identity, "reason": msg.reason or ""}
        await self.ns.emit_to_room(
            caller.room, "record:consent_request", request, skip_identity=caller.identity
        )
        rec.task = asyncio.create_task(self._sync_loop(rec), name=f"recording-{rec.id}")
        return {"recording": rec.state()}

    async def on_consent(self, caller: Caller, msg: RecordConsentIn) -> dict[str, Any]:
        rec = self.active.get(caller.room)
        if rec is None or rec.id != msg.recording_id:
            raise SignalingError(ErrorCode.NOT_FOUND, "That recording is not running.")
        await self._answer(rec, caller, msg.consent)
        return {"recording": rec.state()}

    async def on_stop(self, caller: Caller, _msg: RecordStopIn) -> dict[str, Any]:
        rec = self.active.get(caller.room)
        if rec is None:
            raise SignalingError(ErrorCode.NOT_FOUND, "No recording is running.")
        files = await self.stop(rec, caller.identity)
        return {"files": files}

    async def join_extra(self, caller: Caller) -> dict[str, Any]:
        rec = self.active.get(caller.room)
        return {"recording": rec.state() if rec else None}

    async def on_joined(self, caller: Caller) -> None:
        rec = self.active.get(caller.room)
        if rec is not None and caller.identity not in rec.consents:
            await self.ns.emit_to_identity(
                caller.room,
                caller.identity,
                "record:consent_request",
                {"recording_id": rec.id, "by": rec.started_by, "reason": rec.reason or ""},
            )

    async def on_left(self, caller: Caller, _reason: str) -> None:
        rec = self.active.get(caller.room)
        if rec is not None:
            await self._close_sinks(rec, lambda key: key[0] == caller.identity)

    async def on_room_closed(self, room: str) -> None:
        rec = self.active.get(room)
        if rec is not None:
            await self.stop(rec, "room_closed")

    # -- mechanics ----------------------------------------------------------------------------

    async def _answer(self, rec: Recording, caller: Caller, consent: bool) -> None:
        rec.consents[caller.identity] = consent
        rec.names[caller.identity] = caller.name

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(rt.recording_consents).values(
                    recording_id=rec.id,
                    room=rec.room,
                    identity=caller.identity,
                    name=caller.name,
                    consent=consent,
                    at=time.time(),
                )
            )

        await self.store.write(run)
        await self.ns.audit(
            "recording.consent",
            caller.identity,
            f"room:{rec.room}",
            "given" if consent else "refused",
            recording=rec.id,
        )
        await self.sync(rec)
        await self.ns.emit_to_room(rec.room, "record:state", rec.state())

    async def sync(self, rec: Recording) -> None:
        """Record exactly the current publications of the participants who consented."""
        room_media = self.media.rooms.get(rec.room) if self.media is not None else None
        current = {}
        if room_media is not None:
            for (publisher, source), pub in list(room_media.publications.items()):
                if source in RECORDED_SOURCES and rec.consents.get(publisher) and not pub.closed:
                    current[(publisher, source)] = pub
        await self._close_sinks(
            rec, lambda key: key not in current or rec.sinks[key][0].pub is not current[key]
        )
        for key, pub in current.items():
            if key not in rec.sinks:
                rec.counter += 1
                stem = self.root / rec.room / rec.id / f"{key[0]}-{key[1]}-{rec.counter}"
                try:
                    sink = EncodedFileSink(
                        pub, stem, origin=rec.clock_origin, origin_wall=rec.started_at
                    )
                    rec.sinks[key] = (sink, time.time())
                except ValueError as exc:
                    log.warning("recording: %s", exc)

    async def _close_sinks(self, rec: Recording, which: Any) -> None:
        for key in [k for k in rec.sinks if which(k)]:
            sink, started = rec.sinks.pop(key)
            result = await sink.close()
            if result.frames:
                rec.files.append(result)
                await self._keep_file(rec, result, started)

    async def _keep_file(self, rec: Recording, result: SinkResult, started: float) -> None:
        rel = result.path.relative_to(self.root)
        started = rec.started_at + result.start_s  # the first frame, on the recording's clock

        async def run(conn: AsyncConnection) -> None:
            await conn.execute(
                insert(rt.recording_files).values(
                    recording_id=rec.id,
                    room=rec.room,
                    identity=result.identity,
                    source=result.source,
                    path=str(rel),
                    codec=result.codec,
                    container=result.container,
                    frames=result.frames,
                    bytes=result.bytes,
                    duration_s=result.duration_s,
                    dropped=result.dropped,
                    sha256=result.sha256,
                    started_at=started,
                    stopped_at=time.time(),
                )
            )

        await self.store.write(run)
        await self.ns.audit(
            "recording.file",
            result.identity,
            f"room:{rec.room}",
            recording=rec.id,
            path=str(rel),
            sha256=result.sha256,
            frames=result.frames,
            bytes=result.bytes,
        )

    async def _sync_loop(self, rec: Recording) -> None:
        # publications come and go (a camera turned on, a screen shared): follow them
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self.sync(rec)
            except Exception:
                log.exception("recording sync failed")

    async def stop(self, rec: Recording, by: str) -> list[dict[str, Any]]:
        """Close every file of a recording and record that it stopped."""
        if self.active.get(rec.room) is rec:
            del self.active[rec.room]
        if rec.task is not None:
            rec.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rec.task
        await self._close_sinks(rec, lambda _key: True)
        stopped = time.time()
        await self.store.write(
            lambda conn: conn.execute(
                update(rt.recordings)
                .where(rt.recordings.c.id == rec.id)
                .values(stopped_at=stopped, stopped_by=by)
            )
        )
        await self.ns.audit(
            "recording.stop", by, f"room:{rec.room}", recording=rec.id, files=len(rec.files)
        )
        await self.ns.emit_to_room(
            rec.room, "record:state", {"active": False, "recording_id": rec.id}
        )
        await self.ns.notify(
            "recording_finished",
            rec.room,
            {"id": rec.id, "stopped_by": by, "stopped_at": stopped, "files": len(rec.files)},
        )
        return [
            {
                "identity": f.identity,
                "source": f.source,
                "path": str(f.path.relative_to(self.root)),
                "frames": f.frames,
                "bytes": f.bytes,
                "duration_s": f.duration_s,
                "start_s": f.start_s,
            }
            for f in rec.files
        ]

    async def close(self) -> None:
        for rec in list(self.active.values()):
            await self.stop(rec, "server_shutdown")

    # -- the consult record -------------------------------------------------------------------

    async def record_section(self, room: str, encounter_url: str) -> RecordSection:
        """Consent and DocumentReference resources, and summary lines, for a room."""
        async with self.store.engine.connect() as conn:
            consents = list(
                await conn.execute(
                    select(rt.recording_consents)
                    .where(rt.recording_consents.c.room == room)
                    .order_by(rt.recording_consents.c.id)
                )
            )
            rec_start = {
                r.id: r.started_at
                for r in await conn.execute(
                    select(rt.recordings.c.id, rt.recordings.c.started_at).where(
                        rt.recordings.c.room == room
                    )
                )
            }
            files = list(
                await conn.execute(
                    select(rt.recording_files)
                    .where(rt.recording_files.c.room == room)
                    .order_by(rt.recording_files.c.id)
                )
            )
        patient = next((p for p in await self.store.sessions(room) if p["role"] == "patient"), None)
        section = RecordSection("Recordings")
        for c in consents:
            consent: dict[str, Any] = {
                "resourceType": "Consent",
                "id": stable_uuid("consent", room, c.id),
                "status": "active" if c.consent else "rejected",
                "scope": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "patient-privacy",
                            "display": "Privacy Consent",
                        }
                    ]
                },
                "category": [
                    {
                        "coding": [{"system": LOINC, "code": "59284-0", "display": "Consent"}],
                        "text": "consult recording",
                    }
                ],
                "dateTime": fhir_time(c.at),
                # who agreed (or refused): the patient or a clinician being recorded
                "performer": [person_ref(c.identity, c.name)],
                "policyRule": {"text": "recorded only with each participant's consent"},
                "provision": {
                    "type": "permit" if c.consent else "deny",
                    "action": [{"text": f"record consult {c.recording_id}"}],
                },
            }
            # the consult's patient, whoever gave this consent (FHIR: Consent.patient)
            if patient is not None:
                consent["patient"] = person_ref(patient["identity"], patient["name"])
            section.resources.append(consent)
            section.summary_lines.append(
                f"- {fhir_time(c.at)} {c.name} ({c.identity}) "
                f"{'consented to' if c.consent else 'refused'} recording {c.recording_id}"
            )
        names = {c.identity: c.name for c in consents}
        for f in files:
            offset = f.started_at - rec_start.get(f.recording_id, f.started_at)
            mime = f"{kind_of(f.source)}/" + ("webm" if f.container == "webm" else "x-matroska")
            section.resources.append(
                {
                    "resourceType": "DocumentReference",
                    "id": stable_uuid("recording-file", room, f.id),
                    "status": "current",
                    "type": {"text": f"consult recording ({f.source})"},
                    "date": fhir_time(f.stopped_at),
                    "author": [person_ref(f.identity, names.get(f.identity, f.identity))],
                    "description": f"{f.codec} in {f.container}, {f.duration_s:.1f} s, "
                    f"{f.frames} frames, sha256 {f.sha256}",
                    "content": [
                        {
                            "attachment": {
                                "contentType": mime,
                                "url": f"/api/rooms/{room}/recordings/{f.id}",
                                "size": f.bytes,
                                "title": f"{names.get(f.identity, f.identity)} {f.source} "
                                f"{f.duration_s:.0f} s",
                                "creation": fhir_time(f.started_at),
                            }
                        }
                    ],
                    "context": {"encounter": [{"reference": encounter_url}]},
                }
            )
            section.summary_lines.append(
                f"- file /api/rooms/{room}/recordings/{f.id}: {names.get(f.identity, f.identity)} "
                f"{f.source}, from {offset:.1f} s of recording {f.recording_id}, "
                f"{f.duration_s:.1f} s, "
                f"{f.frames} frames, sha256 {f.sha256}"
            )
        if not section.summary_lines:
            section.summary_lines.append("- no recordings")
        return section


RECORDING = web.AppKey("recording", RecordingService)


def setup(
    app: web.Application,
    host: FeatureHost,
    store: RecordStore,
    root: Path,
    media: MediaRooms | None,
) -> None:
    """Register recording (files under ``root``) on the app, after the media service exists."""
    from recording.routes import add_routes

    service = RecordingService(host, store, root, media)
    app[RECORDING] = service
    app[RECORD_CONTRIBUTORS].append(service.record_section)
    add_routes(app, root)

    async def close(_app: web.Application) -> None:
        await service.close()

    # before the media service closes the rooms' peer connections
    app.on_shutdown.insert(0, close)
