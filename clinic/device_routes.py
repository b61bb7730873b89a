"""HTTP routes for device readings and alerts (docs/protocol.md, docs/clinic.md)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from kernel.access import bearer_of
from kernel.http import admin_refusal, bounded_body, error
from kernel.keys import ACCESS, AUDIT, RECORDS
from kernel.tokens import NAME_PATTERN, mint_token

from .alerts import DeviceAlerts
from .auth import duty_or_refusal
from .devices import device_for_key
from .observations import ObservationRefused, catalogue, parse_body

log = logging.getLogger(__name__)
ALERTS: web.AppKey[DeviceAlerts] = web.AppKey("clinic_alerts", DeviceAlerts)
FHIR_TYPES = ("application/fhir+json", "application/json")
MAX_BODY = 256 * 1024


class Limit(BaseModel):
    """One code's per-patient thresholds (null: no alert on that side)."""

    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None


async def submit(app: web.Application, key: str, body: Any) -> tuple[int, dict[str, Any]]:
    """The shared path of HTTP and MQTT: (status, answer) for a device key and a parsed body."""
    device = await device_for_key(app[RECORDS], key)
    if device is None:
        return 401, {
            "error": {"code": "unknown_device", "message": "Unknown or revoked device key."}
        }
    try:
        readings = parse_body(body)
        outcome = await app[ALERTS].ingest(device, readings)
    except ObservationRefused as exc:
        log.info("device %s: reading refused (%s)", device.id, exc.code)
        return exc.status, {"error": {"code": exc.code, "message": str(exc)}}
    status = 201 if outcome["accepted"] else 200
    return status, {"device": device.id, **outcome}


async def post_observations(request: web.Request) -> web.Response:
    """POST /api/observations (device key): a FHIR R4 Observation or Bundle of them."""
    key = bearer_of(request)
    if request.content_type not in FHIR_TYPES:
        return error(
            415, "unsupported_media_type", "Send application/fhir+json or application/json."
        )
    raw = await bounded_body(request, MAX_BODY)
    if isinstance(raw, web.Response):
        return raw
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        if await device_for_key(request.app[RECORDS], key) is None:
            return error(401, "unknown_device", "Unknown or revoked device key.")
        return error(400, "invalid_json", "The body is not JSON.")
    status, answer = await submit(request.app, key, body)
    return web.json_response(answer, status=status)


async def list_alerts(request: web.Request) -> web.Response:
    """GET /api/alerts[?status=open] (admin key)."""
    refused = await admin_refusal(request, "alerts_list")
    if refused is not None:
        return refused
    status = request.query.get("status")
    if status not in (None, "open", "consult"):
        return error(400, "invalid_payload", "status: open or consult")
    return web.json_response({"alerts": await request.app[ALERTS].list(status)})


async def put_thresholds(request: web.Request) -> web.Response:
    """PUT /api/clinic/patients/{patient}/thresholds (admin key): {code: {low, high}}."""
    refused = await admin_refusal(request, "clinic_thresholds")
    if refused is not None:
        return refused
    patient = request.match_info["patient"]
    raw = await bounded_body(request)
    if isinstance(raw, web.Response):
        return raw
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError
        limits = {code: Limit.model_validate(v) for code, v in data.items()}
    except (ValueError, ValidationError):
        return error(400, "invalid_payload", "Expected {code: {low, high}}.")
    known = catalogue()["codes"]
    unknown = [c for c in limits if c not in known]
    if unknown:
        return error(422, "unknown_code", f"Unknown code(s): {', '.join(unknown)[:200]}")
    await request.app[ALERTS].set_thresholds(
        patient, {c: (v.low, v.high) for c, v in limits.items()}
    )
    await request.app[AUDIT].append(
        "admin.clinic_thresholds", "admin", f"patient:{patient}", "ok", {"codes": list(limits)}
    )
    return web.json_response(
        {"patient": patient, "thresholds": {c: v.model_dump() for c, v in limits.items()}}
    )


async def start_consult(request: web.Request) -> web.Response:
    """POST /api/clinic/alerts/{id}/start-consult (duty token of the alert's department): a
    consult for the patient; answers the patient's join link and the doctor's host link."""
    from .queues import Queues
    from .routes import QUEUES

    duty = await duty_or_refusal(request)
    if isinstance(duty, web.Response):
        return duty
    try:
        alert_id = int(request.match_info["alert_id"])
    except ValueError:
        return error(404, "not_found", "No such alert.")
    alerts = request.app[ALERTS]
    alert = await alerts.get(alert_id)
    if alert is None or alert["department"] not in duty.departments:
        return error(404, "not_found", "No such alert in your departments.")
    if alert["status"] != "open":
        return error(409, "conflict", f"The alert is already handled by {alert['handled_by']}.")
    queues: Queues = request.app[QUEUES]
    patient = alert["patient"]["identity"]
    visit = await queues.create_visit(alert["department"], patient, patient, taken_by=duty.identity)
    if not await alerts.hand_over(alert_id, visit.room, duty.identity):
        return error(409, "conflict", "The alert was just taken by someone else.")
    access = request.app[ACCESS]
    secret = access.secret
    patient_token = mint_token(
        secret, room=visit.room, identity=patient, role="patient", ttl_s=access.token_ttl_s
    )
    doctor_token = mint_token(
        secret, room=visit.room, identity=duty.identity, role="host", name=duty.name, ttl_s=4 * 3600
    )
    await request.app[AUDIT].append(
        "clinic.alert_consult", duty.identity, f"room:{visit.room}", "ok", {"alert": alert_id}
    )
    return web.json_response(
        {
            "room": visit.room,
            "alert": alert_id,
            "patient_url": access.join_url(patient_token),
            "url": access.join_url(doctor_token),
        },
        status=201,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/observations", post_observations)
    app.router.add_get("/api/alerts", list_alerts)
    app.router.add_put(
        r"/api/clinic/patients/{patient:" + NAME_PATTERN.strip("^$") + "}/thresholds",
        put_thresholds,
    )
    app.router.add_post(r"/api/clinic/alerts/{alert_id:\d{1,12}}/start-consult", start_consult)
