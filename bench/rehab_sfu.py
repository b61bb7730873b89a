"""Rehab through the SFU, for bench/rehab.py: labelled clips published by an aiortc peer (VP8
held at a set bitrate) to an in-process server, counted by the live agent; the latency from
the publisher's capture of a frame to the ``rehab:update`` of that frame at a client.

How a frame is followed: the publisher writes its frame number (8 bits) as black/white blocks
into the picture's top-left corner and notes the capture time; the agent's source (the SFU's
decoding tap) is wrapped to read the number back from each decoded frame and note its media
time; an update's ``t`` plus the agent's first media time names the frame, so its capture time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiortc.codecs.vpx as vpx
import av
import numpy as np
from aiohttp import web

from rehab_vision.landmarks import N_LANDMARKS, PoseSequence, save_npz
from rehab_vision.service import REHAB
from rehab_vision.sources import VideoFileTrack
from rtc_server.app import create_app
from rtc_server.config import load_settings, signing_secret
from rtc_server.keys import SETTINGS
from tests.helpers import Client, Tokens
from tests.rehab.test_live import bridge

BLOCK = 8  # px per bit of the frame-number stamp
BITS = 8


def stamp(frame: av.VideoFrame, n: int) -> av.VideoFrame:
    img = frame.to_ndarray(format="rgb24")
    for b in range(BITS):
        img[0 : BLOCK * 2, b * BLOCK * 2 : (b + 1) * BLOCK * 2] = 255 if (n >> b) & 1 else 0
    out = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    out.pts, out.time_base = frame.pts, frame.time_base
    return out


def read_stamp(frame: av.VideoFrame) -> int:
    gray = frame.to_ndarray(format="gray")
    n = 0
    for b in range(BITS):
        c = BLOCK + b * BLOCK * 2
        if gray[BLOCK // 2 : BLOCK + BLOCK // 2, c - BLOCK // 2 : c + BLOCK // 2].mean() > 128:
            n |= 1 << b
    return n


class StampedTrack(VideoFileTrack):
    """A file track that stamps each frame's number and notes when it was captured."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.captured: list[tuple[float, int]] = []  # (monotonic, number)
        self.count = 0

    async def recv(self) -> av.VideoFrame:  # type: ignore[override]
        frame = await super().recv()
        n = self.count % (1 << BITS)
        self.count += 1
        out = stamp(frame, n)
        self.captured.append((time.monotonic(), n))
        return out


@dataclass
class StampReader:
    """Wraps the agent's source: notes the stamp of every frame it hands on."""

    source: Any
    seen: dict[float, int] = field(default_factory=dict)  # media time -> number
    handed: dict[float, float] = field(default_factory=dict)  # media time -> monotonic

    async def recv(self) -> av.VideoFrame:
        frame = await self.source.recv()
        if frame.time is not None:
            key = round(float(frame.time), 4)
            self.seen[key] = read_stamp(frame)
            self.handed[key] = time.monotonic()  # decoded, handed to the agent's reader
        return frame


class TimedClient(Client):
    async def _record(self, event: str, data: Any = None) -> None:
        if event == "rehab:update" and isinstance(data, dict):
            data["_rx"] = time.monotonic()
        await super()._record(event, data)


@contextlib.asynccontextmanager
async def server() -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(load_settings(overrides={"data_dir": Path(tmp)}, environ={}))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            yield app, f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


def hold_bitrate(kbps: int) -> None:
    for name in ("DEFAULT_BITRATE", "MIN_BITRATE", "MAX_BITRATE"):
        setattr(vpx, name, kbps * 1000)


class PoseRecorder:
    """Wraps the agent's pose estimator: keeps every (media time, landmarks) it returned, i.e.
    what the session was fed, to be saved as an npz (+ ``.t.npy``) and replayed offline."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.rows: list[np.ndarray] = []
        self.t: list[float] = []
        self.size = (0, 0)

    def process(self, rgb: np.ndarray, timestamp_s: float) -> Any:
        lm = self.estimator.process(rgb, timestamp_s)
        self.rows.append(
            lm.as_row() if lm is not None else np.full((N_LANDMARKS, 8), np.nan, dtype=np.float32)
        )
        self.t.append(timestamp_s)
        self.size = (rgb.shape[0], rgb.shape[1])
        return lm

    def close(self) -> None:
        self.estimator.close()

    def save(self, path: Path, fps: float) -> None:
        if not self.rows:
            return
        seq = PoseSequence(
            lm=np.stack(self.rows), fps=fps, frame_size=self.size, t=np.asarray(self.t)
        )
        save_npz(path, seq)
        np.save(path.with_suffix(".t.npy"), seq.t)


async def run_condition(
    video: Path,
    exercise: str,
    max_side: int,
    fps: float,
    kbps: int,
    room: str,
    record: Path | None = None,
    realtime: bool = True,
) -> dict[str, Any]:
    """One clip under one condition: count, capture -> update latency per update; with
    ``record``, the landmarks the agent's session was fed saved there (npz). ``realtime``:
    the publisher is a camera at ``fps`` filming the clip at its own speed (else every file
    frame is sent at ``fps``, which plays the clip faster or slower)."""
    hold_bitrate(kbps)
    async with server() as (app, url):
        tokens = Tokens(signing_secret(app[SETTINGS]))
        doc = await TimedClient(url, tokens(room, "dr-a", "host")).connect()
        pat = await Client(url, tokens(room, "pat-1", "patient")).connect()
        media = bridge(pat, "pat-1")
        try:
            joined = await pat.call("join", {})
            await doc.call("join", {})
            if joined.get("status") == "waiting":
                await doc.call("lobby:admit", {"identity": "pat-1"})
            await media.wait_event(lambda ev, p: ev == "rtc:config" and p["can_publish"], 20)
            go = asyncio.Event()
            track = StampedTrack(
                video, fps=fps, hold=go, tail_s=2.0, max_side=max_side, realtime=realtime
            )
            await media.publish({"camera": track})
            await doc.next("rtc:track_published", timeout=20)
            ack = await doc.call(
                "rehab:start", {"exercise": exercise, "target_reps": 100}, timeout=60
            )
            if not ack.get("ok"):
                raise RuntimeError(f"rehab:start refused: {ack}")
            running = app[REHAB].sessions[ack["session_id"]]
            agent, tap = running.agent, running.tap
            reader = StampReader(agent._source)
            agent._source = reader  # the reader task picks it up on its next recv()
            recorder = PoseRecorder(agent._estimator)
            agent._estimator = recorder  # from the next frame on (the first is the held one)
            await doc.next("rehab:update", timeout=30)
            go.set()
            for _ in range(120):  # bounded: the clip plus its 2 s tail
                if track.readyState != "live":
                    break
                with contextlib.suppress(TimeoutError):
                    await doc.next("rehab:update", lambda u: False, timeout=1)
            stop = await doc.call("rehab:stop", {"session_id": ack["session_id"]}, timeout=30)
            report = stop["report"]
            ups = doc.drain("rehab:update")
        finally:
            await media.close()
            await doc.close()
            await pat.close()
    if record is not None:
        recorder.save(record, fps)
    lat = _latencies(ups, agent, reader, track)
    return {
        "reps": report["reps"],
        "stats": report["stats"],
        "updates": len(ups),
        "captured": track.count,
        "tap_decoded": tap.frames_decoded,
        "tap_dropped": tap.frames_dropped,
        "tracked": round(sum(u["tracked"] for u in ups) / max(1, len(ups)), 3),
        "latency_ms": lat.total,
        "event_latency_ms": lat.events,
        "to_agent_ms": lat.to_agent,
        "in_agent_ms": lat.in_agent,
    }


@dataclass
class Latencies:
    """Per update of a followed frame (ms): capture -> update at the client (``total``, and
    ``events`` for those carrying a rep or a cue), split into capture -> decoded frame handed
    to the agent (publisher encode, network, SFU, tap decode) and handed -> update received
    (waiting for the model, pose, counting, the emit and Socket.IO)."""

    total: list[float] = field(default_factory=list)
    events: list[float] = field(default_factory=list)
    to_agent: list[float] = field(default_factory=list)
    in_agent: list[float] = field(default_factory=list)


def _latencies(
    ups: list[dict[str, Any]], agent: Any, reader: StampReader, track: StampedTrack
) -> Latencies:
    t0 = agent._t0
    lat = Latencies()
    out, events = lat.total, lat.events
    if t0 is None:
        return lat
    times = np.array(sorted(reader.seen))
    if not len(times):
        return lat
    for u in ups:
        want = t0 + u["t"]  # u["t"] is rounded to the millisecond
        i = int(np.argmin(np.abs(times - want)))
        if abs(times[i] - want) > 0.0025:
            continue
        n = reader.seen[float(times[i])]
        # the newest capture of that number before the update arrived (8 bits wrap in 8 s+)
        caps = [c for c, m in track.captured if m == n and c <= u["_rx"]]
        if not caps:
            continue
        ms = (u["_rx"] - caps[-1]) * 1000.0
        out.append(ms)
        handed = reader.handed[float(times[i])]
        lat.to_agent.append((handed - caps[-1]) * 1000.0)
        lat.in_agent.append((u["_rx"] - handed) * 1000.0)
        if u["rep_detail"] or u["cue"]:
            events.append(ms)
    return lat


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None
