"""POST /api/observations: device keys minted while the server runs, LOINC/UCUM checks, alerts
by threshold (per-patient overrides), idempotency by Observation id, start consult."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clinic.devices import add_device
from rtc_server.keys import RECORDS

REPO = Path(__file__).resolve().parents[2]


def obs(oid: str, code: str, value: float, unit: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "effectiveDateTime": "2026-12-07T08:00:00+08:00",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
        **extra,
    }


def bp_panel(oid: str, systolic: float, diastolic: float) -> dict[str, Any]:
    def comp(code: str, value: float) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {
                "value": value,
                "system": "http://unitsofmeasure.org",
                "code": "mm[Hg]",
            },
        }

    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [comp("8480-6", systolic), comp("8462-4", diastolic)],
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": r} for r in resources],
    }


def device_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", "device", *args, "--data-dir", str(data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
async def device_key(live: Any) -> str:
    """A device of pat-gu in cardiology (the CLI's own path, in process; the CLI itself is
    tested against the running server in test_cli_key_works_at_once)."""
    _device, key = await add_device(live.app[RECORDS], "pat-gu", "cardiology", "bp-1")
    return key


async def post(
    api: Any, key: str | None, body: Any, ctype: str = "application/fhir+json"
) -> tuple[int, Any]:
    data = body if isinstance(body, str) else json.dumps(body)
    return await api.call(
        "POST", "/api/observations", key, data=data, headers={"Content-Type": ctype}
    )


async def test_valid_reading_alerts_once(api: Any, device_key: str) -> None:
    status, body = await post(api, device_key, obs("hr-1", "8867-4", 130, "/min"))
    assert status == 201, body
    assert body["accepted"] == 1 and len(body["alerts"]) == 1
    alert = body["alerts"][0]
    assert (
        alert["direction"] == "high"
        and alert["limit"] == 120
        and alert["patient"]["identity"] == "pat-gu"
    )

    # the same Observation again: 200, no second alert; another value under that id: 409
    status, body = await post(api, device_key, obs("hr-1", "8867-4", 130, "/min"))
    assert status == 200 and body["duplicates"] == 1 and body["alerts"] == []
    status, body = await post(api, device_key, obs("hr-1", "8867-4", 99, "/min"))
    assert status == 409 and body["error"]["code"] == "conflict"
    status, listed = await api.call("GET", "/api/alerts?status=open", api.admin)
    assert status == 200 and [a["id"] for a in listed["alerts"]] == [alert["id"]]
    status, _ = await api.call("GET", "/api/alerts", "not-the-key")
    assert status == 401

    # a normal reading: stored, no alert
    status, body = await post(api, device_key, obs("hr-2", "8867-4", 72, "/min"))
    assert status == 201 and body["alerts"] == []


async def test_bundle_with_bp_panel_and_glucose(api: Any, device_key: str) -> None:
    status, body = await post(
        api,
        device_key,
        bundle(
            bp_panel("bp-7", 190, 95),
            obs("glu-1", "2339-0", 60, "mg/dL"),
            obs("t-1", "8310-5", 36.6, "Cel"),
        ),
        ctype="application/json",
    )
    assert status == 201, body
    assert body["accepted"] == 4
    crossed = sorted((a["code"], a["direction"]) for a in body["alerts"])
    assert crossed == [("2339-0", "low"), ("8480-6", "high")]


@pytest.mark.parametrize(
    ("resource", "status", "code", "words"),
    [
        (obs("x1", "1234-5", 1, "/min"), 422, "unknown_code", "1234-5"),
        (obs("x2", "2339-0", 5.5, "mmol/L"), 422, "wrong_unit", "mg/dL"),
        (obs("x3", "59408-5", 150, "%"), 422, "absurd_value", "150"),
        (obs("x4", "8310-5", 420, "Cel"), 422, "absurd_value", "25-45"),
        (
            {**obs("x5", "8867-4", 70, "/min"), "id": None},
            400,
            "invalid_observation",
            "id is required",
        ),
        (
            {**obs("x6", "8867-4", 70, "/min"), "valueQuantity": {"value": "high"}},
            400,
            "invalid_observation",
            "not a number",
        ),
        ({"resourceType": "Patient", "id": "p"}, 400, "invalid_observation", "Patient"),
    ],
)
async def test_bad_readings_are_refused(
    api: Any, device_key: str, resource: Any, status: int, code: str, words: str
) -> None:
    got, body = await post(api, device_key, resource)
    assert got == status and body["error"]["code"] == code, body
    assert words in body["error"]["message"]


async def test_bad_requests(api: Any, device_key: str) -> None:
    reading = obs("ok-1", "8867-4", 70, "/min")
    status, body = await post(api, "tcd_not-a-device", reading)
    assert status == 401 and body["error"]["code"] == "unknown_device"
    status, body = await post(api, None, reading)
    assert status == 401
    status, body = await post(api, device_key, reading, ctype="text/plain")
    assert status == 415
    status, body = await post(api, device_key, "{not json")
    assert status == 400 and body["error"]["code"] == "invalid_json"
    # one bad entry refuses the whole Bundle; nothing of it was stored
    status, body = await post(api, device_key, bundle(reading, obs("bad", "8867-4", 900, "/min")))
    assert status == 422 and "Bundle.entry[1]" in body["error"]["message"]
    status, body = await post(api, device_key, reading)
    assert status == 201 and body["accepted"] == 1


async def test_cli_key_works_at_once(api: Any, live: Any, data_dir: Path) -> None:
    """`teleconsult device add` / `revoke` against the running server's records: no restart."""
    done = device_cli(data_dir, "add", "--patient", "pat-lu", "--department", "cardiology")
    assert done.returncode == 0, done.stderr
    added = json.loads(done.stdout)
    assert added["patient"] == "pat-lu" and added["key"].startswith("tcd_")
    status, body = await post(api, added["key"], obs("ok-1", "8867-4", 70, "/min"))
    assert status == 201 and body["device"] == added["device"]
    assert device_cli(data_dir, "revoke", added["device"]).returncode == 0
    status, body = await post(api, added["key"], obs("ok-2", "8867-4", 70, "/min"))
    assert status == 401 and body["error"]["code"] == "unknown_device"


async def test_patient_threshold_override_and_start_consult(api: Any, device_key: str) -> None:
    status, body = await api.call(
        "PUT",
        "/api/clinic/patients/pat-gu/thresholds",
        api.admin,
        json={"8867-4": {"low": 40, "high": 140}},
    )
    assert status == 200, body
    status, body = await post(api, device_key, obs("hr-9", "8867-4", 130, "/min"))
    assert status == 201 and body["alerts"] == []
    status, body = await post(api, device_key, obs("hr-10", "8867-4", 150, "/min"))
    (alert,) = body["alerts"]
    assert alert["limit"] == 140

    duty = await api.duty("dr-ma", "attending", ["cardiology"])
    status, snap = await api.call("GET", "/api/clinic/dashboard", duty)
    assert [a["id"] for a in snap["alerts"]] == [alert["id"]]
    other = await api.duty("dr-niu", "attending", ["dermatology"])
    status, _ = await api.call("POST", f"/api/clinic/alerts/{alert['id']}/start-consult", other)
    assert status == 404
    status, started = await api.call(
        "POST", f"/api/clinic/alerts/{alert['id']}/start-consult", duty
    )
    assert status == 201, started
    assert "/join?token=" in started["patient_url"] and started["room"].startswith("v-")
    status, _ = await api.call("POST", f"/api/clinic/alerts/{alert['id']}/start-consult", duty)
    assert status == 409
    status, snap = await api.call("GET", "/api/clinic/dashboard", duty)
    assert snap["alerts"] == []


async def test_an_alert_reaches_the_webhook(start_server: Any, aiohttp_server: Any) -> None:
    from aiohttp import ClientSession, web

    from tests.clinic.conftest import Api
    from tests.test_webhooks import Receiver, _hooks

    rec, hooks = Receiver(), web.Application()
    hooks.router.add_post("/hook", rec.handle)
    rec.url = str((await aiohttp_server(hooks)).make_url("/hook"))
    live = await start_server(**_hooks(rec))
    _device, key = await add_device(live.app[RECORDS], "pat-gu", "cardiology", "bp-9")
    async with ClientSession() as http:
        status, body = await post(Api(live, http), key, obs("t-1", "8310-5", 39.6, "Cel"))
    assert status == 201 and len(body["alerts"]) == 1, body
    (hook,) = await rec.wait_for("device_alert")
    assert hook["alert"]["id"] == body["alerts"][0]["id"]
    assert hook["alert"]["code"] == "8310-5" and hook["alert"]["direction"] == "high"
