"""Fixtures for the clinic tests: admin and duty calls against a live server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest


class Api:
    """Plain HTTP against the live server: admin key or a duty token."""

    def __init__(self, live: Any, http: aiohttp.ClientSession) -> None:
        self.live = live
        self.http = http
        self.admin = live.settings.admin_api_key.get_secret_value()

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, f"{self.live.url}{path}", headers=headers, **kw
        ) as res:
            ctype = res.headers.get("Content-Type", "")
            body = await res.json(content_type=None) if "json" in ctype else await res.text()
            return res.status, body

    async def visit(self, department: str, identity: str, name: str) -> dict[str, Any]:
        status, body = await self.call(
            "POST",
            "/api/clinic/visits",
            self.admin,
            json={"department": department, "identity": identity, "name": name},
        )
        assert status == 201, body
        return body

    async def duty(self, identity: str, level: str, departments: list[str]) -> str:
        status, body = await self.call(
            "POST",
            "/api/clinic/duty-tokens",
            self.admin,
            json={
                "identity": identity,
                "name": identity,
                "level": level,
                "departments": departments,
            },
        )
        assert status == 201, body
        return body["token"]


@pytest.fixture
async def api(live: Any) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(live, http)
