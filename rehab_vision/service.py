"""The rehab feature in the server: ``rehab:start`` / ``rehab:stop`` over signaling, a
VisionAgent on the patient's camera through the SFU's decoding tap, ``rehab:update`` events to
the room, and the session report in the consult record (table + FHIR Observation)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.errors import ErrorCode, SignalingError
from kernel.grants import Role
from kernel.records.consult_record import RecordSection
from kernel.records.store import RecordStore
from signaling.extensions import Caller, FeatureHost

from . import plans, record
from .agent import VisionAgent
from .guide import Guide, GuideSettings
from .models import (
    PLAN_MAX_BYTES,
    PlanQuery,
    PlanRun,
    PlanSet,
    ProgressQuery,
    RehabSessionStart,
    RehabSessionStop,
)
from .plan import RehabPlan
from .settings import RehabSettings
from .tables import rehab_sessions

log = logging.getLogger(__name__)

STARTERS = {Role.HOST, Role.CLINICIAN}
OnUpdate = Callable[[dict[str, Any]], None]
GUIDE_STOP_WAIT_S = 10.0  # bound on a guided run's wind-down (stop its set, store the run)


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
    run_id: str | None = None  # the guided plan run this set belongs to
    info: dict[str, Any] | None = None  # what rehab:started told the room
    done: asyncio.Lock = field(default_factory=asyncio.Lock)


class TapSource(Protocol):
    """What rehab needs of the media service: a decoding tap on a participant's track
    (``media.service.MediaService.open_tap``)."""

    def open_tap(self, room: str, identity: str, source: str = "camera") -> Any: ...


class RehabService:
    """Runs vision sessions for rooms; at most ``max_sessions`` at once on this node."""

    def __init__(
        self, ns: FeatureHost, media: TapSource, store: RecordStore, max_sessions: int = 2
    ) -> None:
        self.ns = ns
        self.media = media
        self.store = store
        self.max_sessions = max_sessions
        self.sessions: dict[str, _Running] = {}
        self.guide_settings = GuideSettings()
        self.guides: dict[str, Guide] = {}  # patient identity -> their running guided plan
        self.counting: Any = VisionCounting(self)  # guide.Counting; tests may substitute it

    def register(self) -> None:
        self.ns.add_handler("rehab:start", RehabSessionStart, self._on_start)
        self.ns.add_handler("rehab:stop", RehabSessionStop, self._on_stop)
        # a prescription is clinical content: the grant clinicians and hosts hold for it is
        # "annotate" ("moderate" is room control, hosts only); the role is checked as well
        self.ns.add_handler(
            "rehab:plan_set", PlanSet, self._on_plan_set, grant="annotate", max_bytes=PLAN_MAX_BYTES
        )
        self.ns.add_handler("rehab:plan_get", PlanQuery, self._on_plan_get)
        self.ns.add_handler("rehab:plan_run", PlanRun, self._on_plan_run)
        self.ns.add_handler("rehab:plan_stop", PlanQuery, self._on_plan_stop)
        self.ns.add_handler("rehab:progress", ProgressQuery, self._on_progress)
        self.ns.listen("participant_left", self._on_left)
        self.ns.add_join_extra(self._join_extra)
        self.ns.listen("room_closed", self._on_room_closed)

    # -- signaling ---------------------------------------------------------------------------
    def _patient_for(self, caller: Caller, req: RehabSessionStart) -> str:
        if caller.role == Role.PATIENT:
            if req.patient_identity not in (None, caller.identity):
                raise SignalingError(
                    ErrorCode.PERMISSION_DENIED,
                    "A patient can start a session on their own camera only.",
                )
            return caller.identity
        if caller.role not in STARTERS:
            raise SignalingError(
                ErrorCode.PERMISSION_DENIED, "Only clinicians and patients start rehab sessions."
            )
        if req.patient_identity is not None:
            return req.patient_identity
        live = self.ns.registry.get(caller.room)
        patients = [
            p.identity
            for p in (live.participants.values() if live else ())
            if p.role == Role.PATIENT
        ]
        if len(patients) != 1:
            raise SignalingError(
                ErrorCode.INVALID_PAYLOAD,
                f"Name the patient (patient_identity): {len(patients)} patients are in the room.",
            )
        return patients[0]

    async def _on_start(self, caller: Caller, req: RehabSessionStart) -> dict[str, Any]:
        patient = self._patient_for(caller, req)
        if patient in self.guides and self.guides[patient].room == caller.room:
            raise SignalingError(ErrorCode.CONFLICT, "Their guided plan is running.")
        return await self.start_session(caller.room, patient, req, caller.identity)

    async def start_session(
        self,
        room: str,
        patient: str,
        req: RehabSessionStart,
        started_by: str,
        on_update: OnUpdate | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Start counting on ``patient``'s camera in ``room``; ``rehab:started`` to the room."""
        if any(r.room == room and r.patient == patient for r in self.sessions.values()):
            raise SignalingError(ErrorCode.CONFLICT, "A rehab session already runs for them.")
        if len(self.sessions) >= self.max_sessions:
            raise SignalingError(
                ErrorCode.CONFLICT,
                "The server runs as many rehab sessions as it can; try again later.",
            )
        try:
            tap = self.media.open_tap(room, patient, "camera")
        except Exception as exc:  # MediaError: no such publication / room
            raise SignalingError(
                ErrorCode.NOT_FOUND, f"{patient} is not sending camera video."
            ) from exc

        async def emit_update(payload: dict[str, Any]) -> None:
            await self.ns.emit_to_room(room, "rehab:update", payload)
            if on_update is not None:
                on_update(payload)

        agent = VisionAgent(tap, req, emit_update)
        run = _Running(agent, room, patient, started_by, tap, run_id=run_id)
        self.sessions[agent.id] = run
        try:
            await agent.start()
        except Exception:
            self.sessions.pop(agent.id, None)
            tap.stop()
            log.exception("rehab: agent failed to start")
            raise SignalingError(ErrorCode.INTERNAL, "The pose model could not start.") from None
        run.watcher = asyncio.create_task(self._watch(run), name=f"rehab-watch-{agent.id}")
        info = {
            "session_id": agent.id,
            "exercise": req.exercise,
            "patient": patient,
            "target_reps": req.target_reps,
            "sets": req.sets,
            "side": req.side or agent.spec.side,
            "started_by": started_by,
            "run_id": run_id,
        }
        run.info = info
        await self.ns.emit_to_room(room, "rehab:started", info)
        return info

    async def _join_extra(self, caller: Caller) -> dict[str, Any]:
        """The room's running sessions (rehab:started's payloads): a page that joins or comes
        back after a lost connection mid-set shows the count again."""
        running = [
            r.info for r in self.sessions.values() if r.room == caller.room and r.info is not None
        ]
        return {"rehab_sessions": running}

    async def _on_stop(self, caller: Caller, req: RehabSessionStop) -> dict[str, Any]:
        run = self.sessions.get(req.session_id)
        if run is None or run.room != caller.room:
            raise SignalingError(ErrorCode.NOT_FOUND, "No such rehab session in this room.")
        if caller.role not in STARTERS and caller.identity != run.patient:
            raise SignalingError(ErrorCode.PERMISSION_DENIED, "Not allowed to stop it.")
        return {"report": await self.finish(req.session_id, "stopped")}

    # -- plans -------------------------------------------------------------------------------
    async def _plan_patient(self, caller: Caller, patient: str | None) -> str:
        """Whose plan the caller may touch: a patient their own; a clinician or host only a
        patient of the room they act through (default: the room's only patient)."""
        if caller.role == Role.PATIENT:
            if patient not in (None, caller.identity):
                raise SignalingError(
                    ErrorCode.PERMISSION_DENIED, "A patient sees their own plan only."
                )
            return caller.identity
        if caller.role not in STARTERS:
            raise SignalingError(
                ErrorCode.PERMISSION_DENIED, "Only clinicians and the patient see rehab plans."
            )
        if patient is None:
            return self._patient_for(caller, RehabSessionStart(exercise="squat"))
        await self._check_room_patient(caller, patient)
        return patient

    async def _check_room_patient(self, caller: Caller, patient: str) -> None:
        """Plans outlive rooms, so a clinician reaches a patient's plan only through a room
        that patient belongs to (joined or admitted there, now or before), or through an
        explicit care-team grant (the token's `care_team` claim)."""
        claims = self.ns.claims_for(caller.sid)
        if claims is not None and patient in claims.care_team:
            return  # an explicit care-team grant in the clinician's token
        live = self.ns.registry.get(caller.room)
        if live is not None and (patient in live.participants or patient in live.admitted):
            return
        if live is not None and patient in live.bans:
            known: set[str] = set()
        else:
            known = await self.store.known_identities(caller.room)
        if patient not in known:
            raise SignalingError(
                ErrorCode.PERMISSION_DENIED, "That patient does not belong to this room."
            )

    async def _on_plan_set(self, caller: Caller, req: PlanSet) -> dict[str, Any]:
        if caller.role not in STARTERS:
            raise SignalingError(ErrorCode.PERMISSION_DENIED, "Only clinicians prescribe plans.")
        if req.patient_identity == caller.identity:
            raise SignalingError(ErrorCode.INVALID_PAYLOAD, "Prescribe to a patient.")
        await self._check_room_patient(caller, req.patient_identity)
        info = await plans.set_plan(
            self.store, req.patient_identity, req.plan, caller.identity, caller.room
        )
        await self.ns.emit_to_identity(caller.room, req.patient_identity, "rehab:plan", info)
        return info

    async def _on_plan_get(self, caller: Caller, req: PlanQuery) -> dict[str, Any]:
        patient = await self._plan_patient(caller, req.patient_identity)
        guide = self.guides.get(patient)
        return {
            "patient": patient,
            "plan": await plans.active_plan(self.store, patient),
            "running": guide.payload() if guide is not None else None,
        }

    async def _on_plan_run(self, caller: Caller, req: PlanRun) -> dict[str, Any]:
        patient = await self._plan_patient(caller, req.patient_identity)
        if patient in self.guides:
            raise SignalingError(ErrorCode.CONFLICT, "Their plan is already running.")
        if any(r.patient == patient for r in self.sessions.values()):
            raise SignalingError(ErrorCode.CONFLICT, "A rehab session already runs for them.")
        if len(self.guides) >= self.guide_settings.max_runs:
            raise SignalingError(
                ErrorCode.CONFLICT, "Too many guided plans run on this server; try again later."
            )
        live = self.ns.registry.get(caller.room)
        if live is None or patient not in {p.identity for p in live.participants.values()}:
            raise SignalingError(ErrorCode.NOT_FOUND, "The patient is not in this room.")
        stored = await plans.active_plan(self.store, patient)
        if stored is None:
            raise SignalingError(ErrorCode.NOT_FOUND, "No plan is prescribed to them.")
        plan = RehabPlan.model_validate(stored["plan"])
        room = caller.room

        async def emit(payload: dict[str, Any]) -> None:
            await self.ns.emit_to_room(room, "rehab:guide", payload)

        guide = Guide(
            plan_id=stored["plan_id"],
            plan=plan,
            room=room,
            patient=patient,
            started_by=caller.identity,
            lang=req.lang,
            settings=self.guide_settings,
            counting=self.counting,
            emit=emit,
            store=self.store,
        )
        self.guides[patient] = guide
        try:
            await plans.start_run(
                self.store,
                {
                    "id": guide.id,
                    "plan_id": guide.plan_id,
                    "patient": patient,
                    "room": room,
                    "started_by": caller.identity,
                    "started_at": time.time(),
                    "sets_prescribed": sum(i.sets for i in plan.items),
                    "reps_prescribed": sum(i.sets * i.reps for i in plan.items),
                },
            )
        except Exception:
            self.guides.pop(patient, None)
            raise
        guide.start()
        assert guide.task is not None
        guide.task.add_done_callback(lambda _t: self._guide_done(guide))
        return guide.payload()

    def _guide_done(self, guide: Guide) -> None:
        if self.guides.get(guide.patient) is guide:
            del self.guides[guide.patient]

    async def stop_guide(self, guide: Guide, reason: str) -> None:
        """Stop a guided run and wait (bounded) until its set and run are stored."""
        guide.stop(reason)
        if guide.task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(guide.task), GUIDE_STOP_WAIT_S)
        except TimeoutError:
            log.warning("rehab guide %s did not stop in time; cancelling", guide.id)
            guide.task.cancel()
        except Exception:
            log.exception("rehab guide %s", guide.id)
        self._guide_done(guide)

    async def _on_plan_stop(self, caller: Caller, req: PlanQuery) -> dict[str, Any]:
        patient = await self._plan_patient(caller, req.patient_identity)
        guide = self.guides.get(patient)
        if guide is None or guide.room != caller.room:
            raise SignalingError(ErrorCode.NOT_FOUND, "No guided plan runs for them here.")
        await self.stop_guide(guide, "stopped")
        return {"run_id": guide.id, "adherence": guide.runner.adherence()}

    async def _on_progress(self, caller: Caller, req: ProgressQuery) -> dict[str, Any]:
        patient = await self._plan_patient(caller, req.patient_identity)
        return await plans.progress(self.store, patient, time.time() - req.days * 86400)

    async def _on_left(self, caller: Caller, reason: str) -> None:
        guide = self.guides.get(caller.identity)
        if guide is not None and guide.room == caller.room:
            await self.stop_guide(guide, "patient_left")
        for sid, run in list(self.sessions.items()):
            if run.room == caller.room and run.patient == caller.identity:
                await self.finish(sid, "patient_left")

    async def _on_room_closed(self, room: str) -> None:
        for guide in [g for g in self.guides.values() if g.room == room]:
            await self.stop_guide(guide, "room_closed")
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
            report.update(
                {
                    "room": run.room,
                    "patient": run.patient,
                    "started_by": run.started_by,
                    "end_reason": reason,
                    "run_id": run.run_id,
                }
            )
            run.report = report
            self.sessions.pop(session_id, None)
            try:
                await self._save(run, report, reason)
            except Exception:
                log.exception("rehab: report of %s not stored", session_id)
        # announced once the lock is released (no network I/O under a lock)
        await self.ns.emit_to_room(run.room, "rehab:report", report)
        await self.ns.notify("rehab_report", run.room, report)
        return report

    async def _save(self, run: _Running, report: dict[str, Any], reason: str) -> None:
        row = {
            "id": report["session_id"],
            "room": run.room,
            "patient": run.patient,
            "started_by": run.started_by,
            "exercise": report["exercise"],
            "started_at": run.started_at,
            "ended_at": time.time(),
            "end_reason": reason,
            "reps": report["reps"],
            "score": report["score"],
            "report": report,
        }

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(insert(rehab_sessions).values(**row))

        await self.store.write(write)

    async def close(self) -> None:
        for guide in list(self.guides.values()):
            await self.stop_guide(guide, "server_shutdown")
        for sid in list(self.sessions):
            with contextlib.suppress(Exception):
                await self.finish(sid, "server_shutdown")

    # -- consult record ----------------------------------------------------------------------
    async def reports(self, room: str) -> list[dict[str, Any]]:
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(rehab_sessions)
                    .where(rehab_sessions.c.room == room)
                    .order_by(rehab_sessions.c.started_at)
                )
            ).all()
        return [dict(r._mapping) for r in rows]

    async def record_section(self, room: str, encounter_url: str) -> RecordSection:
        """Sessions, prescribed plans and their adherence (rehab_vision/record.py), with the
        angle-over-time chart of each set and each patient's weekly progress as PNG Media."""
        section = await record.record_section(self.store, room, encounter_url)
        rows = await self.reports(room)
        for row in rows:
            charts = await asyncio.to_thread(record.chart_media, row, encounter_url)  # off the loop
            section.resources.extend(charts)
        for patient in sorted({row["patient"] for row in rows}):
            # the patient's progress over the last 90 days, per week
            prog = await plans.progress(self.store, patient, time.time() - 90 * 86400)
            media = await asyncio.to_thread(
                record.progress_media, patient, prog["weeks"], encounter_url
            )
            if media is not None:
                section.resources.append(media)
        return section


class VisionCounting:
    """Counts a guided set with a live :class:`VisionAgent` session on the patient's camera."""

    def __init__(self, service: RehabService) -> None:
        self.service = service

    async def start(self, guide: Guide) -> str:
        item = guide.runner.current
        req = RehabSessionStart(
            exercise=item.exercise,
            target_reps=item.reps,
            sets=1,
            side=item.side,
            target_deg=item.target_deg,
            patient_identity=guide.patient,
            lang=guide.lang,
        )  # type: ignore[arg-type]
        info = await self.service.start_session(
            guide.room, guide.patient, req, guide.started_by, guide.on_update, guide.id
        )
        return str(info["session_id"])

    async def stop(self, session_id: str, reason: str) -> dict[str, Any] | None:
        if session_id not in self.service.sessions:
            return None
        try:
            return await self.service.finish(session_id, reason)
        except KeyError:
            return None

    def alive(self, session_id: str) -> bool:
        return session_id in self.service.sessions


def setup(
    app: web.Application,
    host: FeatureHost,
    media: TapSource,
    store: RecordStore,
    settings: RehabSettings,
) -> None:
    """Register rehab with the server: signaling events and their audit policy, record
    contributor, shutdown."""
    from kernel.keys import RECORD_CONTRIBUTORS

    service = RehabService(host, media, store, settings.max_sessions)
    service.guide_settings = GuideSettings(**settings.guide.model_dump())
    service.register()
    host.audit_events(dict.fromkeys(AUDITED_EVENTS, "each"))
    app[REHAB] = service
    app[RECORD_CONTRIBUTORS].append(service.record_section)

    async def _close(_app: web.Application) -> None:
        await service.close()

    app.on_shutdown.append(_close)


#: rehab events worth an audit entry each
AUDITED_EVENTS = (
    "rehab:start",
    "rehab:stop",
    "rehab:plan_set",
    "rehab:plan_run",
    "rehab:plan_stop",
    "rehab:progress",
)
REHAB = web.AppKey("rehab", RehabService)
