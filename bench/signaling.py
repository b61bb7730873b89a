"""Signaling benchmark: many Socket.IO clients joining rooms and chatting.

The server runs in its own process (`teleconsult serve` on a free port, a fresh data dir); the
clients run in worker processes, each owning whole rooms so that send and receive times of a
chat message are taken on one clock. Measures join latency (connect + `join` ack) and chat
fan-out latency (send -> every other member's `chat:message`), and the server's CPU.

    python bench/signaling.py [--quick] [--clients N] [--rooms N] [--workers N]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import pct, proc_cpu_s, serve


async def run_rooms(
    url: str,
    secret: str,
    rooms: list[str],
    per_room: int,
    messages: int,
    join_rate: float,
    chat_interval: float,
) -> dict[str, Any]:
    import socketio

    from kernel.tokens import mint_token

    join_ms: list[float] = []
    connect_ms: list[float] = []
    ack_ms: list[float] = []
    fanout_ms: list[float] = []
    errors = 0
    sent_at: dict[str, float] = {}
    expected = 0
    received = 0
    all_received = asyncio.Event()
    cpu0 = time.process_time()

    async def one(room: str, i: int) -> socketio.AsyncClient:
        nonlocal errors
        role = "host" if i == 0 else "clinician"
        token = mint_token(secret, room=room, identity=f"u{i}", role=role, ttl_s=3600)
        sio = socketio.AsyncClient(reconnection=False)

        @sio.on("chat:message")
        async def on_chat(msg: dict[str, Any]) -> None:
            nonlocal received
            key = msg["text"]
            if msg["sender"]["identity"] == f"u{i}":
                return
            fanout_ms.append((time.perf_counter() - sent_at[key]) * 1000)
            received += 1
            if received >= expected:
                all_received.set()

        t0 = time.perf_counter()
        try:
            await sio.connect(url, auth={"token": token}, transports=["websocket"], wait_timeout=30)
            t1 = time.perf_counter()
            connect_ms.append((t1 - t0) * 1000)
            ack = await sio.call("join", {}, timeout=30)
            ack_ms.append((time.perf_counter() - t1) * 1000)
            if not ack.get("ok"):
                errors += 1
        except Exception:
            errors += 1
        join_ms.append((time.perf_counter() - t0) * 1000)
        return sio

    async def arrivals(who: list[tuple[str, int]]) -> list[socketio.AsyncClient]:
        """Start joins at `join_rate` a second (open loop: a slow join delays no other)."""
        tasks = []
        start = time.perf_counter()
        for n, (room, i) in enumerate(who):
            delay = start + n / join_rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(room, i)))
        return list(await asyncio.gather(*tasks))

    # the hosts first (they open the rooms), then everybody else concurrently
    hosts = await arrivals([(room, 0) for room in rooms])
    rest = [(room, i) for room in rooms for i in range(1, per_room)]
    others = await arrivals(rest)
    clients = [*hosts, *others]
    by_room: dict[str, list[socketio.AsyncClient]] = {
        r: [h] for r, h in zip(rooms, hosts, strict=True)
    }
    for (room, _i), c in zip(rest, others, strict=True):
        by_room[room].append(c)

    # chat: in every room, members take turns sending one message every `chat_interval` s;
    # rooms start at random phases, as real rooms do
    expected = len(rooms) * messages * (per_room - 1)
    t_chat = time.perf_counter()

    async def chatter(room: str) -> None:
        nonlocal errors
        members = by_room[room]
        await asyncio.sleep(random.random() * chat_interval)
        for n in range(messages):
            sender = members[n % len(members)]
            key = f"{room}/{n}"
            sent_at[key] = time.perf_counter()
            try:
                await sender.emit("chat:send", {"text": key})
            except Exception:
                errors += 1
            await asyncio.sleep(chat_interval)

    await asyncio.gather(*(chatter(r) for r in rooms))
    try:
        await asyncio.wait_for(all_received.wait(), 30)
    except TimeoutError:
        pass
    chat_s = time.perf_counter() - t_chat
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    return {
        "join_ms": join_ms,
        "connect_ms": connect_ms,
        "ack_ms": ack_ms,
        "fanout_ms": fanout_ms,
        "errors": errors,
        "expected": expected,
        "received": received,
        "chat_s": chat_s,
        "cpu_s": time.process_time() - cpu0,
    }


def worker(args: tuple[Any, ...], out: Any) -> None:
    out.put(asyncio.run(run_rooms(*args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 clients in 10 rooms")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20, help="chat messages per room")
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument(
        "--chat-interval", type=float, default=1.0, help="seconds between messages in a room"
    )
    parser.add_argument(
        "--join-rate", type=float, default=100.0, help="new clients per second, all workers"
    )
    parser.add_argument("--profile", default=None, help="write a cProfile of the server here")
    parser.add_argument(
        "--nice", type=int, default=-5, help="server niceness (as bench/sfu.py; 0: none)"
    )
    opts = parser.parse_args()
    if opts.quick:
        opts.clients, opts.rooms, opts.messages = 100, 10, 5

    env = {
        "TELECONSULT_LIMITS__MAX_ROOMS": str(opts.rooms + 10),
        # every client of this benchmark comes from 127.0.0.1
        "TELECONSULT_LIMITS__MAX_CONNECTIONS_PER_IP": str(opts.clients + 100),
    }
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    with serve(env, profile=opts.profile, nice=opts.nice) as server:
        url, secret = server.url, server.secret
        per_room = opts.clients // opts.rooms
        rooms = [f"bench-{i}" for i in range(opts.rooms)]
        shards = [rooms[i :: opts.workers] for i in range(opts.workers)]
        cpu0, wall0 = proc_cpu_s(server.proc.pid), time.monotonic()
        queue: Any = mp.get_context("spawn").Queue()
        procs = [
            mp.get_context("spawn").Process(
                target=worker,
                args=(
                    (
                        url,
                        secret,
                        shard,
                        per_room,
                        opts.messages,
                        opts.join_rate / opts.workers,
                        opts.chat_interval,
                    ),
                    queue,
                ),
            )
            for shard in shards
            if shard
        ]
        for p in procs:
            p.start()
        results = [queue.get(timeout=600) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        cpu_s, wall_s = proc_cpu_s(server.proc.pid) - cpu0, time.monotonic() - wall0

    join_ms = [v for r in results for v in r["join_ms"]]
    fanout = [v for r in results for v in r["fanout_ms"]]
    expected = sum(r["expected"] for r in results)
    received = sum(r["received"] for r in results)
    summary = {
        "bench": "signaling",
        "clients": len(join_ms),
        "rooms": opts.rooms,
        "client_processes": len(results),
        "join_ms_p50": pct(join_ms, 50),
        "join_ms_p99": pct(join_ms, 99),
        "connect_ms_p99": pct([v for r in results for v in r["connect_ms"]], 99),
        "join_ack_ms_p99": pct([v for r in results for v in r["ack_ms"]], 99),
        "chat_messages": opts.rooms * opts.messages,
        "chat_msgs_per_s": round(opts.rooms / opts.chat_interval, 1),
        "chat_deliveries": received,
        "chat_delivery_ratio": round(received / expected, 4) if expected else None,
        "chat_fanout_ms_p50": pct(fanout, 50),
        "chat_fanout_ms_p99": pct(fanout, 99),
        "chat_fanout_ms_mean": round(statistics.fmean(fanout), 2) if fanout else None,
        "errors": sum(r["errors"] for r in results),
        "join_rate_per_s": opts.join_rate,
        "server_cpu_pct": round(100 * cpu_s / wall_s, 1),
        # per client over the whole run (connect, join, chat, disconnect): the run queue of a
        # shared machine moves this far less than it moves latency
        "server_cpu_ms_per_client": round(1000 * cpu_s / len(join_ms), 2) if join_ms else None,
        "client_cpu_pct": round(100 * sum(r["cpu_s"] for r in results) / wall_s, 1),
        "wall_s": round(wall_s, 1),
        "server_nice": opts.nice,
        "loadavg_before": [float(x) for x in load0],
        "loadavg_after": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
