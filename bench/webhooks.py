"""Webhook cost: join/leave churn against a server without webhooks, then with one receiver.

Each run starts `teleconsult serve` (its own process, fresh data dir); CONCURRENCY client tasks
each connect, join and leave CYCLES times (every cycle makes room_started, participant_joined,
participant_left and room_ended events). The receiver (an aiohttp server in this process)
answers 204 and notes when each event arrived. Measures join latency (connect + join ack) and
the server's CPU in both runs, and the webhook delivery delay (event created -> received).

    python bench/webhooks.py [--quick] [--cycles N] [--concurrency N]

The last line printed is one JSON object with the results (ratios webhooks/none, load average).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import pct, proc_cpu_s, serve


async def churn(url: str, secret: str, cycles: int, concurrency: int) -> dict[str, Any]:
    import socketio

    from kernel.tokens import mint_token

    join_ms: list[float] = []
    errors = 0

    async def client(n: int) -> None:
        nonlocal errors
        for i in range(cycles):
            token = mint_token(
                secret, room=f"bench-{n}", identity=f"dr-{n}", role="host", name="医生", ttl_s=3600
            )
            sio = socketio.AsyncClient(reconnection=False)
            t0 = time.perf_counter()
            try:
                await sio.connect(
                    url, auth={"token": token}, transports=["websocket"], wait_timeout=30
                )
                ack = await sio.call("join", {}, timeout=30)
                if not ack.get("ok"):
                    errors += 1
                join_ms.append((time.perf_counter() - t0) * 1000)
                await sio.call("leave", {}, timeout=30)
            except Exception:
                errors += 1
            finally:
                await sio.disconnect()
            del i

    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return {"join_ms": join_ms, "errors": errors}


async def run(opts: argparse.Namespace) -> dict[str, Any]:
    from aiohttp import web

    arrivals: list[float] = []
    delays: list[float] = []
    expected = 4 * opts.cycles * opts.concurrency
    all_in = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        now = time.time()
        arrivals.append(now)
        delays.append((now - body["created_at"]) * 1000)
        if len(arrivals) >= expected:
            all_in.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook_url = f"http://127.0.0.1:{port}/hook"
    out: dict[str, Any] = {}
    try:
        for label, env in (
            ("none", {}),
            ("webhooks", {"TELECONSULT_WEBHOOKS__URLS": json.dumps([hook_url])}),
        ):
            env = {**env, "TELECONSULT_LOG_LEVEL": "warning", "TELECONSULT_ACCESS_LOG": "false"}
            with serve(env) as server:
                cpu0, wall0 = proc_cpu_s(server.proc.pid), time.monotonic()
                result = await churn(server.url, server.secret, opts.cycles, opts.concurrency)
                if label == "webhooks":
                    # bounded wait for the deliveries still in flight
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(all_in.wait(), 60)
                cpu_s = proc_cpu_s(server.proc.pid) - cpu0
                wall_s = time.monotonic() - wall0
            out[label] = {
                "joins": len(result["join_ms"]),
                "errors": result["errors"],
                "join_ms_p50": pct(result["join_ms"], 50),
                "join_ms_p99": pct(result["join_ms"], 99),
                "server_cpu_s": round(cpu_s, 2),
                "wall_s": round(wall_s, 1),
            }
    finally:
        await runner.cleanup()
    out["webhooks"]["events_expected"] = expected
    out["webhooks"]["events_received"] = len(arrivals)
    out["webhooks"]["delivery_ms_p50"] = pct(delays, 50)
    out["webhooks"]["delivery_ms_p99"] = pct(delays, 99)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 clients x 25 cycles")
    parser.add_argument("--cycles", type=int, default=100, help="join/leave cycles per client")
    parser.add_argument("--concurrency", type=int, default=8, help="clients at once")
    opts = parser.parse_args()
    if opts.quick:
        opts.cycles, opts.concurrency = 25, 4
    res = asyncio.run(run(opts))
    none, hooks = res["none"], res["webhooks"]
    summary = {
        "bench": "webhooks",
        "cycles": opts.cycles * opts.concurrency,
        "none": none,
        "webhooks": hooks,
        "join_p50_ratio": round(hooks["join_ms_p50"] / none["join_ms_p50"], 2),
        "join_p99_ratio": round(hooks["join_ms_p99"] / none["join_ms_p99"], 2),
        "server_cpu_ratio": round(hooks["server_cpu_s"] / none["server_cpu_s"], 2),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
