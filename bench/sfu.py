"""SFU benchmark: encoded-frame forwarding against aiortc's MediaRelay (decode + re-encode).

The server is the real teleconsult app (Socket.IO signaling + the SFU) in its own process;
the participants are aiortc clients (`media.client.MediaClient`) in other
processes, talking Socket.IO and UDP over the machine's interface address. Publishers replay
pre-encoded VP8 (640x480, 30 fps) and Opus (20 ms) so that the clients spend no CPU encoding;
subscribers count assembled encoded frames without decoding them.

Phases, each with a fresh server process:
  1. fanout/sfu    1 publisher (camera + mic) -> N subscribers, one of them joining late
  2. fanout/relay  the same through MediaRelay: the server decodes and re-encodes per subscriber
     fanout/janus  the same through Debian's janus (VideoRoom), with --baseline janus
  3. room/sfu      8 participants, every one camera + mic, all subscribed to all
     room/janus    the same through janus, with --baseline janus
`--only fanout` / `--only room` runs those phases only; `--baseline relay|janus|relay,janus|none`
picks the fan-out baselines (relay by default).

Measured: the server process's own CPU (from /proc/<pid>/stat, over a steady window), the
packets it forwarded, SFU-added latency (frame complete at the SFU -> last packet sent, inside
the server), first picture (subscriber receives the offer -> first keyframe assembled), and
delivery (frames received / frames sent, per subscriber and stream, over the window).

    python bench/sfu.py [--quick] [--only fanout,room] [--baseline relay|janus|relay,janus|none]
                        [--video vga|720p]

The last line printed is one JSON object with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import sfu_janus, sfu_timing  # noqa: E402  (after the repository is on sys.path)

SECRET = "bench-secret-not-for-production-0123456789abcdef"
ROOM = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def proc_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_cpu_s(pid: int) -> float:
    return sum(proc_times(pid))


def udp_drops(pids: list[int]) -> dict[int, int]:
    """Datagrams dropped (receive buffer full) on the UDP sockets of ``pids`` (from ss)."""
    import re

    try:
        out = subprocess.run(["ss", "-uampH"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    drops = dict.fromkeys(pids, 0)
    owner = None
    for line in out.splitlines():
        m = re.search(r"pid=(\d+)", line)
        if m:
            owner = int(m.group(1))
        d = re.search(r"skmem:\(.*\bd(\d+)\)", line)
        if d and owner in drops:
            drops[owner] += int(d.group(1))
    return drops


# --- media preparation (parent) -----------------------------------------------------------


VIDEO = {  # --video: the publishers' pre-encoded camera (width, height, VP8 bits/s)
    "vga": (640, 480, 600_000),
    "720p": (1280, 720, 1_500_000),  # what a browser sends at 720p (issue 19's "real bitrates")
}


def prepare_media(
    path: Path, width: int, height: int, fps: int, seconds: float, bit_rate: int = 600_000
) -> None:
    """Pre-encode a looped VP8 clip (plus a keyframe version of every picture) and Opus."""
    import av
    import numpy as np

    n = int(fps * seconds)
    tb = fractions.Fraction(1, fps)

    def vp8(all_key: bool) -> list[bytes]:
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.bit_rate = bit_rate
        codec.pix_fmt = "yuv420p"
        codec.time_base = tb
        codec.framerate = fps
        codec.gop_size = 3000
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        out = []
        y = np.arange(height)[:, None]
        x = np.arange(width)[None, :]
        rng = np.random.default_rng(1)
        for i in range(n):
            luma = ((x + 3 * i) % 256 + (y // 8) * 4 + rng.integers(0, 12, (height, width))) % 256
            box = (abs(x - (i * 7) % width) < 40) & (abs(y - height // 2) < 40)
            luma = np.where(box, 235, luma).astype(np.uint8)
            yuv = np.concatenate([luma, np.full((height // 2, width), 128, dtype=np.uint8)], axis=0)
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts = i
            frame.time_base = tb
            if all_key or i == 0:
                frame.pict_type = av.video.frame.PictureType.I
            out.append(b"".join(bytes(p) for p in codec.encode(frame)))
        return out

    video = vp8(False)
    video_key = vp8(True)
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate = 48000
    opus.layout = "mono"
    opus.format = "s16"
    opus.bit_rate = 32000
    opus.time_base = fractions.Fraction(1, 48000)
    audio: list[bytes] = []
    samples = 960
    for i in range(int(50 * seconds)):
        t = (np.arange(samples) + i * samples) / 48000
        env = 0.5 + 0.5 * math.sin(i / 7)
        pcm = (8000 * env * np.sin(2 * math.pi * 220 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, 48000)
        audio.extend(bytes(p) for p in opus.encode(frame))
    path.write_bytes(
        pickle.dumps({"video": video, "video_key": video_key, "audio": audio, "fps": fps})
    )


# --- server process -----------------------------------------------------------------------


def install_relay_mode() -> None:
    """Turn the SFU into the baseline: decode every published track, MediaRelay + re-encode."""
    from aiortc.contrib.media import MediaRelay

    from media import forwarder, session

    relay = MediaRelay()
    orig_init = forwarder.Subscription.__init__

    def tap(self: Any) -> None:  # keep aiortc's jitter buffer and decoder
        return None

    orig_close = forwarder.Subscription.close

    def sub_init(self: Any, subscriber: str, source_pub: Any, *args: Any, **kw: Any) -> None:
        orig_init(self, subscriber, source_pub, *args, **kw)
        self.forwarded_track = self.track  # what the SFU's own close() idles
        self.track = relay.subscribe(source_pub.receiver.track, buffered=False)

    def close(self: Any) -> None:  # the relay track ends with its subscription
        relay_track, self.track = self.track, self.forwarded_track
        orig_close(self)
        relay_track.stop()

    def bind(self: Any, transceiver: Any) -> None:  # no packer: the sender encodes
        self.transceiver = transceiver
        self.sender = transceiver.sender

    forwarder.Publication.tap = tap  # type: ignore[method-assign]
    forwarder.Subscription.__init__ = sub_init  # type: ignore[method-assign]
    forwarder.Subscription.bind = bind  # type: ignore[method-assign]
    forwarder.Subscription.close = close  # type: ignore[method-assign]
    forwarder.Subscription.activate = lambda self: None  # type: ignore[method-assign]
    del session


def run_server(port: int, mode: str, data_dir: str) -> None:
    from aiohttp import web
    from aiortc import rtcrtpsender

    if mode == "relay":
        install_relay_mode()
    counts = {"video_encoders": 0, "audio_encoders": 0}
    real_get_encoder = rtcrtpsender.get_encoder

    def counting_get_encoder(codec: Any) -> Any:
        kind = "video" if codec.mimeType.lower().startswith("video/") else "audio"
        counts[f"{kind}_encoders"] += 1
        return real_get_encoder(codec)

    rtcrtpsender.get_encoder = counting_get_encoder

    from media.aiortc_patch import fast_sender
    from media.service import MEDIA
    from rtc_server.app import create_app
    from rtc_server.config import load_settings

    settings = load_settings(
        overrides={
            "data_dir": data_dir,
            "port": port,
            "secret_key": SECRET,
            "log_level": "warning",
            "limits": {"rate_per_s": 1000, "rate_burst": 1000},
            "media": {
                "stats_interval_s": 0,
                "auto_layer": False,
                "publisher_remb": os.environ.get("SFU_BENCH_REMB", "1") == "1",
                **media_paths(),
            },
        },
        environ={},
    )
    app = create_app(settings)

    async def stats(request: web.Request) -> web.Response:
        service = app[MEDIA]
        room = service.rooms.get(ROOM)
        packets = 0
        lat: dict[str, list[float]] = {"audio": [], "video": []}
        subs = fast = native = 0
        if room is not None:
            for s in room.sessions.values():
                for sub in s.subscriptions.values():
                    subs += 1
                    if sub.sender is not None:
                        packets += sub.sender._RTCRtpSender__packet_count
                        fs = fast_sender(sub.sender)
                        fast += fs is not None
                        native += fs is not None and fs.native_frames > 0
                    lat[sub.kind].extend(sub.latencies)
                    if request.query.get("reset"):
                        sub.latencies.clear()
        pubs = {}
        fwd = {"forwarded": 0, "dropped": 0, "expected": 0}
        rembs = [0, 0]
        if room is not None:
            for s in room.sessions.values():
                if s.pub_feedback is not None:
                    sent, suppressed = s.pub_feedback.rembs
                    rembs[0] += sent
                    rembs[1] += suppressed
            for (who, src), pub in room.publications.items():
                a = pub.assembler
                pubs[f"{who}|{src}"] = [a.packets, a.frames, a.losses, pub.plis_sent]
            for s in room.sessions.values():
                for sub in s.subscriptions.values():
                    fwd["forwarded"] += sub.frames_forwarded
                    fwd["dropped"] += sub.frames_dropped
        body = {
            "publications": pubs,
            "forwarding": fwd,
            "packets_sent": packets,
            "subscriptions": subs,
            "fast_path_senders": fast,
            "native_send_senders": native,
            "rembs": rembs,
            "latency_ms_p95": {k: pct([x * 1000 for x in v], 95) for k, v in lat.items()},
            "latency_ms_p50": {k: pct([x * 1000 for x in v], 50) for k, v in lat.items()},
            "latency_samples": {k: len(v) for k, v in lat.items()},
            **counts,
        }
        return web.json_response(body)

    app.router.add_get("/bench/stats", stats)
    if os.environ.get("SFU_BENCH_TIMING") == "1":
        sfu_timing.install(counts)
    profile = os.environ.get("SFU_BENCH_PROFILE")
    if profile:
        import cProfile

        with cProfile.Profile() as prof:
            web.run_app(app, host="127.0.0.1", port=port, print=None)
        prof.dump_stats(f"{profile}.{mode}.prof")
        return
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# --- client process -----------------------------------------------------------------------


async def run_participants(
    url: str, spec: list[dict[str, Any]], clip: dict[str, Any], t_end: float
) -> None:
    """Participants of one client process (they stand in for remote devices)."""
    import socketio

    from kernel.tokens import mint_token
    from media.client import EncodedLoopTrack, MediaClient
    from media.frames import FramePacker

    results: dict[str, Any] = {}

    async def one(entry: dict[str, Any]) -> None:
        identity = entry["identity"]
        await asyncio.sleep(max(0.0, entry["join_at"] - time.monotonic()))
        sio = socketio.AsyncClient(reconnection=False)
        token = mint_token(SECRET, room=ROOM, identity=identity, role="clinician")

        async def request(event: str, data: dict[str, Any]) -> dict[str, Any]:
            ack = await sio.call(event, data, timeout=20)
            if not ack.get("ok"):
                raise RuntimeError(f"{event}: {ack}")
            return ack

        client = MediaClient(identity, request, decode=False, lean=True)
        for event in ("rtc:offer", "rtc:config"):
            sio.on(event, lambda data=None, _e=event: client.deliver(_e, data))
        for attempt in range(3):  # a loaded machine can make the first handshake time out
            try:
                await sio.connect(
                    url, auth={"token": token}, transports=["websocket"], wait_timeout=20
                )
                break
            except socketio.exceptions.ConnectionError:
                if attempt == 2:
                    raise
                await asyncio.sleep(1.0)
        await sio.call("join", {}, timeout=20)
        tracks: dict[str, Any] = {}
        if entry["publish"]:
            video = EncodedLoopTrack("video", clip["video"], clip["fps"], 90000, clip["video_key"])
            audio = EncodedLoopTrack("audio", clip["audio"], 50, 48000)
            tracks = {"camera": video, "microphone": audio}
            await client.publish(
                tracks,
                packers={
                    "camera": FramePacker("video/VP8"),
                    "microphone": FramePacker("audio/opus"),
                },
            )
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        results[identity] = {
            "sent": {src: t.sent_times for src, t in tracks.items()},
            "keyframes_sent": {src: t.keyframes_sent for src, t in tracks.items()},
            "sub_connected_at": client.sub_connected_at,
            "received": {
                f"{p}|{s}": {
                    "times": r.frame_times,
                    "offered_at": r.offered_at,
                    "first_frame_at": r.first_frame_at,
                }
                for (p, s), r in client.received.items()
            },
        }
        await client.close()
        await sio.disconnect()

    async def guarded(entry: dict[str, Any]) -> None:
        try:
            await one(entry)
        except Exception as exc:  # report, keep the other participants' results
            results.setdefault("_errors", []).append(f"{entry['identity']}: {exc!r}")

    await asyncio.gather(*(guarded(e) for e in spec))
    results["_cpu_s"] = proc_cpu_s(os.getpid())
    print(json.dumps(results))


# --- orchestration ------------------------------------------------------------------------


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def start_server(port: int, mode: str, data_dir: str) -> subprocess.Popen[bytes]:
    """The teleconsult server (SFU or relay mode) in its own process, once it answers."""
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--role",
            "server",
            "--mode",
            mode,
            "--port",
            str(port),
            "--data-dir",
            data_dir,
        ],
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            get_json(f"http://127.0.0.1:{port}/bench/stats")
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                stop_server(server)
                raise RuntimeError("server did not start") from None
            time.sleep(0.1)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


def stats(base: str, mode: str, reset: bool = False) -> dict[str, Any]:
    """The server's counters (Janus has none here: its packets are counted at the clients)."""
    if mode == "janus":
        return {
            "publications": {},
            "forwarding": {"forwarded": 0, "dropped": 0},
            "packets_sent": 0,
            "latency_ms_p95": {},
            "latency_ms_p50": {},
            "video_encoders": 0,
        }
    return get_json(f"{base}/bench/stats" + ("?reset=1" if reset else ""))


def phase(
    name: str,
    mode: str,
    participants: list[dict[str, Any]],
    procs: int,
    media: Path,
    duration: float,
    warmup: float,
) -> dict[str, Any]:
    port = free_port()
    with contextlib.ExitStack() as stack:
        if mode == "janus":
            janus = stack.enter_context(sfu_janus.run_janus(port))
            server: Any = janus.proc
            base = janus.url
        else:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory())
            server = start_server(port, mode, data_dir)
            stack.callback(stop_server, server)
            base = f"http://127.0.0.1:{port}"
        t0 = time.monotonic() + 2.5  # client processes need ~2 s to import aiortc
        w0, w1 = t0 + warmup, t0 + duration - 0.5
        for p in participants:
            p["join_at"] = t0 + p.get("delay", 0.0)
            p["window"] = [w0, w1]
        t_end = t0 + duration
        groups = [participants[i::procs] for i in range(procs)]
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--role",
                    "janus-clients" if mode == "janus" else "clients",
                    "--url",
                    base,
                    "--media",
                    str(media),
                    "--t-end",
                    repr(t_end),
                    "--spec",
                    json.dumps(g),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for g in groups
            if g
        ]
        time.sleep(max(0.0, w0 - time.monotonic() - 0.5))
        # the latency samples gathered since the joins (up to 4,096 per subscription) are
        # cleared before the window: sorting them for the reply is the bench's work, and it
        # fell inside the server's CPU window (about 5 % of the server in the 720p room)
        stats(base, mode, reset=True)
        time.sleep(max(0.0, w0 - time.monotonic()))
        (u0, k0), s0 = proc_times(server.pid), stats(base, mode, reset=True)
        time.sleep(max(0.0, w1 - time.monotonic()))
        (u1, k1), s1 = proc_times(server.pid), stats(base, mode)
        drops = udp_drops([server.pid] + [w.pid for w in workers])
        results: dict[str, Any] = {}
        errors: list[str] = []
        client_cpu_s = 0.0
        packets_received = 0
        for w in workers:
            out, _ = w.communicate(timeout=60)
            lines = out.strip().splitlines()
            got = json.loads(lines[-1]) if lines else {"_errors": ["client process died"]}
            client_cpu_s += got.pop("_cpu_s", 0.0)
            packets_received += got.pop("_packets_in_window", 0)
            errors.extend(got.pop("_errors", []))
            results.update(got)
    if os.environ.get("SFU_BENCH_DUMP"):
        Path(os.environ["SFU_BENCH_DUMP"] + f".{name}.{mode}.json").write_text(
            json.dumps({"results": results, "participants": participants, "w0": w0, "w1": w1})
        )
    window = w1 - w0
    cpu0, cpu1 = u0 + k0, u1 + k1
    cpu_pct = (cpu1 - cpu0) / window * 100
    user_pct = (u1 - u0) / window * 100
    delivered = {"video": [0, 0], "audio": [0, 0]}
    first_frame_ms: list[float] = []
    first_frame_connected_ms: list[float] = []
    streams = 0
    publishers = [p["identity"] for p in participants if p["publish"]]
    for p in participants:
        me = results.get(p["identity"], {})
        if not p["subscribe"]:
            continue
        for pub in publishers:
            if pub == p["identity"]:
                continue
            for source, kind in (("camera", "video"), ("microphone", "audio")):
                streams += 1
                sent = [
                    t
                    for t in results.get(pub, {}).get("sent", {}).get(source, [])
                    if w0 <= t <= w1 - 0.2
                ]
                got = me.get("received", {}).get(f"{pub}|{source}")
                recv = [t for t in got["times"] if w0 + 0.05 <= t <= w1] if got else []
                start = max(w0, p["join_at"] + 1.0)
                sent_n = sum(1 for t in sent if t >= start)
                recv_n = sum(1 for t in recv if t >= start + 0.05)
                delivered[kind][0] += min(recv_n, sent_n)
                delivered[kind][1] += sent_n
                if kind == "video" and got and got["first_frame_at"]:
                    first_frame_ms.append((got["first_frame_at"] - got["offered_at"]) * 1000)
                    ready = max(got["offered_at"], me.get("sub_connected_at") or 0.0)
                    first_frame_connected_ms.append((got["first_frame_at"] - ready) * 1000)
    packets = packets_received if mode == "janus" else s1["packets_sent"] - s0["packets_sent"]
    pps = packets / window
    up_sent = up_got = 0
    up_losses = sum(
        v[2] - s0["publications"].get(k, [0, 0, 0, 0])[2] for k, v in s1["publications"].items()
    )
    for pub in publishers:
        for source in ("camera", "microphone"):
            up_sent += sum(
                1 for t in results.get(pub, {}).get("sent", {}).get(source, []) if w0 <= t <= w1
            )
            before = s0["publications"].get(f"{pub}|{source}", [0, 0, 0, 0])[1]
            up_got += s1["publications"].get(f"{pub}|{source}", [0, 0, 0, 0])[1] - before
    total_d = sum(v[0] for v in delivered.values())
    total_s = sum(v[1] for v in delivered.values())
    return {
        "phase": name,
        "mode": mode,
        "publishers": len(publishers),
        "subscribers": sum(1 for p in participants if p["subscribe"]),
        "forwarded_streams": streams,
        "server_cpu_pct": round(cpu_pct, 1),
        "server_user_cpu_pct": round(user_pct, 1),
        "server_system_cpu_pct": round(cpu_pct - user_pct, 1),
        "cpu_per_stream_pct": round(cpu_pct / max(streams, 1), 2),
        "forwarded_pps": round(pps),
        "us_per_packet": round((cpu1 - cpu0) / packets * 1e6, 1) if packets else None,
        "forwarded_pps_per_core": round(pps / max((cpu1 - cpu0) / window, 1e-6)),
        "added_latency_ms_p95": s1["latency_ms_p95"],
        "added_latency_ms_p50": s1["latency_ms_p50"],
        "first_frame_ms_p95": pct(first_frame_ms, 95),
        "first_frame_ms_max": pct(first_frame_ms, 100),
        "first_frame_after_connect_ms_p95": pct(first_frame_connected_ms, 95),
        "delivery_ratio": round(total_d / total_s, 4) if total_s else None,
        "upstream_delivery_ratio": round(up_got / up_sent, 4)
        if up_sent and mode == "sfu"
        else None,
        "upstream_unrepaired_losses": up_losses,
        "delivery_ratio_video": round(delivered["video"][0] / max(delivered["video"][1], 1), 4),
        "delivery_ratio_audio": round(delivered["audio"][0] / max(delivered["audio"][1], 1), 4),
        "video_encoders_created_in_server": s1["video_encoders"],
        "client_processes_cpu_pct": round(client_cpu_s / (t_end - t0 + 2.5) * 100, 1),
        "sfu_frames_forwarded": s1["forwarding"]["forwarded"] - s0["forwarding"]["forwarded"],
        "sfu_frames_dropped": s1["forwarding"]["dropped"] - s0["forwarding"]["dropped"],
        "fast_path_senders": s1.get("fast_path_senders", 0),
        "native_send_senders": s1.get("native_send_senders", 0),
        "timing_per_packet": sfu_timing.per_packet(
            s0.get("timing_ns", {}), s1.get("timing_ns", {}), packets
        ),
        "publisher_rembs_per_s": [
            round((b - a) / window, 1)
            for a, b in zip(s0.get("rembs", [0, 0]), s1.get("rembs", [0, 0]), strict=True)
        ],
        "window_s": round(window, 1),
        "client_errors": errors[:5],
        "udp_rcvbuf_drops_server": drops.get(server.pid),
        "udp_rcvbuf_drops_clients": sum(v for k, v in drops.items() if k != server.pid),
    }


def native_built() -> bool:
    from media import native_send

    return native_send.LIBRARY.exists()


#: the server's media paths, each on unless its variable is 0: SFU_BENCH_FAST_PATH=0 runs
#: aiortc's own send path, SFU_BENCH_NATIVE=0 the fast path in Python, SFU_BENCH_FAST_RECEIVE=0
#: receives through aiortc's queue, SFU_BENCH_GSO=0 sends without UDP segmentation
#: (SFU_BENCH_TIMING=1 adds where the server's time goes: bench/sfu_timing.py)
MEDIA_PATH_ENV = {
    "fast_path": "SFU_BENCH_FAST_PATH",
    "native_send": "SFU_BENCH_NATIVE",
    "fast_receive": "SFU_BENCH_FAST_RECEIVE",
    "udp_gso": "SFU_BENCH_GSO",
}


def media_paths() -> dict[str, bool]:
    """``media.fast_path``, ``native_send``, ``fast_receive`` and ``udp_gso`` for the server."""
    return {key: os.environ.get(var, "1") == "1" for key, var in MEDIA_PATH_ENV.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--role", choices=["main", "server", "clients", "janus-clients"], default="main"
    )
    parser.add_argument("--mode", choices=["sfu", "relay", "janus"], default="sfu")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--media", default="")
    parser.add_argument("--t-end", type=float, default=0.0)
    parser.add_argument("--spec", default="[]")
    parser.add_argument("--subscribers", type=int, default=None, help="fan-out subscribers")
    parser.add_argument("--room-size", type=int, default=8)
    parser.add_argument("--only", default=None, help="phases: fanout, room (comma-separated)")
    parser.add_argument(
        "--video",
        choices=sorted(VIDEO),
        default="vga",
        help="publishers' camera: vga (640x480 ~600 kbit/s) or 720p (1280x720 ~1.5 Mbit/s)",
    )
    parser.add_argument(
        "--baseline",
        default="relay",
        help="relay (aiortc MediaRelay), janus (Debian's janus VideoRoom), relay,janus, none",
    )
    args = parser.parse_args()
    if args.role == "server":
        # the clients stand in for remote devices on a shared 2-core machine: give the server
        # the CPU first where allowed (as root), so what is measured is the SFU, not the queue
        try:
            os.nice(-5)
        except PermissionError:
            pass
        run_server(args.port, args.mode, args.data_dir)
        return
    if args.role == "clients":
        clip = pickle.loads(Path(args.media).read_bytes())
        asyncio.run(run_participants(args.url, json.loads(args.spec), clip, args.t_end))
        return
    if args.role == "janus-clients":
        clip = pickle.loads(Path(args.media).read_bytes())
        got = asyncio.run(
            sfu_janus.run_janus_participants(args.url, json.loads(args.spec), clip, args.t_end)
        )
        got["_cpu_s"] = proc_cpu_s(os.getpid())
        print(json.dumps(got))
        return

    quick = args.quick
    baselines = {b for b in args.baseline.split(",") if b and b != "none"}
    if baselines - {"relay", "janus"}:
        parser.error("--baseline: relay, janus, both (relay,janus) or none")
    if "janus" in baselines and sfu_janus.janus_binary() is None:
        raise SystemExit(sfu_janus.JANUS_HINT)
    only = set(args.only.split(",")) if args.only else {"fanout", "room"}
    if only - {"fanout", "room"}:
        parser.error("--only: fanout, room or fanout,room")
    subs = args.subscribers or (4 if quick else 6)
    fan_s, room_s = (8.0, 12.0) if quick else (20.0, 30.0)
    fan_warm, room_warm = (3.5, 4.5) if quick else (4.0, 5.0)
    phases: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        media = Path(tmp) / "clip.pkl"
        width, height, bit_rate = VIDEO[args.video]
        prepare_media(media, width, height, 30, 3.0, bit_rate)

        def fanout(n: int) -> list[dict[str, Any]]:
            people = [{"identity": "pub", "publish": True, "subscribe": False}]
            for i in range(n):
                late = n > 1 and i == n - 1
                people.append(
                    {
                        "identity": f"sub{i}",
                        "publish": False,
                        "subscribe": True,
                        "delay": 3.0 if late else 0.3,
                    }
                )
            return people

        def run(
            name: str, mode: str, people: list[dict[str, Any]], procs: int, dur: float, warm: float
        ) -> dict[str, Any]:
            result = phase(name, mode, people, procs, media, dur, warm)
            result["loadavg"] = loadavg()
            print(json.dumps(result), flush=True)
            phases[f"{name}_{mode}"] = result
            return result

        if "fanout" in only:
            for mode in ["sfu", *sorted(baselines)]:
                run("fanout1", mode, fanout(1), 2, fan_s, fan_warm)
                run("fanout", mode, fanout(subs), 2, fan_s, fan_warm)
        if "room" in only:
            room = [
                {
                    "identity": f"p{i}",
                    "publish": True,
                    "subscribe": True,
                    "delay": 0.2 * i,
                    "expect_feeds": args.room_size - 1,  # (Janus: wait for every publisher)
                }
                for i in range(args.room_size)
            ]
            for mode in ["sfu", *(["janus"] if "janus" in baselines else [])]:
                run("room", mode, room, 4, room_s, room_warm)

    def marginal(one: dict[str, Any], many: dict[str, Any]) -> float:
        extra = many["forwarded_streams"] - one["forwarded_streams"]
        return round((many["server_cpu_pct"] - one["server_cpu_pct"]) / max(extra, 1), 3)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    # a phase whose media never flowed (ICE did not complete on an overloaded machine) gives
    # CPU figures of an idle server: no ratio is computed from it
    broken = sorted(
        k for k, p in phases.items() if not p["forwarded_pps"] or not p["delivery_ratio"]
    )

    paths = media_paths()
    summary: dict[str, Any] = {
        "quick": quick,
        "cores": os.cpu_count(),
        "loadavg": loadavg(),
        "video": f"VP8 {width}x{height} 30 fps ~{bit_rate // 1000} kbps + Opus 20 ms, pre-encoded",
        "only": sorted(only),
        "baselines": sorted(baselines),
        **paths,
        "native_send": paths["native_send"] and native_built(),
        "phases_without_media": broken,
    }
    sfu = phases.get("fanout_sfu")
    if sfu is not None and {"fanout_sfu", "fanout1_sfu"} & set(broken):
        sfu = None  # reported under "phases" only
    if sfu is not None:
        m_sfu = marginal(phases["fanout1_sfu"], sfu)
        summary.update(
            {
                "fanout_subscribers": subs,
                "cpu_per_stream_pct": sfu["cpu_per_stream_pct"],
                "us_per_packet": sfu["us_per_packet"],
                "marginal_cpu_per_stream_pct": m_sfu,
                "fanout_added_latency_ms_p95": sfu["added_latency_ms_p95"],
                "fanout_first_frame_ms_p95": sfu["first_frame_ms_p95"],
                "fanout_delivery_ratio": sfu["delivery_ratio"],
            }
        )
        relay = phases.get("fanout_relay")
        if relay is not None and not {"fanout_relay", "fanout1_relay"} & set(broken):
            m_relay = marginal(phases["fanout1_relay"], relay)
            summary.update(
                {
                    "baseline_cpu_per_stream_pct": relay["cpu_per_stream_pct"],
                    "cpu_ratio_vs_baseline": ratio(
                        relay["cpu_per_stream_pct"], sfu["cpu_per_stream_pct"]
                    ),
                    "baseline_marginal_cpu_per_stream_pct": m_relay,
                    "marginal_cpu_ratio_vs_baseline": ratio(m_relay, m_sfu),
                    "baseline_delivery_ratio": relay["delivery_ratio"],
                    "baseline_video_encoders_created": relay["video_encoders_created_in_server"],
                }
            )
        janus = phases.get("fanout_janus")
        if janus is not None and not {"fanout_janus", "fanout1_janus"} & set(broken):
            m_janus = marginal(phases["fanout1_janus"], janus)
            summary.update(
                {
                    "cpu_ratio_vs_janus": ratio(
                        sfu["cpu_per_stream_pct"], janus["cpu_per_stream_pct"]
                    ),
                    "marginal_cpu_ratio_vs_janus": ratio(m_sfu, m_janus),
                    "us_per_packet_ratio_vs_janus": ratio(
                        sfu["us_per_packet"], janus["us_per_packet"]
                    ),
                    "janus": {
                        "cpu_pct": janus["server_cpu_pct"],
                        "cpu_per_stream_pct": janus["cpu_per_stream_pct"],
                        "marginal_cpu_per_stream_pct": m_janus,
                        "us_per_packet": janus["us_per_packet"],
                        "forwarded_pps": janus["forwarded_pps"],
                        "delivery_ratio": janus["delivery_ratio"],
                        "first_frame_ms_p95": janus["first_frame_ms_p95"],
                        "client_errors": janus["client_errors"],
                    },
                }
            )
    big = phases.get("room_sfu")
    if big is not None:
        summary.update(
            {
                "publishers": big["publishers"],
                "subscribers": big["subscribers"],
                "forwarded_streams": big["forwarded_streams"],
                "server_cpu_pct": big["server_cpu_pct"],
                "room_us_per_packet": big["us_per_packet"],
                "forwarded_pps_per_core": big["forwarded_pps_per_core"],
                "added_latency_ms_p95": big["added_latency_ms_p95"],
                "first_frame_ms_p95": big["first_frame_ms_p95"],
                "first_frame_after_connect_ms_p95": big["first_frame_after_connect_ms_p95"],
                "delivery_ratio": big["delivery_ratio"],
                "upstream_delivery_ratio": big["upstream_delivery_ratio"],
                "client_processes_cpu_pct_room": big["client_processes_cpu_pct"],
            }
        )
        janus_room = phases.get("room_janus")
        if janus_room is not None and "room_janus" not in broken:
            # only when both kept up: a server that falls behind spends its CPU differently
            kept_up = min(big["delivery_ratio"] or 0, janus_room["delivery_ratio"] or 0) >= 0.98
            summary["room_us_per_packet_ratio_vs_janus"] = (
                ratio(big["us_per_packet"], janus_room["us_per_packet"]) if kept_up else None
            )
            summary["room_janus"] = {
                k: janus_room[k]
                for k in ("server_cpu_pct", "us_per_packet", "forwarded_pps", "delivery_ratio")
            }
    summary["video_encoders_created_in_sfu"] = sum(
        p["video_encoders_created_in_server"] for k, p in phases.items() if k.endswith("_sfu")
    )
    summary["phases"] = phases
    print(json.dumps(summary))


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (figures on a shared machine need them)."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


if __name__ == "__main__":
    main()
