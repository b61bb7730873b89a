"""Live vision agent: newest frame only, pose + counting in a worker thread, async updates.

The agent reads any source with ``async recv() -> av.VideoFrame`` (an aiortc
``MediaStreamTrack``, e.g. the SFU's tap of a patient's camera). A reader task pulls frames as
fast as the source gives them and keeps only the newest one, so the source is never slowed
and nothing queues up; a processing task takes the newest frame, runs pose estimation and the
exercise session in a worker thread (``asyncio.to_thread``) and awaits the ``on_update``
callback with a ``rehab:update`` payload.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np

from .cues import Cue
from .landmarks import Landmarks, image_xyv
from .models import CuePayload, RehabSessionStart, RehabUpdate
from .pose import MAX_SIDE, PoseEstimator, fit_size, live_pose
from .session import ExerciseSession, FrameUpdate
from .specs import ExerciseSpec, get_spec

log = logging.getLogger(__name__)

STOP_WAIT_S = 5.0  # bound on the reader/processor tasks ending after a cancel

UpdateCallback = Callable[[dict[str, Any]], Awaitable[None]]


class FrameSource(Protocol):
    async def recv(self) -> av.VideoFrame: ...


@dataclass(frozen=True, slots=True)
class _Analyzed:
    """One processed frame: the session step, its pose and the processed frame's size."""

    update: FrameUpdate
    landmarks: Landmarks | None
    width: int
    height: int
    ms: float  # pose + scoring
    started: float  # perf_counter when the worker began on it


@dataclass(slots=True)
class AgentStats:
    received: int = 0
    processed: int = 0
    dropped: int = 0  # replaced by a newer frame before being processed
    ms: list[float] = field(default_factory=list)  # pose + scoring per processed frame
    wait_ms: list[float] = field(default_factory=list)  # arrival -> its analysis starts
    emit_ms: list[float] = field(default_factory=list)  # the on_update callback's time
    latency_ms: list[float] = field(default_factory=list)  # arrival -> update sent
    cue_latency_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # set when the agent stops: the figures freeze

    def summary(self) -> dict[str, float | int | None]:
        def pct(xs: list[float], q: float) -> float | None:
            return round(float(np.percentile(xs, q)), 2) if xs else None

        elapsed = max(1e-6, (self.ended or time.monotonic()) - self.started)
        return {
            "frames_received": self.received,
            "frames_processed": self.processed,
            "frames_dropped": self.dropped,
            "processed_fps": round(self.processed / elapsed, 2),
            "ms_per_frame_p50": pct(self.ms, 50),
            "ms_per_frame_p95": pct(self.ms, 95),
            "wait_ms_p95": pct(self.wait_ms, 95),
            "emit_ms_p95": pct(self.emit_ms, 95),
            "latency_ms_p50": pct(self.latency_ms, 50),
            "latency_ms_p95": pct(self.latency_ms, 95),
            "cue_latency_ms_p95": pct(self.cue_latency_ms, 95),
        }


class VisionAgent:
    """One rehab session on one video source. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        source: FrameSource,
        request: RehabSessionStart,
        on_update: UpdateCallback,
        estimator_factory: Callable[[], PoseEstimator] = live_pose,
        update_interval_s: float = 0.1,
        max_side: int = MAX_SIDE,
    ) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.request = request
        self.spec: ExerciseSpec = get_spec(request.exercise).with_target(request.target_deg)
        self._source = source
        self._on_update = on_update
        self._estimator_factory = estimator_factory
        self._estimator: PoseEstimator | None = None
        self._interval = update_interval_s
        self._max_side = max_side
        self.stats = AgentStats()
        self.sets: list[ExerciseSession] = [self._new_session()]
        self._latest: tuple[av.VideoFrame, float] | None = None
        self._wake = asyncio.Event()
        self._source_ended = False
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sent = -1e9
        self._last_phase = ""
        self._last_view = "ok"
        self._t0: float | None = None
        self._clock_is_media = True
        self._pts_last: float | None = None
        self.closed = False
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.finished = asyncio.Event()  # source ended and its last frame processed
        # Held by the worker thread while a frame is analysed: stop() waits on it before it
        # finishes the set or closes the model (a cancelled to_thread keeps running).
        self._busy = threading.Lock()

    def _new_session(self) -> ExerciseSession:
        return ExerciseSession(self.spec, side=self.request.side)

    @property
    def session(self) -> ExerciseSession:
        return self.sets[-1]

    async def start(self) -> None:
        if self._tasks:
            raise RuntimeError("agent already started")
        if self.closed:
            raise RuntimeError("agent is closed")
        self._estimator = await asyncio.to_thread(self._estimator_factory)
        self.started_at = time.time()
        self.stats = AgentStats()
        self._tasks = [
            asyncio.create_task(self._read(), name=f"rehab-read-{self.id}"),
            asyncio.create_task(self._process(), name=f"rehab-pose-{self.id}"),
        ]

    def next_set(self) -> None:
        """Close the current set and count into a new one."""
        self.session.finish()
        self.sets.append(self._new_session())

    async def _read(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await self._source.recv()
                self.stats.received += 1
                if self._latest is not None:
                    self.stats.dropped += 1
                self._latest = (frame, time.perf_counter())
                self._wake.set()
        except MediaStreamError:
            pass
        finally:
            self._source_ended = True
            self._wake.set()

    async def _process(self) -> None:
        while True:
            if self._latest is None:
                if self._source_ended:
                    break
                await self._wake.wait()
                self._wake.clear()
                continue
            item, self._latest = self._latest, None
            frame, arrived = item
            try:
                done = await asyncio.to_thread(self._analyze, frame)
            except Exception:  # one bad frame must not end the session
                log.exception("rehab agent %s: frame failed", self.id)
                continue
            self.stats.processed += 1
            self.stats.ms.append(done.ms)
            self.stats.wait_ms.append((done.started - arrived) * 1000.0)
            await self._emit(done, arrived)
        self.session.finish()
        self.finished.set()

    def _media_time(self, frame: av.VideoFrame) -> float:
        """Seconds since the session's first frame, from the frame's timestamp (RTP clocks
        start anywhere) or, without one, from the wall clock; strictly increasing."""
        media = frame.time
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = float(media) if media is not None else now
            self._clock_is_media = media is not None
        if self._clock_is_media and media is not None:
            t = float(media) - self._t0
        else:
            t = now - self._t0 if not self._clock_is_media else (self._pts_last or 0.0) + 0.033
        if self._pts_last is not None and t <= self._pts_last:
            t = self._pts_last + 1e-3
        self._pts_last = t
        return t

    def _close_estimator(self) -> None:
        """Worker thread: release the model once no frame is using it."""
        with self._busy:
            if self._estimator is not None:
                self._estimator.close()

    def _analyze(self, frame: av.VideoFrame) -> _Analyzed:
        """Worker thread: decode to RGB, pose, session step (one frame at a time)."""
        with self._busy:
            return self._analyze_locked(frame)

    def _analyze_locked(self, frame: av.VideoFrame) -> _Analyzed:
        assert self._estimator is not None
        t0 = time.perf_counter()
        h, w = fit_size(frame.height, frame.width, self._max_side)
        rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
        t = self._media_time(frame)
        lm = self._estimator.process(rgb, t)
        update = self.session.feed(t, lm, aspect=w / h)
        return _Analyzed(update, lm, w, h, (time.perf_counter() - t0) * 1000.0, t0)

    async def _emit(self, done: _Analyzed, arrived: float) -> None:
        u = done.update
        phase = getattr(self.session.spec.phases, u.phase)
        important = (
            bool(u.new_reps)
            or u.cue is not None
            or phase != self._last_phase
            or u.view != self._last_view
        )
        now = time.perf_counter()
        if not important and now - self._last_sent < self._interval:
            return
        self._last_phase = phase
        self._last_view = u.view
        self._last_sent = now
        last = self.session.reps[-1] if self.session.reps else None
        latency = (time.perf_counter() - arrived) * 1000.0
        payload = RehabUpdate(
            session_id=self.id,
            exercise=self.spec.name,
            set=len(self.sets),
            rep=u.reps,
            target_reps=self.request.target_reps,
            set_complete=u.reps >= self.request.target_reps,
            phase=phase,
            angle=None if u.angle is None else round(u.angle, 1),
            tracked=u.tracked,
            view=u.view,
            score=last.score if last else None,
            rep_detail=u.rep.as_dict() if u.rep else None,
            cue=_cue(u.cue),
            t=round(u.t, 3),
            latency_ms=round(latency, 2),
            landmarks=image_xyv(done.landmarks),
            frame_w=done.width,
            frame_h=done.height,
        ).model_dump(by_alias=True)
        self.stats.latency_ms.append(latency)
        if u.cue is not None:
            self.stats.cue_latency_ms.append(latency)
        try:
            await self._on_update(payload)
        except Exception:  # the room going away must not kill the agent
            log.exception("rehab agent %s: update callback failed", self.id)
        self.stats.emit_ms.append((time.perf_counter() - now) * 1000.0)

    async def wait_finished(self, timeout: float) -> bool:
        """Wait (bounded) until the source has ended and its last frame was processed."""
        try:
            async with asyncio.timeout(timeout):
                await self.finished.wait()
            return True
        except TimeoutError:
            return False

    async def stop(self) -> dict[str, Any]:
        """Stop reading, release the model, and return the session report. Idempotent."""
        if not self.closed:
            self.closed = True
            self.stopped_at = time.time()
            self.stats.ended = time.monotonic()
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                # Bounded: a source that ignored the cancellation must not hold up Stop.
                _, stuck = await asyncio.wait(self._tasks, timeout=STOP_WAIT_S)
                for task in stuck:
                    log.warning(
                        "rehab agent %s: task %s did not stop in %.0f s",
                        self.id,
                        task.get_name(),
                        STOP_WAIT_S,
                    )
            if not self.finished.is_set():
                with self._busy:  # a frame still in the worker thread must not race finish()
                    self.session.finish()
            if self._estimator is not None:
                await asyncio.to_thread(self._close_estimator)
        return self.report()

    def report(self) -> dict[str, Any]:
        """Session report for the consult record: sets, reps, ROM and score per rep, faults."""
        sets = []
        faults: dict[str, int] = {}
        scores: list[float] = []
        for i, s in enumerate(self.sets, 1):
            summary = s.summary()
            sets.append(
                {
                    "set": i,
                    "reps": summary["reps"],
                    "score": summary["score"],
                    "reps_detail": summary["reps_detail"],
                    "faults": summary["faults"],
                    # for the chart: the smoothed joint angle over time (<= 10 Hz) and
                    # the exercise's rest and target angles (the range to reach)
                    "angle_trace": summary["angle_trace"],
                    "rest_deg": summary["rest_deg"],
                    "target_deg": summary["target_deg"],
                }
            )
            scores.extend(r.score for r in s.reps)
            for k, v in summary["faults"].items():  # type: ignore[union-attr]
                faults[k] = faults.get(k, 0) + v
        end = self.stopped_at or time.time()
        return {
            "session_id": self.id,
            "exercise": self.spec.name,
            "side": self.request.side or self.spec.side,
            "target_reps": self.request.target_reps,
            "target_sets": self.request.sets,
            "sets": sets,
            "reps": sum(len(s.reps) for s in self.sets),
            "score": round(sum(scores) / len(scores), 1) if scores else None,
            "rom_deg": [r.rom_deg for s in self.sets for r in s.reps],
            "faults": faults,
            "started_at": self.started_at,
            "duration_s": round(end - self.started_at, 3) if self.started_at else 0.0,
            "stats": self.stats.summary(),
        }


def _cue(cue: Cue | None) -> CuePayload | None:
    return None if cue is None else CuePayload(key=cue.key, en=cue.en, zh_cn=cue.zh_cn)
