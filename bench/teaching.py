"""Teaching-round benchmark: how many observers one node holds in a teaching round.

One presenter (host) publishes camera and microphone (aiortc, synthetic 320x240 15 fps video);
a few observers subscribe to the media through the SFU (aiortc, frames counted, not decoded);
both run in a child process of their own. The rest are Socket.IO observers (this process) that
watch the room's events and the Q&A chat; a moderator admits them and promotes hands.
Observers are added in steps; at each step they are admitted with `lobby:admit_all`, then
for a steady window one observer asks a question in chat every second (fan-out latency to
every observer is measured), one raised hand is promoted to speaker and demoted (round
trip), and the server's CPU and memory are sampled. The server runs in its own process
(`teleconsult serve`, fresh data dir).

    python bench/teaching.py [--quick] [--steps 50,100,200,400] [--media-observers 4]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import pct, proc_cpu_s, serve

MEDIA_EVENTS = (
    "rtc:config",
    "rtc:offer",
    "rtc:track_published",
    "rtc:track_unpublished",
    "rtc:track_muted",
    "rtc:active_speaker",
    "rtc:disconnected",
)


ROOM = "round-bench"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


class Round:
    """The clients of one teaching round, in this process."""

    def __init__(self, url: str, secret: str, room: str) -> None:
        self.url = url
        self.secret = secret
        self.room = room
        self.observers: list[Any] = []
        self.sent_at: dict[str, float] = {}
        self.fanout_ms: list[float] = []
        self.delivered = 0
        self.errors = 0
        self.admitted: set[str] = set()
        self.admitted_event = asyncio.Event()
        self.want_admitted = 0
        self.media: list[Any] = []

    def token(self, identity: str, role: str) -> str:
        from kernel.tokens import mint_token

        return mint_token(self.secret, room=self.room, identity=identity, role=role, ttl_s=7200)

    async def client(self, identity: str, role: str) -> Any:
        import socketio

        sio = socketio.AsyncClient(reconnection=False)

        @sio.on("chat:message")
        async def on_chat(msg: dict[str, Any]) -> None:
            at = self.sent_at.get(msg["text"])
            if at is not None and msg["sender"]["identity"] != identity:
                self.fanout_ms.append((time.perf_counter() - at) * 1000)
                self.delivered += 1

        @sio.on("lobby:admitted")
        async def on_admitted(_msg: dict[str, Any]) -> None:
            self.admitted.add(identity)
            if len(self.admitted) >= self.want_admitted:
                self.admitted_event.set()

        await sio.connect(
            self.url,
            auth={"token": self.token(identity, role)},
            transports=["websocket"],
            wait_timeout=60,
        )
        return sio

    async def media_peer(self, identity: str, role: str) -> tuple[Any, Any]:
        from media.client import MediaClient

        sio = await self.client(identity, role)

        async def request(event: str, data: dict[str, Any]) -> dict[str, Any]:
            ack = await sio.call(event, data, timeout=30)
            if not ack.get("ok"):
                raise RuntimeError(f"{event} refused: {ack}")
            return ack

        media = MediaClient(identity, request, decode=False)
        for event in MEDIA_EVENTS:

            def on(data: Any = None, _event: str = event) -> None:
                media.deliver(_event, data)

            sio.on(event, on)
        return sio, media

    async def admit_all(self, host: Any, total: int, timeout: float = 120.0) -> float:
        self.want_admitted = total
        self.admitted_event.clear()
        if len(self.admitted) >= total:
            return 0.0
        t0 = time.perf_counter()
        ack = await host.call("lobby:admit_all", {}, timeout=timeout)
        if not ack.get("ok"):
            raise RuntimeError(f"admit_all refused: {ack}")
        await asyncio.wait_for(self.admitted_event.wait(), timeout)
        return time.perf_counter() - t0

    async def add_observers(self, count: int, concurrency: int = 40) -> None:
        sem = asyncio.Semaphore(concurrency)
        start = len(self.observers)

        async def one(i: int) -> None:
            async with sem:
                try:
                    sio = await self.client(f"obs-{i}", "observer")
                    ack = await sio.call("join", {}, timeout=60)
                    if ack.get("status") != "waiting":
                        self.errors += 1
                    self.observers.append(sio)
                except Exception:
                    self.errors += 1

        await asyncio.gather(*(one(i) for i in range(start, start + count)))


def media_side(url: str, secret: str, media_observers: int, conn: Any) -> None:
    """Child process: the presenter (publishing) and the media observers, on their own event
    loop, so the hundreds of Socket.IO observers of the parent never delay their ICE/RTP."""
    asyncio.run(_media_side(url, secret, media_observers, conn))


async def _media_side(url: str, secret: str, media_observers: int, conn: Any) -> None:
    from media.client import SyntheticVideoTrack, ToneAudioTrack

    rnd = Round(url, secret, ROOM)
    host_sio, host = await rnd.media_peer("presenter", "host")
    assert (await host_sio.call("join", {}, timeout=30))["status"] == "joined"
    await host.publish(
        {"camera": SyntheticVideoTrack(320, 240, 15), "microphone": ToneAudioTrack()}
    )
    viewers = []
    for i in range(media_observers):
        sio, media = await rnd.media_peer(f"media-obs-{i}", "observer")
        await sio.call("join", {}, timeout=30)
        viewers.append((sio, media))
    conn.send("waiting")
    cam = ("presenter", "camera")
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, conn.recv)
        if cmd == "stop":
            break
        conn.send([m.received[cam].frames if m.received.get(cam) else 0 for _s, m in viewers])
    for sio, media in viewers:
        await media.close()
        await sio.disconnect()
    await host.close()
    await host_sio.disconnect()


async def measure(url: str, secret: str, pid: int, opts: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=media_side, args=(url, secret, opts.media_observers, child))
    proc.start()
    loop = asyncio.get_running_loop()

    async def ask(cmd: str) -> Any:
        parent.send(cmd)
        return await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 60)

    rnd = Round(url, secret, ROOM)
    ready = await asyncio.wait_for(loop.run_in_executor(None, parent.recv), 120)
    assert ready == "waiting", ready
    # the moderator (a clinician: admit and moderate grants) admits, promotes and demotes
    moderator = await rnd.client("moderator", "host")
    assert (await moderator.call("join", {}, timeout=30))["status"] == "joined"
    ack = await moderator.call("lobby:admit_all", {}, timeout=60)
    assert len(ack.get("admitted", [])) == opts.media_observers, ack
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if min(await ask("count"), default=0) >= 10:
            break
        await asyncio.sleep(0.5)
    else:
        raise RuntimeError("media observers got no video")

    steps = []
    for target in opts.steps:
        need = target - len(rnd.observers)
        t0 = time.perf_counter()
        await rnd.add_observers(need)
        join_s = time.perf_counter() - t0
        admit_s = await rnd.admit_all(moderator, len(rnd.observers))
        # steady window: media flowing, a question a second, one hand promoted and demoted
        frames0 = await ask("count")
        cpu0, wall0 = proc_cpu_s(pid), time.monotonic()
        client0 = time.process_time()
        rnd.fanout_ms.clear()
        rnd.delivered = 0
        expected = 0
        promote_ms = None
        asker = rnd.observers[-1]
        for n in range(opts.window_s):
            sender = random.choice(rnd.observers)
            key = f"q{target}-{n}"
            rnd.sent_at[key] = time.perf_counter()
            await sender.emit("chat:send", {"text": key})
            # every Socket.IO observer of this process but the sender, and the moderator
            expected += len(rnd.observers)
            if n == 1:
                p0 = time.perf_counter()
                await asker.call("teach:hand", {"raised": True, "question": "?"}, timeout=30)
                identity = f"obs-{len(rnd.observers) - 1}"
                ack = await moderator.call("teach:promote", {"identity": identity}, timeout=30)
                ack2 = await moderator.call("teach:demote", {"identity": identity}, timeout=30)
                if ack.get("ok") and ack2.get("ok"):
                    promote_ms = round((time.perf_counter() - p0) * 1000, 1)
                else:
                    rnd.errors += 1
            await asyncio.sleep(1.0)
        frames1 = await ask("count")
        wall = time.monotonic() - wall0
        cpu = proc_cpu_s(pid) - cpu0
        frames = [b - a for a, b in zip(frames0, frames1, strict=True)]
        step = {
            "observers": len(rnd.observers) + opts.media_observers,
            "media_observers": opts.media_observers,
            "join_s": round(join_s, 2),
            "admit_all_s": round(admit_s, 2),
            "server_cpu_pct": round(100 * cpu / wall, 1),
            "server_rss_mb": rss_mb(pid),
            "client_cpu_pct": round(100 * (time.process_time() - client0) / wall, 1),
            "chat_fanout_ms_p50": pct(rnd.fanout_ms, 50),
            "chat_fanout_ms_p95": pct(rnd.fanout_ms, 95),
            "chat_delivery_ratio": round(rnd.delivered / expected, 4) if expected else None,
            "promote_demote_ms": promote_ms,
            "media_fps_min": round(min(frames) / wall, 1) if frames else None,
        }
        print(json.dumps({"step": step}), flush=True)
        steps.append(step)

    parent.send("stop")
    await loop.run_in_executor(None, proc.join, 30)
    for sio in rnd.observers:
        await sio.disconnect()
    await moderator.disconnect()
    return {"steps": steps, "errors": rnd.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="steps 25,75; 2 media observers")
    parser.add_argument("--steps", default="50,100,200,300,400")
    parser.add_argument("--media-observers", type=int, default=4)
    parser.add_argument("--window-s", type=int, default=12, help="seconds of Q&A per step")
    opts = parser.parse_args()
    if opts.quick:
        opts.steps, opts.media_observers, opts.window_s = "25,75", 2, 6
    opts.steps = [int(s) for s in str(opts.steps).split(",")]
    top = max(opts.steps) + opts.media_observers + 10
    env = {
        "TELECONSULT_LIMITS__MAX_PARTICIPANTS_PER_ROOM": str(top),
        "TELECONSULT_LIMITS__MAX_CONNECTIONS_PER_IP": str(top + 100),
    }
    load0 = Path("/proc/loadavg").read_text().split()[:3]
    t0 = time.monotonic()
    with serve(env) as server:
        result = asyncio.run(measure(server.url, server.secret, server.proc.pid, opts))
    steps = result["steps"]
    last = steps[-1] if steps else {}
    summary = {
        "bench": "teaching",
        "observers_held": last.get("observers"),
        "server_cpu_pct_at_max": last.get("server_cpu_pct"),
        "server_rss_mb_at_max": last.get("server_rss_mb"),
        "chat_fanout_ms_p95_at_max": last.get("chat_fanout_ms_p95"),
        "chat_delivery_ratio_at_max": last.get("chat_delivery_ratio"),
        "media_fps_min_at_max": last.get("media_fps_min"),
        "cpu_pct_per_100_observers": (
            round(
                100
                * (last["server_cpu_pct"] - steps[0]["server_cpu_pct"])
                / max(1, last["observers"] - steps[0]["observers"]),
                2,
            )
            if len(steps) > 1
            else None
        ),
        "steps": steps,
        "errors": result["errors"],
        "loadavg_before": load0,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        "wall_s": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
