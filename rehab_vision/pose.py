"""Pose estimation behind a small protocol; MediaPipe's legacy Pose solution is the backend."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .landmarks import N_LANDMARKS, Landmarks

MAX_SIDE = 640
"""Frames are resized to at most this many pixels on the long side (as the npz files were)."""

RgbImage = npt.NDArray[np.uint8]


@runtime_checkable
class PoseEstimator(Protocol):
    """Turns RGB frames of one video stream into landmarks, in stream order."""

    def process(self, rgb: RgbImage, timestamp_s: float) -> Landmarks | None:
        """Landmarks of the person in ``rgb`` (H x W x 3, uint8), None if nobody is found.

        ``timestamp_s`` must increase from call to call (video mode: the model tracks).
        """
        ...

    def close(self) -> None: ...


def fit_size(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(H, W) scaled down so the long side is at most ``max_side`` (never scaled up)."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_rgb(rgb: RgbImage, max_side: int = MAX_SIDE) -> RgbImage:
    """Downscale with area interpolation so the long side is at most ``max_side``."""
    import cv2

    h, w = rgb.shape[:2]
    nh, nw = fit_size(h, w, max_side)
    if (nh, nw) == (h, w):
        return rgb
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)


@contextlib.contextmanager
def _stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Send fd 2 to /dev/null for a moment: MediaPipe's C++ start-up warnings bypass GLOG flags."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _quiet_native_logs() -> None:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with mediapipe
        pass


class LumaContrast:
    """CLAHE on the luma of an RGB picture (chroma untouched): local contrast back where a low
    VP8 bitrate flattened it (legs against a pale door), before the picture goes to the model."""

    def __init__(self, clip_limit: float = 3.0, tiles: int = 8) -> None:
        import cv2

        self._cv2 = cv2
        self._clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))

    def __call__(self, rgb: RgbImage) -> RgbImage:
        cv2 = self._cv2
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV)
        yuv[..., 0] = self._clahe.apply(np.ascontiguousarray(yuv[..., 0]))
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)


class MediaPipePose:
    """MediaPipe 0.10.21 legacy ``solutions.pose.Pose``, model_complexity=1 (bundled, offline).

    Video mode (``static_image_mode=False``): landmarks are tracked from frame to frame, so one
    instance serves one stream, with increasing timestamps. Not thread-safe: one caller at a time
    (a lock guards it anyway). ``quiet=True`` points fd 2 at /dev/null while the graph starts
    (its C++ warnings ignore GLOG flags): fine for a CLI, not for a server, where other threads'
    stderr would be lost for that moment, so it is off by default. ``contrast=True`` runs
    :class:`LumaContrast` on every picture first (the live agent's setting, see
    :func:`live_pose`); off by default, as the recorded landmark files were made.
    """

    def __init__(
        self,
        model_complexity: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        max_side: int = MAX_SIDE,
        quiet: bool = False,
        real_timestamps: bool = False,
        contrast: bool = False,
    ) -> None:
        _quiet_native_logs()
        self.real_timestamps = real_timestamps
        self._quiet = quiet
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - pinned dependency
            raise RuntimeError("rehab_vision needs mediapipe==0.10.21 (pip install it)") from exc
        self.max_side = max_side
        self._contrast = LumaContrast() if contrast else None
        with _stderr_silenced(quiet):
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=model_complexity,
                smooth_landmarks=True,
                enable_segmentation=False,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
        self._lock = threading.Lock()
        self._last_ts: float | None = None
        self._n = 0
        self.last_ms = 0.0
        self.last_size: tuple[int, int] = (0, 0)

    def process(self, rgb: RgbImage, timestamp_s: float) -> Landmarks | None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an H x W x 3 uint8 RGB image")
        with self._lock:
            if self._pose is None:
                raise RuntimeError("pose estimator is closed")
            if self._last_ts is not None and timestamp_s <= self._last_ts:
                raise ValueError("timestamps must increase")
            self._last_ts = timestamp_s
            t0 = time.perf_counter()
            img = resize_rgb(rgb, self.max_side)
            if self._contrast is not None:
                img = self._contrast(img)
            img = np.ascontiguousarray(img)
            self.last_size = (img.shape[0], img.shape[1])
            # The graph logs its warnings on the first frames; keep them off the terminal.
            # The legacy solution stamps every frame 1/30 s after the previous one, and its
            # landmark smoothing runs on those stamps. real_timestamps=True gives it the
            # frame's real time instead (it adds its 33333 us step before sending). Off by
            # default: tried on VP8 streams it tracked neither better nor worse overall, and
            # the recorded landmark files (and their counts) were made with the 1/30 s stamps.
            if self.real_timestamps:
                self._pose._simulated_timestamp = int(timestamp_s * 1e6) - 33333
            with _stderr_silenced(self._quiet and self._n < 3):
                res = self._pose.process(img)
            self._n += 1
            self.last_ms = (time.perf_counter() - t0) * 1000.0
        if res.pose_landmarks is None or res.pose_world_landmarks is None:
            return None
        image = np.array(
            [(p.x, p.y, p.z, p.visibility) for p in res.pose_landmarks.landmark], dtype=np.float32
        )
        world = np.array(
            [(p.x, p.y, p.z, p.visibility) for p in res.pose_world_landmarks.landmark],
            dtype=np.float32,
        )
        if image.shape != (N_LANDMARKS, 4):
            return None
        return Landmarks(image=image, world=world)

    def close(self) -> None:
        with self._lock:
            if self._pose is not None:
                self._pose.close()
                self._pose = None

    def __enter__(self) -> MediaPipePose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def live_pose() -> MediaPipePose:
    """The live agent's estimator: :class:`MediaPipePose` with :class:`LumaContrast` and a
    tracking confidence of 0.3 (the tracker holds on through a blurred frame or two).

    On the frames the SFU delivered of ``postop_squat`` at 640 px, 30 fps, 300 kbit/s the plain
    model found the patient on 35-59 % of them (counts 1-5 for 4); this one on 90-95 %, 4 every
    time (docs/rehab.md, "Contrast before pose").
    """
    return MediaPipePose(contrast=True, min_tracking_confidence=0.3)
