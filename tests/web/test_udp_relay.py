"""The loss and delay relay alone (tests/web/udp_relay.py), no browser: the loss model drops the
setting's share (within a binomial bound, and exactly the same datagrams for a seed), datagrams
go through the sockets as the model says, the delay line keeps their order (or reorders them
with ``reorder``), a delayed datagram is overtaken by one sent after it directly, closing
leaves nothing behind; as root, the transparent relay in a network namespace carries both
ways. Ordering and counts only: no wall-clock thresholds; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest

from tests.web.udp_relay import Addr, Impairment, Link, UdpRelay, relay_in_namespace

WAIT_S = 10
UP = 1  # the salt of a relay's "up" link (client -> upstream)


def kept(imp: Impairment, n: int, salt: int = UP) -> list[int]:
    """The indices of the datagrams a link with ``imp`` lets through, of ``n`` in a row."""
    link = Link(imp, salt)
    return [i for i in range(n) if not link.drop()]


class Sink(asyncio.DatagramProtocol):
    """Records what arrives; ``echo`` sends each datagram back with the address it came from."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.got: list[tuple[bytes, Addr]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self._changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.got.append((data, addr))
        self._changed.set()
        if self.echo and self.transport is not None:
            self.transport.sendto(data + f"|{addr[0]}:{addr[1]}".encode(), addr)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.got) < count:
                self._changed.clear()
                await self._changed.wait()

    @property
    def address(self) -> Addr:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")
        return host, port


async def open_sink(echo: bool = False, host: str = "127.0.0.1") -> Sink:
    _, sink = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Sink(echo), local_addr=(host, 0)
    )
    return sink


def payloads(sink: Sink) -> list[int]:
    return [int(data) for data, _ in sink.got]


@pytest.mark.parametrize("loss", [0.02, 0.05, 0.2])
def test_loss_is_the_setting_within_a_binomial_bound(loss: float) -> None:
    n = 20_000
    dropped = n - len(kept(Impairment(loss=loss, seed=7), n))
    assert abs(dropped - n * loss) <= 4 * math.sqrt(n * loss * (1 - loss))
    # the same seed drops the same datagrams; another seed, others
    assert kept(Impairment(loss=loss, seed=7), n) == kept(Impairment(loss=loss, seed=7), n)
    assert kept(Impairment(loss=loss, seed=7), n) != kept(Impairment(loss=loss, seed=8), n)


def test_seeded_loss_counts_are_exact() -> None:
    # pins the model: a change to how it draws changes these
    assert 20_000 - len(kept(Impairment(loss=0.05, seed=7), 20_000)) == 1015
    assert 20_000 - len(kept(Impairment(loss=0.05, burst=4, seed=7), 20_000)) == 1030
    # the two directions of one relay draw apart
    assert kept(Impairment(loss=0.05, seed=7), 1000, 0) != kept(Impairment(loss=0.05, seed=7), 1000)


def test_bursty_loss_keeps_the_mean_and_lengthens_bursts() -> None:
    n, loss = 200_000, 0.05
    for burst in (1.0, 4.0):
        survivors = set(kept(Impairment(loss=loss, burst=burst, seed=3), n))
        runs = [
            len(list(group))
            for lost, group in itertools.groupby(range(n), key=lambda i: i not in survivors)
            if lost
        ]
        assert abs(sum(runs) / n - loss) <= 0.15 * loss
        mean_run = sum(runs) / len(runs)
        # independent losses come in runs of 1/(1-loss) on average; Gilbert-Elliott's of `burst`
        expected = 1 / (1 - loss) if burst == 1.0 else burst
        assert abs(mean_run - expected) <= 0.15 * expected


async def test_the_relay_drops_exactly_what_the_model_drops() -> None:
    sink = await open_sink()
    imp = Impairment(loss=0.1, seed=3)
    n, batch = 600, 50
    expected = kept(imp, n)
    async with UdpRelay(sink.address, up=imp) as relay:
        client, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=relay.address
        )
        for start in range(0, n, batch):  # in batches: no socket buffer overflows
            for i in range(start, start + batch):
                client.sendto(str(i).encode())
            await sink.wait_for(sum(1 for i in expected if i < start + batch))
        assert payloads(sink) == expected
        stats = relay.stats()["up"]
        assert (stats["received"], stats["dropped"]) == (n, n - len(expected))
        client.close()
    assert sink.transport is not None
    sink.transport.close()


async def test_replies_come_back_through_the_down_link() -> None:
    echo = await open_sink(echo=True)
    back = await open_sink()
    async with UdpRelay(echo.address, down=Impairment(loss=0.5, seed=1)) as relay:
        assert back.transport is not None
        for i in range(40):
            back.transport.sendto(str(i).encode(), relay.address)
        await echo.wait_for(40)
        expected = kept(Impairment(loss=0.5, seed=1), 40, 0)
        await back.wait_for(len(expected))
        assert [int(d.split(b"|")[0]) for d, _ in back.got] == expected
        assert all(addr == relay.address for _, addr in back.got)  # from the relay, not upstream
        # the upstream saw one socket of the relay's for this client, not the client
        seen = {a for _, a in echo.got}
        assert len(seen) == 1 and back.address not in seen
    for sink in (echo, back):
        assert sink.transport is not None
        sink.transport.close()


@pytest.mark.parametrize("reorder", [False, True])
async def test_jitter_keeps_the_order_unless_reorder(reorder: bool) -> None:
    sink = await open_sink()
    imp = Impairment(delay_ms=20, jitter_ms=20, reorder=reorder, seed=5)
    async with UdpRelay(sink.address, up=imp) as relay:
        client, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=relay.address
        )
        for i in range(60):  # all queued in the relay's socket before it reads one
            client.sendto(str(i).encode())
        await sink.wait_for(60)
        got = payloads(sink)
        assert sorted(got) == list(range(60))
        if reorder:
            assert got != sorted(got)
        else:
            assert got == sorted(got)
        client.close()
    assert sink.transport is not None
    sink.transport.close()


async def test_a_delayed_datagram_is_overtaken_by_a_direct_one() -> None:
    sink = await open_sink()
    async with UdpRelay(sink.address, up=Impairment(delay_ms=50)) as relay:
        client, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        # both are in the kernel's buffers before the loop next runs: the sink reads the direct
        # one in the same loop iteration as the relay reads the other and starts its delay
        client.sendto(b"1", relay.address)
        client.sendto(b"2", sink.address)
        await sink.wait_for(2)
        assert payloads(sink) == [2, 1]
        client.close()
    assert sink.transport is not None
    sink.transport.close()


async def test_close_drops_what_is_in_the_line_and_closes_every_socket() -> None:
    echo = await open_sink(echo=True)
    late = Impairment(delay_ms=60_000)
    relay = UdpRelay(echo.address, down=late, up=late)
    await relay.start()
    sockets = list(relay._sockets)
    relay.up.push(b"late", lambda data: pytest.fail("delivered after close"))
    relay.down.push(b"late", lambda data: pytest.fail("delivered after close"))
    await relay.close()
    await relay.close()  # twice is fine
    assert sockets and all(s.fileno() == -1 for s in sockets)
    assert relay._sockets == []
    for link in (relay.up, relay.down):
        assert link._timer is not None and link._timer.cancelled()
        assert link._line == []
    assert echo.transport is not None
    echo.transport.close()


# --- the transparent relay, in a network namespace (root) ---

CLIENT = """
import json, socket, sys
host, port, n, bind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((bind, 0))
s.settimeout(10)
mine = s.getsockname()[1]
got = []
for i in range(n):
    s.sendto(str(i).encode(), (host, port))
    data, addr = s.recvfrom(2000)
    got.append([data.decode(), list(addr)])
s.sendto(b"ping-me:%d" % mine, (host, port))  # the far end then sends to this port directly
data, addr = s.recvfrom(2000)
s.sendto(b"pong", addr)
print(json.dumps({"port": mine, "got": got, "ping": [data.decode(), list(addr)]}))
"""


class Far(Sink):
    """The far end: echoes; on "ping-me:<port>" it sends "ping" to that port directly."""

    def __init__(self, ns_ip: str) -> None:
        super().__init__(echo=True)
        self.ns_ip = ns_ip

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if data.startswith(b"ping-me:") and self.transport is not None:
            self.got.append((data, addr))
            self._changed.set()
            self.transport.sendto(b"ping", (self.ns_ip, int(data.split(b":")[1])))
            return
        self.echo = data != b"pong"
        super().datagram_received(data, addr)


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str, str]]:
    """A namespace joined to this one by a veth pair: (name, host address, its address)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables TPROXY)")
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    tag = f"{os.getpid() % 10000}{random.randrange(100, 999)}"
    name, host_if, ns_if = f"tcrelay{tag}", f"tcr{tag}h", f"tcr{tag}n"
    subnet = random.randrange(1, 250)
    host_ip, ns_ip = f"10.214.{subnet}.1", f"10.214.{subnet}.2"
    try:
        _run("ip", "netns", "add", name)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces unavailable: {exc.stderr!r}")
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "-n", name, "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        _run("ip", "-n", name, "link", "set", ns_if, "up")
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)


async def test_the_namespace_relay_carries_both_ways(namespace: tuple[str, str, str]) -> None:
    name, host_ip, ns_ip = namespace
    loop = asyncio.get_running_loop()
    _, far = await loop.create_datagram_endpoint(lambda: Far(ns_ip), local_addr=(host_ip, 0))
    n = 20
    async with relay_in_namespace(name, host_ip, ns_ip, Impairment(delay_ms=5)) as stats:
        proc = await asyncio.create_subprocess_exec(
            *("ip", "netns", "exec", name, sys.executable, "-c", CLIENT),
            *(host_ip, str(far.address[1]), str(n), ns_ip),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(WAIT_S):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        result = json.loads(out)
        await far.wait_for(n + 2)  # the echoes, "ping-me" and "pong"
    # the far end saw the relay's socket in the namespace, never the client's own port
    seen_by_far = {addr for _, addr in far.got}
    assert len(seen_by_far) == 1
    assert all(a[0] == ns_ip and a[1] != result["port"] for a in seen_by_far)
    # every echo came back, from the far end's own address, in order
    assert [g[0].split("|")[0] for g in result["got"]] == [str(i) for i in range(n)]
    assert all(tuple(g[1]) == far.address for g in result["got"])
    # what the far end sent to the client's own port came through the relay too, and the
    # answer went out through the flow's socket (ICE would see it as asymmetric)
    assert result["ping"] == ["ping", list(far.address)]
    assert far.got[-1][0] == b"pong"
    assert stats["up"]["received"] == n + 2 and stats["down"]["received"] == n + 1
    assert stats["flows"] == 1 and stats["send_errors"] == 0
    assert far.transport is not None
    far.transport.close()
