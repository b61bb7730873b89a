"""Test helpers: a recording Socket.IO client and token minting for a live server."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import socketio

from kernel.grants import Role
from kernel.tokens import mint_token

WAIT_S = 10.0


class ConnectRefused(Exception):
    """The server refused the connection; `data` is what it said."""

    def __init__(self, data: Any) -> None:
        super().__init__(str(data))
        self.data = data if isinstance(data, dict) else {"message": str(data)}

    @property
    def code(self) -> str | None:
        inner = self.data.get("data")
        return inner.get("code") if isinstance(inner, dict) else None


class Client:
    """A real socketio.AsyncClient that records every server event for bounded waits."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, deque[Any]] = defaultdict(deque)
        self._arrived = asyncio.Condition()
        self._connect_error: Any = None
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", self._on_disconnect)
        self.disconnected = asyncio.Event()

    async def _record(self, event: str, data: Any = None) -> None:
        async with self._arrived:
            self.events[event].append(data)
            self._arrived.notify_all()

    async def _on_connect_error(self, data: Any) -> None:
        self._connect_error = data

    async def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected.set()

    async def connect(self) -> Client:
        try:
            await self.sio.connect(
                self.url, auth={"token": self.token}, transports=["websocket"], wait_timeout=WAIT_S
            )
        except socketio.exceptions.ConnectionError as exc:
            raise ConnectRefused(self._connect_error or str(exc)) from None
        return self

    async def call(self, event: str, data: Any = None, timeout: float = WAIT_S) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def emit(self, event: str, data: Any = None) -> None:
        await self.sio.emit(event, data)

    async def next(
        self,
        event: str,
        where: Callable[[Any], bool] | None = None,
        timeout: float = WAIT_S,
    ) -> Any:
        """The next unconsumed `event` (matching `where`), waiting at most `timeout` s."""

        def take() -> tuple[bool, Any]:
            queue = self.events[event]
            for i, item in enumerate(queue):
                if where is None or where(item):
                    del queue[i]
                    return True, item
            return False, None

        async with asyncio.timeout(timeout), self._arrived:
            while True:
                found, item = take()
                if found:
                    return item
                await self._arrived.wait()

    def drain(self, event: str) -> list[Any]:
        items = list(self.events[event])
        self.events[event].clear()
        return items

    async def wait_disconnected(self, timeout: float = WAIT_S) -> None:
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


class Tokens:
    """Mints tokens for one server's signing secret."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __call__(
        self, room: str, identity: str, role: Role | str, name: str | None = None, **kw: Any
    ) -> str:
        return mint_token(self.secret, room=room, identity=identity, role=role, name=name, **kw)


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `predicate` (server-side state) until true; fail after `timeout` s."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - server state has no event to await
            await asyncio.sleep(0.01)


async def server_sql(db_path: Any, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Run SQL on a live server's SQLite database from a worker thread.

    The server under test shares the test's event loop: a blocking sqlite call on the loop
    would stop the server from committing its own write, and both would wait on each other.
    """
    import sqlite3

    def run() -> list[Any]:
        with sqlite3.connect(db_path, timeout=30) as db:
            return db.execute(statement, params).fetchall()

    return await asyncio.to_thread(run)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(
    data_dir: Any, *args: str, port: int | None = None
) -> Iterator[tuple[Any, int, str]]:
    """`teleconsult serve` in its own process on a free port (or `port`): (process, port, the
    printed host join link, "" if none). Stopped with SIGTERM on exit; check
    `process.returncode` after."""
    import os
    import signal
    import subprocess
    import sys

    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECONSULT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        link = ""
        for _ in range(20):  # bounded: the announcement is three lines
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            if "host join link" in line:
                link = line.split(": ", 1)[1].strip()
                break
        yield proc, port, link
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _alt_name(x509: Any, ipaddress: Any, address: str) -> Any:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


def self_signed_cert(folder: Path, address: str) -> tuple[Path, Path]:
    """A self-signed EC certificate for one IP address or host name (cert.pem, key.pem in
    `folder`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([_alt_name(x509, ipaddress, address)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
