"""Exercise specs as data, cue texts and the cue rate limiter."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from rehab_vision.cues import CueLimiter, cue_text, cue_texts
from rehab_vision.models import RehabSessionStart
from rehab_vision.specs import ExerciseSpec, UnknownExerciseError, get_spec, load_specs

REQUIRED = {
    "squat",
    "lunge",
    "elbow_flexion",
    "shoulder_abduction",
    "knee_extension",
    "sit_to_stand",
    "hip_abduction",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def test_all_required_exercises_load() -> None:
    specs = load_specs()
    assert set(specs) >= REQUIRED
    for spec in specs.values():
        assert spec.target_rom_deg >= spec.min_rom_deg
        assert spec.angle.landmarks("left") != spec.angle.landmarks("right")


def test_every_cue_has_both_languages() -> None:
    texts = cue_texts()
    keys = {"slower", "even_sides", "step_into_view", "step_back"}
    for spec in load_specs().values():
        keys |= {spec.rom_cue, *(c.cue for c in spec.compensation)}
        if spec.reversed_rom_cue:
            keys.add(spec.reversed_rom_cue)
    for key in keys:
        assert texts[key]["en"].strip(), key
        assert CJK.search(texts[key]["zh-CN"]), key
    assert cue_text("go_deeper") == "Bend your knees more"
    assert cue_text("keep_back_straight", "zh-CN") == "保持背部挺直"


def test_unknown_exercise() -> None:
    with pytest.raises(UnknownExerciseError, match=r"known: .*squat"):
        get_spec("jumping_jacks")


def test_bad_spec_is_rejected() -> None:
    good = get_spec("squat").model_dump(by_alias=True)
    with pytest.raises(ValidationError, match="unknown landmark"):
        ExerciseSpec.model_validate(
            {**good, "angle": {"name": "x", "joints": ["hip", "nape", "ankle"]}}
        )
    with pytest.raises(ValidationError, match="target must lie beyond rest"):
        ExerciseSpec.model_validate({**good, "target_deg": 160})
    with pytest.raises(ValidationError):
        ExerciseSpec.model_validate({**good, "surprise": 1})


def test_reversed_spec_swaps_ends_and_phases() -> None:
    elbow = get_spec("elbow_flexion")
    rev = elbow.reversed()
    assert (rev.rest_deg, rev.target_deg, rev.direction) == (
        elbow.target_deg,
        elbow.rest_deg,
        "extend",
    )
    assert rev.phases.rest == elbow.phases.peak
    assert rev.rom_cue == "straighten_elbow"


def test_cue_limiter() -> None:
    lim = CueLimiter(min_interval_s=3.0, repeat_s=10.0)
    first = lim.pick(0.0, ["slower", "keep_back_straight"])
    assert first is not None and first.key == "keep_back_straight"  # the more important one
    assert first.zh_cn and first.en
    assert lim.pick(1.0, ["slower"]) is None  # too soon after any cue
    assert lim.pick(3.5, ["keep_back_straight"]) is None  # same cue again too soon
    nxt = lim.pick(3.5, ["keep_back_straight", "slower"])
    assert nxt is not None and nxt.key == "slower"
    again = lim.pick(10.5, ["keep_back_straight"])
    assert again is not None and again.key == "keep_back_straight"


def test_session_start_request() -> None:
    req = RehabSessionStart(exercise="squat", target_reps=10, side="left")
    assert req.sets == 1
    with pytest.raises(ValidationError, match="unknown exercise"):
        RehabSessionStart(exercise="burpee")
    with pytest.raises(ValidationError):
        RehabSessionStart(exercise="squat", target_reps=0)
    with pytest.raises(ValidationError):
        RehabSessionStart(exercise="squat", target_reps=10_000)
    with pytest.raises(ValidationError):
        RehabSessionStart.model_validate({"exercise": "squat", "side": "middle"})
    with pytest.raises(ValidationError):
        RehabSessionStart.model_validate({"exercise": "squat", "extra": True})
