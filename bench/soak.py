"""Soak benchmark: join/leave/reconnect churn with media, watching the server for leaks.

The server runs in its own process (`teleconsult serve`, fresh data dir). In each room a host
stays connected and publishes pre-encoded camera + microphone (no encoding cost in the client).
Churners come and go: join (auto-subscribed to the host's media), chat, maybe publish a
microphone, then leave cleanly, drop the connection abruptly, or get replaced by a reconnect of
the same identity. The server's RSS, asyncio tasks, threads and open fds (from /metrics) are
compared at two quiet points: after a warm-up, and at the end. A quiet point is only the hosts
connected and the task count unchanged for 30 s (dropped clients take up to 45 s to notice).
`tasks_leaked` discounts the parked senders of subscriber m-lines kept for reuse (2 tasks each,
`idle_transceivers_*`), which are bounded by the most subscriptions a host held at once.

    python bench/soak.py [--quick] [--minutes M] [--rooms R] [--churners C]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import serve


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    wanted = (
        "process_resident_memory_bytes",
        "teleconsult_asyncio_tasks",
        "teleconsult_threads",
        "teleconsult_participants",
        "process_cpu_seconds_total",
        "process_open_fds",
        "teleconsult_media_idle_transceivers",
    )
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            out[name] = float(value)
    return out


class Soak:
    def __init__(self, url: str, secret: str, clip: dict[str, Any], rooms: int) -> None:
        self.url = url
        self.secret = secret
        self.clip = clip
        self.rooms = [f"soak-{i}" for i in range(rooms)]
        self.errors: list[str] = []
        self.cycles = 0
        self.actions: dict[str, int] = {}
        self.hosts: list[tuple[Any, Any]] = []

    async def connect(self, room: str, identity: str, role: str) -> tuple[Any, Any]:
        import socketio

        from rtc_server.media.client import MediaClient
        from signaling.tokens import mint_token

        sio = socketio.AsyncClient(reconnection=False)

        async def request(event: str, data: dict[str, Any]) -> dict[str, Any]:
            ack = await sio.call(event, data, timeout=20)
            if not ack.get("ok"):
                raise RuntimeError(f"{event}: {ack.get('error')}")
            return ack

        media = MediaClient(identity, request, decode=False, lean=True)
        for event in ("rtc:offer", "rtc:config"):
            sio.on(event, lambda data=None, _e=event: media.deliver(_e, data))
        token = mint_token(self.secret, room=room, identity=identity, role=role, ttl_s=7200)
        await sio.connect(
            self.url, auth={"token": token}, transports=["websocket"], wait_timeout=20
        )
        ack = await sio.call("join", {}, timeout=20)
        if ack.get("status") != "joined":
            raise RuntimeError(f"join: {ack}")
        return sio, media

    async def publish(self, media: Any, sources: tuple[str, ...]) -> None:
        from rtc_server.media.client import EncodedLoopTrack
        from rtc_server.media.frames import FramePacker

        clip = self.clip
        tracks: dict[str, Any] = {}
        packers: dict[str, Any] = {}
        if "camera" in sources:
            tracks["camera"] = EncodedLoopTrack(
                "video", clip["video"], clip["fps"], 90000, clip["video_key"]
            )
            packers["camera"] = FramePacker("video/VP8")
        if "microphone" in sources:
            tracks["microphone"] = EncodedLoopTrack("audio", clip["audio"], 50, 48000)
            packers["microphone"] = FramePacker("audio/opus")
        await media.publish(tracks, packers=packers)

    async def start_hosts(self) -> None:
        for room in self.rooms:
            sio, media = await self.connect(room, "host", "host")
            await self.publish(media, ("camera", "microphone"))
            self.hosts.append((sio, media))

    async def churner(self, room: str, slot: int, until: float) -> None:
        rng = random.Random(hash((room, slot)))
        n = 0
        while time.monotonic() < until:
            n += 1
            identity = f"c{slot}-{n % 3}"  # identities recur, as returning participants do
            action = rng.choice(["leave", "drop", "replace", "publish"])
            self.actions[action] = self.actions.get(action, 0) + 1
            sio = media = None
            try:
                sio, media = await self.connect(room, identity, "clinician")
                if action == "publish":
                    await self.publish(media, ("microphone",))
                await sio.call("chat:send", {"text": f"{identity} cycle {n}"}, timeout=20)
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                if action == "replace":
                    # the same identity connects again (a reload): the old one is replaced
                    sio2, media2 = await self.connect(room, identity, "clinician")
                    await asyncio.sleep(0.5)
                    await media.close()
                    await sio.disconnect()
                    sio, media = sio2, media2
                if action == "leave":
                    await sio.call("leave", {}, timeout=20)
                await media.close()
                if action == "drop":
                    # no goodbye: the transport just goes away
                    await sio.eio.disconnect(abort=True)
                else:
                    await sio.disconnect()
                self.cycles += 1
            except Exception as exc:
                self.errors.append(f"{room}/{identity}/{action}: {exc!r}"[:300])
                if media is not None:
                    await media.close()
                if sio is not None and sio.connected:
                    await sio.disconnect()
            await asyncio.sleep(rng.uniform(0.2, 1.0))

    async def churn(self, seconds: float, churners: int) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(self.churner(room, i, until) for room in self.rooms for i in range(churners))
        )

    async def quiet(
        self, hold: float = 30.0, timeout: float = 180.0
    ) -> tuple[dict[str, float], bool]:
        """Wait until only the hosts are connected and the task count has held for ``hold`` s.

        A dropped client's Engine.IO ping task lives up to its 25 s ping interval, its peer
        connection up to 30 s (ICE consent), so the count must hold for a while. Past the bound
        the sample is taken anyway (and reported as not settled).
        """
        deadline = time.monotonic() + timeout
        since: float | None = None
        count = None
        sample: dict[str, float] = {}
        while time.monotonic() < deadline:
            sample = await asyncio.to_thread(scrape, self.url)
            now = time.monotonic()
            tasks = sample["teleconsult_asyncio_tasks"]
            if sample.get("teleconsult_participants") != len(self.rooms) or tasks != count:
                since, count = now, tasks
            elif now - (since or now) >= hold:
                return sample, True
            await asyncio.sleep(1.0)
        return sample, False

    async def close(self) -> None:
        for sio, media in self.hosts:
            await media.close()
            await sio.disconnect()


async def run(opts: argparse.Namespace, url: str, secret: str, clip: dict[str, Any]) -> dict:
    soak = Soak(url, secret, clip, opts.rooms)
    await soak.start_hosts()
    warmup = min(60.0, opts.minutes * 60 * 0.2)
    await soak.churn(warmup, opts.churners)
    base, base_settled = await soak.quiet()
    t0 = time.monotonic()
    await soak.churn(opts.minutes * 60, opts.churners)
    churn_s = time.monotonic() - t0
    end, end_settled = await soak.quiet()
    await soak.close()
    rss0, rss1 = base["process_resident_memory_bytes"], end["process_resident_memory_bytes"]
    idle0 = base.get("teleconsult_media_idle_transceivers", 0)
    idle1 = end.get("teleconsult_media_idle_transceivers", 0)
    return {
        "bench": "soak",
        "minutes": round(churn_s / 60, 2),
        "rooms": opts.rooms,
        "churners": opts.rooms * opts.churners,
        "cycles": soak.cycles,
        "actions": soak.actions,
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_end_mb": round(rss1 / 2**20, 1),
        "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
        "quiet_settled": base_settled and end_settled,
        "tasks_baseline": int(base["teleconsult_asyncio_tasks"]),
        "tasks_end": int(end["teleconsult_asyncio_tasks"]),
        # m-lines kept for reuse each keep a parked sender (2 tasks): bounded by the most
        # subscriptions a subscriber held at once, not a leak
        "idle_transceivers_baseline": int(idle0),
        "idle_transceivers_end": int(idle1),
        "tasks_leaked": max(
            0,
            int(
                end["teleconsult_asyncio_tasks"]
                - base["teleconsult_asyncio_tasks"]
                - 2 * (idle1 - idle0)
            ),
        ),
        "threads_baseline": int(base["teleconsult_threads"]),
        "threads_end": int(end["teleconsult_threads"]),
        "open_fds_baseline": int(base.get("process_open_fds", -1)),
        "open_fds_end": int(end.get("process_open_fds", -1)),
        "server_cpu_pct": round(
            100 * (end["process_cpu_seconds_total"] - base["process_cpu_seconds_total"]) / churn_s,
            1,
        ),
        "errors": len(soak.errors),
        "error_samples": soak.errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 minute of churn")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--churners", type=int, default=3, help="per room")
    opts = parser.parse_args()
    if opts.quick:
        opts.minutes = 1.0

    import pickle

    from sfu import prepare_media

    clip_path = Path(tempfile.mkdtemp(prefix="tc-soak-")) / "clip.pkl"
    prepare_media(clip_path, 320, 240, 15, 2.0)
    clip = pickle.loads(clip_path.read_bytes())
    with serve() as server:
        result = asyncio.run(run(opts, server.url, server.secret, clip))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
