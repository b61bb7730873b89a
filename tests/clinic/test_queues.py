"""Department queues: triage orders the queue, the doctor's level decides what is offered,
take-next gives a host link and admits the patient when the doctor joins."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from clinic.triage import assess
from kernel.keys import AUDIT
from tests.helpers import Client, ConnectRefused

RED_FLAG = {
    "resourceType": "QuestionnaireResponse",
    "questionnaire": "Questionnaire/symptom-tree",
    "item": [
        {"linkId": "complaint", "answer": [{"valueCoding": {"code": "chest-pain"}}]},
        {
            "linkId": "chest",
            "item": [
                {"linkId": "chest.red-flags", "answer": [{"valueCoding": {"code": "sweating"}}]}
            ],
        },
    ],
}


def token_of(url: str) -> str:
    return parse_qs(urlparse(url).query)["token"][0]


def test_rules_from_answers_and_vitals() -> None:
    assert assess(None).risk == "low"
    high = assess({"questionnaire_response": RED_FLAG})
    assert high.risk == "high" and high.reasons[0] == "chest pain with a red flag"
    assert high.reasons_zh[0] == "胸痛伴危险信号" and len(high.reasons_zh) == len(high.reasons)
    assert high.as_dict()["reasons_zh"] == list(high.reasons_zh)
    assert assess({"vitals": {"spo2": 90}}).risk == "high"
    assert assess({"vitals": {"temperature_c": 39.2}}).risk == "medium"
    assert assess({"vitals": {"heart_rate": 80, "systolic_bp": 120}}).risk == "low"


async def test_queue_by_risk_and_level_then_take_next(live: Any, api: Any) -> None:
    patients = {}
    cards = {
        "p-low": {"chief_complaint": "cough"},
        "p-high": {"chief_complaint": "胸痛", "questionnaire_response": RED_FLAG},
        "p-med": {"chief_complaint": "fever", "vitals": {"temperature_c": 39.5}},
        "p-low2": {"chief_complaint": "rash"},
    }
    try:
        for identity, card in cards.items():
            visit = await api.visit("cardiology", identity, identity.upper())
            client = Client(live.url, token_of(visit["url"]))
            await client.connect()
            ack = await client.call("join", {"card": card})
            assert ack["status"] == "waiting"
            patients[identity] = client
        other = await api.visit("dermatology", "p-derm", "Derm")

        order = {}
        for level in ("resident", "attending", "chief"):
            duty = await api.duty(f"dr-{level}", level, ["cardiology"])
            status, snap = await api.call("GET", "/api/clinic/dashboard", duty)
            assert status == 200, snap
            order[level] = [e["patient"]["identity"] for e in snap["queues"]["cardiology"]]
        assert order["attending"] == ["p-high", "p-med", "p-low", "p-low2"]
        assert order["resident"] == ["p-med", "p-low", "p-low2"]
        assert order["chief"] == ["p-high", "p-med"]
        assert other["department"] == "dermatology"

        duty = await api.duty("dr-zhang", "attending", ["cardiology", "dermatology"])
        status, taken = await api.call("POST", "/api/clinic/take-next", duty)
        assert status == 200 and taken["patient"]["identity"] == "p-high"
        assert taken["risk"] == "high"
        status, snap = await api.call("GET", "/api/clinic/dashboard", duty)
        assert snap["queues"]["cardiology"][0]["patient"]["identity"] == "p-med"

        doctor = Client(live.url, token_of(taken["url"]))
        await doctor.connect()
        try:
            ack = await doctor.call("join", {})
            assert ack["status"] == "joined" and ack["self"]["role"] == "host"
            admitted = await patients["p-high"].next("lobby:admitted")
            assert admitted["by"] == "dr-zhang"
        finally:
            await doctor.close()
        status, snap = await api.call("GET", "/api/clinic/dashboard", duty)
        assert [c["patient"]["identity"] for c in snap["consults_today"]] == ["p-high"]

        # the chief is offered nothing left at high risk... but medium: p-med next
        chief = await api.duty("dr-chief2", "chief", ["cardiology"])
        status, taken = await api.call("POST", "/api/clinic/take-next", chief)
        assert taken["patient"]["identity"] == "p-med"
        status, body = await api.call("POST", "/api/clinic/take-next", chief)
        assert status == 404 and body["error"]["code"] == "queue_empty"
    finally:
        for client in patients.values():
            await client.close()


async def test_tokens_are_not_interchangeable(live: Any, api: Any) -> None:
    status, body = await api.call("GET", "/api/clinic/dashboard")
    assert status == 401 and body["error"]["code"] == "unauthorized"
    join = live.tokens("r", "dr", "host")
    status, _ = await api.call("GET", "/api/clinic/dashboard", join)
    assert status == 401
    duty = await api.duty("dr-x", "resident", ["cardiology"])
    client = Client(live.url, duty)
    with pytest.raises(ConnectRefused) as refused:
        await client.connect()
    assert refused.value.code == "token_invalid"
    status, body = await api.call(
        "POST",
        "/api/clinic/duty-tokens",
        api.admin,
        json={"identity": "dr-y", "name": "Y", "level": "professor", "departments": ["x"]},
    )
    assert status == 400 and "level" in body["error"]["message"]
    status, body = await api.call("POST", "/api/clinic/visits", "wrong-key", json={})
    assert status == 401
    # a revoked duty token stops working
    jti_status, _ = await api.call(
        "POST", "/api/tokens/revoke", api.admin, json={"jti": duty_jti(duty)}
    )
    assert jti_status == 200
    status, _ = await api.call("GET", "/api/clinic/dashboard", duty)
    assert status == 401


def duty_jti(token: str) -> str:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})["jti"]


async def test_a_flood_of_refused_admin_calls_is_aggregated(live: Any, api: Any) -> None:
    """The clinic's admin routes refuse like the token API (kernel/http.py): the first refusal
    of a kind is an audit entry, the repeats one count per window, not one row each."""
    audit = live.app[AUDIT]
    await api.call("POST", "/api/clinic/visits", "wrong-key", json={})
    before = audit.size
    for _ in range(30):
        status, body = await api.call("POST", "/api/clinic/visits", "wrong-key", json={})
        assert status == 401 and body["error"]["code"] == "unauthorized"
    assert audit.size == before
    seq = await audit.flush_aggregated()
    assert seq is not None and audit.size == before + 1
