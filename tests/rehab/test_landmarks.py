"""The npz layout, the Landmarks type and the augmentations' geometry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rehab_vision import augment
from rehab_vision.geometry import joint_angle
from rehab_vision.landmarks import INDEX, Landmarks, PoseSequence, load_npz, save_npz

from .conftest import DATA, poses


def test_load_matches_labels(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    assert seq.lm.shape == (clip["frames"], 33, 8)
    assert seq.lm.dtype == np.float32
    assert seq.fps == pytest.approx(clip["fps"], rel=1e-3)
    assert max(seq.frame_size) == 640
    first = next(i for i in range(len(seq)) if seq.frame(i) is not None)
    lm = seq.frame(first)
    assert isinstance(lm, Landmarks)
    assert lm.image.shape == lm.world.shape == (33, 4)
    np.testing.assert_array_equal(lm.as_row(), seq.lm[first])


def test_missing_pose_is_none() -> None:
    seq = load_npz(DATA / "poses" / "postop_squat.npz") if DATA.is_dir() else None
    if seq is None:
        pytest.skip("rehab test data absent")
    lost = np.where(np.isnan(seq.lm).any(axis=(1, 2)))[0]
    assert len(lost) >= 1
    assert seq.frame(int(lost[0])) is None


def test_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    seq = PoseSequence(
        lm=rng.random((5, 33, 8), dtype=np.float32), fps=25.0, frame_size=(360, 640), ms=np.ones(5)
    )
    save_npz(tmp_path / "x.npz", seq)
    back = load_npz(tmp_path / "x.npz")
    np.testing.assert_array_equal(back.lm, seq.lm)
    assert back.fps == 25.0 and back.frame_size == (360, 640)


def test_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "y.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="not a landmarks file"):
        load_npz(tmp_path / "y.npz")
    with pytest.raises(ValueError):
        PoseSequence(lm=np.zeros((3, 17, 8), dtype=np.float32), fps=30.0)


def test_mirror_swaps_sides_and_keeps_angles(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    m = augment.mirror(seq)
    i = next(i for i in range(len(seq)) if seq.frame(i) is not None)
    a, b = seq.frame(i), m.frame(i)
    assert a is not None and b is not None
    np.testing.assert_allclose(b.image[INDEX["right_knee"], 0], 1 - a.image[INDEX["left_knee"], 0])
    la = joint_angle(a, ("left_hip", "left_knee", "left_ankle"))
    rb = joint_angle(b, ("right_hip", "right_knee", "right_ankle"))
    assert la == pytest.approx(rb, abs=1e-3)


def test_scale_excursion_halves_the_angle_change() -> None:
    if not DATA.is_dir():
        pytest.skip("rehab test data absent")
    from rehab_vision.specs import get_spec

    seq = load_npz(DATA / "poses" / "vengaza_squats.npz")
    half = augment.scale_excursion(seq, get_spec("squat"), 0.5, rest_deg=170)
    joints = ("left_hip", "left_knee", "left_ankle")
    for i in (0, 50, 120, 200):
        a, b = seq.frame(i), half.frame(i)
        assert a is not None and b is not None
        want = 170 + (joint_angle(a, joints) - 170) * 0.5
        assert joint_angle(b, joints) == pytest.approx(want, abs=0.5)
