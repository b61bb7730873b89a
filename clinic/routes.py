"""HTTP routes of the clinic package (docs/protocol.md, "Clinic HTTP routes")."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kernel.http import admin_body, error, invalid
from kernel.keys import ACCESS, AUDIT
from kernel.tokens import NAME_PATTERN, mint_token

from .auth import duty_or_refusal
from .duty import DEPARTMENT_PATTERN, DutyClaims, mint_duty_token
from .questionnaire import load
from .queues import QueueEmpty, Queues
from .triage import doctor_levels, offered

QUEUES: web.AppKey[Queues] = web.AppKey("clinic_queues", Queues)
# async (duty) -> [alert]: open device alerts of the doctor's departments (clinic/__init__.py)
ALERTS_PROVIDER: web.AppKey[Any] = web.AppKey("clinic_alerts_provider", object)
MAX_WAIT_S = 25.0
POLL_S = 0.5


class VisitRequest(BaseModel):
    """Body of POST /api/clinic/visits."""

    model_config = ConfigDict(extra="forbid")

    department: str = Field(pattern=DEPARTMENT_PATTERN)
    identity: str = Field(pattern=NAME_PATTERN)
    name: str = Field(min_length=1, max_length=128)
    ttl_s: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)


class DutyRequest(BaseModel):
    """Body of POST /api/clinic/duty-tokens."""

    model_config = ConfigDict(extra="forbid")

    identity: str = Field(pattern=NAME_PATTERN)
    name: str = Field(min_length=1, max_length=128)
    level: str
    departments: list[str] = Field(min_length=1, max_length=32)
    ttl_s: int = Field(default=12 * 3600, ge=60, le=7 * 24 * 3600)


async def get_questionnaire(request: web.Request) -> web.Response:
    """GET /api/questionnaires/{id}: a pre-consult Questionnaire (FHIR R4, no patient data)."""
    try:
        q = load(request.match_info["qid"])
    except KeyError:
        return error(404, "not_found", "No such questionnaire.")
    return web.json_response(q.resource, content_type="application/fhir+json")


async def create_visit(request: web.Request) -> web.Response:
    """POST /api/clinic/visits (admin key): a consult requested in a department."""
    raw = await admin_body(request, "clinic_visit")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = VisitRequest.model_validate_json(raw)
    except ValidationError as exc:
        return invalid(exc)
    access = request.app[ACCESS]
    visit = await request.app[QUEUES].create_visit(body.department, body.identity, body.name)
    token = mint_token(
        access.secret,
        room=visit.room,
        identity=body.identity,
        role="patient",
        name=body.name,
        ttl_s=body.ttl_s or access.token_ttl_s,
    )
    await request.app[AUDIT].append(
        "admin.clinic_visit", "admin", f"room:{visit.room}", "ok", {"department": body.department}
    )
    return web.json_response(
        {"room": visit.room, "department": visit.department, "url": access.join_url(token)},
        status=201,
    )


async def create_duty_token(request: web.Request) -> web.Response:
    """POST /api/clinic/duty-tokens (admin key): a clinician's dashboard link."""
    raw = await admin_body(request, "clinic_duty_token")
    if isinstance(raw, web.Response):
        return raw
    try:
        body = DutyRequest.model_validate_json(raw)
    except ValidationError as exc:
        return invalid(exc)
    if body.level not in doctor_levels():
        return error(400, "invalid_payload", f"level: one of {', '.join(doctor_levels())}")
    access = request.app[ACCESS]
    try:
        token = mint_duty_token(
            access.secret,
            identity=body.identity,
            name=body.name,
            level=body.level,
            departments=body.departments,
            ttl_s=body.ttl_s,
        )
    except ValidationError as exc:
        return invalid(exc)
    await request.app[AUDIT].append(
        "admin.clinic_duty_token",
        "admin",
        f"clinician:{body.identity}",
        "ok",
        {"level": body.level, "departments": body.departments},
    )
    return web.json_response(
        {"token": token, "url": f"{access.base_url}/dashboard?token={token}"}, status=201
    )


async def snapshot(app: web.Application, duty: DutyClaims) -> dict[str, Any]:
    """What a doctor's dashboard shows (without the version)."""
    queues = app[QUEUES]
    levels = offered(duty.level)
    by_department: dict[str, list[dict[str, Any]]] = {d: [] for d in duty.departments}
    for entry in queues.offered_to(duty):
        by_department[entry["department"]].append(entry)
    alerts_source = app.get(ALERTS_PROVIDER)
    alerts = await alerts_source(duty) if alerts_source is not None else []
    return {
        "me": {
            "identity": duty.identity,
            "name": duty.name,
            "level": duty.level,
            "departments": list(duty.departments),
            "offered": sorted(levels),
        },
        "queues": by_department,
        "alerts": alerts,
        "consults_today": await queues.consults_today(duty.identity),
    }


def version_of(snap: dict[str, Any]) -> str:
    """A digest of what changes the dashboard (not the ticking wait times)."""
    key = {
        "q": {d: [(e["room"], e["risk"], e["card"]) for e in v] for d, v in snap["queues"].items()},
        "a": [(a["id"], a["status"]) for a in snap["alerts"]],
        "c": [c["room"] for c in snap["consults_today"]],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


async def dashboard(request: web.Request) -> web.Response:
    """GET /api/clinic/dashboard (duty token): the snapshot; with `since=<version>` it waits
    (at most `wait` s, 25 s cap) until something differs from that version (long poll)."""
    duty = await duty_or_refusal(request)
    if isinstance(duty, web.Response):
        return duty
    since = request.query.get("since", "")
    try:
        wait = min(MAX_WAIT_S, max(0.0, float(request.query.get("wait", "20"))))
    except ValueError:
        return error(400, "invalid_payload", "wait: a number of seconds")
    deadline = time.monotonic() + wait
    while True:
        snap = await snapshot(request.app, duty)
        version = version_of(snap)
        if not since or version != since or time.monotonic() >= deadline:
            return web.json_response({**snap, "version": version, "now": time.time()})
        await asyncio.sleep(POLL_S)


async def take_next(request: web.Request) -> web.Response:
    """POST /api/clinic/take-next (duty token): the next patient this doctor is offered, and a
    host link to the consult (the patient is admitted when the doctor joins)."""
    duty = await duty_or_refusal(request)
    if isinstance(duty, web.Response):
        return duty
    try:
        visit, entry = await request.app[QUEUES].take_next(duty)
    except QueueEmpty:
        return error(404, "queue_empty", "Nobody is waiting for a doctor of your level.")
    access = request.app[ACCESS]
    token = mint_token(
        access.secret,
        room=visit.room,
        identity=duty.identity,
        role="host",
        name=duty.name,
        ttl_s=4 * 3600,
    )
    await request.app[AUDIT].append(
        "clinic.take_next", duty.identity, f"room:{visit.room}", "ok", {"risk": entry["risk"]}
    )
    return web.json_response(
        {
            "room": visit.room,
            "department": visit.department,
            "patient": entry["patient"],
            "risk": entry["risk"],
            "reasons": entry["reasons"],
            "reasons_zh": entry.get("reasons_zh", []),
            "url": access.join_url(token),
        }
    )


async def dashboard_page(request: web.Request) -> web.StreamResponse:
    """The browser app (its dashboard screen) at /dashboard?token=<duty token>."""
    import web_client

    return await web_client.index(request)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/questionnaires/{qid}", get_questionnaire)
    app.router.add_post("/api/clinic/visits", create_visit)
    app.router.add_post("/api/clinic/duty-tokens", create_duty_token)
    app.router.add_get("/api/clinic/dashboard", dashboard)
    app.router.add_post("/api/clinic/take-next", take_next)
    app.router.add_get("/dashboard", dashboard_page)
