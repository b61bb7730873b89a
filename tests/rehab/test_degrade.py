"""Video-level live conditions: another frame rate, a smaller picture, VP8 at a low bitrate."""

from __future__ import annotations

import numpy as np
import pytest

from rehab_vision.degrade import Condition, capture_times, degraded

from .conftest import DATA, entry


def test_capture_times_are_jittered_and_bounded() -> None:
    ts = np.diff(capture_times(10.0, 12.0, 0.3, seed=1))
    assert ts.min() >= 0.7 / 12 - 1e-9 and ts.max() <= 1.3 / 12 + 1e-9
    assert ts.std() > 0.005
    assert np.allclose(np.diff(capture_times(2.0, 10.0, 0.0, 0)), 0.1)


@pytest.mark.slow
def test_degraded_frames_have_the_condition() -> None:
    clip = entry("postop_squat")  # 640 x 480, 20 fps, 11.9 s
    cond = Condition(fps=12, max_side=320, kbps=300, jitter=0.2, seed=1)
    frames = list(degraded(DATA / clip["video"], cond))
    ts = np.array([t for t, _ in frames])
    assert abs(len(frames) - 12 * clip["frames"] / clip["fps"]) <= 3
    assert np.all(np.diff(ts) > 0)
    assert {f.shape for _, f in frames} == {(240, 320, 3)}
    # Re-encoded: not the same pixels as the plain downscale, but the same picture.
    plain = dict(
        degraded(DATA / clip["video"], Condition(fps=12, max_side=320, jitter=0.2, seed=1))
    )
    t, img = frames[len(frames) // 2]
    near = min(plain, key=lambda k: abs(k - t))  # the codec stamps whole milliseconds
    assert abs(near - t) < 1e-3
    diff = np.abs(img.astype(int) - plain[near].astype(int))
    assert 0.5 < diff.mean() < 20
    assert cond.name == "12fps-320px-vp8@300k-jitter0.2"


@pytest.mark.slow
@pytest.mark.parametrize("fps", [30, 12])
def test_postop_squat_at_640px_300k_through_aiortc_vp8(fps: int) -> None:
    # The issue's miss, offline: the labelled clip as the SFU tests' publisher sends it
    # (aiortc's VP8 encoder held at 300 kbit/s, 640 px), real MediaPipe on every frame, set
    # up as the live agent sets it up (contrast step before the model).
    from rehab_vision.degrade import degraded_landmarks
    from rehab_vision.pose import live_pose
    from rehab_vision.session import count_reps
    from rehab_vision.specs import get_spec

    clip = entry("postop_squat")
    cond = Condition(fps=fps, max_side=640, kbps=300, encoder="aiortc")
    assert cond.name == f"{fps}fps-640px-vp8@300k-aiortc"
    with live_pose() as est:
        seq = degraded_landmarks(DATA / clip["video"], cond, est)
    assert len(count_reps(seq, get_spec("squat"))) == clip["reps"]  # type: ignore[arg-type]
