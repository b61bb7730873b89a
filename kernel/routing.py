"""Room placement: which node hosts a room, and how nodes find each other.

A room lives on exactly one node (its participants, media and documents are in that process);
a client that connects to another node is refused with `wrong_node` and the hosting node's URL
(see docs/protocol.md). Three routers share one interface (LiveKit's local vs Redis router):

- `LocalRouter`: the embedded default; every room is here, nothing shared, no Redis import.
- `RendezvousRouter`: `teleconsult serve --workers N` without Redis; a room goes to the worker
  with the highest rendezvous hash of (room, worker), which every worker computes alike.
- `RedisRouter`: several nodes (or workers) sharing one Redis: a node registry with heartbeats,
  TTLs and load figures, and atomic least-loaded placement (a Lua script); a room whose node's
  heartbeat expired is placed again on a live node.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)

LoadFn = Callable[[], tuple[int, int, int]]  # (rooms, participants, waiting)
RoomsFn = Callable[[], list[str]]
MessageFn = Callable[[str, dict[str, Any]], Awaitable[None]]


class PlacementUnavailable(Exception):
    """The shared placement store cannot be reached; the client should retry shortly."""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node (server process) that can host rooms."""

    id: str
    url: str
    load: float = 0.0


class Router(Protocol):
    """Where rooms live. `place` is called for every connection after its token is verified."""

    node: NodeInfo

    async def start(self) -> None:
        """Register this node (and begin heartbeats, where there are any)."""

    async def close(self) -> None:
        """Deregister; rooms placed here become free for other nodes at once."""

    async def place(self, room: str) -> NodeInfo:
        """The node hosting `room`, allocating one if the room has none or its node died."""

    async def release(self, room: str) -> None:
        """This node no longer hosts `room` (unloaded or ended)."""

    async def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        """Tell every other node something (e.g. a revoked token); a no-op on one node."""

    def on_message(self, callback: MessageFn) -> None:
        """Run `callback(kind, data)` for what other nodes broadcast."""

    async def peer_urls(self) -> list[str]:
        """Public URLs of the live nodes (this one included); empty on a single node."""


def process_cpu_s() -> float:
    """CPU seconds (user + system) used by this process so far."""
    t = os.times()
    return t.user + t.system


class LocalRouter:
    """One node: every room is here."""

    def __init__(self, node_id: str, url: str) -> None:
        self.node = NodeInfo(node_id, url)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def place(self, room: str) -> NodeInfo:
        return self.node

    async def release(self, room: str) -> None:
        return None

    async def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        return None

    def on_message(self, callback: MessageFn) -> None:
        return None

    async def peer_urls(self) -> list[str]:
        return []


def rendezvous_index(room: str, count: int) -> int:
    """Highest-random-weight choice of one of `count` workers for `room` (stable, shared)."""

    def weight(i: int) -> bytes:
        return hashlib.blake2b(f"{i}\x00{room}".encode(), digest_size=8).digest()

    return max(range(count), key=weight)


class RendezvousRouter:
    """Workers on one machine without Redis: placement by rendezvous hashing, no shared state."""

    def __init__(self, node_id: str, index: int, urls: list[str]) -> None:
        self.index = index
        self.urls = urls
        self.node = NodeInfo(node_id, urls[index])
        base = node_id.rsplit("-w", 1)[0]
        self.ids = [f"{base}-w{i}" for i in range(len(urls))]

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def place(self, room: str) -> NodeInfo:
        i = rendezvous_index(room, len(self.urls))
        return self.node if i == self.index else NodeInfo(self.ids[i], self.urls[i])

    async def release(self, room: str) -> None:
        return None

    async def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        # workers without Redis share no channel; revocation still reaches new connections
        # through the shared records (each connection checks them)
        return None

    def on_message(self, callback: MessageFn) -> None:
        return None

    async def peer_urls(self) -> list[str]:
        return list(self.urls)


# KEYS: none (one Redis, not Redis Cluster). ARGV: prefix, room, now.
# Returns the id of the node hosting `room`: the current one if its heartbeat key is alive,
# else the live node with the smallest load (its load is raised by one at once, so a burst of
# placements between two heartbeats spreads out).
PLACE_LUA = """
local prefix, room = ARGV[1], ARGV[2]
local room_key = prefix .. 'room:' .. room
local current = redis.call('GET', room_key)
if current and redis.call('EXISTS', prefix .. 'node:' .. current) == 1 then
  return current
end
local best, best_load = nil, nil
for _, id in ipairs(redis.call('SMEMBERS', prefix .. 'nodes')) do
  local key = prefix .. 'node:' .. id
  if redis.call('EXISTS', key) == 1 then
    local load = tonumber(redis.call('HGET', key, 'load') or '0') or 0
    if best == nil or load < best_load or (load == best_load and id < best) then
      best, best_load = id, load
    end
  else
    redis.call('SREM', prefix .. 'nodes', id)
  end
end
if best == nil then
  return false
end
redis.call('SET', room_key, best)
redis.call('HINCRBYFLOAT', prefix .. 'node:' .. best, 'load', 1)
return best
"""

# ARGV: prefix, room, node id. Delete the room's placement only if it still names this node.
RELEASE_LUA = """
local room_key = ARGV[1] .. 'room:' .. ARGV[2]
if redis.call('GET', room_key) == ARGV[3] then
  return redis.call('DEL', room_key)
end
return 0
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise RuntimeError(
            "redis_url is set but the redis package is missing: "
            "pip install 'teleconsult[redis]' (redis>=5)"
        ) from None
    return aioredis


class RedisRouter:
    """Placement and the node registry in Redis; reconnects with capped backoff."""

    def __init__(
        self,
        redis_url: str,
        node_id: str,
        url: str,
        load: LoadFn,
        hosted_rooms: RoomsFn,
        *,
        heartbeat_s: float = 1.0,
        ttl_s: float = 5.0,
        prefix: str = "tc:",
        cpu_clock: Callable[[], float] = process_cpu_s,
    ) -> None:
        aioredis = _import_redis()
        self.redis_url = redis_url
        self.prefix = prefix
        self.node = NodeInfo(node_id, url)
        self.instance = secrets.token_hex(8)
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self._load = load
        self._hosted = hosted_rooms
        self._callbacks: list[MessageFn] = []
        self.redis = aioredis.Redis.from_url(
            redis_url,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=2.0,
            health_check_interval=10,
        )
        self._place = self.redis.register_script(PLACE_LUA)
        self._release = self.redis.register_script(RELEASE_LUA)
        self._tasks: list[asyncio.Task[None]] = []
        self._cpu_clock = cpu_clock
        self._cpu_last = (time.monotonic(), cpu_clock())
        self.registered = asyncio.Event()
        self.reconnects = 0

    @property
    def channel(self) -> str:
        """Pub/sub channel of node-to-node messages."""
        return f"{self.prefix}control"

    def _node_key(self, node_id: str) -> str:
        return f"{self.prefix}node:{node_id}"

    async def start(self) -> None:
        """Register (waiting out a stale registration of this node id), then heartbeat."""
        await self._wait_out_previous_instance()
        try:
            await self.beat()
        except Exception as exc:  # Redis down at start: the heartbeat loop keeps trying
            log.warning("could not register in redis yet (%s); retrying", exc)
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="router-heartbeat"),
            asyncio.create_task(self._listen_loop(), name="router-listen"),
        ]

    async def _wait_out_previous_instance(self) -> None:
        """Another live process registered under this node id: wait for its TTL (a restarted
        worker), bounded; two live nodes with one id would share an audit log."""
        deadline = time.monotonic() + self.ttl_s + 1.0
        while time.monotonic() < deadline:
            try:
                other = await self.redis.hget(self._node_key(self.node.id), "instance")
            except Exception as exc:  # Redis not up yet: the heartbeat loop will retry
                log.warning("redis unreachable at start (%s); will keep trying", exc)
                return
            if other is None or other == self.instance:
                return
            await asyncio.sleep(min(0.2, self.heartbeat_s))
        raise RuntimeError(
            f"node id {self.node.id!r} is registered by another live process; "
            "give each node its own node_id"
        )

    async def close(self) -> None:
        """Stop heartbeats and free this node's rooms for other nodes at once."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            async with asyncio.timeout(2.0):
                for room in self._hosted():
                    await self._release(args=[self.prefix, room, self.node.id])
                await self.redis.delete(self._node_key(self.node.id))
                await self.redis.srem(f"{self.prefix}nodes", self.node.id)
        except (TimeoutError, OSError, ConnectionError) as exc:
            log.warning("could not deregister from redis: %s", exc)
        except Exception as exc:
            log.warning("could not deregister from redis: %s", exc)
        await self.redis.aclose()

    def load_figures(self) -> dict[str, float]:
        """rooms, participants, waiting, cpu (share of one core since the last beat), load."""
        rooms, participants, waiting = self._load()
        now, cpu = time.monotonic(), self._cpu_clock()
        then, cpu_then = self._cpu_last
        self._cpu_last = (now, cpu)
        share = (cpu - cpu_then) / (now - then) if now > then else 0.0
        # placement balances on rooms, with participants and CPU as tie-breaking weight
        load = rooms + participants / 100.0 + min(share, 1.0)
        return {
            "rooms": rooms,
            "participants": participants,
            "waiting": waiting,
            "cpu": round(share, 3),
            "load": round(load, 3),
        }

    async def beat(self) -> None:
        """Write this node's registry entry with a fresh TTL and re-claim its hosted rooms
        (after a Redis restart the placements are gone; this node still hosts them)."""
        figures = self.load_figures()
        key = self._node_key(self.node.id)
        ttl_ms = int(self.ttl_s * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "id": self.node.id,
                    "url": self.node.url,
                    "instance": self.instance,
                    "seen": time.time(),
                    **figures,
                },
            )
            pipe.pexpire(key, ttl_ms)
            pipe.sadd(f"{self.prefix}nodes", self.node.id)
            for room in self._hosted():
                pipe.set(f"{self.prefix}room:{room}", self.node.id, nx=True)
            await pipe.execute()
        self.registered.set()

    async def _heartbeat_loop(self) -> None:
        backoff = self.heartbeat_s
        while True:
            await asyncio.sleep(backoff)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.registered.clear()
                backoff = min(max(backoff * 2, 0.25), 5.0)
                log.warning("redis heartbeat failed (%s); retrying in %.1f s", exc, backoff)
                continue
            if backoff != self.heartbeat_s:
                self.reconnects += 1
                log.info("re-registered node %s in redis", self.node.id)
            backoff = self.heartbeat_s

    async def place(self, room: str) -> NodeInfo:
        """The node hosting `room` (placed atomically on the least-loaded live node)."""
        try:
            node_id = await self._place(args=[self.prefix, room, time.time()])
            if not node_id:
                # no live node registered (e.g. Redis restarted a moment ago): claim it here
                await self.beat()
                node_id = await self._place(args=[self.prefix, room, time.time()])
            if node_id == self.node.id:
                return self.node
            if not node_id:
                raise PlacementUnavailable("no live node is registered")
            url = await self.redis.hget(self._node_key(node_id), "url")
        except asyncio.CancelledError:
            raise
        except PlacementUnavailable:
            raise
        except Exception as exc:
            raise PlacementUnavailable(str(exc)) from exc
        if url is None:  # expired between the two calls: try once more
            return await self.place(room)
        return NodeInfo(node_id, url)

    async def release(self, room: str) -> None:
        """Forget the room's placement if it still names this node."""
        try:
            await self._release(args=[self.prefix, room, self.node.id])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not release room placement in redis: %s", exc)

    async def nodes(self) -> list[dict[str, str]]:
        """Every live node's registry entry (for /healthz-style tooling and tests)."""
        out = []
        for node_id in sorted(await self.redis.smembers(f"{self.prefix}nodes")):
            entry = await self.redis.hgetall(self._node_key(node_id))
            if entry:
                out.append(entry)
        return out

    async def peer_urls(self) -> list[str]:
        """Public URLs of the live nodes (best effort: this node's alone if Redis is down)."""
        try:
            return sorted({n["url"] for n in await self.nodes() if n.get("url")} | {self.node.url})
        except asyncio.CancelledError:
            raise
        except Exception:
            return [self.node.url]

    async def broadcast(self, kind: str, data: dict[str, Any]) -> None:
        """Publish a control message to the other nodes (best effort)."""
        message = json.dumps({"from": self.instance, "kind": kind, "data": data})
        try:
            await self.redis.publish(self.channel, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not broadcast %s to other nodes: %s", kind, exc)

    def on_message(self, callback: MessageFn) -> None:
        self._callbacks.append(callback)

    async def _listen_loop(self) -> None:
        backoff = 0.25
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                backoff = 0.25
                async for message in pubsub.listen():
                    await self._handle(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis control channel lost (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            body = json.loads(message["data"])
        except (ValueError, TypeError):
            return
        if not isinstance(body, dict) or body.get("from") == self.instance:
            return
        for callback in self._callbacks:
            try:
                await callback(str(body.get("kind")), dict(body.get("data") or {}))
            except Exception:
                log.exception("control message handler failed")


ROUTER = web.AppKey("router", Router)
