async def test_host_joins_and_chats(connect):
    host = await connect("r1", "dr-li", "host", "Dr Li")
    assert host.joined["ok"] and host.joined["status"] == "joined"
    ack = await host.call("chat:send", {"text": "hello"})
    assert ack["ok"], ack
    msg = await host.next("chat:message")
    assert msg["text"] == "hello"
