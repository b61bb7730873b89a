"""Landmark-sequence augmentations used to check that counting is robust (pure functions)."""

from __future__ import annotations

import numpy as np

from .landmarks import INDEX, MIRROR_PERMUTATION, PoseSequence
from .specs import ExerciseSpec, resolve


def mirror(seq: PoseSequence) -> PoseSequence:
    """Left/right swap plus an x flip (the clip seen in a mirror)."""
    lm = seq.lm[:, MIRROR_PERMUTATION].copy()
    lm[..., 0] = 1.0 - lm[..., 0]
    lm[..., 4] = -lm[..., 4]
    return PoseSequence(lm=lm, fps=seq.fps, frame_size=seq.frame_size)


def resample(seq: PoseSequence, speed: float) -> PoseSequence:
    """The movement played ``speed`` times faster at the same frame rate (linear interpolation;
    a frame next to a missing one stays missing)."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    n = len(seq)
    src = np.arange(0.0, n - 1 + 1e-9, speed)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0)[:, None, None].astype(np.float32)
    lm = (1 - w) * seq.lm[i0] + w * seq.lm[i1]
    return PoseSequence(lm=lm.astype(np.float32), fps=seq.fps, frame_size=seq.frame_size)


def add_noise(
    seq: PoseSequence, image_sigma: float = 0.005, world_sigma: float = 0.01, seed: int = 0
) -> PoseSequence:
    """Gaussian jitter on positions (normalised image units, metres), visibility untouched."""
    rng = np.random.default_rng(seed)
    lm = seq.lm.copy()
    shape = lm.shape[:2]
    for k in (0, 1):
        lm[..., k] += rng.normal(0.0, image_sigma, shape).astype(np.float32)
    for k in (4, 5, 6):
        lm[..., k] += rng.normal(0.0, world_sigma, shape).astype(np.float32)
    return PoseSequence(lm=lm, fps=seq.fps, frame_size=seq.frame_size)


def drop_gaps(
    seq: PoseSequence,
    gap_s: float = 1.0,
    every_s: float = 4.0,
    offset_s: float = 1.0,
    tail_s: float = 0.0,
) -> PoseSequence:
    """Remove the pose for ``gap_s`` seconds every ``every_s`` seconds, from ``offset_s``;
    gaps that would reach into the last ``tail_s`` seconds of the clip are left out."""
    lm = seq.lm.copy()
    t = np.arange(len(seq)) / seq.fps
    phase = (t - offset_s) % every_s
    gap_start = t - phase
    lost = (t >= offset_s) & (phase < gap_s) & (gap_start + gap_s <= seq.duration_s - tail_s)
    lm[lost] = np.nan
    return PoseSequence(lm=lm, fps=seq.fps, frame_size=seq.frame_size)


# Landmarks moved with the distal segment when a joint angle is changed, by middle joint.
DISTAL: dict[str, tuple[str, ...]] = {
    "knee": ("ankle", "heel", "foot_index"),
    "elbow": ("wrist", "pinky", "index", "thumb"),
    "shoulder": ("elbow", "wrist", "pinky", "index", "thumb"),
    "hip": ("knee", "ankle", "heel", "foot_index"),
}


def rotate_points(
    points: np.ndarray,
    centre: np.ndarray,
    axis: np.ndarray,
    angle: float,
) -> np.ndarray:
    """Rodrigues rotation of ``points`` [N, 3] about ``axis`` through ``centre``."""
    k = axis / np.linalg.norm(axis)
    v = points - centre
    cos, sin = np.cos(angle), np.sin(angle)
    rotated = v * cos + np.cross(k, v) * sin + np.outer(v @ k, k) * (1 - cos)
    return rotated + centre


def scale_excursion(
    seq: PoseSequence, spec: ExerciseSpec, factor: float, rest_deg: float | None = None
) -> PoseSequence:
    """Shrink (factor < 1) how far the exercise's joint angle moves from rest, in the world
    landmarks: the distal segment is rotated about the joint in the plane of the three joints.
    Image landmarks are left as they are. Used to make a shallower version of a real set."""
    rest = spec.rest_deg if rest_deg is None else rest_deg
    joint = spec.angle.joints[1]
    base = joint.removeprefix("other_")
    if base not in DISTAL:
        raise ValueError(f"no distal chain known for joint {joint!r}")
    lm = seq.lm.copy()
    for side in ("left", "right"):
        a, b, c = (INDEX[n] for n in spec.angle.landmarks(side))
        moved = [INDEX[resolve(n, side)] for n in DISTAL[base]]
        for i in range(len(lm)):
            w = lm[i, :, 4:7].astype(np.float64)
            if np.isnan(w).any():
                continue
            ba, bc = w[a] - w[b], w[c] - w[b]
            axis = np.cross(ba, bc)
            if np.linalg.norm(axis) < 1e-9:
                continue
            cur = np.arccos(np.clip(ba @ bc / (np.linalg.norm(ba) * np.linalg.norm(bc)), -1, 1))
            want = np.radians(rest) + (cur - np.radians(rest)) * factor
            w[moved] = rotate_points(w[moved], w[b], axis, want - cur)
            lm[i, :, 4:7] = w.astype(np.float32)
    return PoseSequence(lm=lm, fps=seq.fps, frame_size=seq.frame_size)


def retime(
    seq: PoseSequence, fps: float, jitter: float = 0.0, seed: int = 0, fps_end: float | None = None
) -> PoseSequence:
    """The clip as a camera at ``fps`` (sliding linearly to ``fps_end`` over the clip, for a
    frame rate that changes within a session) would have given it: at each capture time the
    nearest source frame, stamped with that capture time. ``jitter`` is the spread of the
    frame intervals as a fraction of the nominal interval (uniform), so timestamps are irregular
    like a live stream's. The result carries its own timestamps (``t``); ``fps`` is nominal."""
    if fps <= 0 or (fps_end is not None and fps_end <= 0):
        raise ValueError("fps must be positive")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    rng = np.random.default_rng(seed)
    src_t = np.asarray(seq.t, dtype=np.float64)
    end = float(src_t[-1]) if len(src_t) else 0.0
    times: list[float] = []
    t = 0.0
    while t <= end:
        times.append(t)
        rate = fps if fps_end is None else fps + (fps_end - fps) * (t / end if end else 0.0)
        t += (1.0 + rng.uniform(-jitter, jitter)) / rate
    at = np.asarray(times)
    idx = np.clip(np.searchsorted(src_t, at), 1, max(1, len(src_t) - 1))
    nearer_left = np.abs(at - src_t[idx - 1]) <= np.abs(src_t[np.minimum(idx, len(src_t) - 1)] - at)
    idx = np.where(nearer_left, idx - 1, idx)
    return PoseSequence(lm=seq.lm[idx].copy(), fps=fps, frame_size=seq.frame_size, t=at)


def drop_frames(seq: PoseSequence, fraction: float, seed: int = 0, burst: int = 1) -> PoseSequence:
    """Frames lost on the way (a tap dropping a backlog, a decoder waiting for a keyframe):
    about ``fraction`` of the frames removed, in runs of up to ``burst`` frames; the timestamps
    of the frames kept are unchanged."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError("fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    n = len(seq)
    keep = np.ones(n, dtype=bool)
    i = 1
    while i < n - 1:
        if rng.random() < fraction / max(1, burst) * 1.0:
            run = int(rng.integers(1, burst + 1))
            keep[i : min(n - 1, i + run)] = False
            i += run
        i += 1
    return PoseSequence(
        lm=seq.lm[keep].copy(),
        fps=seq.fps,
        frame_size=seq.frame_size,
        t=np.asarray(seq.t)[keep].copy(),
    )
