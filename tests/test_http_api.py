"""HTTP endpoints: health, metrics, admin token API."""

import aiohttp

from tests.helpers import Client


async def test_healthz(live, connect):
    await connect("r", "dr", "host")
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok" and body["rooms"] == 1 and body["participants"] == 1
    assert body["version"]


async def test_metrics_exposes_room_gauges(live, connect):
    host = await connect("r", "dr", "host")
    await host.call("chat:send", {"text": 1})
    async with aiohttp.ClientSession() as http, http.get(f"{live.url}/metrics") as resp:
        text = await resp.text()
    assert "teleconsult_participants 1.0" in text
    assert 'teleconsult_event_errors_total{code="invalid_payload"} 1.0' in text


async def test_token_api_requires_admin_key(live):
    async with aiohttp.ClientSession() as http:
        body = {"room": "r", "identity": "p", "role": "patient"}
        async with http.post(f"{live.url}/api/tokens", json=body) as resp:
            assert resp.status == 401
        headers = {"Authorization": "Bearer wrong"}
        async with http.post(f"{live.url}/api/tokens", json=body, headers=headers) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_token_api_mints_working_join_link(live):
    key = live.settings.admin_api_key.get_secret_value()
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession() as http:
        body = {"room": "ward-3", "identity": "pat-17", "role": "patient", "name": "Li Na"}
        async with http.post(f"{live.url}/api/tokens", json=body, headers=headers) as resp:
            assert resp.status == 201
            minted = await resp.json()
        bad = {"room": "ward 3", "identity": "x", "role": "king"}
        async with http.post(f"{live.url}/api/tokens", json=bad, headers=headers) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid_payload"
    assert minted["url"] == f"{live.settings.base_url}/join?token={minted['token']}"
    assert minted["jti"]
    client = Client(live.url, minted["token"])
    await client.connect()
    try:
        ack = await client.call("join", {})
        assert ack["status"] == "waiting"
    finally:
        await client.close()
