"""Every bad message gets a typed error; the connection and the room keep working."""

import pytest

from tests.helpers import Client

BAD = [
    ("chat:send", "not an object", "invalid_payload"),
    ("chat:send", ["a", "list"], "invalid_payload"),
    ("chat:send", {"text": 42}, "invalid_payload"),
    ("chat:send", {"text": "hi", "admin": True}, "invalid_payload"),
    ("chat:send", {}, "invalid_payload"),
    ("chat:send", {"text": "x", "reply_to": -1}, "invalid_payload"),
    ("host:mute", {"identity": "../../etc", "kind": "audio"}, "invalid_payload"),
    ("host:mute", {"identity": "a", "kind": "smell"}, "invalid_payload"),
    ("no:such:event", {}, "unknown_event"),
    ("chat:send", {"text": "x" * 70000}, "payload_too_large"),
    ("chat:send", {"ref": "r" * 65, "text": "x"}, "invalid_payload"),
]


@pytest.mark.parametrize(("event", "payload", "code"), BAD)
async def test_bad_payload_answered_and_room_survives(connect, event, payload, code):
    host = await connect("r", "dr", "host")
    other = await connect("r", "cardio", "clinician")
    ack = await host.call(event, payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == code, ack
    err = await host.next("error")
    assert err["code"] == code and err["event"] == event and err["message"]
    # same connection still works, and the room still works for others
    assert (await host.call("chat:send", {"text": "after"}))["ok"]
    msg = await other.next("chat:message")
    assert msg["text"] == "after"


async def test_error_echoes_ref(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("chat:send", {"ref": "req-7", "text": 5})
    assert ack["error"]["ref"] == "req-7"


async def test_join_twice_is_a_conflict(connect):
    host = await connect("r", "dr", "host")
    ack = await host.call("join", {})
    assert ack["error"]["code"] == "conflict"


async def test_events_before_join_are_refused(connect):
    client = await connect("r", "dr", "host", join=False)
    ack = await client.call("chat:send", {"text": "early"})
    assert ack["error"]["code"] == "not_joined"


async def test_rate_limit(start_server):
    live = await start_server(limits={"rate_per_s": 1, "rate_burst": 5})
    client = Client(live.url, live.tokens("r", "a", "host"))
    await client.connect()
    try:
        await client.call("join", {})  # 1 token
        results = [await client.call("chat:history", {}) for _ in range(10)]
        codes = [r.get("error", {}).get("code") for r in results]
        assert codes.count(None) <= 5
        assert "rate_limited" in codes
        # still connected and served once the bucket refills
        await client.next("error", where=lambda e: e["code"] == "rate_limited")
        assert client.sio.connected
    finally:
        await client.close()


async def test_room_full(start_server):
    live = await start_server(limits={"max_participants_per_room": 2})
    clients = []
    try:
        for name in ("a", "b"):
            c = Client(live.url, live.tokens("r", name, "host"))
            await c.connect()
            await c.call("join", {})
            clients.append(c)
        from tests.helpers import ConnectRefused

        c = Client(live.url, live.tokens("r", "c", "clinician"))
        with pytest.raises(ConnectRefused) as info:
            await c.connect()
        assert info.value.code == "room_full"
    finally:
        for c in clients:
            await c.close()


async def test_node_room_limit(start_server):
    live = await start_server(limits={"max_rooms": 1})
    from tests.helpers import ConnectRefused

    first = Client(live.url, live.tokens("r1", "a", "host"))
    await first.connect()
    await first.call("join", {})
    try:
        second = Client(live.url, live.tokens("r2", "b", "host"))
        with pytest.raises(ConnectRefused) as info:
            await second.connect()
        assert info.value.code == "node_full"
    finally:
        await first.close()


async def test_cheap_events_get_a_higher_rate(start_server):
    from rtc_server.keys import SIGNALING
    from signaling.schemas import ChatHistoryIn

    live = await start_server(limits={"rate_per_s": 1, "rate_burst": 5})

    async def handler(caller, msg):
        return {}

    live.app[SIGNALING].add_handler("test:cheap", ChatHistoryIn, handler, cost=0.2)
    client = Client(live.url, live.tokens("r", "a", "host"))
    await client.connect()
    try:
        await client.call("join", {})  # 1 of the 5 tokens
        cheap = [await client.call("test:cheap", {}) for _ in range(15)]
        assert all(r["ok"] for r in cheap), "15 events at 0.2 fit in the 4 tokens left"
        dear = [await client.call("chat:history", {}) for _ in range(3)]
        assert any(r.get("error", {}).get("code") == "rate_limited" for r in dear)
    finally:
        await client.close()
