"""Fixtures: a real server on a free port, tokens for it, and connected clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from kernel import outbox
from rtc_server.app import create_app
from rtc_server.config import Settings, load_settings, signing_secret
from rtc_server.keys import SETTINGS
from tests.helpers import Client, Tokens

# a send from a task holding a room lock fails the test (kernel/outbox.py)
outbox.STRICT = True


@dataclass
class Live:
    """A running server under test."""

    server: TestServer
    settings: Settings
    tokens: Tokens

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def app(self) -> Any:
        return self.server.app


StartServer = Callable[..., Awaitable[Live]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
async def start_server(aiohttp_server: Any, data_dir: Path) -> StartServer:
    """Start a server (again) on the test's data dir; flags override settings."""

    async def start(**overrides: Any) -> Live:
        settings = load_settings(overrides={"data_dir": data_dir, **overrides}, environ={})
        app = create_app(settings)
        server = await aiohttp_server(app)
        prepared = app[SETTINGS]
        return Live(server, prepared, Tokens(signing_secret(prepared)))

    return start


@pytest.fixture
async def live(start_server: StartServer) -> Live:
    return await start_server()


@pytest.fixture
async def connect(live: Live) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """connect(room, identity, role, name=None, join=True) -> a connected (joined) client."""
    clients: list[Client] = []

    async def make(
        room: str, identity: str, role: str, name: str | None = None, join: bool = True
    ) -> Client:
        client = Client(live.url, live.tokens(room, identity, role, name))
        clients.append(client)
        await client.connect()
        if join:
            client.joined = await client.call("join", {})
        return client

    yield make
    for client in clients:
        await client.close()
