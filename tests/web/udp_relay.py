"""A userspace UDP relay that drops and delays datagrams: loss and delay for the quality
benchmark on a kernel without ``netem``. Standard library only; runs as a module or a script.

``Impairment`` is what the link does to each datagram: drop it with probability ``loss``
(independently, or in bursts when ``burst`` > 1: a Gilbert-Elliott 2-state model, no loss in
the good state, every datagram lost in the bad one, a mean of ``burst`` datagrams per visit
and ``loss`` of them in it overall), then hold it for ``delay_ms`` plus a uniform jitter in
[-jitter_ms, +jitter_ms]. Datagrams leave in the order they came (a FIFO line: one that drew a
shorter delay than the one ahead waits for it), so jitter bunches packets but never reorders
them; with ``reorder`` each leaves at its own time (as netem does) and jitter larger than the
gap between two packets reorders them. Seeded: a seed drops the same datagrams (by order of
arrival) whatever the delay, and the two directions draw from their own generators.

Two relays share it (asyncio readers on non-blocking sockets; the transparent one needs
``recvmsg``'s ancillary data, which asyncio's datagram endpoints do not expose):

- ``UdpRelay``: a port forwarder. Clients send to its address; it forwards to one upstream
  address from one socket per client ("up") and sends the replies back ("down").
- ``NamespaceRelay``: transparent, for a browser inside a network namespace
  (tests/web/netns.py), with no change to the browser, the server or the SDP. ICE uses host
  candidates only, so the browser sends straight to the server's (or the P2P peer's) address
  ``host_ip``:port, whose port is only known from the SDP. Inside the namespace, nftables and
  one policy route hand every UDP datagram between the namespace and ``host_ip``, both ways,
  to one socket with its original destination (TPROXY, ``IP_RECVORIGDSTADDR``):

  - up (browser ns_ip:b -> host_ip:p): marked in the output hook, routed to ``lo`` by
    ``ip rule fwmark``, taken by TPROXY there; sent on from a relay socket per flow
    (ns_ip:u, connected to host_ip:p), so the far end sees ns_ip:u (a peer-reflexive
    candidate) and answers there;
  - down (host_ip:p -> ns_ip:b, arriving on the veth): taken by TPROXY (or, sent to ns_ip:u,
    read by that flow's socket) and delivered to the browser from a transparent socket bound
    to host_ip:p, so the browser sees its peer's own address.

  No UDP datagram between the two takes a direct path. ICE's checks of the direct pair
  (far end -> ns_ip:b) are answered from ns_ip:u, fail as asymmetric and leave the pair
  through the relay; IPv6 UDP is dropped in the namespace. TCP (the page, Socket.IO) is
  untouched. All it changes lives in the namespace (an nftables table, one ip rule, one
  route table); the host's own tables are not touched. Not chosen: rewriting the ICE
  candidates in every page (a hook per page and SDP path, and the direct path would still
  need closing), a TUN forwarder (an IP stack's work), Chromium's proxy flags (no UDP without
  TURN). Needs root; ``relay_in_namespace()`` runs it with ``ip netns exec``, in a process
  of its own at nice -10, and returns its counts: datagrams received, dropped and sent each
  way, and how late its event loop sent them (a loaded machine adds that to the jitter).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Addr = tuple[str, int]

IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20  # the cmsg type is the same number (IP_ORIGDSTADDR)
SO_MARK = 36
MARK_INTERCEPT = 0x7413  # the browser's datagrams to host_ip, routed to lo
MARK_RELAY = 0x7414  # the relay's own datagrams: never intercepted
ROUTE_TABLE = 113
NFT_TABLE = "udp_relay"
SCRIPT = Path(__file__).resolve()
RCVBUF = 1 << 20  # up to net.core.rmem_max


@dataclass(frozen=True)
class Impairment:
    """What one direction of a link does to each datagram (see the module docstring)."""

    loss: float = 0.0
    burst: float = 1.0  # mean datagrams per loss burst; <= 1: independent losses
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: bool = False
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay_ms and jitter_ms must be >= 0")


class Link:
    """One direction: the loss model, then a delay line (a heap and one timer)."""

    def __init__(self, impairment: Impairment, salt: int) -> None:
        self.imp = impairment
        self._loss_rng = random.Random(impairment.seed * 4 + salt)
        self._jitter_rng = random.Random(impairment.seed * 4 + 2 + salt)
        self._bad = False
        self._line: list[tuple[float, int, bytes, Callable[[bytes], None]]] = []
        self._seq = itertools.count()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.received = self.dropped = self.sent = 0
        self.lag_max_s = self.lag_sum_s = 0.0  # how late the event loop sent them

    def drop(self) -> bool:
        """Draw the next datagram's fate from the loss model."""
        loss, burst = self.imp.loss, self.imp.burst
        if loss <= 0.0:
            return False
        if burst <= 1.0:
            return self._loss_rng.random() < loss
        leave = 1.0 / burst  # bad -> good; good -> bad keeps `loss` of the time in bad
        enter = loss * leave / (1.0 - loss)
        self._bad = self._loss_rng.random() < (1.0 - leave if self._bad else enter)
        return self._bad

    def push(self, data: bytes, deliver: Callable[[bytes], None]) -> None:
        """Drop ``data`` or hand it to ``deliver`` after its delay."""
        self.received += 1
        if self.drop():
            self.dropped += 1
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        delay_ms = self.imp.delay_ms
        if self.imp.jitter_ms:
            delay_ms += self._jitter_rng.uniform(-self.imp.jitter_ms, self.imp.jitter_ms)
        at = now + max(delay_ms, 0.0) / 1000
        if not self.imp.reorder:
            at = self._last = max(at, self._last)
        if at <= now and not self._line:
            self._deliver(deliver, data, 0.0)
            return
        heapq.heappush(self._line, (at, next(self._seq), data, deliver))
        if self._timer is None or self._timer.when() > self._line[0][0]:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(self._line[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._line and self._line[0][0] <= now:
            at, _, data, deliver = heapq.heappop(self._line)
            self._deliver(deliver, data, now - at)
        if self._line:
            self._timer = loop.call_at(self._line[0][0], self._flush)

    def _deliver(self, deliver: Callable[[bytes], None], data: bytes, lag_s: float) -> None:
        self.sent += 1
        self.lag_max_s = max(self.lag_max_s, lag_s)
        self.lag_sum_s += lag_s
        deliver(data)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._line.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "dropped": self.dropped,
            "sent": self.sent,
            "loss": round(self.dropped / self.received, 4) if self.received else None,
            "lag_ms_mean": round(self.lag_sum_s / self.sent * 1000, 2) if self.sent else None,
            "lag_ms_max": round(self.lag_max_s * 1000, 1),
        }


def udp_socket(bind: Addr, *, transparent: bool = False, mark: int | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind`` (``transparent``: to any address, root)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)  # no kernel drops in a stall
        if transparent:
            sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        if mark is not None:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        sock.bind(bind)
    except OSError:
        sock.close()
        raise
    return sock


class _Relay:
    """Sockets watched by the running loop, the two links, and closing them."""

    def __init__(self, down: Impairment, up: Impairment) -> None:
        self.down, self.up = Link(down, 0), Link(up, 1)
        self._sockets: list[socket.socket] = []
        self.send_errors = 0

    def _watch(self, sock: socket.socket, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self._sockets.append(sock)
        asyncio.get_running_loop().add_reader(sock, self._read, sock, on_datagram)

    def _read(self, sock: socket.socket, on_datagram: Callable[[bytes, Addr], None]) -> None:
        for _ in range(64):  # then let the loop breathe
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier send (e.g. port unreachable)
                continue
            on_datagram(data, addr)

    def _send(self, sock: socket.socket, addr: Addr, data: bytes) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:  # a full buffer or an unreachable address: the datagram is lost
            self.send_errors += 1

    def stats(self) -> dict[str, Any]:
        return {
            "down": self.down.stats(),
            "up": self.up.stats(),
            "send_errors": self.send_errors,
        }

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for link in (self.down, self.up):
            link.close()
        for sock in self._sockets:
            loop.remove_reader(sock)
            sock.close()
        self._sockets.clear()

    async def __aenter__(self) -> _Relay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class UdpRelay(_Relay):
    """Forwards what clients send to ``listen`` on to ``upstream``, and the replies back."""

    def __init__(
        self,
        upstream: Addr,
        down: Impairment = Impairment(),
        up: Impairment = Impairment(),
        listen: Addr = ("127.0.0.1", 0),
    ) -> None:
        super().__init__(down, up)
        self.upstream = upstream
        self._listen = listen
        self._sock: socket.socket | None = None
        self._flows: dict[Addr, socket.socket] = {}

    async def start(self) -> Addr:
        """Bind and start relaying; returns the address clients send to."""
        self._sock = udp_socket(self._listen)
        self._watch(self._sock, self._from_client)
        host, port = self._sock.getsockname()
        return host, port

    async def __aenter__(self) -> UdpRelay:
        await self.start()
        return self

    @property
    def address(self) -> Addr:
        assert self._sock is not None, "start() first"
        host, port = self._sock.getsockname()
        return host, port

    def _from_client(self, data: bytes, client: Addr) -> None:
        sock = self._flows.get(client)
        if sock is None:
            sock = self._flows[client] = udp_socket((self._listen[0], 0))
            sock.connect(self.upstream)
            self._watch(sock, functools.partial(self._from_upstream, client))
        self.up.push(data, functools.partial(self._send, sock, self.upstream))

    def _from_upstream(self, client: Addr, data: bytes, _addr: Addr) -> None:
        assert self._sock is not None
        self.down.push(data, functools.partial(self._send, self._sock, client))


class NamespaceRelay(_Relay):
    """The transparent relay, run inside the namespace (see the module docstring)."""

    def __init__(self, host_ip: str, ns_ip: str, down: Impairment, up: Impairment) -> None:
        super().__init__(down, up)
        self.host_ip, self.ns_ip = host_ip, ns_ip
        self._flows: dict[tuple[Addr, Addr], socket.socket] = {}  # (browser, far) -> ns_ip:u
        self._by_port: dict[int, Addr] = {}  # u -> browser
        self._spoofs: dict[Addr, socket.socket] = {}  # far -> a socket bound to it
        self._listener: socket.socket | None = None
        self._installed = False

    async def start(self) -> None:
        self._listener = udp_socket(("0.0.0.0", 0), transparent=True, mark=MARK_RELAY)
        self._listener.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
        self._sockets.append(self._listener)
        asyncio.get_running_loop().add_reader(self._listener, self._intercepted)
        self._installed = True
        intercept(self.host_ip, self._listener.getsockname()[1])

    async def close(self) -> None:
        if self._installed:
            release()
            self._installed = False
        await super().close()

    def _intercepted(self) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                data, ancdata, _flags, src = self._listener.recvmsg(65535, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            dst = next(
                (
                    (socket.inet_ntoa(d[4:8]), struct.unpack("!H", d[2:4])[0])
                    for level, kind, d in ancdata
                    if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR
                ),
                None,
            )
            if dst is None:
                continue
            if dst[0] == self.host_ip:  # up: browser -> far end
                sock = self._upstream(src, dst)
                self.up.push(data, functools.partial(self._send, sock, dst))
            else:  # down: to the browser, or to a flow socket from another far port
                browser = self._by_port.get(dst[1], dst) if dst[0] == self.ns_ip else dst
                self.down.push(data, functools.partial(self._send, self._spoof(src), browser))

    def _upstream(self, browser: Addr, far: Addr) -> socket.socket:
        sock = self._flows.get((browser, far))
        if sock is None:
            sock = self._flows[(browser, far)] = udp_socket((self.ns_ip, 0), mark=MARK_RELAY)
            sock.connect(far)
            self._by_port[sock.getsockname()[1]] = browser
            self._watch(sock, functools.partial(self._from_far, browser))
        return sock

    def _from_far(self, browser: Addr, data: bytes, far: Addr) -> None:
        self.down.push(data, functools.partial(self._send, self._spoof(far), browser))

    def _spoof(self, far: Addr) -> socket.socket:
        sock = self._spoofs.get(far)
        if sock is None:
            sock = self._spoofs[far] = udp_socket(far, transparent=True, mark=MARK_RELAY)
            self._sockets.append(sock)  # send-only
        return sock

    def stats(self) -> dict[str, Any]:
        return super().stats() | {"flows": len(self._flows)}


def _run(*cmd: str, stdin: str | None = None) -> None:
    subprocess.run(cmd, input=stdin, text=True, check=True, capture_output=True, timeout=20)


def intercept(host_ip: str, port: int) -> None:
    """In the current namespace: hand UDP to and from ``host_ip`` to the relay on ``port``."""
    release()
    _run(
        "nft",
        "-f",
        "-",
        stdin=f"""
table ip {NFT_TABLE} {{
  chain out {{
    type route hook output priority mangle; policy accept;
    meta mark {MARK_RELAY} return
    ip daddr {host_ip} meta l4proto udp meta mark set {MARK_INTERCEPT}
  }}
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "lo" meta mark {MARK_INTERCEPT} meta l4proto udp tproxy to :{port}
    iifname != "lo" ip saddr {host_ip} meta l4proto udp tproxy to :{port}
  }}
}}
table ip6 {NFT_TABLE} {{
  chain out {{
    type filter hook output priority 0; policy accept;
    meta l4proto udp drop
  }}
}}
""",
    )
    _run("ip", "rule", "add", "fwmark", str(MARK_INTERCEPT), "lookup", str(ROUTE_TABLE))
    _run("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(ROUTE_TABLE))


def release() -> None:
    """Undo ``intercept`` in the current namespace (whatever of it is there)."""
    for cmd in (
        ("nft", "delete", "table", "ip", NFT_TABLE),
        ("nft", "delete", "table", "ip6", NFT_TABLE),
        ("ip", "rule", "del", "fwmark", str(MARK_INTERCEPT), "lookup", str(ROUTE_TABLE)),
        ("ip", "route", "flush", "table", str(ROUTE_TABLE)),
    ):
        subprocess.run(cmd, capture_output=True, timeout=20)


def impairment_args(imp: Impairment) -> list[str]:
    """``imp`` as this script's command-line options."""
    args = ["--loss", str(imp.loss), "--burst", str(imp.burst), "--delay-ms", str(imp.delay_ms)]
    args += ["--jitter-ms", str(imp.jitter_ms), "--seed", str(imp.seed)]
    return args + (["--reorder"] if imp.reorder else [])


@contextlib.asynccontextmanager
async def relay_in_namespace(
    ns: str, host_ip: str, ns_ip: str, impairment: Impairment, both: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Run a ``NamespaceRelay`` in namespace ``ns`` (its own process, so that the caller's
    event loop does not delay its datagrams) for the body of the block; the dict yielded is
    filled with its counts when the block ends. ``both``: impair the way out too (else only
    the way in)."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT)]
    cmd += ["--host-ip", host_ip, "--ns-ip", ns_ip, *impairment_args(impairment)]
    proc = await asyncio.create_subprocess_exec(
        *cmd + ([] if both else ["--down-only"]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    stats: dict[str, Any] = {}
    try:
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        if not line.startswith(b"ready"):
            async with asyncio.timeout(20):
                _, err = await proc.communicate()
            raise RuntimeError(f"the relay did not start: {err.decode().strip()[-300:]}")
        yield stats
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
        lines = out.decode().strip().splitlines()
        if proc.returncode == 0 and lines:
            stats.update(json.loads(lines[-1]))
        else:
            stats["error"] = f"exit {proc.returncode}: {err.decode().strip()[-300:]}"


async def _serve(host_ip: str, ns_ip: str, down: Impairment, up: Impairment) -> dict[str, Any]:
    with contextlib.suppress(PermissionError):
        os.nice(-10)  # it stands in for the network: not to wait behind the browsers for a core
    relay = NamespaceRelay(host_ip, ns_ip, down, up)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay.start()
        print("ready", flush=True)
        await stop.wait()
    finally:
        await relay.close()
    return relay.stats()


def main() -> None:
    parser = argparse.ArgumentParser(description="the transparent relay, inside a namespace")
    parser.add_argument("--host-ip", required=True)
    parser.add_argument("--ns-ip", required=True)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--burst", type=float, default=1.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reorder", action="store_true")
    parser.add_argument("--down-only", action="store_true", help="the way out unimpaired")
    a = parser.parse_args()
    down = Impairment(a.loss, a.burst, a.delay_ms, a.jitter_ms, a.reorder, a.seed)
    up = Impairment(seed=a.seed) if a.down_only else dataclasses.replace(down)
    print(json.dumps(asyncio.run(_serve(a.host_ip, a.ns_ip, down, up))), flush=True)


if __name__ == "__main__":
    main()
