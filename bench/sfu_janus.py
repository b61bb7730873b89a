"""The Janus baseline of bench/sfu.py: Debian's `janus` (VideoRoom) with the same aiortc peers.

Janus runs in its own process from config files written to a temp dir (HTTP API on a free
loopback port, no STUN, no other plugin or transport loaded). The participants are the same
aiortc peers, pre-encoded clip and lean frame counters as in the SFU run; only the signaling
differs (Janus's HTTP API: create, attach, join, configure/start with a full SDP, long poll
for events, as in aiortc's own Janus example).

Not installed here? `apt-get install janus` (Debian/Ubuntu package; the VideoRoom plugin and
the HTTP transport are part of it). This module installs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOM_ID = 1234
JANUS_HINT = (
    "janus not found: install Debian's package (`apt-get install janus`) for the Janus "
    "baseline, or run without --baseline janus"
)
_PLUGINS_OFF = [
    "libjanus_audiobridge.so",
    "libjanus_duktape.so",
    "libjanus_echotest.so",
    "libjanus_lua.so",
    "libjanus_nosip.so",
    "libjanus_recordplay.so",
    "libjanus_sip.so",
    "libjanus_streaming.so",
    "libjanus_textroom.so",
    "libjanus_videocall.so",
    "libjanus_voicemail.so",
]
_TRANSPORTS_OFF = [
    "libjanus_websockets.so",
    "libjanus_pfunix.so",
    "libjanus_mqtt.so",
    "libjanus_nanomsg.so",
    "libjanus_rabbitmq.so",
]


def janus_binary() -> str | None:
    """Path of the janus executable, or None."""
    return shutil.which("janus") or ("/usr/bin/janus" if Path("/usr/bin/janus").exists() else None)


def _lib_dir(kind: str) -> str:
    for base in (
        "/usr/lib/x86_64-linux-gnu/janus",
        "/usr/lib/aarch64-linux-gnu/janus",
        "/usr/lib/janus",
        "/opt/janus/lib/janus",
    ):
        if Path(base, kind).is_dir():
            return str(Path(base, kind))
    raise SystemExit(f"janus is installed but its {kind} folder was not found")


def local_address() -> str:
    """The address the machine's default route uses (what aiortc's host candidates carry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.250", 9))  # no packet is sent: UDP connect only picks a route
        return str(s.getsockname()[0])


def write_config(folder: Path, http_port: int, enforce: str) -> Path:
    """Janus's config files for the bench; returns the main config's path."""
    off = ",".join(_PLUGINS_OFF)
    toff = ",".join(_TRANSPORTS_OFF)
    (folder / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{_lib_dir("plugins")}"
    transports_folder = "{_lib_dir("transports")}"
    events_folder = "{_lib_dir("events")}"
    loggers_folder = "{_lib_dir("loggers")}"
    debug_level = 3
    session_timeout = 120
}}
media: {{
    rtp_port_range = "30000-60000"
}}
nat: {{
    ice_enforce_list = "{enforce}"
    full_trickle = false
}}
plugins: {{ disable = "{off}" }}
transports: {{ disable = "{toff}" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{ admin_http = false }}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text(
        f"""general: {{ }}
room-{ROOM_ID}: {{
    description = "bench"
    publishers = 16
    bitrate = 0
    fir_freq = 0
    videocodec = "vp8"
    audiocodec = "opus"
    record = false
}}
"""
    )
    return folder / "janus.jcfg"


@dataclass
class JanusProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def run_janus(free_port: int) -> Iterator[JanusProcess]:
    """Start janus on ``free_port`` (HTTP API, loopback), wait until it answers, stop it after."""
    binary = janus_binary()
    if binary is None:
        raise SystemExit(JANUS_HINT)
    with tempfile.TemporaryDirectory(prefix="tc-janus-") as tmp:
        folder = Path(tmp)
        cfg = write_config(folder, free_port, local_address())
        log = folder / "janus.log"

        def nice() -> None:  # the same head start the SFU's server process takes
            with contextlib.suppress(PermissionError):
                os.nice(-5)

        proc = subprocess.Popen(
            [binary, "-C", str(cfg), "-F", str(folder), "-o", "-L", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=nice,
        )
        url = f"http://127.0.0.1:{free_port}/janus"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/info", timeout=2) as resp:
                        info = json.loads(resp.read())
                    if "janus.plugin.videoroom" in info.get("plugins", {}):
                        break
                    raise SystemExit("janus runs but has no VideoRoom plugin")
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                        raise SystemExit(f"janus did not start:\n{tail}") from None
                    time.sleep(0.2)
            yield JanusProcess(proc, url, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- client side (runs in the client processes) -------------------------------------------

_tx = itertools.count()


class JanusHandle:
    """One VideoRoom plugin handle on a Janus session (HTTP API)."""

    def __init__(self, session: JanusSession, handle_id: int) -> None:
        self.session = session
        self.url = f"{session.url}/{handle_id}"
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None, sync: bool = False
    ) -> dict[str, Any]:
        """A plugin message; the synchronous answer or (``sync=False``) its event."""
        msg: dict[str, Any] = {"janus": "message", "transaction": f"t{next(_tx)}", "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        async with self.session.http.post(self.url, json=msg) as resp:
            data = await resp.json(content_type=None)
        if data.get("janus") == "success" and sync:
            return data
        if data.get("janus") != "ack":
            raise RuntimeError(f"janus: {data}")
        while True:
            event = await asyncio.wait_for(self.events.get(), 20)
            if event.get("transaction") == msg["transaction"]:
                plugin = event.get("plugindata", {}).get("data", {})
                if "error" in plugin:
                    raise RuntimeError(f"janus: {plugin['error']}")
                return event


class JanusSession:
    """A Janus session with a long-poll task routing events to its handles."""

    def __init__(self, http: Any, url: str) -> None:
        self.http = http
        self.root = url
        self.url = ""
        self.handles: dict[int, JanusHandle] = {}
        self._poll: asyncio.Task[None] | None = None

    async def _post(self, url: str, msg: dict[str, Any]) -> dict[str, Any]:
        msg["transaction"] = f"t{next(_tx)}"
        async with self.http.post(url, json=msg) as resp:
            data = await resp.json(content_type=None)
        if data.get("janus") != "success":
            raise RuntimeError(f"janus: {data}")
        return data

    async def create(self) -> None:
        data = await self._post(self.root, {"janus": "create"})
        self.url = f"{self.root}/{data['data']['id']}"
        self._poll = asyncio.ensure_future(self._run_poll())

    async def attach(self) -> JanusHandle:
        data = await self._post(self.url, {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        handle = JanusHandle(self, int(data["data"]["id"]))
        self.handles[int(data["data"]["id"])] = handle
        return handle

    async def _run_poll(self) -> None:
        while True:
            params = {"maxev": "10", "rid": str(int(time.time() * 1000))}
            try:
                async with self.http.get(self.url, params=params) as resp:
                    data = await resp.json(content_type=None)
            except (TimeoutError, OSError, ValueError):
                await asyncio.sleep(0.2)
                continue
            for event in data if isinstance(data, list) else [data]:
                handle = self.handles.get(event.get("sender", -1))
                if handle is not None and event.get("janus") == "event":
                    handle.events.put_nowait(event)

    async def destroy(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        with contextlib.suppress(Exception):
            await self._post(self.url, {"janus": "destroy"})


async def janus_participant(
    url: str, entry: dict[str, Any], clip: dict[str, Any], t_end: float
) -> dict[str, Any]:
    """One bench participant through Janus: publish the clip and/or subscribe to the others."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from media.aiortc_patch import install_packer
    from media.client import EncodedLoopTrack, ReceivedTrack, _lean_counter
    from media.frames import FramePacker

    identity = entry["identity"]
    await asyncio.sleep(max(0.0, entry["join_at"] - time.monotonic()))
    pcs: list[RTCPeerConnection] = []
    tracks: dict[str, Any] = {}
    received: dict[str, dict[str, Any]] = {}
    packets = {"n": 0}
    w0, w1 = entry["window"]
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        session = JanusSession(http, url)
        await session.create()
        try:
            if entry["publish"]:
                handle = await session.attach()
                await handle.send(
                    {"request": "join", "ptype": "publisher", "room": ROOM_ID, "display": identity}
                )
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                video = EncodedLoopTrack(
                    "video", clip["video"], clip["fps"], 90000, clip["video_key"]
                )
                audio = EncodedLoopTrack("audio", clip["audio"], 50, 48000)
                tracks = {"camera": video, "microphone": audio}
                for source, track, mime in (
                    ("camera", video, "video/VP8"),
                    ("microphone", audio, "audio/opus"),
                ):
                    tr = pc.addTransceiver(track, direction="sendonly")
                    install_packer(tr.sender, FramePacker(mime), track.request_keyframe)
                    del source
                await pc.setLocalDescription(await pc.createOffer())
                event = await handle.send(
                    {"request": "configure", "audio": True, "video": True},
                    jsep={"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
                )
                await pc.setRemoteDescription(
                    RTCSessionDescription(sdp=event["jsep"]["sdp"], type="answer")
                )
            if entry["subscribe"]:
                lister = await session.attach()
                feeds: dict[int, str] = {}
                want = int(entry.get("expect_feeds", 1))  # the room: every other participant
                deadline = time.monotonic() + 20
                while len(feeds) < want and time.monotonic() < deadline:
                    got = await lister.send(
                        {"request": "listparticipants", "room": ROOM_ID}, sync=True
                    )
                    feeds = {
                        int(p["id"]): p.get("display", "")
                        for p in got["plugindata"]["data"].get("participants", [])
                        if p.get("publisher") and p.get("display") != identity
                    }
                    if len(feeds) < want:
                        await asyncio.sleep(0.2)
                for feed, display in feeds.items():
                    handle = await session.attach()
                    event = await handle.send(
                        {"request": "join", "ptype": "subscriber", "room": ROOM_ID, "feed": feed}
                    )
                    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                    pcs.append(pc)
                    offered = time.monotonic()
                    await pc.setRemoteDescription(
                        RTCSessionDescription(sdp=event["jsep"]["sdp"], type="offer")
                    )
                    for tr in pc.getTransceivers():
                        kind = tr.kind
                        source = "camera" if kind == "video" else "microphone"
                        rec = ReceivedTrack(display, source, kind, tr.mid or "")
                        rec.offered_at = offered
                        handler = _lean_counter(
                            rec, "video/VP8" if kind == "video" else "audio/opus"
                        )

                        async def counted(
                            packet: Any, arrival_time_ms: int = 0, _h: Any = handler
                        ) -> None:
                            if w0 <= time.monotonic() <= w1:
                                packets["n"] += 1
                            await _h(packet, arrival_time_ms)

                        tr.receiver._handle_rtp_packet = counted
                        received[f"{display}|{source}"] = rec  # type: ignore[assignment]
                    await pc.setLocalDescription(await pc.createAnswer())
                    await handle.send(
                        {"request": "start", "room": ROOM_ID},
                        jsep={"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False},
                    )
            await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        finally:
            for pc in pcs:
                await pc.close()
            await session.destroy()
    return {
        "sent": {src: t.sent_times for src, t in tracks.items()},
        "keyframes_sent": {src: t.keyframes_sent for src, t in tracks.items()},
        "sub_connected_at": None,
        "packets_received": packets["n"],
        "received": {
            key: {
                "times": rec.frame_times,
                "offered_at": rec.offered_at,
                "first_frame_at": rec.first_frame_at,
            }
            for key, rec in received.items()  # type: ignore[attr-defined]
        },
    }


async def run_janus_participants(
    url: str, spec: list[dict[str, Any]], clip: dict[str, Any], t_end: float
) -> dict[str, Any]:
    """The participants of one client process, in bench/sfu.py's result format."""
    results: dict[str, Any] = {"_packets_in_window": 0}

    async def guarded(entry: dict[str, Any]) -> None:
        try:
            got = await janus_participant(url, entry, clip, t_end)
            results["_packets_in_window"] += got.pop("packets_received")
            results[entry["identity"]] = got
        except Exception as exc:  # report, keep the other participants' results
            results.setdefault("_errors", []).append(f"{entry['identity']}: {exc!r}")

    await asyncio.gather(*(guarded(e) for e in spec))
    return results
