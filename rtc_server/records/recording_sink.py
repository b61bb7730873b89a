"""EncodedFileSink: write one publication's forwarded encoded frames to a file, never re-encoding.

The sink attaches to a :class:`rtc_server.media.forwarder.Publication` the way a subscription
does, so it receives the very frames the SFU forwards. A writer thread muxes them with PyAV
(``add_mux_stream``: no codec context, so no encoder exists) into WebM (VP8, Opus) or Matroska
(H264), keeping the disk off the event loop. Video starts at a keyframe; if the writer falls
behind, the backlog is dropped and writing resumes at the next keyframe (requested from the
publisher), the way a stalled subscriber is treated.

Matroska needs the picture size up front: VP8 carries it in every keyframe header; for H264 the
first keyframe is decoded once (a decoder, for its size only) since parsing the SPS by hand is
more code than it is worth.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av

log = logging.getLogger(__name__)

FORMATS: dict[str, tuple[str, str, str]] = {
    # mime -> (codec, container format, file suffix)
    "video/vp8": ("vp8", "webm", ".webm"),
    "audio/opus": ("opus", "webm", ".webm"),
    "video/h264": ("h264", "matroska", ".mkv"),
}
CLOCK_RATE = {"audio": 48000, "video": 90000}
_STOP = object()


class FrameLike(Protocol):
    """What the sink needs of an encoded frame (rtc_server.media.frames.EncodedFrame)."""

    data: bytes
    timestamp: int
    keyframe: bool


class PublicationLike(Protocol):
    """What the sink needs of a publication (rtc_server.media.forwarder.Publication)."""

    publisher: str
    source: str
    kind: str
    mime: str
    closed: bool

    def attach(self, sub: Any) -> None: ...
    def detach(self, sub: Any) -> None: ...
    def request_keyframe(self, reason: str) -> None: ...


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header (RFC 6386 9.1), or None."""
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


def h264_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of an H264 access unit holding SPS + IDR (decodes it once), or None."""
    try:
        decoder = av.CodecContext.create("h264", "r")
        for frame in decoder.decode(av.Packet(data)):
            return frame.width, frame.height
        for frame in decoder.decode(None):
            return frame.width, frame.height
    except av.error.FFmpegError:
        return None
    return None


@dataclass(slots=True)
class SinkResult:
    """What a finished sink wrote."""

    identity: str
    source: str
    path: Path
    codec: str
    container: str
    frames: int
    bytes: int
    duration_s: float
    dropped: int
    sha256: str | None


class EncodedFileSink:
    """A recorder of one publication; attach on creation, `await close()` to finish the file."""

    def __init__(self, pub: PublicationLike, path_stem: Path, max_queue: int = 600) -> None:
        if pub.mime not in FORMATS:
            raise ValueError(f"cannot record {pub.mime}")
        self.pub = pub
        self.codec, self.container_format, suffix = FORMATS[pub.mime]
        self.path = path_stem.with_suffix(suffix)
        self.clock = CLOCK_RATE["audio" if pub.kind == "audio" else "video"]
        self.need_keyframe = pub.kind == "video"
        self.frames = 0
        self.dropped = 0
        self.duration_s = 0.0
        self.closed = False
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._write_loop, name=f"rec-{pub.publisher}-{pub.source}", daemon=True
        )
        self._thread.start()
        pub.attach(self)
        if self.need_keyframe:
            pub.request_keyframe("recording")

    # called by the Publication on the event loop, like Subscription.push
    def push(self, frame: FrameLike) -> None:
        if self.closed:
            return
        if self.need_keyframe:
            if not frame.keyframe:
                self.dropped += 1
                return
            self.need_keyframe = False
        try:
            self._queue.put_nowait((bytes(frame.data), frame.timestamp, frame.keyframe))
        except queue.Full:
            self.dropped += 1
            if self.pub.kind == "video":
                self.need_keyframe = True
                self.pub.request_keyframe("recording backlog")

    def _write_loop(self) -> None:
        container: Any = None
        stream: Any = None
        first_ts: int | None = None
        last_pts = -1
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                data, ts, keyframe = item
                if container is None:
                    size = None
                    if self.pub.kind == "video":
                        size = vp8_size(data) if self.codec == "vp8" else h264_size(data)
                        if size is None:
                            continue  # not a decodable entry point yet
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    container = av.open(str(self.path), "w", format=self.container_format)
                    time_base = fractions.Fraction(1, self.clock)
                    if size is not None:
                        stream = container.add_mux_stream(
                            self.codec, width=size[0], height=size[1], time_base=time_base
                        )
                    else:
                        stream = container.add_mux_stream(
                            self.codec, rate=self.clock, time_base=time_base
                        )
                    first_ts = ts
                assert first_ts is not None
                pts = ts - first_ts
                if pts <= last_pts:
                    continue  # a late duplicate: timestamps must increase
                packet = av.Packet(data)
                packet.stream = stream
                packet.pts = packet.dts = pts
                packet.time_base = stream.time_base
                packet.is_keyframe = keyframe
                container.mux(packet)
                last_pts = pts
                self.frames += 1
        except BaseException as exc:  # the loop must end its file whatever happens
            self._error = exc
            log.exception("recording of %s/%s failed", self.pub.publisher, self.pub.source)
        finally:
            if container is not None:
                container.close()
            self.duration_s = max(0, last_pts) / self.clock

    async def close(self) -> SinkResult:
        """Detach, write out what is queued, and close the file."""
        if not self.closed:
            self.closed = True
            self.pub.detach(self)
            await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        exists = self.path.exists()
        digest = await asyncio.to_thread(_sha256, self.path) if exists else None
        return SinkResult(
            identity=self.pub.publisher,
            source=self.pub.source,
            path=self.path,
            codec=self.codec,
            container=self.container_format,
            frames=self.frames,
            bytes=self.path.stat().st_size if exists else 0,
            duration_s=round(self.duration_s, 3),
            dropped=self.dropped,
            sha256=digest,
        )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
