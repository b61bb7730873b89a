"""Chat: persisted, fanned out, history for late joiners, replies, limits."""


async def test_chat_fans_out_to_room(connect):
    a = await connect("r", "a", "host", "Dr A")
    b = await connect("r", "b", "clinician", "Dr B")
    c = await connect("r", "c", "clinician")
    ack = await a.call("chat:send", {"text": "CT is uploaded"})
    assert ack["ok"]
    for client in (a, b, c):
        msg = await client.next("chat:message")
        assert msg["text"] == "CT is uploaded"
        assert msg["sender"] == {"identity": "a", "name": "Dr A", "role": "host"}
        assert msg["id"] == ack["message"]["id"]


async def test_other_rooms_do_not_see_chat(connect):
    a = await connect("r1", "a", "host")
    other = await connect("r2", "b", "host")
    await a.call("chat:send", {"text": "private"})
    await a.next("chat:message")
    assert (await other.call("chat:send", {"text": "mine"}))["ok"]
    msg = await other.next("chat:message")
    assert msg["text"] == "mine"
    assert other.drain("chat:message") == []


async def test_late_joiner_gets_history_and_replies(connect):
    a = await connect("r", "a", "host")
    first = (await a.call("chat:send", {"text": "first"}))["message"]
    reply = await a.call("chat:send", {"text": "second", "reply_to": first["id"]})
    assert reply["message"]["reply_to"] == first["id"]
    late = await connect("r", "late", "clinician")
    texts = [m["text"] for m in late.joined["chat"]]
    assert texts == ["first", "second"]
    page = await late.call("chat:history", {"before_id": reply["message"]["id"], "limit": 10})
    assert [m["text"] for m in page["messages"]] == ["first"]


async def test_reply_to_unknown_message(connect):
    a = await connect("r", "a", "host")
    ack = await a.call("chat:send", {"text": "x", "reply_to": 999999})
    assert ack["error"]["code"] == "not_found"


async def test_chat_size_limit_and_empty(start_server):
    live = await start_server(limits={"chat_max_chars": 100})
    from tests.helpers import Client

    client = Client(live.url, live.tokens("r", "a", "host"))
    await client.connect()
    try:
        await client.call("join", {})
        too_long = await client.call("chat:send", {"text": "x" * 101})
        assert too_long["error"]["code"] == "payload_too_large"
        empty = await client.call("chat:send", {"text": "   "})
        assert empty["error"]["code"] == "invalid_payload"
        assert (await client.call("chat:send", {"text": "x" * 100}))["ok"]
    finally:
        await client.close()
