"""`teleconsult serve --workers N`: a supervisor process and N worker processes (one per core).

Python runs one core per process, so one machine runs N workers, each a whole server (its own
port, public URL, node id, audit log and media UDP port slice) with rooms pinned to one of them
(rendezvous hashing, or Redis placement when `redis_url` is set). A client that connects to the
wrong worker is redirected (`wrong_node`). The supervisor creates the records schema once,
starts the workers, restarts one that dies (capped backoff) and forwards SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from kernel.routing import LoadFn, LocalRouter, RedisRouter, RendezvousRouter, RoomsFn, Router
from rtc_server.config import Settings
from rtc_server.migrations import open_store

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
MAX_BACKOFF_S = 10.0
STABLE_AFTER_S = 30.0


@dataclass
class Worker:
    """One worker process under supervision."""

    index: int
    settings: Settings
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.5
    due: float = field(default=0.0)


def init_schema(settings: Settings) -> None:
    """Create the records schema once, before workers race to do it."""

    async def run() -> None:
        store = open_store(settings.db_url, node=settings.node_id)
        await store.start()
        await store.close()

    asyncio.run(run())


def wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """True once `host:port` accepts TCP connections; False if the process ended or time ran
    out (bounded polling: a child process offers nothing to await)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, base: Settings, argv: list[str]) -> None:
        self.base = base
        self.argv = argv
        self.workers = [Worker(i, worker_settings(base, i)) for i in range(base.workers)]
        self.stopping = threading.Event()

    def command(self, index: int) -> list[str]:
        """The worker's command line: the same `serve` arguments plus its index."""
        return [sys.executable, "-m", "rtc_server.cli", *self.argv, "--worker-index", str(index)]

    def spawn(self, worker: Worker) -> None:
        worker.proc = subprocess.Popen(self.command(worker.index))
        worker.started = time.monotonic()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("supervisor: signal %d, stopping workers", signum)
        self.stopping.set()

    def run(self, announce: Callable[[], None]) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for worker in self.workers:
                self.spawn(worker)
            for worker in self.workers:
                assert worker.proc is not None
                s = worker.settings
                if not wait_listening(s.host, s.port, worker.proc, READY_TIMEOUT_S):
                    log.error("worker %d did not start listening on port %d", worker.index, s.port)
            if not self.stopping.is_set():
                announce()
            while not self.stopping.wait(0.2):
                self._watch()
        finally:
            self._stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            proc = worker.proc
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None:
                # it died: restart after a backoff that grows while it keeps dying
                code = proc.returncode
                worker.proc = None
                ran = now - worker.started
                worker.backoff = 0.5 if ran > STABLE_AFTER_S else min(worker.backoff * 2, 10.0)
                worker.due = now + worker.backoff
                log.warning(
                    "worker %d exited with %s after %.1f s; restarting in %.1f s",
                    worker.index,
                    code,
                    ran,
                    worker.backoff,
                )
            if now >= worker.due:
                worker.restarts += 1
                self.spawn(worker)

    def _stop(self) -> None:
        running = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.base.shutdown_grace_s + 15.0
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait(timeout=5)


def make_router(settings: Settings, load: LoadFn, hosted_rooms: RoomsFn) -> Router:
    """The router the settings ask for (Redis > local workers > one node)."""
    if settings.redis_url:
        return RedisRouter(
            settings.redis_url,
            settings.node_id,
            settings.base_url,
            load,
            hosted_rooms,
            heartbeat_s=settings.node_heartbeat_s,
            ttl_s=settings.node_ttl_s,
        )
    if settings.workers > 1 and settings.worker_index is not None:
        urls = [settings.worker_base_url(i) for i in range(settings.workers)]
        return RendezvousRouter(settings.node_id, settings.worker_index, urls)
    return LocalRouter(settings.node_id, settings.base_url)


def worker_settings(base: Settings, index: int) -> Settings:
    """Settings of local worker `index` of `base.workers`: own port (port + index), own
    metrics port (metrics_port + index, if set), own public URL, own node id
    (`<node_id>-w<index>`) and own slice of the media UDP port range."""
    update: dict[str, Any] = {
        "worker_index": index,
        "port": base.port + index,
        "node_id": f"{base.node_id}-w{index}",
    }
    if base.metrics_port is not None:  # each worker binds its own metrics listener
        update["metrics_port"] = base.metrics_port + index
    if base.public_url or base.worker_url_template:
        update["public_url"] = base.worker_base_url(index)
    media = base.media
    if media.udp_port_min is not None and media.udp_port_max is not None:
        span = (media.udp_port_max - media.udp_port_min + 1) // base.workers
        if span < 2:
            raise ValueError("media UDP port range too small to split among the workers")
        low = media.udp_port_min + index * span
        update["media"] = media.model_copy(
            update={"udp_port_min": low, "udp_port_max": low + span - 1}
        )
    return base.model_copy(update=update)
