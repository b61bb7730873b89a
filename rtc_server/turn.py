"""A managed coturn (``turnserver``) for participants whose network blocks UDP.

``teleconsult serve --turn`` runs Debian's coturn as a child process: its configuration is
generated into ``<data_dir>/turn/`` (mode 0600: it holds the shared secret), it is started
before the server accepts connections, checked with a STUN Binding request over TCP every
``turn.health_interval_s``, restarted (with backoff) when it exits or stops answering, and
stopped with the server (and by the kernel if the server is killed: PR_SET_PDEATHSIG).

Why coturn and not ICE-TCP in the SFU: aioice (0.13) gathers UDP candidates only and has no
passive TCP candidates (it only parses a remote ``tcptype``), so a browser that can reach the
server over TCP alone needs a TURN relay. coturn relays TURN-over-TCP/TLS from the browser to
the SFU's ordinary UDP host candidates on the same machine, and may relay to nothing else
(``denied-peer-ip`` everything, ``allowed-peer-ip`` the SFU's addresses): it is not an open
relay into the hospital network. Clients get short-lived REST credentials (coturn's
``use-auth-secret``; media.ice.turn_rest_credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import ipaddress
import logging
import os
import shutil
import signal
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aioice import stun
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from media.settings import IceServer
from rtc_server.config import ConfigError, Settings, _read_or_create_secret

log = logging.getLogger(__name__)

SECRET_FILE = "turn_secret.key"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
FAILURES_BEFORE_RESTART = 3
_PR_SET_PDEATHSIG = 1


class TurnError(RuntimeError):
    """coturn could not be started (the message says why, with its log tail)."""


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def turn_host(settings: Settings) -> str:
    """The host name or address clients put in their TURN URLs."""
    if settings.turn.host:
        return settings.turn.host
    if settings.public_url:
        host = urlsplit(settings.public_url).hostname
        if host:
            return host
    if settings.host not in ("0.0.0.0", "::", ""):
        return settings.host
    return "127.0.0.1"


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """Certificate and key for TURN over TLS: the TURN ones, else the server's, else none."""
    turn = settings.turn
    if turn.tls_cert is not None and turn.tls_key is not None:
        return turn.tls_cert, turn.tls_key
    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    return None


def turn_urls(settings: Settings) -> list[str]:
    """The RTCIceServer ``urls`` of the managed coturn (UDP, TCP, and TLS when certified)."""
    host, turn = _bracket(turn_host(settings)), settings.turn
    urls = [f"turn:{host}:{turn.port}?transport=udp"] if turn.udp else []
    urls.append(f"turn:{host}:{turn.port}?transport=tcp")
    if tls_files(settings) is not None:
        urls.append(f"turns:{host}:{turn.tls_port}?transport=tcp")
    return urls


def prepare_turn(settings: Settings) -> Settings:
    """With ``turn.enabled``: the shared secret (generated into the data dir when unset) and
    the managed coturn's entry first in ``media.ice_servers``. A no-op otherwise."""
    if not settings.turn.enabled:
        return settings
    if shutil.which(settings.turn.binary) is None:
        raise ConfigError(
            f"turn.enabled but {settings.turn.binary!r} is not installed (apt-get install coturn)"
        )
    media = settings.media
    secret = media.turn_secret
    if not secret:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret = _read_or_create_secret(settings.data_dir / SECRET_FILE, 32)
    if turn_host(settings) == "127.0.0.1" and settings.host in ("0.0.0.0", "::", ""):
        log.warning(
            "turn: clients are told to use TURN at 127.0.0.1 (only this machine can): "
            "set public_url or turn.host to the address clients reach"
        )
    entry = IceServer(urls=turn_urls(settings))
    servers = [s for s in media.ice_servers if s.urls != entry.urls]
    update: dict[str, object] = {"turn_secret": secret, "ice_servers": [entry, *servers]}
    if settings.turn.server_relay:
        probe = _bracket(_probe_address(settings))
        own = IceServer(urls=[f"turn:{probe}:{settings.turn.port}?transport=udp"])
        update["server_ice_servers"] = [own]
    return settings.model_copy(update={"media": media.model_copy(update=update)})


def peer_addresses(settings: Settings) -> list[str]:
    """Addresses coturn may relay to: ``turn.peer_addresses``, else the SFU's own."""
    if settings.turn.peer_addresses is not None:
        return list(settings.turn.peer_addresses)
    from aioice.ice import get_host_addresses

    found = list(settings.media.bind_addresses or get_host_addresses(True, True))
    if settings.media.announced_address:
        found.append(settings.media.announced_address)
    return list(dict.fromkeys(found))


def render_config(settings: Settings, secret: str, workdir: Path) -> str:
    """coturn's turnserver.conf for these settings."""
    turn = settings.turn
    lines = [
        "# generated by teleconsult (rtc_server/turn.py) at each start: do not edit",
        f"listening-port={turn.port}",
        f"tls-listening-port={turn.tls_port}",
        *(f"listening-ip={a}" for a in turn.listen_addresses),
        *([f"relay-ip={turn.relay_address}"] if turn.relay_address else []),
        *([f"external-ip={turn.external_address}"] if turn.external_address else []),
        f"min-port={turn.relay_port_min}",
        f"max-port={turn.relay_port_max}",
        f"realm={turn.realm}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        "fingerprint",
        "no-cli",
        "no-dtls",
        "no-tcp-relay",  # the SFU speaks UDP: TCP relay allocations have no use here
        "no-multicast-peers",
        "no-rfc5780",
        "no-software-attribute",
        "stale-nonce=600",
        "log-file=stdout",
        "simple-log",
        f"pidfile={workdir / 'turnserver.pid'}",
        f"userdb={workdir / 'turndb'}",
    ]
    files = tls_files(settings)
    if files is None:
        lines.append("no-tls")
    else:
        lines += [f"cert={files[0].resolve()}", f"pkey={files[1].resolve()}"]
    # relay only to the SFU: deny every address, then allow its own
    peers = [a.split("%")[0] for a in peer_addresses(settings)]
    lines += [
        "denied-peer-ip=0.0.0.0-255.255.255.255",
        "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    lines += [f"allowed-peer-ip={a}" for a in peers]
    if any(ipaddress.ip_address(a).is_loopback for a in peers if _is_ip(a)):
        lines.append("allow-loopback-peers")
    return "\n".join(lines) + "\n"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return False
    return True


def _probe_address(settings: Settings) -> str:
    listen = settings.turn.listen_addresses
    return listen[0] if listen else "127.0.0.1"


def _check_port_free(settings: Settings) -> None:
    """Refuse to start when another process (a system coturn?) holds the TURN port."""
    turn = settings.turn
    ports = [turn.port] + ([turn.tls_port] if tls_files(settings) else [])
    for address in turn.listen_addresses or ["0.0.0.0"]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for port in ports:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise TurnError(
                            f"TURN port {address}:{port} is in use (is the system coturn "
                            "service running? stop it, or set turn.port)"
                        ) from None
                    raise TurnError(f"cannot use TURN address {address}:{port}: {exc}") from None


async def stun_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a STUN Binding request over TCP gets a success response (coturn answers
    Binding without credentials)."""
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(bytes(request))
            await writer.drain()
            header = await reader.readexactly(20)
            body = await reader.readexactly(int.from_bytes(header[2:4], "big"))
        reply = stun.parse_message(header + body)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return (
        reply.transaction_id == request.transaction_id
        and reply.message_class == stun.Class.RESPONSE
    )


def _die_with_parent() -> None:
    # runs in the child between fork and exec: SIGTERM coturn when the server process dies
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class TurnServer:
    """One managed coturn process: start, health checks, restarts, stop."""

    def __init__(self, settings: Settings) -> None:
        if not settings.turn.enabled:
            raise ValueError("turn.enabled is false")
        if not settings.media.turn_secret:
            raise ValueError("call prepare_turn first (no TURN secret)")
        self.settings = settings
        self.workdir = settings.data_dir / "turn"
        self.config_path = self.workdir / "turnserver.conf"
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.log_tail: deque[str] = deque(maxlen=40)
        self._reader: asyncio.Task[None] | None = None
        self._exited: asyncio.Future[int] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False
        self.healthy = False  # answered the last STUN health check

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        text = render_config(self.settings, self.settings.media.turn_secret or "", self.workdir)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)

    async def start(self) -> None:
        """Write the config, start coturn and wait until it answers STUN (else TurnError)."""
        self.write_config()
        await self._spawn()
        self._monitor = asyncio.ensure_future(self._watch())

    async def _spawn(self) -> None:
        _check_port_free(self.settings)
        self.proc = await asyncio.create_subprocess_exec(
            self.settings.turn.binary,
            "-c",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.ensure_future(self._read_log(self.proc))
        self._exited = asyncio.ensure_future(self.proc.wait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        host, port = _probe_address(self.settings), self.settings.turn.port
        while loop.time() < deadline:
            if self.proc.returncode is not None:
                break
            if await stun_ping(host, port, timeout=1.0):
                log.info("turn: coturn (pid %d) answering on port %d", self.proc.pid, port)
                self.healthy = True
                return
            await asyncio.sleep(0.1)
        await self._kill()
        raise TurnError("coturn did not start: " + " | ".join(list(self.log_tail)[-8:]))

    async def _read_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            self.log_tail.append(line)
            # session lines carry pseudonymous usernames and client addresses: debug only
            level = logging.WARNING if "ERROR" in line else logging.DEBUG
            log.log(level, "coturn: %s", line)

    async def _watch(self) -> None:
        interval = self.settings.turn.health_interval_s
        host, port = _probe_address(self.settings), self.settings.turn.port
        backoff, failures = 0.5, 0
        loop = asyncio.get_running_loop()
        healthy_since = loop.time()
        while not self._stopping:
            proc, exited = self.proc, self._exited
            assert proc is not None and exited is not None
            await asyncio.wait({exited}, timeout=interval)  # one waiter per process, reused
            if self._stopping:
                return
            if proc.returncode is not None:
                reason = f"exited with status {proc.returncode}"
            elif await stun_ping(host, port):
                self.healthy = True
                failures = 0
                if loop.time() - healthy_since > 30:
                    backoff = 0.5
                continue
            else:
                self.healthy = False
                failures += 1
                if failures < FAILURES_BEFORE_RESTART:
                    continue
                reason = f"no STUN answer {failures} times"
            log.warning(
                "turn: coturn %s; restarting in %.1f s (log: %s)",
                reason,
                backoff,
                " | ".join(list(self.log_tail)[-4:]),
            )
            await self._kill()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            failures = 0
            try:
                await self._spawn()
            except TurnError as exc:
                log.error("turn: restart failed: %s", exc)
                continue
            self.restarts += 1
            healthy_since = loop.time()

    async def _kill(self) -> None:
        self.healthy = False
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 1.0)
            self._reader = None

    async def stop(self) -> None:
        """Stop the health checks and coturn (SIGTERM, SIGKILL after 5 s)."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None
        await self._kill()
        log.info("turn: coturn stopped")

    @property
    def up(self) -> bool:
        """coturn is running and answered its last health check."""
        alive = self.proc is not None and self.proc.returncode is None
        return alive and self.healthy and not self._stopping

    async def ctx(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: coturn runs while the app does; /metrics shows it."""
        from rtc_server.keys import METRICS

        metrics = app.get(METRICS)
        if metrics is not None:
            metrics.registry.register(TurnCollector(self))
        await self.start()
        try:
            yield
        finally:
            await self.stop()


class TurnCollector(Collector):
    """``teleconsult_turn_up`` and ``teleconsult_turn_restarts_total`` for /metrics."""

    def __init__(self, server: TurnServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("teleconsult_turn_up", "Managed coturn running (1) or not (0)")
        up.add_metric([], 1.0 if self.server.up else 0.0)
        restarts = CounterMetricFamily(
            "teleconsult_turn_restarts", "Managed coturn restarts after an exit or failed checks"
        )
        restarts.add_metric([], self.server.restarts)
        yield from (up, restarts)


def run_in_thread(settings: Settings) -> Callable[[], None]:
    """Run a TurnServer on its own event loop in a thread (the ``--workers`` supervisor);
    returns the function that stops it. Raises TurnError when it cannot start."""
    started: list[BaseException | None] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    server = TurnServer(settings)

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
            started.append(None)
        except BaseException as exc:  # reported to the caller
            started.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=main, name="coturn", daemon=True)
    thread.start()
    ready.wait()
    if started[0] is not None:
        raise TurnError(str(started[0]))

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S + 2)

    return stop
