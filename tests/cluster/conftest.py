"""Cluster fixtures: our own redis-server and PostgreSQL on free ports, and server processes.

Every wait is bounded; every process started here is stopped by its fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.helpers import Tokens

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_tcp(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Bounded wait until 127.0.0.1:port accepts (a server process offers nothing to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout} s")


class RedisServer:
    """A throw-away redis-server (no persistence) that can be restarted on its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (scripts/test installs it)")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_tcp(self.port, START_TIMEOUT_S, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


class Postgres:
    """A throw-away PostgreSQL cluster (trust auth on loopback), run as the postgres user when
    we are root (initdb refuses root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tc-pg-"))
        self.as_user: list[str] = []

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/teleconsult"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [*self.as_user, *args],
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> None:
        if self.bin is None:
            pytest.skip("PostgreSQL is not installed (scripts/test installs it)")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        self._run(
            str(self.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "teleconsult",
        )

    def stop(self) -> None:
        if self.bin is not None and (self.dir / "data" / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Node:
    """One `teleconsult serve` process."""

    name: str
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                # not a failure of the test, but worth seeing: the node logs what it waited on
                warnings.warn(
                    f"node {self.name} did not stop within 20 s of SIGTERM:\n{self.log_tail(30)}",
                    stacklevel=1,
                )

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """Server processes sharing one data dir (secrets, documents), Redis and a database."""

    data_dir: Path
    redis: RedisServer | None
    database_url: str | None
    env: dict[str, str]
    tokens: Tokens
    nodes: dict[str, Node] = field(default_factory=dict)

    def start_node(self, name: str, *extra: str) -> Node:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            name,
            *extra,
        ]
        if self.redis is not None:
            args += ["--redis-url", self.redis.url]
        log = self.data_dir.parent / f"{name}-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
            )
        node = Node(name, port, proc, log)
        self.nodes[name] = node
        try:
            _wait_tcp(port, START_TIMEOUT_S, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"node {name} did not start: {exc}\n{node.log_tail()}") from None
        return node

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes.values() if n.proc.poll() is None]

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def cluster_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECONSULT_")}
    env["PYTHONPATH"] = str(REPO)
    env.update({f"TELECONSULT_{k.upper()}": v for k, v in settings.items()})
    return env


# heartbeats every 0.5 s, a dead node's rooms free after 2 s; drawing clients send many events
FAST = {
    "node_heartbeat_s": "0.5",
    "node_ttl_s": "2",
    "limits__rate_per_s": "2000",
    "limits__rate_burst": "2000",
    "log_level": "warning",
}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        pg.start()
    except subprocess.CalledProcessError as exc:
        pg.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()[-2000:]}") from None
    yield pg
    pg.stop()


def _tokens(data_dir: Path) -> Tokens:
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data_dir}, environ={}))
    return Tokens(signing_secret(settings))


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_server: RedisServer, postgres: Postgres
) -> AsyncIterator[Cluster]:
    """A cluster on Redis + PostgreSQL; start nodes with `cluster.start_node(name)`."""
    # a fresh database per test: drop every table left by the previous one
    await _reset_database(postgres.url)
    await _flush_redis(redis_server.url)
    data_dir = tmp_path / "data"
    env = cluster_env(database_url=postgres.url, **FAST)
    c = Cluster(data_dir, redis_server, postgres.url, env, _tokens(data_dir))
    try:
        yield c
    finally:
        await asyncio.to_thread(c.stop)


async def _reset_database(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()


async def _flush_redis(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
    finally:
        await client.aclose()


async def http_json(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as resp:
        try:
            body = await resp.json()
        except (aiohttp.ContentTypeError, ValueError):
            body = await resp.text()
        return resp.status, body
