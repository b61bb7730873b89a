"""Media echo for the device check: a short WebRTC loopback through the server.

Before joining (connected, waiting or joined), a client may send one video track on its own
peer connection (``rtc:echo``); the server forwards its encoded frames straight back on the same
m-line with the SFU's own machinery (a :class:`Publication` tapped from the receiver, one
:class:`Subscription` packing the frames into the sender), never decoding. The client measures
what comes back (bitrate, and the transport ICE chose: UDP, TCP or a TURN relay) and so tests
the real media path, TURN included. Each echo is bounded: one per connection, at most
``MAX_SESSIONS`` at once, closed after ``MAX_SECONDS``, at ``rtc:echo_stop`` or when its
connection goes away. No room data is involved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiortc import RTCSessionDescription
from aiortc.sdp import SessionDescription
from pydantic import BaseModel, Field

from kernel.errors import SignalingError
from signaling.extensions import Caller, FeatureHost

from .aiortc_patch import negotiated_codec, release_sender
from .forwarder import Publication, Subscription
from .frames import SUPPORTED_CODECS
from .ice import IcePolicy, client_ice_servers
from .messages import MAX_SDP, _In
from .session import close_quietly
from .settings import MediaSettings

logger = logging.getLogger(__name__)

MAX_SESSIONS = 16
MAX_SECONDS = 20.0
_WATCH_S = 0.5


class EchoConfigIn(_In):
    """``rtc:echo_config``: no fields."""


class EchoIn(_In):
    """``rtc:echo``: an offer with exactly one sending video m-line (and nothing else)."""

    sdp: str = Field(min_length=10, max_length=MAX_SDP)


class EchoStopIn(_In):
    """``rtc:echo_stop``: no fields."""


class EchoSession:
    """One loopback peer connection."""

    def __init__(self, sid: str, settings: MediaSettings, ice: IcePolicy) -> None:
        self.sid = sid
        self.settings = settings
        self.ice = ice
        self.pc = ice.new_peer_connection()
        self.pub: Publication | None = None
        self.sub: Subscription | None = None
        self.started = time.monotonic()
        self.closed = False
        self.watch: asyncio.Task[None] | None = None

    async def answer(self, sdp: str) -> str:
        pc = self.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            raise SignalingError("bad_sdp", f"offer rejected: {exc}") from None
        (transceiver,) = [t for t in pc.getTransceivers() if t.kind == "video"]
        codec = negotiated_codec(transceiver)
        if codec is None or codec.mimeType.lower() not in SUPPORTED_CODECS:
            raise SignalingError("codec_unsupported", "offer VP8 or H264 video")
        self.pub = Publication("echo", "camera", codec, self.settings, transceiver=transceiver)
        self.pub.tap()
        self.sub = Subscription("echo", self.pub, self.settings)
        transceiver.direction = "sendrecv"
        transceiver.sender.replaceTrack(self.sub.track)
        self.sub.bind(transceiver)
        answer = await pc.createAnswer()
        self.ice.before_gathering(pc)
        await pc.setLocalDescription(answer)
        self.ice.after_gathering(pc)
        return self.ice.outgoing_sdp(pc.localDescription.sdp)

    def stats(self) -> dict[str, Any]:
        sub = self.sub
        return {
            "frames_echoed": sub.frames_forwarded if sub else 0,
            "bytes_echoed": sub.bytes_forwarded if sub else 0,
            "seconds": round(time.monotonic() - self.started, 2),
        }

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.pub is not None:
            self.pub.close()  # and the subscription with it
        if self.sub is not None and self.sub.sender is not None:
            release_sender(self.sub.sender)
        await close_quietly(self.pc)


def _check_offer(sdp: str) -> None:
    lowered = sdp.lower()
    if "a=simulcast" in lowered or "a=rid:" in lowered:
        raise SignalingError("simulcast_unsupported", "send one plain video track")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:
        raise SignalingError("bad_sdp", f"unparseable offer: {exc}") from None
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    if (
        not sdp.startswith("v=0")
        or len(media) != 1
        or media[0].kind != "video"
        or media[0].direction != "sendrecv"
    ):
        raise SignalingError("bad_request", "the echo takes one sendrecv video m-line")


class EchoService:
    """``rtc:echo_config`` / ``rtc:echo`` / ``rtc:echo_stop`` on the signaling namespace."""

    def __init__(self, ns: FeatureHost, settings: MediaSettings) -> None:
        self.ns = ns
        self.settings = settings
        self.ice = IcePolicy(settings)
        self.sessions: dict[str, EchoSession] = {}

    def register(self) -> None:
        ns = self.ns
        ns.add_handler("rtc:echo_config", EchoConfigIn, self.on_config, when="present")
        ns.add_handler(
            "rtc:echo",
            EchoIn,
            self.on_echo,
            when="present",
            max_bytes=self.settings.max_sdp_bytes + 4096,
        )
        ns.add_handler("rtc:echo_stop", EchoStopIn, self.on_stop, when="present")

    async def on_config(self, caller: Caller, _msg: BaseModel) -> dict[str, Any]:
        return {
            "ice_servers": client_ice_servers(self.settings, caller.identity),
            "max_seconds": MAX_SECONDS,
        }

    async def on_echo(self, caller: Caller, msg: BaseModel) -> dict[str, Any]:
        assert isinstance(msg, EchoIn)
        if len(msg.sdp) > self.settings.max_sdp_bytes:
            raise SignalingError("too_large", "SDP too large")
        _check_offer(msg.sdp)  # before any peer connection exists
        old = self.sessions.pop(caller.sid, None)
        if old is not None:
            await old.close()
        if len(self.sessions) >= MAX_SESSIONS:
            raise SignalingError("busy", "too many media checks running: try again shortly")
        session = EchoSession(caller.sid, self.settings, self.ice)
        self.sessions[caller.sid] = session
        try:
            sdp = await session.answer(msg.sdp)
        except BaseException:
            self.sessions.pop(caller.sid, None)
            await session.close()
            raise
        if session.closed:  # replaced or stopped while gathering
            raise SignalingError("closed", "the media check was stopped")
        session.watch = asyncio.ensure_future(self._watch(session))
        return {"sdp": sdp, "type": "answer", "max_seconds": MAX_SECONDS}

    async def on_stop(self, caller: Caller, _msg: BaseModel) -> dict[str, Any]:
        session = self.sessions.pop(caller.sid, None)
        if session is None:
            return {"stats": None}
        stats = session.stats()
        await session.close()
        return {"stats": stats}

    async def _watch(self, session: EchoSession) -> None:
        """Close the echo at its time limit, when its connection or its ICE goes away."""
        while not session.closed:
            await asyncio.sleep(_WATCH_S)
            expired = time.monotonic() - session.started > MAX_SECONDS
            gone = self.ns.caller_for(session.sid) is None
            dead = session.pc.connectionState in ("failed", "closed")
            if expired or gone or dead:
                if self.sessions.get(session.sid) is session:
                    del self.sessions[session.sid]
                await session.close()

    async def close(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        for session in sessions:
            if session.watch is not None:
                session.watch.cancel()
            await session.close()
