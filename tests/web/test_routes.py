"""The app's HTTP routes without a browser: page, missing bundle, features, education."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import web_client


async def get(url: str) -> tuple[int, str, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as res:
        return res.status, await res.text(), dict(res.headers)


async def test_join_page_and_client_config(live: Any) -> None:
    status, body, _ = await get(f"{live.url}/join?token=x")
    if web_client.BUNDLE.is_file():
        assert status == 200 and "/static/dist/app.js?v=" in body and "/static/app.css?v=" in body
    status, body, _ = await get(f"{live.url}/api/client-config")
    assert status == 200
    features = json.loads(body)["features"]
    # the SFU and annotation are wired into create_app; rehab reports what is registered
    assert features["media"] is True and features["documents"] is True
    assert isinstance(features["rehab"], bool)


async def test_the_bundle_goes_compressed_to_browsers_that_accept_gzip(live: Any) -> None:
    """Patients on poor links: the README set-up writes app.js.gz, and the server sends it."""
    if not web_client.BUNDLE.is_file():
        pytest.skip("the browser bundle is not built (scripts/build-web.sh)")
    url = f"{live.url}/static/dist/app.js"
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(url, headers={"Accept-Encoding": "gzip"}) as res:
            assert res.status == 200 and res.headers.get("Content-Encoding") == "gzip"
            packed = await res.read()
        async with http.get(url, headers={"Accept-Encoding": "identity"}) as res:
            assert res.status == 200 and "Content-Encoding" not in res.headers
            plain = await res.read()
    assert gzip.decompress(packed) == plain == web_client.BUNDLE.read_bytes()
    assert len(packed) < len(plain) / 2


async def test_missing_bundle_gives_a_clear_page(
    live: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(web_client, "BUNDLE", tmp_path / "absent.js")
    status, body, _ = await get(f"{live.url}/")
    assert status == 503
    assert "scripts/build-web.sh" in body


async def test_education_defaults_and_hospital_folder(live: Any) -> None:
    status, body, _ = await get(f"{live.url}/api/education")
    items = json.loads(body)["items"]
    assert status == 200 and {i["lang"] for i in items} == {"en", "zh-CN"}
    status, _, headers = await get(f"{live.url}{items[0]['url']}")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")

    folder = live.settings.data_dir / "education"
    folder.mkdir()
    (folder / "diabetes-diet.txt").write_text("Eating well with diabetes\nFewer sweets.\n")
    (folder / "notes.exe").write_bytes(b"MZ")
    status, body, _ = await get(f"{live.url}/api/education")
    items = json.loads(body)["items"]
    assert [(i["name"], i["title"], i["lang"]) for i in items] == [
        ("diabetes-diet.txt", "Eating well with diabetes", None)
    ]
    for bad in ("notes.exe", "..%2Fteleconsult.db", "missing.txt"):
        status, _, _ = await get(f"{live.url}/education/{bad}")
        assert status == 404, bad
