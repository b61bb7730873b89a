"""The rehab feature in the server: ``rehab:start`` / ``rehab:stop`` over signaling, a
VisionAgent on the patient's camera through the SFU's decoding tap, ``rehab:update`` events to
the room, and the session report in the consult record (table + FHIR Observation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from rtc_server.records.consult_record import (
    RecordSection,
    fhir_time,
    person_ref,
    stable_uuid,
)
from rtc_server.records.store import RecordStore
from signaling.errors import ErrorCode, SignalingError
from signaling.extensions import Caller
from signaling.grants import Role
from signaling.namespace import ConsultNamespace

from .agent import VisionAgent
from .models import RehabSessionStart, RehabSessionStop
from .specs import get_spec
from .tables import rehab_sessions

log = logging.getLogger(__name__)

STARTERS = {Role.HOST, Role.CLINICIAN}
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"


@dataclass
class _Running:
    agent: VisionAgent
    room: str
    patient: str
    started_by: str
    tap: Any
    started_at: float = field(default_factory=time.time)
    watcher: asyncio.Task[None] | None = None
    report: dict[str, Any] | None = None
    done: asyncio.Lock = field(default_factory=asyncio.Lock)


class RehabService:
    """Runs vision sessions for rooms; at most ``max_sessions`` at once on this node."""

    def __init__(self, ns: ConsultNamespace, media: Any, store: RecordStore,
                 max_sessions: int = 2) -> None:
        self.ns = ns
        self.media = media  # rtc_server.media.service.MediaService (open_tap)
        self.store = store
        self.max_sessions = max_sessions
        self.sessions: dict[str, _Running] = {}

    def register(self) -> None:
        self.ns.add_handler("rehab:start", RehabSessionStart, self._on_start)
        self.ns.add_handler("rehab:stop", RehabSessionStop, self._on_stop)
        self.ns.listen("participant_left", self._on_left)
        self.ns.listen("room_closed", self._on_room_closed)

    # -- signaling ---------------------------------------------------------------------------
    def _patient_for(self, caller: Caller, req: RehabSessionStart) -> str:
        if caller.role == Role.PATIENT:
            if req.patient_identity not in (None, caller.identity):
                raise SignalingError(ErrorCode.PERMISSION_DENIED,
                                     "A patient can start a session on their own camera only.")
            return caller.identity
        if caller.role not in STARTERS:
            raise SignalingError(ErrorCode.PERMISSION_DENIED,
                                 "Only clinicians and patients start rehab sessions.")
        if req.patient_identity is not None:
            return req.patient_identity
        live = self.ns.registry.get(caller.room)
        patients = [p.identity for p in (live.participants.values() if live else ())
                    if p.role == Role.PATIENT]
        if len(patients) != 1:
            raise SignalingError(ErrorCode.INVALID_PAYLOAD,
                                 "Name the patient (patient_identity): "
                                 f"{len(patients)} patients are in the room.")
        return patients[0]

    async def _on_start(self, caller: Caller, req: RehabSessionStart) -> dict[str, Any]:
        patient = self._patient_for(caller, req)
        if any(r.room == caller.room and r.patient == patient for r in self.sessions.values()):
            raise SignalingError(ErrorCode.CONFLICT, "A rehab session already runs for them.")
        if len(self.sessions) >= self.max_sessions:
            raise SignalingError(ErrorCode.CONFLICT, "The server runs as many rehab sessions "
                                                     "as it can; try again later.")
        try:
            tap = self.media.open_tap(caller.room, patient, "camera")
        except Exception as exc:  # MediaError: no such publication / room
            raise SignalingError(ErrorCode.NOT_FOUND,
                                 f"{patient} is not sending camera video.") from exc
        room = caller.room

        async def on_update(payload: dict[str, Any]) -> None:
            await self.ns.emit_to_room(room, "rehab:update", payload)

        agent = VisionAgent(tap, req, on_update)
        run = _Running(agent, room, patient, caller.identity, tap)
        self.sessions[agent.id] = run
        try:
            await agent.start()
        except Exception:
            self.sessions.pop(agent.id, None)
            tap.stop()
            log.exception("rehab: agent failed to start")
            raise SignalingError(ErrorCode.INTERNAL, "The pose model could not start.") from None
        run.watcher = asyncio.create_task(self._watch(run), name=f"rehab-watch-{agent.id}")
        info = {"session_id": agent.id, "exercise": req.exercise, "patient": patient,
                "target_reps": req.target_reps, "sets": req.sets,
                "side": req.side or agent.spec.side, "started_by": caller.identity}
        await self.ns.emit_to_room(room, "rehab:started", info)
        return info

    async def _on_stop(self, caller: Caller, req: RehabSessionStop) -> dict[str, Any]:
        run = self.sessions.get(req.session_id)
        if run is None or run.room != caller.room:
            raise SignalingError(ErrorCode.NOT_FOUND, "No such rehab session in this room.")
        if caller.role not in STARTERS and caller.identity != run.patient:
            raise SignalingError(ErrorCode.PERMISSION_DENIED, "Not allowed to stop it.")
        return {"report": await self.finish(req.session_id, "stopped")}

    async def _on_left(self, caller: Caller, reason: str) -> None:
        for sid, run in list(self.sessions.items()):
            if run.room == caller.room and run.patient == caller.identity:
                await self.finish(sid, "patient_left")

    async def _on_room_closed(self, room: str) -> None:
        for sid, run in list(self.sessions.items()):
            if run.room == room:
                await self.finish(sid, "room_closed")

    async def _watch(self, run: _Running) -> None:
        """The camera went away (unpublished, patient gone): end the session by itself."""
        await run.agent.finished.wait()
        await self.finish(run.agent.id, "camera_stopped")

    # -- ending ------------------------------------------------------------------------------
    async def finish(self, session_id: str, reason: str) -> dict[str, Any]:
        """Stop a session, store and announce its report (idempotent)."""
        run = self.sessions.get(session_id)
        if run is None:
            raise KeyError(session_id)
        async with run.done:
            if run.report is not None:
                return run.report
            report = await run.agent.stop()
            run.tap.stop()
            if run.watcher is not None and run.watcher is not asyncio.current_task():
                run.watcher.cancel()
            report.update({"room": run.room, "patient": run.patient,
                           "started_by": run.started_by, "end_reason": reason})
            run.report = report
            self.sessions.pop(session_id, None)
            try:
                await self._save(run, report, reason)
            except Exception:
                log.exception("rehab: report of %s not stored", session_id)
            await self.ns.emit_to_room(run.room, "rehab:report", report)
            return report

    async def _save(self, run: _Running, report: dict[str, Any], reason: str) -> None:
        row = {"id": report["session_id"], "room": run.room, "patient": run.patient,
               "started_by": run.started_by, "exercise": report["exercise"],
               "started_at": run.started_at, "ended_at": time.time(), "end_reason": reason,
               "reps": report["reps"], "score": report["score"], "report": report}

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(insert(rehab_sessions).values(**row))

        await self.store.write(write)

    async def close(self) -> None:
        for sid in list(self.sessions):
            with contextlib.suppress(Exception):
                await self.finish(sid, "server_shutdown")

    # -- consult record ----------------------------------------------------------------------
    async def reports(self, room: str) -> list[dict[str, Any]]:
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                select(rehab_sessions).where(rehab_sessions.c.room == room)
                .order_by(rehab_sessions.c.started_at))).all()
        return [dict(r._mapping) for r in rows]

    async def record_section(self, room: str, encounter_url: str) -> RecordSection:
        """One FHIR Observation per rehab session (reps, mean score, ROM per rep)."""
        section = RecordSection(title="Rehab sessions")
        for row in await self.reports(room):
            section.resources.append(observation(row, encounter_url))
            section.summary_lines.append(
                f"{get_spec(row['exercise']).title.en}: {row['reps']} reps"
                f" (target {row['report'].get('target_reps')}), mean score {row['score']},"
                f" patient {row['patient']}, ended: {row['end_reason']}")
        return section


def observation(row: dict[str, Any], encounter_url: str) -> dict[str, Any]:
    """A rehab session as a FHIR R4 Observation."""
    report = row["report"]
    title = get_spec(row["exercise"]).title.en
    comps: list[dict[str, Any]] = [
        {"code": {"text": "repetitions"}, "valueQuantity": {"value": row["reps"],
                                                            "unit": "repetitions"}},
    ]
    if row["score"] is not None:
        comps.append({"code": {"text": "mean form score (0-100)"},
                      "valueQuantity": {"value": row["score"], "unit": "score"}})
    for s in report.get("sets", []):
        for rep in s.get("reps_detail", []):
            comps.append({
                "code": {"text": f"set {s['set']} rep {rep['index']} range of motion"},
                "valueQuantity": {"value": rep["rom_deg"], "unit": "deg", "system": UCUM,
                                  "code": "deg"}})
    faults = report.get("faults") or {}
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": stable_uuid("rehab", row["id"]),
        "status": "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "exam",
                                  "display": "Exam"}]}],
        "code": {"text": f"Rehab exercise: {title}"},
        "subject": person_ref(row["patient"], row["patient"]),
        "encounter": {"reference": encounter_url},
        "effectivePeriod": {"start": fhir_time(row["started_at"]),
                            "end": fhir_time(row["ended_at"])},
        "performer": [person_ref(row["started_by"], row["started_by"])],
        "component": comps,
    }
    if faults:
        obs["note"] = [{"text": "Form faults: " + ", ".join(f"{k} x{v}"
                                                           for k, v in sorted(faults.items()))}]
    return obs


def setup(app: web.Application) -> None:
    """Register rehab with the server: signaling events, record contributor, shutdown."""
    from rtc_server.keys import RECORD_CONTRIBUTORS, RECORDS, SIGNALING
    from rtc_server.media.service import MEDIA

    service = RehabService(app[SIGNALING], app[MEDIA], app[RECORDS])
    service.register()
    app[REHAB] = service
    app[RECORD_CONTRIBUTORS].append(service.record_section)

    async def _close(_app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_close)


REHAB = web.AppKey("rehab", RehabService)
