"""Exact rep counts on every labelled clip (from its landmarks file) and under augmentations."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rehab_vision import augment
from rehab_vision.session import analyze_sequence, count_reps
from rehab_vision.specs import get_spec

from .conftest import poses


def n_reps(seq: Any, clip: dict[str, Any]) -> int:
    return len(count_reps(seq, get_spec(clip["exercise"])))


def test_exact_count(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    reps = count_reps(seq, get_spec(clip["exercise"]))
    assert len(reps) == clip["reps"]
    # Reps are ordered, inside the clip, and do not overlap.
    ends = [0.0]
    for r in reps:
        assert ends[-1] <= r.start_s < r.peak_s < r.end_s <= seq.duration_s
        ends.append(r.end_s)
        assert 0 <= r.score <= 100
        assert r.rom_deg >= get_spec(clip["exercise"]).min_rom_deg


def test_pure_function(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    spec = get_spec(clip["exercise"])
    a = [r.as_dict() for r in count_reps(seq, spec)]
    b = [r.as_dict() for r in count_reps(seq, spec)]
    assert a == b


def test_mirrored(clip: dict[str, Any]) -> None:
    assert n_reps(augment.mirror(poses(clip)), clip) == clip["reps"]


@pytest.mark.parametrize("speed", [0.5, 2.0], ids=["half-speed", "double-speed"])
def test_resampled(clip: dict[str, Any], speed: float) -> None:
    seq = augment.resample(poses(clip), speed)
    assert len(seq) == pytest.approx(len(poses(clip)) / speed, abs=2)
    assert n_reps(seq, clip) == clip["reps"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_noise(clip: dict[str, Any], seed: int) -> None:
    # about 3 px of jitter on a 640 px frame and 1 cm in world coordinates
    seq = augment.add_noise(poses(clip), image_sigma=0.005, world_sigma=0.01, seed=seed)
    assert n_reps(seq, clip) == clip["reps"]


@pytest.mark.parametrize("offset", [0.5 + 0.25 * k for k in range(14)])
def test_one_second_gaps(clip: dict[str, Any], offset: float) -> None:
    # A 1 s loss of pose every 4 s, swept over 14 phases so gaps hit every part of the reps;
    # the clip's first 0.5 s and last 1.5 s stay visible (a rep there is simply not seen).
    seq = augment.drop_gaps(poses(clip), gap_s=1.0, every_s=4.0, offset_s=offset, tail_s=1.5)
    assert np.isnan(seq.lm).any()
    assert n_reps(seq, clip) == clip["reps"]


def test_mirror_is_exact_geometry(clip: dict[str, Any]) -> None:
    seq = poses(clip)
    spec = get_spec(clip["exercise"])
    a = analyze_sequence(seq, spec).reps
    b = analyze_sequence(augment.mirror(seq), spec).reps
    assert [round(r.end_s, 2) for r in a] == [round(r.end_s, 2) for r in b]


# -- a live stream's timing: frame rate 8-30 fps, jittered and changing, frames dropped --------


@pytest.mark.parametrize("fps", [8, 10, 12, 15, 20, 24, 30])
def test_camera_frame_rate(clip: dict[str, Any], fps: float) -> None:
    # The clip as a camera at ``fps`` with irregular frame intervals (+-30 %) would give it,
    # counted on the capture timestamps.
    seq = augment.retime(poses(clip), fps, jitter=0.3, seed=fps)
    assert not np.allclose(np.diff(seq.t), 1.0 / fps)  # really irregular
    assert n_reps(seq, clip) == clip["reps"]


@pytest.mark.parametrize(("start", "end"), [(30, 8), (8, 30), (12, 25)])
def test_frame_rate_changing_within_the_session(
    clip: dict[str, Any], start: float, end: float
) -> None:
    seq = augment.retime(poses(clip), start, jitter=0.3, seed=7, fps_end=end)
    assert n_reps(seq, clip) == clip["reps"]


@pytest.mark.parametrize(("fraction", "burst"), [(0.1, 1), (0.2, 3), (0.3, 2)])
def test_frames_dropped_by_the_tap(clip: dict[str, Any], fraction: float, burst: int) -> None:
    seq = augment.drop_frames(poses(clip), fraction, seed=3, burst=burst)
    assert len(seq) < len(poses(clip))
    assert n_reps(seq, clip) == clip["reps"]


def test_frame_rate_and_noise_and_gaps_together(clip: dict[str, Any]) -> None:
    seq = augment.add_noise(poses(clip), seed=11)
    seq = augment.drop_gaps(seq, gap_s=0.6, every_s=4.0, offset_s=1.3, tail_s=1.5)
    seq = augment.retime(seq, 12, jitter=0.3, seed=5)
    assert n_reps(seq, clip) == clip["reps"]


def test_rep_times_follow_the_timestamps(clip: dict[str, Any]) -> None:
    # The same movement at 10 fps and at 30 fps: reps end at the same moments (within a frame
    # or two of the slower camera), whatever the frame indices; a peak held at the top may be
    # placed anywhere on its plateau.
    spec = get_spec(clip["exercise"])
    a = count_reps(augment.retime(poses(clip), 10), spec)
    b = count_reps(augment.retime(poses(clip), 30), spec)
    assert len(a) == len(b) == clip["reps"]
    for ra, rb in zip(a, b, strict=True):
        assert abs(ra.peak_s - rb.peak_s) < 0.6
        assert abs(ra.end_s - rb.end_s) < 0.35
