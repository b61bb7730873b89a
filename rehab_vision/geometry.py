"""Joint angles and body measures from landmarks (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .landmarks import INDEX, Landmarks

Vec = npt.NDArray[np.float32]


def _points(lm: Landmarks, space: str, aspect: float) -> Vec:
    """xyz points of a frame; image points are scaled to square pixels (x * W/H)."""
    if space == "world":
        return lm.world[:, :3]
    pts = lm.image[:, :2].copy()
    pts[:, 0] *= aspect
    return pts


def angle_deg(a: Vec, b: Vec, c: Vec) -> float:
    """Angle ABC in degrees (0..180); NaN if a segment has zero length."""
    ba = a - b
    bc = c - b
    n = float(np.linalg.norm(ba) * np.linalg.norm(bc))
    if n < 1e-9:
        return math.nan
    cos = float(np.dot(ba, bc)) / n
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def joint_angle(
    lm: Landmarks, joints: tuple[str, str, str], space: str = "world", aspect: float = 1.0
) -> float:
    """Angle at the middle joint of a named landmark triplet."""
    p = _points(lm, space, aspect)
    a, b, c = (p[INDEX[j]] for j in joints)
    return angle_deg(a, b, c)


def visibility(lm: Landmarks, names: tuple[str, ...]) -> float:
    """Smallest visibility among the named landmarks."""
    return float(min(lm.image[INDEX[n], 3] for n in names))


def midpoint(p: Vec, left: str, right: str) -> Vec:
    return (p[INDEX[left]] + p[INDEX[right]]) / 2.0


def trunk_lean_deg(lm: Landmarks) -> float:
    """Forward/sideways lean of the trunk (hip centre -> shoulder centre) from vertical, world."""
    p = lm.world[:, :3]
    v = midpoint(p, "left_shoulder", "right_shoulder") - midpoint(p, "left_hip", "right_hip")
    n = float(np.linalg.norm(v))
    if n < 1e-9:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float(-v[1]) / n))))


def trunk_lateral_deg(lm: Landmarks, aspect: float = 1.0) -> float:
    """Sideways lean of the trunk in the image plane (meaningful in a frontal view)."""
    p = _points(lm, "image", aspect)
    v = midpoint(p, "left_shoulder", "right_shoulder") - midpoint(p, "left_hip", "right_hip")
    return math.degrees(math.atan2(abs(float(v[0])), max(1e-9, float(-v[1]))))


def knee_width_ratio(lm: Landmarks) -> float:
    """Knee separation over ankle separation in the image (< 1 when knees cave in)."""
    x = lm.image[:, 0]
    ankles = abs(float(x[INDEX["left_ankle"]] - x[INDEX["right_ankle"]]))
    knees = abs(float(x[INDEX["left_knee"]] - x[INDEX["right_knee"]]))
    if ankles < 1e-3:
        return math.nan
    return knees / ankles


def shoulder_ear_gap(lm: Landmarks, side: str, aspect: float = 1.0) -> float:
    """Vertical shoulder-to-ear distance over shoulder width, image (shrinks on a shrug)."""
    p = _points(lm, "image", aspect)
    width = float(np.linalg.norm(p[INDEX["left_shoulder"]] - p[INDEX["right_shoulder"]]))
    if width < 1e-6:
        return math.nan
    gap = float(p[INDEX[f"{side}_shoulder"]][1] - p[INDEX[f"{side}_ear"]][1])
    return gap / width


def is_frontal(lm: Landmarks, aspect: float = 1.0) -> bool:
    """True when the camera faces the patient (shoulders wide in the image vs. torso height)."""
    p = _points(lm, "image", aspect)
    width = float(np.linalg.norm(p[INDEX["left_shoulder"]] - p[INDEX["right_shoulder"]]))
    w = lm.world[:, :3]
    lateral = w[INDEX["left_shoulder"]] - w[INDEX["right_shoulder"]]
    torso = float(
        np.linalg.norm(
            midpoint(p, "left_shoulder", "right_shoulder") - midpoint(p, "left_hip", "right_hip")
        )
    )
    ratio_img = width / torso if torso > 1e-6 else 1.0
    return bool(ratio_img > 0.45 and abs(float(lateral[0])) > abs(float(lateral[2])))
