"""Placement units: rendezvous hashing, worker settings, and the Redis router against a real
redis-server (least-loaded placement, re-placement after a node's heartbeat expires)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from kernel.routing import (
    LocalRouter,
    RedisRouter,
    RendezvousRouter,
    rendezvous_index,
)
from rtc_server.config import load_settings
from rtc_server.workers import make_router, worker_settings
from tests.cluster.conftest import RedisServer, _flush_redis


def test_rendezvous_is_stable_and_spreads():
    rooms = [f"consult-{i}" for i in range(2000)]
    first = [rendezvous_index(r, 3) for r in rooms]
    assert first == [rendezvous_index(r, 3) for r in rooms]
    counts = Counter(first)
    assert all(500 < counts[i] < 830 for i in range(3)), counts
    # adding a worker moves only the rooms the new worker wins
    after = [rendezvous_index(r, 4) for r in rooms]
    assert all(new in (old, 3) for old, new in zip(first, after, strict=True))


async def test_rendezvous_router_names_the_worker():
    urls = ["http://h:8080", "http://h:8081"]
    routers = [RendezvousRouter(f"main-w{i}", i, urls) for i in range(2)]
    for room in ("a", "b", "c", "d"):
        owner = rendezvous_index(room, 2)
        for router in routers:
            node = await router.place(room)
            assert node.url == urls[owner] and node.id == f"main-w{owner}"


def test_worker_settings_split_ports_urls_and_udp(tmp_path):
    base = load_settings(
        overrides={
            "data_dir": tmp_path,
            "port": 9000,
            "workers": 2,
            "public_url": "https://consult.example:9000",
            "media": {"udp_port_min": 40000, "udp_port_max": 40999},
        },
        environ={},
    )
    w1 = worker_settings(base, 1)
    assert w1.port == 9001 and w1.node_id == "main-w1" and w1.worker_index == 1
    assert w1.base_url == "https://consult.example:9001"
    assert (w1.media.udp_port_min, w1.media.udp_port_max) == (40500, 40999)
    assert [w1.worker_base_url(i) for i in range(2)] == [
        "https://consult.example:9000",
        "https://consult.example:9001",
    ]
    assert isinstance(make_router(w1, lambda: (0, 0, 0), list), RendezvousRouter)
    assert isinstance(
        make_router(base.model_copy(update={"workers": 1}), lambda: (0, 0, 0), list), LocalRouter
    )


def test_settings_refuse_bad_cluster_values(tmp_path):
    from rtc_server.config import ConfigError

    with pytest.raises(ConfigError, match="node_ttl_s"):
        load_settings(overrides={"node_ttl_s": 1, "node_heartbeat_s": 1}, environ={})
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings(overrides={"redis_url": "http://x"}, environ={})


async def test_redis_placement_is_least_loaded_and_survives_a_dead_node(redis_server: RedisServer):
    await _flush_redis(redis_server.url)
    hosted: dict[str, list[str]] = {"a": [], "b": []}

    def router(name: str, ttl: float) -> RedisRouter:
        # both routers share this process: a CPU clock that stands still keeps the CPU share
        # (a tie-breaking weight of up to one room) out of the count this test checks
        return RedisRouter(
            redis_server.url,
            name,
            f"http://{name}",
            lambda: (0, 0, 0),
            lambda n=name: hosted[n],
            heartbeat_s=0.1,
            ttl_s=ttl,
            cpu_clock=lambda: 0.0,
        )

    a, b = router("a", 30.0), router("b", 30.0)
    await a.beat()
    await b.beat()
    try:
        placed = [await a.place(f"room-{i}") for i in range(10)]
        assert Counter(n.id for n in placed) == {"a": 5, "b": 5}
        # every node agrees, and asking again does not move a room
        for i, node in enumerate(placed):
            assert (await b.place(f"room-{i}")).id == node.id
        on_b = [f"room-{i}" for i, n in enumerate(placed) if n.id == "b"]
        assert {n["id"] for n in await a.nodes()} == {"a", "b"}

        # b stops beating: once its key expires (its TTL runs out now) its rooms go to a
        await a.redis.pexpire("tc:node:b", 50)

        async def b_gone() -> None:
            while await a.redis.exists("tc:node:b"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

        await asyncio.wait_for(b_gone(), 5)
        for room in on_b:
            assert (await b.place(room)).id == "a"
        # release only deletes a placement that names the releasing node
        await b.release(on_b[0])
        assert await a.redis.get(f"tc:room:{on_b[0]}") == "a"
        await a.release(on_b[0])
        assert await a.redis.get(f"tc:room:{on_b[0]}") is None

        # a node re-claims the rooms it hosts at each beat (after a Redis restart)
        hosted["a"].append("kept")
        await a.redis.flushall()
        await a.beat()
        assert await a.redis.get("tc:room:kept") == "a"
    finally:
        await a.close()
        await b.close()
