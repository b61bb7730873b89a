"""Fixtures for annotation tests against a live server: uploads and document clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydicom.data import get_testdata_file

from annotation.client import AnnotationClient
from tests.conftest import Live

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
CT_BYTES = CT_SMALL.read_bytes()


async def upload(
    live: Live,
    room: str,
    identity: str,
    role: str,
    data: bytes,
    name: str = "file.bin",
    **token_kw: Any,
) -> tuple[int, dict[str, Any]]:
    """POST a multipart upload; (status, json body)."""
    token = live.tokens(room, identity, role, **token_kw)
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/rooms/{room}/documents",
            data=form,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        return resp.status, await resp.json()


async def http_get(live: Live, path: str, token: str | None) -> tuple[int, bytes, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(live.url + path, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers


@pytest.fixture
async def live(start_server: Any) -> Live:
    # a drawing client sends many small updates: lift the per-connection rate for these tests
    return await start_server(limits={"rate_per_s": 2000, "rate_burst": 2000})


@pytest.fixture
async def ct_doc(live: Live) -> dict[str, Any]:
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 201, body
    return body["document"]


MakeClient = Callable[..., Awaitable[AnnotationClient]]


@pytest.fixture
async def make_client(live: Live) -> AsyncIterator[MakeClient]:
    """make_client(identity, role, room="mdt", **token_kw) -> a joined AnnotationClient."""
    made: list[AnnotationClient] = []

    async def make(identity: str, role: str, room: str = "mdt", **kw: Any) -> AnnotationClient:
        client = AnnotationClient(live.url, live.tokens(room, identity, role, **kw))
        made.append(client)
        return await client.connect()

    yield make
    for client in made:
        await client.close()
