"""The nginx sample (deploy/nginx/teleconsult.conf): `nginx -t` accepts it, and Debian's nginx
built from it terminates TLS in front of `teleconsult serve --workers 2`, routing the entry
name to any worker and each worker's own name (w0., w1.) to that worker, so a real join that is
redirected to its room's worker (`wrong_node`) goes through the one proxy port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp.abc import AbstractResolver, ResolveResult

from kernel.routing import rendezvous_index
from tests.cluster.conftest import REPO, _tokens, _wait_tcp, cluster_env, free_port
from tests.deploy.nginx_site import (
    DOMAIN,
    free_port_pair,
    main_config,
    nginx,
    self_signed,
    site_config,
)

WAIT_S = 20.0


class Loopback(AbstractResolver):
    """Every name of the test domain is 127.0.0.1 (no DNS, no /etc/hosts edits)."""

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host == DOMAIN or host.endswith("." + DOMAIN), host
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def _nginx_or_skip() -> str:
    exe = nginx()
    if exe is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return exe


def _site(tmp_path: Path, worker_port: int) -> tuple[Path, int, Path]:
    cert, key = self_signed(tmp_path)
    https_port, http_port = free_port(), free_port()
    site = tmp_path / "teleconsult.conf"
    site.write_text(site_config(worker_port, https_port, http_port, cert, key))
    return main_config(tmp_path, site), https_port, cert


def test_sample_passes_nginx_t(tmp_path: Path) -> None:
    exe = _nginx_or_skip()
    conf, _port, _cert = _site(tmp_path, free_port_pair())
    proc = subprocess.run(
        [exe, "-t", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr


@contextlib.contextmanager
def _running(args: list[str], log: Path, port: int, **kw: Any) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kw)
    try:
        try:
            _wait_tcp(port, 60.0, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(
                f"{args[0]} did not start: {exc}\n{log.read_text()[-3000:]}"
            ) from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def _connect(url: str, token: str, ca: ssl.SSLContext) -> tuple[socketio.AsyncClient, Any]:
    """Connect through the proxy; returns the client, or None and the refusal's data."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=Loopback(), ssl=ca))
    client = socketio.AsyncClient(reconnection=False, http_session=session)
    refused: list[Any] = []
    client.on("connect_error", lambda data: refused.append(data))
    try:
        await client.connect(
            url, auth={"token": token}, transports=["websocket"], wait_timeout=WAIT_S
        )
    except socketio.exceptions.ConnectionError:
        await session.close()
        return None, refused[0] if refused else None
    return client, session


async def test_nginx_proxies_a_join_to_the_rooms_worker(tmp_path: Path) -> None:
    exe = _nginx_or_skip()
    worker_port = free_port_pair()
    conf, https_port, cert = _site(tmp_path, worker_port)
    data = tmp_path / "data"
    env = cluster_env(
        public_url=f"https://{DOMAIN}:{https_port}",
        worker_url_template=f"https://w{{index}}.{DOMAIN}:{https_port}",
        trusted_proxies="127.0.0.1",
        log_level="warning",
    )
    serve = [
        sys.executable,
        "-m",
        "rtc_server.cli",
        "serve",
        "--workers",
        "2",
        "--port",
        str(worker_port),
        "--data-dir",
        str(data),
    ]
    ca = ssl.create_default_context(cafile=str(cert))
    room = next(f"ward-{i}" for i in range(1000) if rendezvous_index(f"ward-{i}", 2) == 1)
    with (
        _running(serve, tmp_path / "serve.log", worker_port + 1, env=env, cwd=REPO),
        _running([exe, "-p", str(tmp_path), "-c", str(conf)], tmp_path / "nginx.out", https_port),
    ):
        # the supervisor announces once both workers listen: wait for worker 1's port too
        await asyncio.to_thread(_wait_tcp, worker_port, 60.0)
        token = _tokens(data)(room, "dr-wang", "clinician", "王医生")
        # worker 0's name: the room lives on worker 1, so the connection is redirected there
        client, refusal = await _connect(f"https://w0.{DOMAIN}:{https_port}", token, ca)
        assert client is None, "worker 0 accepted a room that hashes to worker 1"
        assert refusal["data"]["code"] == "wrong_node", refusal
        assert refusal["data"]["url"] == f"https://w1.{DOMAIN}:{https_port}"
        client, session = await _connect(refusal["data"]["url"], token, ca)
        assert client is not None, session
        try:
            joined = await client.call("join", {}, timeout=WAIT_S)
            assert joined["ok"], joined
            assert joined["room"]["name"] == room
        finally:
            await client.disconnect()
            await session.close()
        # plain HTTP through the entry name reaches a worker too
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=Loopback(), ssl=ca)
            ) as http,
            http.get(f"https://{DOMAIN}:{https_port}/healthz") as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"
