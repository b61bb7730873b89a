"""A bare Socket.IO client over one WebSocket that can stop answering: a half-open peer.

Speaks just enough Engine.IO 4 / Socket.IO 5 to connect, join and call; `go_silent()` stops
it answering pings (and reading) while its TCP connection stays up, as a phone that dropped
off the network without closing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

WAIT_S = 10.0


class RawClient:
    """One WebSocket connection speaking Socket.IO by hand."""

    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.token = token
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sid: str | None = None
        self.silent = False
        self.closed_by_server = False
        self._next_id = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def connect(self) -> RawClient:
        self.session = aiohttp.ClientSession()
        # autoping off: WebSocket-level pings go unanswered too once silent
        self.ws = await self.session.ws_connect(self.url, autoping=False, heartbeat=None)
        opened = await self._text()
        assert opened.startswith("0"), opened
        await self.ws.send_str("40" + json.dumps({"token": self.token}))
        while True:
            msg = await self._text()
            if msg.startswith("40"):
                self.sid = json.loads(msg[2:])["sid"]
                break
            if msg.startswith("44"):
                raise ConnectionRefusedError(msg[2:])
        self._reader = asyncio.create_task(self._read())
        return self

    async def _text(self, timeout: float | None = WAIT_S) -> str:
        """The next Socket.IO text frame, answering Engine.IO pings on the way."""
        assert self.ws is not None
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    if msg.data == "2":  # Engine.IO ping
                        await self.ws.send_str("3")
                        continue
                    return str(msg.data)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    raise ConnectionError("closed by the server")

    async def _read(self) -> None:
        try:
            while True:
                text = await self._text(timeout=None)
                if text.startswith("43"):
                    body = text[2:]
                    split = next(i for i, ch in enumerate(body) if not ch.isdigit())
                    future = self._acks.pop(int(body[:split]), None)
                    if future is not None and not future.done():
                        args = json.loads(body[split:])
                        future.set_result(args[0] if args else None)
        except ConnectionError:
            self.closed_by_server = True

    async def emit(self, event: str, data: Any = None) -> None:
        assert self.ws is not None
        await self.ws.send_str("42" + json.dumps([event, data]))

    async def send_raw(self, text: str) -> None:
        """Send an Engine.IO text frame as is (garbage included)."""
        assert self.ws is not None
        await self.ws.send_str(text)

    async def call(self, event: str, data: Any = None, timeout: float = WAIT_S) -> Any:
        assert self.ws is not None
        ack_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        await self.ws.send_str(f"42{ack_id}" + json.dumps([event, data]))
        async with asyncio.timeout(timeout):
            return await future

    async def go_silent(self) -> None:
        """Stop answering pings and reading; the TCP connection stays open."""
        self.silent = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.ws is not None:
            # stop aiohttp from reading the socket for us: the server's writes now pile up
            conn = self.ws._conn  # aiohttp keeps the connection there (no public handle)
            transport = conn.transport if conn is not None else None
            if transport is not None:
                transport.pause_reading()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.ws is not None and not self.ws.closed:
            conn = self.ws._conn
            transport = conn.transport if conn is not None else None
            if transport is not None and not transport.is_reading():
                transport.resume_reading()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), WAIT_S)
        if self.session is not None:
            await self.session.close()
