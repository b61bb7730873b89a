"""Every exercise spec counts and scores a synthetic set (incl. those without a real clip)."""

from __future__ import annotations

import pytest

from rehab_vision.session import count_reps
from rehab_vision.specs import exercise_names, get_spec

from .synth import exercise_sequence

ONE_LIMB = {"knee_extension", "hip_abduction", "elbow_flexion", "shoulder_abduction"}


@pytest.mark.parametrize("name", exercise_names())
def test_synthetic_set_counts(name: str) -> None:
    spec = get_spec(name)
    sides = ("left",) if name in ONE_LIMB else ("left", "right")
    reps = count_reps(exercise_sequence(spec, 5, sides=sides), spec)
    assert len(reps) == 5
    for r in reps:
        assert r.rom_fraction > 0.9
        assert r.rom_deg == pytest.approx(spec.target_rom_deg, abs=12)
        if name in ONE_LIMB and spec.side == "auto":
            assert r.side == "left"  # auto picks the limb that works


@pytest.mark.parametrize("name", exercise_names())
def test_synthetic_shallow_reps_score_lower(name: str) -> None:
    spec = get_spec(name)
    full = count_reps(exercise_sequence(spec, 3), spec)
    shallow = count_reps(exercise_sequence(spec, 3, depth=0.6), spec)
    assert len(full) == len(shallow) == 3
    for f, s in zip(full, shallow, strict=True):
        assert s.components["rom"] < f.components["rom"]
        assert spec.rom_cue in {x.cue for x in s.faults}
