"""/metrics: loopback only by default, a bearer token or a listener of its own when set, and
no room names or identities in labels unless asked for."""

from __future__ import annotations

import aiohttp

from media.service import MediaCollector
from tests.helpers import free_port


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.text()


async def test_default_metrics_answer_direct_loopback_only(live, connect):
    await connect("ward-7", "dr-wang", "host", name="王医生")
    status, text = await _get(f"{live.url}/metrics")
    assert status == 200 and "teleconsult_participants 1.0" in text
    assert "dr-wang" not in text and "ward-7" not in text and "王" not in text
    # through a reverse proxy on the same host (it adds its headers): refused
    status, _ = await _get(f"{live.url}/metrics", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403


async def test_metrics_token(start_server):
    live = await start_server(metrics_token="scrape-秘密-token")
    status, body = await _get(f"{live.url}/metrics")
    assert status == 401 and "unauthorized" in body
    status, _ = await _get(f"{live.url}/metrics", {"Authorization": "Bearer wrong"})
    assert status == 401
    token = live.settings.metrics_token.get_secret_value()
    status, text = await _get(f"{live.url}/metrics", {"Authorization": f"Bearer {token}"})
    assert status == 200 and "teleconsult_rooms" in text


async def test_metrics_on_their_own_port(start_server):
    port = free_port()
    live = await start_server(metrics_port=port)
    status, _ = await _get(f"{live.url}/metrics")
    assert status == 404
    status, text = await _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and "teleconsult_rooms" in text


def test_participant_series_only_when_asked_for(live):
    from media.service import MEDIA

    names = {f.name for f in MediaCollector(live.app[MEDIA]).collect()}
    assert not any("participant" in n for n in names)
    names = {f.name for f in MediaCollector(live.app[MEDIA], per_participant=True).collect()}
    assert "teleconsult_media_participant_frames_in" in names
