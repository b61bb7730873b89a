"""Video files -> landmark sequences (PyAV decoding, any :class:`PoseEstimator`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .landmarks import N_LANDMARKS, PoseSequence
from .pose import MAX_SIDE, PoseEstimator, RgbImage, fit_size


class VideoError(Exception):
    """The file cannot be opened or holds no video stream."""


def iter_frames(
    path: str | Path,
    max_side: int = MAX_SIDE,
) -> Iterator[tuple[float, RgbImage, float]]:
    """Yield (timestamp s, RGB frame scaled to ``max_side``, stream fps) for each frame."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open video {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        h, w = fit_size(stream.codec_context.height, stream.codec_context.width, max_side)
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / fps
                yield t, frame.to_ndarray(format="rgb24", width=w, height=h), fps
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: decoding failed: {exc}") from exc


Progress = Callable[[float, float | None, int], None]
"""progress(seconds of video done, its total seconds or None if unknown, frames done)."""


def video_duration(path: str | Path) -> float | None:
    """Length of the video stream in seconds from the container, None when it does not say."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, OSError):
        return None
    return None


def video_landmarks(
    path: str | Path,
    estimator: PoseEstimator,
    max_frames: int | None = None,
    progress: Progress | None = None,
) -> PoseSequence:
    """Run ``estimator`` on every frame of a video; NaN rows where nobody was found.
    ``progress`` is called after every frame."""
    rows: list[np.ndarray] = []
    ts: list[float] = []
    ms: list[float] = []
    fps = 30.0
    size = (0, 0)
    last = -1.0
    total = video_duration(path) if progress else None
    for i, (t, rgb, stream_fps) in enumerate(iter_frames(path)):
        if max_frames is not None and i >= max_frames:
            break
        fps = stream_fps
        t = max(t, last + 1e-3)  # strictly increasing for the tracker
        last = t
        size = (rgb.shape[0], rgb.shape[1])
        t0 = time.perf_counter()
        lm = estimator.process(rgb, t)
        ms.append((time.perf_counter() - t0) * 1000.0)
        rows.append(
            lm.as_row() if lm is not None else np.full((N_LANDMARKS, 8), np.nan, dtype=np.float32)
        )
        ts.append(t)
        if progress is not None:
            progress(t - ts[0], total, len(rows))
    if not rows:
        raise VideoError(f"{path}: no frames decoded")
    t_arr = np.asarray(ts) - ts[0]
    return PoseSequence(lm=np.stack(rows), fps=fps, frame_size=size, t=t_arr, ms=np.asarray(ms))
