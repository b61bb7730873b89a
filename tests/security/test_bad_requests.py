"""Hostile or careless requests get typed errors, never internal_error or HTTP 500."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.helpers import Client


async def test_multipart_without_boundary_is_a_4xx(live):
    token = live.tokens("ward", "dr-host", "host")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/rooms/ward/documents",
            data=b"--x\r\n\r\nhello\r\n--x--\r\n",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data"},
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_payload", body


async def test_host_header_is_not_copied_into_the_csp(live):
    host = "evil.example; script-src 'unsafe-inline' *"
    reader, writer = await asyncio.open_connection(live.server.host, live.server.port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    raw = (await asyncio.wait_for(reader.read(), 10)).decode()
    writer.close()
    csp = next(
        line for line in raw.split("\r\n") if line.lower().startswith("content-security-policy:")
    )
    assert "unsafe-inline' *" not in csp and "evil.example" not in csp
    assert "script-src 'self';" in csp
    # a plain host:port is still named for the sockets
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/healthz") as resp:
        port = live.server.port
        assert f"ws://127.0.0.1:{port}" in resp.headers["Content-Security-Policy"]


async def test_deep_json_lone_surrogate_and_huge_ids_are_typed_errors(live):
    client = Client(live.url, live.tokens("ward", "dr-host", "host"))
    await client.connect()
    try:
        await client.call("join", {})
        deep: object = "医"
        for _ in range(400):
            deep = [deep]
        cases = {
            "deep": {"text": "x", "extra": deep},
            "surrogate": {"text": "复诊 \ud800 next week"},
            "reply_to": {"text": "回复", "reply_to": 2**70},
        }
        for name, payload in cases.items():
            ack = await client.call("chat:send", payload)
            assert ack["ok"] is False, name
            assert ack["error"]["code"] == "invalid_payload", (name, ack)
        ack = await client.call("chat:send", {"text": "仍然可以聊天"})
        assert ack["ok"], ack
    finally:
        await client.close()
