"""Synthetic landmark sequences for exercises without a labelled clip: a stick figure whose
exercise joint follows a chosen angle curve (test helper, no real data needed)."""

from __future__ import annotations

import math

import numpy as np

from rehab_vision.augment import DISTAL, rotate_points
from rehab_vision.landmarks import INDEX, PoseSequence
from rehab_vision.specs import ExerciseSpec, resolve

# World coordinates in metres, hip-centred, y down, -z towards the camera; "left" is +x.
_BASE = {
    "nose": (0, -0.62, -0.08),
    "left_eye_inner": (0.02, -0.66, -0.07),
    "left_eye": (0.035, -0.66, -0.07),
    "left_eye_outer": (0.05, -0.66, -0.06),
    "right_eye_inner": (-0.02, -0.66, -0.07),
    "right_eye": (-0.035, -0.66, -0.07),
    "right_eye_outer": (-0.05, -0.66, -0.06),
    "left_ear": (0.08, -0.64, 0.0),
    "right_ear": (-0.08, -0.64, 0.0),
    "mouth_left": (0.025, -0.58, -0.07),
    "mouth_right": (-0.025, -0.58, -0.07),
    "left_shoulder": (0.18, -0.5, 0),
    "right_shoulder": (-0.18, -0.5, 0),
    "left_elbow": (0.2, -0.22, 0),
    "right_elbow": (-0.2, -0.22, 0),
    "left_wrist": (0.21, 0.03, -0.03),
    "right_wrist": (-0.21, 0.03, -0.03),
    "left_pinky": (0.22, 0.1, -0.03),
    "right_pinky": (-0.22, 0.1, -0.03),
    "left_index": (0.21, 0.11, -0.04),
    "right_index": (-0.21, 0.11, -0.04),
    "left_thumb": (0.2, 0.08, -0.05),
    "right_thumb": (-0.2, 0.08, -0.05),
    "left_hip": (0.1, 0, 0),
    "right_hip": (-0.1, 0, 0),
    "left_knee": (0.1, 0.45, -0.03),
    "right_knee": (-0.1, 0.45, -0.03),
    "left_ankle": (0.1, 0.88, 0),
    "right_ankle": (-0.1, 0.88, 0),
    "left_heel": (0.1, 0.92, 0.05),
    "right_heel": (-0.1, 0.92, 0.05),
    "left_foot_index": (0.1, 0.93, -0.12),
    "right_foot_index": (-0.1, 0.93, -0.12),
}


def base_world(seated: bool = False) -> np.ndarray:
    w = np.zeros((33, 3))
    for name, xyz in _BASE.items():
        w[INDEX[name]] = xyz
    if seated:  # thighs forward and level, shanks down: hip and knee at 90 deg
        for side in ("left", "right"):
            knee = w[INDEX[f"{side}_hip"]] + np.array([0.0, 0.0, -0.45])
            ankle = knee + np.array([0.0, 0.43, 0.0])
            w[INDEX[f"{side}_knee"]] = knee
            w[INDEX[f"{side}_ankle"]] = ankle
            w[INDEX[f"{side}_heel"]] = ankle + np.array([0.0, 0.04, 0.05])
            w[INDEX[f"{side}_foot_index"]] = ankle + np.array([0.0, 0.05, -0.12])
    return w


def _angle(w: np.ndarray, a: int, b: int, c: int) -> float:
    ba, bc = w[a] - w[b], w[c] - w[b]
    return math.acos(np.clip(ba @ bc / (np.linalg.norm(ba) * np.linalg.norm(bc)), -1, 1))


def set_angle(w: np.ndarray, spec: ExerciseSpec, side: str, deg: float) -> np.ndarray:
    """A copy of ``w`` with the exercise joint of ``side`` at ``deg`` degrees."""
    w = w.copy()
    a, b, c = (INDEX[n] for n in spec.angle.landmarks(side))
    moved = [INDEX[resolve(n, side)] for n in DISTAL[spec.angle.joints[1]]]
    axis = np.cross(w[a] - w[b], w[c] - w[b])
    cur = _angle(w, a, b, c)
    w[moved] = rotate_points(w[moved], w[b], axis, math.radians(deg) - cur)
    return w


def reps_curve(
    n: int, rest: float, peak: float, period: float = 2.5, fps: float = 30.0, lead: float = 1.5
) -> np.ndarray:
    t = np.arange(0, lead + n * period + lead, 1 / fps)
    phase = np.clip((t - lead) / period, 0, n)
    return rest + (peak - rest) * 0.5 * (1 - np.cos(2 * math.pi * phase))


def exercise_sequence(
    spec: ExerciseSpec,
    n: int,
    sides: tuple[str, ...] = ("left", "right"),
    depth: float = 1.0,
    seed: int = 0,
    fps: float = 30.0,
) -> PoseSequence:
    """``n`` reps from the spec's rest angle to ``depth`` of the way to its target."""
    seated = spec.name in ("knee_extension", "sit_to_stand")
    base = base_world(seated)
    for side in ("left", "right"):
        base = set_angle(base, spec, side, spec.rest_deg)
    peak = spec.rest_deg + depth * (spec.target_deg - spec.rest_deg)
    curve = reps_curve(n, spec.rest_deg, peak, fps=fps)
    rng = np.random.default_rng(seed)
    lm = np.zeros((len(curve), 33, 8), dtype=np.float32)
    for i, deg in enumerate(curve):
        w = base
        for side in sides:
            w = set_angle(w, spec, side, float(deg))
        w = w + rng.normal(0, 0.004, w.shape)
        lm[i, :, 4:7] = w
        lm[i, :, 0] = 0.5 + w[:, 0] * 0.4
        lm[i, :, 1] = 0.45 + w[:, 1] * 0.4
        lm[i, :, 2] = w[:, 2] * 0.4
        lm[i, :, 3] = lm[i, :, 7] = 0.99
    return PoseSequence(lm=lm, fps=fps, frame_size=(640, 640))
