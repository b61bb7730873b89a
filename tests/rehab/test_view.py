"""'Step back' / 'not in view' come from which landmarks are really missing, and for how long."""

from __future__ import annotations

from typing import Any

import numpy as np

from rehab_vision.landmarks import INDEX, PoseSequence
from rehab_vision.session import ExerciseSession
from rehab_vision.specs import get_spec
from rehab_vision.view import ViewWatch, frame_view

from .conftest import poses
from .synth import exercise_sequence


def run(seq: PoseSequence, exercise: str = "squat") -> tuple[ExerciseSession, list[Any]]:
    s = ExerciseSession(get_spec(exercise))
    ups = [s.feed(float(seq.t[i]), seq.frame(i)) for i in range(len(seq))]
    s.finish()
    return s, ups


def cues(ups: list[Any]) -> list[str]:
    return [u.cue.key for u in ups if u.cue is not None]


def test_watch_needs_the_state_to_last() -> None:
    w = ViewWatch(after_s=1.5)
    assert w.update(0.0, "absent") is None
    assert w.update(1.4, "absent") is None
    assert w.update(1.5, "absent") == "not_in_view"
    assert w.update(1.6, "absent") is None  # told once
    assert w.update(1.7, "ok") == "ok"
    assert w.update(1.8, "cut") is None
    assert w.update(2.0, "absent") is None  # another state restarts the clock
    assert w.update(3.0, "cut") is None
    assert w.update(4.5, "cut") == "step_back"


def test_brief_loss_is_no_reason_to_move() -> None:
    seq = exercise_sequence(get_spec("squat"), 4)
    seq.lm[60:90] = np.nan  # 1 s with nobody found
    s, ups = run(seq)
    assert {u.view for u in ups} == {"ok"}
    assert "step_into_view" not in cues(ups) and "step_back" not in cues(ups)
    assert len(s.reps) == 4


def test_long_loss_asks_to_come_back() -> None:
    seq = exercise_sequence(get_spec("squat"), 4)
    seq.lm[30:120] = np.nan  # 3 s
    _, ups = run(seq)
    lost = [u for u in ups if u.view == "not_in_view"]
    assert lost and lost[0].t >= seq.t[30] + 1.5 - 1e-6
    assert cues(ups).count("step_into_view") == 1
    assert ups[-1].view == "ok"


def test_poorly_visible_but_in_the_picture_is_not_step_back() -> None:
    seq = exercise_sequence(get_spec("squat"), 4)
    seq.lm[:, :, 3] = 0.2  # every joint seen badly (a blurred, compressed stream)
    _, ups = run(seq)
    assert not any(u.tracked for u in ups)
    assert {u.view for u in ups} == {"ok"}
    assert "step_back" not in cues(ups)


def test_legs_cut_off_asks_to_step_back() -> None:
    seq = exercise_sequence(get_spec("squat"), 4)
    cut = slice(45, 135)  # 3 s with the knees and ankles below the bottom edge
    for name in ("knee", "ankle", "heel", "foot_index"):
        for side in ("left", "right"):
            i = INDEX[f"{side}_{name}"]
            seq.lm[cut, i, 1] = 1.2
            seq.lm[cut, i, 3] = 0.1
    _, ups = run(seq)
    assert "step_back" in cues(ups)
    back = [u for u in ups if u.view == "step_back"]
    assert back and back[0].t >= seq.t[45] + 1.5 - 1e-6
    assert ups[-1].view == "ok"


def test_frame_view_rules() -> None:
    seq = exercise_sequence(get_spec("squat"), 1)
    lm = seq.frame(0)
    needed = [get_spec("squat").angle.landmarks(s) for s in ("left", "right")]
    assert frame_view(None, needed, False) == "absent"
    assert frame_view(lm, needed, True) == "ok"
    assert frame_view(lm, needed, False) == "ok"  # in the picture, merely unsure


def test_labelled_clips_never_told_to_move(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    h, w = seq.frame_size
    s = ExerciseSession(get_spec(clip["exercise"]))
    ups = [s.feed(float(seq.t[i]), seq.frame(i), w / h) for i in range(len(seq))]
    assert {u.view for u in ups} == {"ok"}
    assert not {"step_back", "step_into_view"} & set(cues(ups))
