"""Waiting room: patients wait, doctors see the queue with cards, admit or deny."""

import pytest

from tests.helpers import ConnectRefused

CARD = {
    "chief_complaint": "knee pain after surgery",
    "symptoms": [{"question": "Pain 0-10?", "answer": "6"}],
    "medications": ["paracetamol 500 mg"],
    "allergies": ["penicillin"],
    "vitals": {"systolic_bp": 130, "diastolic_bp": 85, "heart_rate": 72, "temperature_c": 36.8},
}


async def test_patient_waits_then_host_admits(connect):
    host = await connect("r", "dr", "host", "Dr Wang")
    patient = await connect("r", "pat", "patient", "Mr Zhang", join=False)
    ack = await patient.call("join", {"card": CARD})
    assert ack["ok"] and ack["status"] == "waiting"
    assert ack["position"] == 1 and ack["waiting"] == 1
    assert ack["admitters_present"] is True

    queue = await host.next("lobby:queue", where=lambda q: q["entries"])
    entry = queue["entries"][0]
    assert entry["identity"] == "pat" and entry["name"] == "Mr Zhang"
    assert entry["card"]["allergies"] == ["penicillin"]
    assert entry["waited_s"] >= 0

    # a waiting patient cannot use the room yet
    chat = await patient.call("chat:send", {"text": "hello?"})
    assert chat["error"]["code"] == "not_joined"

    ack = await host.call("lobby:admit", {"identity": "pat"})
    assert ack["ok"] and ack["admitted"] == ["pat"]
    admitted = await patient.next("lobby:admitted")
    assert admitted["status"] == "joined" and admitted["by"] == "dr"
    assert {p["identity"] for p in admitted["room"]["participants"]} == {"dr", "pat"}
    joined = await host.next("participant:joined")
    assert joined["identity"] == "pat" and joined["role"] == "patient"
    assert (await patient.call("chat:send", {"text": "thanks"}))["ok"]


async def test_positions_update_as_queue_moves(connect):
    host = await connect("r", "dr", "host")
    p1 = await connect("r", "p1", "patient")
    p2 = await connect("r", "p2", "patient")
    p3 = await connect("r", "p3", "guest")
    assert [p.joined["position"] for p in (p1, p2, p3)] == [1, 2, 3]
    await host.call("lobby:admit", {"identity": "p1"})
    update = await p2.next("lobby:position", where=lambda d: d["waiting"] == 2)
    assert update["position"] == 1
    update = await p3.next("lobby:position", where=lambda d: d["waiting"] == 2)
    assert update["position"] == 2
    # after one admission the room has a wait estimate
    assert update["expected_wait_s"] is not None


async def test_patient_waits_for_doctor_who_arrives_later(connect):
    patient = await connect("r", "pat", "patient")
    assert patient.joined["status"] == "waiting"
    assert patient.joined["admitters_present"] is False
    host = await connect("r", "dr", "host")
    assert [e["identity"] for e in host.joined["lobby"]] == ["pat"]
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.next("lobby:admitted")


async def test_deny_closes_patient_connection(connect):
    host = await connect("r", "dr", "host")
    patient = await connect("r", "pat", "patient")
    ack = await host.call("lobby:deny", {"identity": "pat", "reason": "wrong clinic"})
    assert ack["ok"]
    denied = await patient.next("lobby:denied")
    assert denied["reason"] == "wrong clinic"
    await patient.wait_disconnected()
    queue = await host.next("lobby:queue", where=lambda q: not q["entries"])
    assert queue["entries"] == []


async def test_card_can_be_updated_while_waiting(connect):
    host = await connect("r", "dr", "host")
    patient = await connect("r", "pat", "patient")
    ack = await patient.call("lobby:card", {"card": {"chief_complaint": "dizzy"}})
    assert ack["ok"]
    queue = await host.next("lobby:queue", where=lambda q: q["entries"] and q["entries"][0]["card"])
    assert queue["entries"][0]["card"]["chief_complaint"] == "dizzy"


async def test_invalid_card_refused(connect):
    patient = await connect("r", "pat", "patient", join=False)
    bad = {**CARD, "vitals": {"heart_rate": 9000}}
    ack = await patient.call("join", {"card": bad})
    assert ack["error"]["code"] == "invalid_payload"
    assert "heart_rate" in ack["error"]["message"]
    # still able to join properly afterwards
    ack = await patient.call("join", {"card": CARD})
    assert ack["status"] == "waiting"


async def test_clinicians_enter_directly_by_default(connect):
    await connect("r", "dr", "host")
    clin = await connect("r", "cardio", "clinician")
    assert clin.joined["status"] == "joined"


async def test_everyone_waits_policy(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("room:policy", {"lobby_policy": "everyone_waits"})
    assert ack["ok"]
    clin = await connect("r", "cardio", "clinician")
    assert clin.joined["status"] == "waiting"


async def test_admit_all(connect):
    host = await connect("r", "dr", "host")
    patients = [await connect("r", f"p{i}", "patient") for i in range(3)]
    ack = await host.call("lobby:admit_all", {})
    assert sorted(ack["admitted"]) == ["p0", "p1", "p2"]
    for p in patients:
        await p.next("lobby:admitted")


async def test_admitted_patient_reconnects_without_waiting(connect):
    host = await connect("r", "dr", "host")
    patient = await connect("r", "pat", "patient")
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.next("lobby:admitted")
    await patient.close()
    again = await connect("r", "pat", "patient")
    assert again.joined["status"] == "joined"


async def test_patient_cannot_admit(connect):
    await connect("r", "dr", "host")
    p1 = await connect("r", "p1", "patient")
    await connect("r", "p2", "patient")
    # p1 is waiting: not joined yet
    ack = await p1.call("lobby:admit", {"identity": "p2"})
    assert ack["error"]["code"] in ("not_joined", "permission_denied")


async def test_admit_unknown_identity(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("lobby:admit", {"identity": "nobody"})
    assert ack["error"]["code"] == "not_found"


async def test_locked_room_refuses_newcomers(connect):
    host = await connect("r", "dr", "host")
    await host.call("host:lock", {"locked": True})
    with pytest.raises(ConnectRefused) as info:
        await connect("r", "pat", "patient")
    assert info.value.code == "room_locked"
