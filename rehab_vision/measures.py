"""Per-frame measurements an exercise needs: joint angles per side and compensation measures."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import geometry as g
from .landmarks import Landmarks
from .specs import SIDES, ExerciseSpec

VIS_GATE = 0.5
"""A side is usable when its gating landmarks are at least this visible."""


def side_weight(vis: float) -> float:
    """Soft weight of a side from its visibility (0 below 0.4, 1 above 0.8)."""
    return min(1.0, max(0.0, (vis - 0.4) / 0.4))


@dataclass(frozen=True, slots=True)
class FrameMeasures:
    """What one frame tells about the exercise (NaN where not measurable)."""

    t: float
    angle: dict[str, float]  # side -> joint angle (deg)
    vis: dict[str, float]  # side -> visibility of the gating landmarks
    trunk_lean: float
    trunk_lateral: float
    knee_ratio: float
    shoulder_gap: dict[str, float]
    upper_arm: dict[str, float]  # side -> hip-shoulder-elbow angle
    frontal: bool

    def usable(self, side: str) -> bool:
        return self.vis.get(side, 0.0) >= VIS_GATE and not math.isnan(self.angle[side])


def measure(spec: ExerciseSpec, lm: Landmarks, t: float, aspect: float = 1.0) -> FrameMeasures:
    """Measure one frame (pure)."""
    kinds = {c.kind for c in spec.compensation}
    angle: dict[str, float] = {}
    vis: dict[str, float] = {}
    gap: dict[str, float] = {}
    arm: dict[str, float] = {}
    for side in SIDES:
        angle[side] = g.joint_angle(lm, spec.angle.landmarks(side), spec.angle.space, aspect)
        vis[side] = g.visibility(lm, spec.angle.gate_landmarks(side))
        if "shoulder_hike" in kinds:
            gap[side] = g.shoulder_ear_gap(lm, side, aspect)
        if "upper_arm_drift" in kinds:
            arm[side] = g.joint_angle(
                lm, (f"{side}_hip", f"{side}_shoulder", f"{side}_elbow"), "world"
            )
    nan = math.nan
    return FrameMeasures(
        t=t,
        angle=angle,
        vis=vis,
        trunk_lean=g.trunk_lean_deg(lm) if "trunk_lean" in kinds else nan,
        trunk_lateral=g.trunk_lateral_deg(lm, aspect) if "trunk_lateral" in kinds else nan,
        knee_ratio=g.knee_width_ratio(lm) if "knee_valgus" in kinds else nan,
        shoulder_gap=gap,
        upper_arm=arm,
        frontal=g.is_frontal(lm, aspect),
    )


def combined_angle(m: FrameMeasures, sides: tuple[str, ...]) -> float | None:
    """Visibility-weighted angle over ``sides``, or None when no side is usable."""
    usable = [s for s in sides if m.usable(s)]
    if not usable:
        return None
    weights = [max(side_weight(m.vis[s]), 1e-3) for s in usable]
    return sum(w * m.angle[s] for w, s in zip(weights, usable, strict=True)) / sum(weights)
