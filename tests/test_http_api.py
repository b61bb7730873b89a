"""HTTP endpoints: health, metrics, admin token API."""

import asyncio

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


async def test_metrics_show_a_busy_event_loop(live, caplog):
    """The loop held for 1.5 s (as a CPU-starved server's is): the lag histogram counts a
    lag over 0.25 s and the log says the server is short of CPU."""
    import time

    async def scrape() -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{live.url}/metrics") as resp:
            return await resp.text()

    def over(text: str) -> float:  # observations above the 0.25 s bucket
        counts = {}
        for line in text.splitlines():
            if line.startswith("teleconsult_event_loop_lag_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                counts[le] = float(line.rsplit(" ", 1)[1])
        return counts["+Inf"] - counts["0.25"]

    before = over(await scrape())
    time.sleep(1.5)  # noqa: ASYNC251 - the point: block the server's loop
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while over(await scrape()) <= before:
        assert loop.time() < deadline, "the lag was never observed"
        await asyncio.sleep(0.1)
    assert any("ran" in r.message and "short of CPU" in r.message for r in caplog.records)


def test_the_lag_gauge_shows_the_worst_since_the_last_scrape() -> None:
    from prometheus_client import CollectorRegistry

    from kernel.looplag import WARN_EVERY_S, LoopLag

    lag = LoopLag(CollectorRegistry())
    warned = lag.observe(0.02, now=100.0, last_warning=-1e9)
    warned = lag.observe(1.4, now=101.0, last_warning=warned)
    assert warned == 101.0  # logged
    assert lag.observe(2.0, now=102.0, last_warning=warned) == 101.0  # not again this minute
    assert lag.observe(2.0, now=101.0 + WARN_EVERY_S, last_warning=warned) > 101.0
    assert lag._take_worst() == 2.0 and lag._take_worst() == 0.0
