"""Per-rep form score (0-100) from range of motion, tempo, symmetry and compensation (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .measures import FrameMeasures, combined_angle
from .specs import SIDES, Compensation, ExerciseSpec

WEIGHTS = {"rom": 0.45, "tempo": 0.15, "symmetry": 0.15, "compensation": 0.25}
ROM_OK = 0.8  # fraction of the target ROM below which the ROM cue is given
TEMPO_CUE = "slower"
SYMMETRY_CUE = "even_sides"
ASYM_OK_DEG = 12.0  # left/right difference at the peak tolerated without penalty
ASYM_FAULT_DEG = 20.0


@dataclass(frozen=True, slots=True)
class Fault:
    """A form fault of one rep, with the cue key that corrects it."""

    kind: str  # "rom", "tempo", "symmetry" or a compensation kind
    cue: str
    value: float
    limit: float

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "cue": self.cue,
            "value": round(self.value, 2),
            "limit": self.limit,
        }


@dataclass(frozen=True, slots=True)
class RepScore:
    score: float
    rom_deg: float  # excursion of the joint angle in this rep
    peak_deg: float  # joint angle at the peak
    rom_fraction: float  # of the target range (spec rest -> target)
    components: dict[str, float]
    faults: tuple[Fault, ...] = field(default=())


def _clip01(x: float) -> float:
    return 0.0 if x < 0 else 1.0 if x > 1 else x


def rom_component(spec: ExerciseSpec, peak_deg: float) -> float:
    """Fraction (0..1) of the target range reached at the peak."""
    return _clip01(spec.sign * (peak_deg - spec.rest_deg) / spec.target_rom_deg)


def tempo_component(spec: ExerciseSpec, duration_s: float) -> float:
    lo, hi = spec.tempo_s
    if duration_s < lo:
        return _clip01(duration_s / lo) ** 2
    if duration_s > hi:
        return _clip01(1.0 - (duration_s - hi) / hi)
    return 1.0


def _finite(xs: Iterable[float]) -> list[float]:
    return [x for x in xs if not math.isnan(x)]


def _quantile(xs: list[float], q: float) -> float:
    """Robust extreme: a single mis-tracked frame must not make a fault."""
    return float(np.quantile(xs, q)) if xs else math.nan


def _compensation_value(
    rule: Compensation,
    frames: Sequence[FrameMeasures],
    sides: Sequence[str],
    near_peak: Sequence[FrameMeasures],
) -> float:
    """The worst value of the rule's measure over the rep (NaN if not measurable)."""
    if rule.kind == "trunk_lean":
        return _quantile(_finite(f.trunk_lean for f in frames), 0.9)
    if rule.kind == "trunk_lateral":
        return _quantile(_finite(f.trunk_lateral for f in frames), 0.9)
    if rule.kind == "knee_valgus":  # at the bottom of the movement
        return _quantile(_finite(f.knee_ratio for f in near_peak), 0.5)
    worst = math.nan
    for side in sides:
        if rule.kind == "shoulder_hike":
            vals = _finite(f.shoulder_gap.get(side, math.nan) for f in frames)
            if len(vals) < 3:
                continue
            start = float(np.median(vals[:3]))
            if start <= 1e-6:
                continue
            v = (start - _quantile(vals, 0.1)) / start  # relative shrink of the ear-shoulder gap
        else:  # upper_arm_drift
            vals = _finite(f.upper_arm.get(side, math.nan) for f in frames)
            if len(vals) < 3:
                continue
            start = float(np.median(vals[:3]))
            v = _quantile([abs(x - start) for x in vals], 0.9)
        worst = v if math.isnan(worst) else max(worst, v)
    return worst


def _view_ok(rule: Compensation, frames: Sequence[FrameMeasures]) -> bool:
    if rule.view == "any" or not frames:
        return True
    frontal = sum(f.frontal for f in frames) / len(frames)
    return frontal >= 0.6 if rule.view == "frontal" else frontal <= 0.4


def score_rep(
    spec: ExerciseSpec,
    frames: Sequence[FrameMeasures],
    sides: Sequence[str],
    rest_deg: float,
    peak_deg: float,
    duration_s: float,
) -> RepScore:
    """Score one rep from the frames between its start and end.

    ``rest_deg``/``peak_deg``: smoothed joint angle at rest and at the peak of this rep;
    ``sides``: the sides that were measured (one, or both for bilateral exercises).
    """
    faults: list[Fault] = []
    comp: dict[str, float] = {}
    rom_frac = rom_component(spec, peak_deg)
    comp["rom"] = rom_frac
    if rom_frac < ROM_OK:
        faults.append(
            Fault("rom", spec.rom_cue, abs(peak_deg - spec.rest_deg), ROM_OK * spec.target_rom_deg)
        )
    comp["tempo"] = tempo_component(spec, duration_s)
    if duration_s < spec.tempo_s[0]:
        faults.append(Fault("tempo", TEMPO_CUE, duration_s, spec.tempo_s[0]))
    frontal = bool(frames) and sum(f.frontal for f in frames) / len(frames) >= 0.6
    if spec.bilateral and len(sides) == 2 and frontal:
        both = [f for f in frames if f.usable("left") and f.usable("right")]
        if len(both) >= max(3, len(frames) // 2):
            ext = {s: max(spec.sign * f.angle[s] for f in both) for s in SIDES}
            asym = abs(ext["left"] - ext["right"])
            comp["symmetry"] = 1.0 - _clip01((asym - ASYM_OK_DEG) / 30.0)
            if asym > ASYM_FAULT_DEG:
                faults.append(Fault("symmetry", SYMMETRY_CUE, asym, ASYM_FAULT_DEG))
    # Frames in the outer 30 % of this rep's excursion ("at the bottom").
    reach = abs(peak_deg - rest_deg)
    near_peak = [
        f
        for f in frames
        if (a := combined_angle(f, tuple(sides))) is not None and abs(a - rest_deg) >= 0.7 * reach
    ]
    comp_scores = []
    for rule in spec.compensation:
        if not _view_ok(rule, frames):
            continue
        v = _compensation_value(rule, frames, sides, near_peak)
        if math.isnan(v):
            continue
        if rule.max is not None:
            excess = (v - rule.max) / max(abs(rule.max), 1e-6)
            limit = rule.max
        else:
            assert rule.min is not None
            excess = (rule.min - v) / max(abs(rule.min), 1e-6)
            limit = rule.min
        comp_scores.append(1.0 - _clip01(excess))
        if excess > 0:
            faults.append(Fault(rule.kind, rule.cue, v, limit))
    if comp_scores:
        comp["compensation"] = min(comp_scores)
    total_w = sum(WEIGHTS[k] for k in comp)
    score = 100.0 * sum(WEIGHTS[k] * v for k, v in comp.items()) / total_w
    return RepScore(
        score=round(score, 1),
        rom_deg=round(abs(peak_deg - rest_deg), 1),
        peak_deg=round(peak_deg, 1),
        rom_fraction=round(rom_frac, 3),
        components={k: round(100 * v, 1) for k, v in comp.items()},
        faults=tuple(faults),
    )
