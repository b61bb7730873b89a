"""`teleconsult serve --workers 2` without Redis: rooms pinned to workers by rendezvous hashing,
clients redirected to their room's worker, a killed worker restarted, one audit log per worker,
SIGTERM stops everything. Records: the workers share one SQLite file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kernel.routing import rendezvous_index
from tests.cluster.conftest import REPO, _wait_tcp, cluster_env, free_port
from tests.cluster.routed import connect_any, connect_routed
from tests.cluster.test_cluster import joined
from tests.helpers import Tokens


def room_for(worker: int, workers: int = 2, prefix: str = "room") -> str:
    return next(
        f"{prefix}-{i}" for i in range(1000) if rendezvous_index(f"{prefix}-{i}", workers) == worker
    )


def children(pid: int) -> dict[int, int]:
    """worker index -> pid of the supervisor's worker processes."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"--worker-index" in cmd:
            out[int(cmd[cmd.index(b"--worker-index") + 1])] = int(proc.name)
    return out


def audit_verify(data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=cluster_env(),
        cwd=REPO,
        timeout=60,
    )


async def wait_for(predicate, timeout: float = 20.0) -> None:
    """Bounded poll of process state (no event exists for 'the supervisor restarted it')."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


@pytest.fixture
def workers(tmp_path: Path):
    port = free_port()
    # two consecutive ports: move on if port + 1 is taken
    data = tmp_path / "data"
    log = tmp_path / "supervisor.log"
    env = cluster_env(log_level="warning")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rtc_server.cli",
                "serve",
                "--workers",
                "2",
                "--port",
                str(port),
                "--data-dir",
                str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
    try:
        _wait_tcp(port, 60, proc)
        _wait_tcp(port + 1, 60, proc)
        yield proc, port, data, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def tokens(data: Path) -> Tokens:
    from rtc_server.config import load_settings, prepare_data_dir, signing_secret

    return Tokens(
        signing_secret(prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={})))
    )


async def test_workers_pin_rooms_redirect_restart_and_stop(workers):
    proc, port, data, log = workers
    t = tokens(data)
    w0, w1 = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    room = room_for(1)
    # both start at worker 0; the room lives on worker 1
    host = await joined(await connect_routed(w0, t(room, "dr", "host")))
    clin = await joined(await connect_routed(w0, t(room, "cl", "clinician")))
    assert host.url == clin.url == w1
    assert (await clin.call("chat:send", {"text": "on worker one"}))["ok"]
    await host.next("chat:message")
    # a room of worker 0 is served there, at the same time (the SQLite file is shared)
    other = await joined(await connect_routed(w1, t(room_for(0), "dr0", "host")))
    assert other.url == w0
    assert (await other.call("chat:send", {"text": "on worker zero"}))["ok"]

    # kill -9 worker 1: the supervisor restarts it, clients come back with their history
    before = children(proc.pid)
    assert set(before) == {0, 1}
    os.kill(before[1], signal.SIGKILL)
    await asyncio.gather(host.wait_disconnected(), clin.wait_disconnected())
    started = time.monotonic()
    await wait_for(lambda: children(proc.pid).get(1) not in (None, before[1]))
    host2 = await joined(await connect_any([w0, w1], t(room, "dr", "host"), deadline_s=30))
    print(f"worker restart and re-join: {time.monotonic() - started:.2f} s")
    assert host2.url == w1
    assert [m["text"] for m in host2.joined["chat"]][-1] == "on worker one"
    await host2.close()
    await other.close()

    # SIGTERM stops the supervisor and every worker
    workers_now = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()[-3000:]
    for pid in workers_now.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the supervisor stopped and reaped it

    # one audit log per worker; all verify, and tampering names the log and the entry
    with sqlite3.connect(data / "teleconsult.db") as db:
        logs = {r[0] for r in db.execute("SELECT DISTINCT log_id FROM audit_entries")}
    assert logs == {"main-w0", "main-w1"}
    verify = await asyncio.to_thread(audit_verify, data)
    assert verify.returncode == 0, verify.stderr
    assert "in 2 logs" in verify.stdout
    with sqlite3.connect(data / "teleconsult.db", isolation_level=None) as db:
        db.execute(
            "UPDATE audit_entries SET subject = 'mallory' WHERE log_id = 'main-w1' AND seq = 1"
        )
    verify = await asyncio.to_thread(audit_verify, data)
    assert verify.returncode == 1
    assert "log main-w1: entry 1 was altered" in verify.stderr
