"""A video file as a live stream would deliver it: another frame rate (jittered timestamps),
a smaller picture, and VP8 at a low bitrate: PyAV's libvpx at WebRTC-like real-time settings
(``encoder="webrtc"``), or aiortc's own ``Vp8Encoder`` (``encoder="aiortc"``: the encoder, the
settings and the RTP packetisation of the SFU tests' publisher, depacketised as the tap does).

Used by the offline robustness tests and ``bench/rehab.py``: the frames that come out are what
the SFU's tap would hand the VisionAgent under that condition, without the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from .pose import RgbImage
from .video import iter_frames


@dataclass(frozen=True, slots=True)
class Condition:
    """One live condition: camera frame rate, picture size (long side), VP8 bitrate (None = no
    codec): 640x360 is ``max_side=640``, 320x180 is 320 (portrait clips keep their shape)."""

    fps: float
    max_side: int | None = None  # None: the file's own size (long side capped by iter_frames)
    kbps: int | None = None
    jitter: float = 0.0  # spread of frame intervals, fraction of the nominal interval
    seed: int = 0
    encoder: Literal["webrtc", "aiortc"] = "webrtc"

    @property
    def name(self) -> str:
        parts = [f"{self.fps:g}fps"]
        if self.max_side:
            parts.append(f"{self.max_side}px")
        if self.kbps:
            parts.append(f"vp8@{self.kbps}k")
        if self.jitter:
            parts.append(f"jitter{self.jitter:g}")
        if self.kbps and self.encoder != "webrtc":
            parts.append(self.encoder)
        return "-".join(parts)


def _even(x: float) -> int:
    return max(2, round(x / 2.0) * 2)


def capture_times(duration: float, fps: float, jitter: float, seed: int) -> list[float]:
    """Capture instants of a camera at ``fps`` with uniformly jittered intervals."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    t = 0.0
    while t <= duration:
        out.append(t)
        t += (1.0 + rng.uniform(-jitter, jitter)) / fps
    return out


def resampled(
    path: str | Path,
    fps: float,
    jitter: float = 0.0,
    seed: int = 0,
) -> Iterator[tuple[float, RgbImage]]:
    """(capture time, RGB) of a camera at ``fps``: at each capture instant the newest frame of
    the file (a frame shown until the next one), stamped with that instant."""
    frames = [(t, rgb) for t, rgb, _ in iter_frames(path)]
    if not frames:
        return
    t0 = frames[0][0]
    src_t = np.array([t - t0 for t, _ in frames])
    end = float(src_t[-1]) + (float(np.median(np.diff(src_t))) if len(src_t) > 1 else 0.0)
    for at in capture_times(end, fps, jitter, seed):
        i = max(0, int(np.searchsorted(src_t, at + 1e-9, side="right")) - 1)
        yield at, frames[i][1]


def degraded(path: str | Path, cond: Condition) -> Iterator[tuple[float, RgbImage]]:
    """(timestamp s, RGB) frames of ``path`` under ``cond``, as decoded at the receiver."""
    import av
    import cv2

    enc = dec = None
    for t, rgb in resampled(path, cond.fps, cond.jitter, cond.seed):
        if cond.max_side:
            h, w = rgb.shape[:2]
            scale = cond.max_side / max(h, w)
            rgb = cv2.resize(
                rgb, (_even(w * scale), _even(h * scale)), interpolation=cv2.INTER_AREA
            )
        if cond.kbps and cond.encoder == "aiortc":
            if enc is None:
                enc = _AiortcVp8(cond.kbps)
            out = enc.encode_decode(rgb, t)
            if out is not None:
                yield t, out
        elif cond.kbps:
            if enc is None:
                enc = av.CodecContext.create("libvpx", "w")
                enc.width, enc.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                enc.pix_fmt = "yuv420p"
                enc.time_base = Fraction(1, 1000)
                enc.framerate = Fraction(round(cond.fps * 1000), 1000)
                enc.bit_rate = cond.kbps * 1000
                # Real-time settings like a WebRTC sender's: one pass, no lookahead, keyframes
                # only at the start, rate control that lets quality drop rather than size grow.
                enc.options = {
                    "deadline": "realtime",
                    "cpu-used": "8",
                    "lag-in-frames": "0",
                    "error-resilient": "1",
                    "undershoot-pct": "95",
                    "buf-initial-sz": "500",
                    "buf-optimal-sz": "600",
                    "buf-sz": "1000",
                    "end-usage": "cbr",
                    "qmax": "56",
                }
                enc.gop_size = 3000
                dec = av.CodecContext.create("libvpx", "r")
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[: enc.height, : enc.width]), format="rgb24"
            ).reformat(format="yuv420p")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            assert dec is not None
            for packet in enc.encode(frame):
                for out in dec.decode(packet):
                    yield packet.pts / 1000.0, out.to_ndarray(format="rgb24")
        else:
            yield t, rgb


def degraded_landmarks(path: str | Path, cond: Condition, estimator: object) -> object:
    """Pose of every frame of ``path`` under ``cond`` (a :class:`PoseSequence` stamped with
    the capture times); ``estimator`` is a fresh :class:`PoseEstimator`."""
    from .landmarks import N_LANDMARKS, PoseSequence

    rows: list[np.ndarray] = []
    ts: list[float] = []
    size = (0, 0)
    for t, rgb in degraded(path, cond):
        lm = estimator.process(rgb, t)  # type: ignore[attr-defined]
        rows.append(
            lm.as_row() if lm is not None else np.full((N_LANDMARKS, 8), np.nan, dtype=np.float32)
        )
        ts.append(t)
        size = (rgb.shape[0], rgb.shape[1])
    return PoseSequence(lm=np.stack(rows), fps=cond.fps, frame_size=size, t=np.asarray(ts))


class _AiortcVp8:
    """aiortc's ``Vp8Encoder`` held at ``kbps`` (as the SFU tests hold their publisher), its
    RTP payloads depacketised and decoded by libvpx: what the SFU's tap decodes."""

    def __init__(self, kbps: int) -> None:
        import aiortc.codecs.vpx as vpx
        import av
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters

        self._vpx = vpx
        self._kbps = kbps
        self._enc = vpx.Vp8Encoder()
        self._codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        self._dec = av.CodecContext.create("libvpx", "r")

    def encode_decode(self, rgb: RgbImage, t: float) -> RgbImage | None:
        import av
        from aiortc.codecs import depayload

        vpx = self._vpx
        bps = self._kbps * 1000
        saved = vpx.DEFAULT_BITRATE, vpx.MIN_BITRATE, vpx.MAX_BITRATE
        vpx.DEFAULT_BITRATE = vpx.MIN_BITRATE = vpx.MAX_BITRATE = bps
        try:
            self._enc.target_bitrate = bps
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = round(t * 90000)
            frame.time_base = Fraction(1, 90000)
            payloads, _ = self._enc.encode(frame)
        finally:
            vpx.DEFAULT_BITRATE, vpx.MIN_BITRATE, vpx.MAX_BITRATE = saved
        data = b"".join(depayload(self._codec, p) for p in payloads)
        out = None
        for picture in self._dec.decode(av.Packet(data)):
            out = picture.to_ndarray(format="rgb24")
        return out
