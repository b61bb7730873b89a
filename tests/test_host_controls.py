"""Host controls: mute, remove, lock, end; moderators only."""

import pytest

from tests.helpers import ConnectRefused


async def test_mute_request_reaches_participant_and_room(connect):
    host = await connect("r", "dr", "host")
    clin = await connect("r", "cardio", "clinician")
    ack = await host.call("host:mute", {"identity": "cardio", "kind": "audio"})
    assert ack["ok"]
    request = await clin.next("mute:request")
    assert request == {"kind": "audio", "by": "dr"}
    updated = await host.next("participant:updated", where=lambda p: p["identity"] == "cardio")
    assert updated["forced_mute"]["audio"] is True and updated["muted"]["audio"] is True
    # the participant may unmute itself, which lifts the forced mute
    ack = await clin.call("media:mute", {"kind": "audio", "muted": False})
    assert ack["ok"]
    updated = await host.next(
        "participant:updated", where=lambda p: p["identity"] == "cardio" and not p["muted"]["audio"]
    )
    assert updated["forced_mute"]["audio"] is False


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("host:mute", {"identity": "dr", "kind": "audio"}),
        ("host:remove", {"identity": "dr"}),
        ("host:lock", {"locked": True}),
        ("host:end", {}),
        ("room:policy", {"lobby_policy": "everyone_waits"}),
    ],
)
async def test_non_moderators_are_refused(connect, event, payload):
    host = await connect("r", "dr", "host")
    clin = await connect("r", "cardio", "clinician")
    ack = await clin.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    err = await clin.next("error")
    assert err["code"] == "permission_denied" and err["event"] == event
    # nothing changed: the host is still there and the room still works
    assert (await host.call("chat:send", {"text": "still here"}))["ok"]


async def test_remove_participant_keeps_them_out(connect):
    host = await connect("r", "dr", "host")
    guest = await connect("r", "g1", "clinician")
    ack = await host.call("host:remove", {"identity": "g1", "reason": "wrong room"})
    assert ack["ok"]
    removed = await guest.next("removed")
    assert removed["reason"] == "wrong room" and removed["by"] == "dr"
    await guest.wait_disconnected()
    left = await host.next("participant:left")
    assert left == {"identity": "g1", "reason": "removed"}
    with pytest.raises(ConnectRefused) as info:
        await connect("r", "g1", "clinician")
    assert info.value.code == "removed"


async def test_remove_waiting_patient(connect):
    host = await connect("r", "dr", "host")
    patient = await connect("r", "pat", "patient")
    assert (await host.call("host:remove", {"identity": "pat"}))["ok"]
    await patient.next("lobby:denied")
    with pytest.raises(ConnectRefused) as info:
        await connect("r", "pat", "patient")
    assert info.value.code == "removed"


async def test_host_cannot_remove_self(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("host:remove", {"identity": "dr"})
    assert ack["error"]["code"] == "conflict"


async def test_lock_keeps_known_participants(connect):
    host = await connect("r", "dr", "host")
    clin = await connect("r", "cardio", "clinician")
    await host.call("host:lock", {"locked": True})
    update = await clin.next("room:updated")
    assert update["locked"] is True
    await clin.close()
    # someone who was in may come back; a newcomer may not
    back = await connect("r", "cardio", "clinician")
    assert back.joined["status"] == "joined"
    with pytest.raises(ConnectRefused):
        await connect("r", "neuro", "clinician")
    await host.call("host:lock", {"locked": False})
    assert (await connect("r", "neuro", "clinician")).joined["status"] == "joined"


async def test_end_room_for_all(connect):
    host = await connect("r", "dr", "host")
    clin = await connect("r", "cardio", "clinician")
    patient = await connect("r", "pat", "patient")  # waiting
    ack = await host.call("host:end", {"reason": "consult complete"})
    assert ack["ok"]
    for client in (clin, patient):
        ended = await client.next("room:ended")
        assert ended == {"by": "dr", "reason": "consult complete"}
        await client.wait_disconnected()
    with pytest.raises(ConnectRefused) as info:
        await connect("r", "cardio", "clinician")
    assert info.value.code == "room_ended"


async def test_same_identity_reconnect_replaces_old_connection(connect):
    host = await connect("r", "dr", "host")
    first = await connect("r", "cardio", "clinician")
    second = await connect("r", "cardio", "clinician")
    await first.next("replaced")
    await first.wait_disconnected()
    assert second.joined["status"] == "joined"
    ids = [p["identity"] for p in second.joined["room"]["participants"]]
    assert sorted(ids) == ["cardio", "dr"]
    assert (await host.call("chat:send", {"text": "x"}))["ok"]
    msg = await second.next("chat:message")
    assert msg["text"] == "x"
