"""Frame sources for the vision agent outside the SFU: a video file played as a live track."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Iterator
from pathlib import Path

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .pose import MAX_SIDE, fit_size


class VideoFileTrack(MediaStreamTrack):
    """Plays a video file as a live video track, paced at ``fps`` (default: the file's).

    By default every frame of the file is sent, one per ``1/fps`` (another ``fps`` plays the
    clip faster or slower). With ``realtime=True`` the track is a camera at ``fps`` filming the
    clip at its own speed: each frame sent is the file's frame shown at that instant (frames
    repeat or are skipped), so a 20 fps clip lasts as long at 12 and at 30 fps.
    Decoding runs in a worker thread, a frame at a time, so the event loop is not blocked.
    ``recv()`` raises :class:`MediaStreamError` at the end (after ``loops`` passes). With
    ``hold``, the first picture repeats until the event is set, then the clip plays; with
    ``tail_s``, the last picture repeats that long before the end.
    """

    kind = "video"

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        loops: int = 1,
        max_side: int = MAX_SIDE,
        hold: asyncio.Event | None = None,
        tail_s: float = 0.0,
        realtime: bool = False,
    ) -> None:
        super().__init__()
        self.realtime = realtime
        self._clip_n0: int | None = None  # realtime: frame number at which the clip started
        self._k = 0  # realtime: file frames taken so far
        self._shown: av.VideoFrame | None = None  # realtime: the file frame on show
        self._last: av.VideoFrame | None = None
        self._hold = hold  # until set, the first frame repeats (the patient waits to start)
        self._first: av.VideoFrame | None = None
        self._path = str(path)
        self._loops = loops
        self._max_side = max_side
        with av.open(self._path) as c:
            s = c.streams.video[0]
            self.source_fps = float(s.average_rate or 30)
            self._size = fit_size(s.codec_context.height, s.codec_context.width, max_side)
        self.fps = fps or self.source_fps
        self._tail = round(tail_s * self.fps)  # frames of the last picture at the end
        self._frames = self._iterate()
        self._n = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, 90000)

    def _iterate(self) -> Iterator[av.VideoFrame]:
        h, w = self._size
        for _ in range(self._loops):
            with av.open(self._path) as c:
                for frame in c.decode(video=0):
                    yield frame.reformat(width=w, height=h, format="yuv420p")

    async def _clip_frame(self) -> av.VideoFrame | None:
        """The clip's next picture: its next frame, or (realtime) the one shown now."""
        if not self.realtime:
            return await asyncio.to_thread(next, self._frames, None)
        at = 0.0  # seconds into the clip; it starts once the hold (if any) is released
        if self._hold is None or self._hold.is_set():
            if self._clip_n0 is None:
                self._clip_n0 = self._n
            at = (self._n - self._clip_n0) / self.fps
        shown = self._shown
        while self._k <= int(at * self.source_fps + 1e-6):
            frame = await asyncio.to_thread(next, self._frames, None)
            if frame is None:
                return None
            shown, self._k = frame, self._k + 1
        if shown is self._shown and shown is not None:
            return shown.reformat()  # shown again: a copy, the sender may own the previous one
        self._shown = shown
        return shown

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._hold is not None and not self._hold.is_set() and self._first is not None:
            frame = self._first.reformat()  # a copy: the sender may own the previous one
        else:
            frame = await self._clip_frame()
            if frame is None and self._tail > 0 and self._last is not None:
                self._tail -= 1
                frame = self._last.reformat()  # the patient stays in view a moment
            if frame is None:
                self.stop()
                raise MediaStreamError
            self._last = frame
            if self._first is None and self._hold is not None:
                self._first = frame.reformat()
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame.pts = round(self._n / self.fps / self._time_base)
        frame.time_base = self._time_base
        self._n += 1
        return frame
