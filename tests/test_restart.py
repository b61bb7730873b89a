"""A restart loses nothing that was acknowledged; shutdown tells clients and closes records."""

from rtc_server.keys import RECORDS
from tests.helpers import Client, ConnectRefused


async def joined(live, room, identity, role):
    client = Client(live.url, live.tokens(room, identity, role))
    await client.connect()
    client.joined = await client.call("join", {})
    return client


async def test_restart_keeps_chat_lock_bans_and_admissions(start_server):
    live = await start_server()
    host = await joined(live, "r", "dr", "host")
    patient = await joined(live, "r", "pat", "patient")
    guest = await joined(live, "r", "g", "clinician")
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.next("lobby:admitted")
    sent = await host.call("chat:send", {"text": "BP 130/85 noted"})
    await host.call("host:remove", {"identity": "g"})
    await guest.wait_disconnected()
    await host.call("host:lock", {"locked": True})
    await host.call("room:policy", {"lobby_policy": "everyone_waits"})
    await live.server.close()
    await host.wait_disconnected()

    live2 = await start_server()
    host2 = await joined(live2, "r", "dr", "host")
    state = host2.joined["room"]
    assert state["locked"] is True and state["lobby_policy"] == "everyone_waits"
    assert [m["text"] for m in host2.joined["chat"]] == ["BP 130/85 noted"]
    assert host2.joined["chat"][0]["id"] == sent["message"]["id"]
    # the admitted patient comes back without waiting, even though the room is locked
    patient2 = await joined(live2, "r", "pat", "patient")
    assert patient2.joined["status"] == "joined"
    # the removed clinician stays out
    try:
        await joined(live2, "r", "g", "clinician")
        raise AssertionError("removed participant got back in")
    except ConnectRefused as exc:
        assert exc.code == "removed"
    for c in (host2, patient2):
        await c.close()


async def test_waiting_position_survives_reconnect(start_server):
    live = await start_server()
    host = await joined(live, "r", "dr", "host")
    p1 = await joined(live, "r", "p1", "patient")
    p2 = await joined(live, "r", "p2", "patient")
    await p1.close()
    await host.next("lobby:queue", where=lambda q: len(q["entries"]) == 1)
    p1b = await joined(live, "r", "p1", "patient")
    # p1 asked first, so it is first again
    assert p1b.joined["position"] == 1
    update = await p2.next("lobby:position", where=lambda d: d["waiting"] == 2)
    assert update["position"] == 2
    for c in (host, p1b, p2):
        await c.close()


async def test_shutdown_tells_clients_and_closes_sessions(start_server):
    live = await start_server()
    host = await joined(live, "r", "dr", "host")
    store = live.app[RECORDS]
    await live.server.close()
    notice = await host.next("server:shutdown")
    assert notice["reconnect"] is True
    await host.wait_disconnected()
    live2 = await start_server()
    sessions = await live2.app[RECORDS].sessions("r")
    assert sessions and all(s["left_at"] is not None for s in sessions)
    assert sessions[0]["leave_reason"] == "server_shutdown"
    assert store is not live2.app[RECORDS]
