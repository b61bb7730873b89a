"""Logs and probes: `serve --log-format json` writes JSON lines with an access log that never
shows a query string (join tokens); third-party chatter is off at INFO; `/readyz` checks the
database (and Redis in cluster mode) while `/healthz` stays liveness."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from rtc_server.keys import RECORDS
from rtc_server.logs import configure
from tests.cluster.conftest import REPO, RedisServer, _wait_tcp, cluster_env, free_port


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {n: logging.getLogger(n).level for n in ("aioice", "highdicom", "alembic")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


def test_quiet_defaults_at_info_not_at_debug(restore_logging: None) -> None:
    configure("info", "json")
    assert logging.getLogger("aioice").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("highdicom").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("rtc_server").getEffectiveLevel() == logging.INFO
    for name in ("aioice", "highdicom"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure("debug", "text")
    assert logging.getLogger("aioice").getEffectiveLevel() == logging.DEBUG


def test_serve_json_logs_and_access_log_without_tokens(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtc_server.cli",
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "d"),
                "--log-format",
                "json",
            ],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=cluster_env(),
            cwd=REPO,
        )
    try:
        _wait_tcp(port, 60.0, proc)
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/join?token=SECRET-TOKEN", timeout=30
            ) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:  # 503 while the browser bundle is not built
            status = exc.code
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "teleconsult.access"]
    assert [(r["method"], r["path"], r["status"]) for r in access] == [("GET", "/join", status)]
    assert "SECRET-TOKEN" not in log.read_text()
    assert all({"time", "level", "message"} <= set(r) for r in records)
    assert not [r for r in records if r["logger"].startswith(("aioice", "alembic"))]


async def test_readyz_checks_the_database(start_server: Any) -> None:
    live = await start_server()
    assert await _get(live.url + "/readyz") == (
        200,
        {"status": "ready", "checks": {"database": "ok"}},
    )
    store = live.app[RECORDS]
    real = store.engine
    # a database that refuses connections (nothing listens on that port)
    store.engine = create_async_engine(f"postgresql+asyncpg://x@127.0.0.1:{free_port()}/x")
    try:
        status, body = await _get(live.url + "/readyz")
        assert status == 503 and body["status"] == "unavailable"
        assert body["checks"]["database"].startswith("error: ")
        assert (await _get(live.url + "/healthz"))[0] == 200  # liveness is not readiness
    finally:
        await store.engine.dispose()
        store.engine = real


async def test_readyz_checks_redis_in_cluster_mode(start_server: Any, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        live = await start_server(redis_url=redis.url, node_heartbeat_s=0.5, node_ttl_s=2)
        status, body = await _get(live.url + "/readyz")
        assert status == 200 and body["checks"] == {"database": "ok", "redis": "ok"}
        redis.stop()
        status, body = await _get(live.url + "/readyz")
        assert status == 503 and body["checks"]["redis"] != "ok"
        assert body["checks"]["database"] == "ok"
        redis.start()  # back for a clean shutdown
        status, body = await _get(live.url + "/readyz")
        assert status == 200
    finally:
        redis.stop()
