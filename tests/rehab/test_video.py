"""The video path through the real MediaPipe model (slow: one short clip)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rehab_vision.landmarks import load_npz
from rehab_vision.pose import LumaContrast, MediaPipePose, PoseEstimator, fit_size
from rehab_vision.video import iter_frames

from .conftest import DATA, entry

REPO = Path(__file__).resolve().parents[2]


def test_fit_size() -> None:
    assert fit_size(1080, 1920) == (360, 640)
    assert fit_size(960, 540) == (640, 360)
    assert fit_size(480, 640) == (480, 640)
    assert fit_size(100, 200) == (100, 200)


def test_luma_contrast_spreads_a_flat_picture_and_keeps_its_shape() -> None:
    # A pale, faintly textured door with a slightly darker leg on it: what 300 kbit/s of VP8
    # leaves of postop_squat.
    rng = np.random.default_rng(0)
    grey = 196 + rng.integers(-4, 5, (120, 160)).astype(np.int16)
    grey[20:110, 70:90] -= 14
    rgb = np.clip(np.stack([grey + 4, grey, grey - 6], axis=-1), 0, 255).astype(np.uint8)
    out = LumaContrast()(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    leg, door = (slice(20, 110), slice(70, 90)), (slice(20, 110), slice(20, 60))
    before = rgb[door].mean() - rgb[leg].mean()
    after = out[door].astype(float).mean() - out[leg].astype(float).mean()
    assert after > 1.5 * before
    # the hue is kept: red above blue, as before
    assert out[..., 0].mean() > out[..., 2].mean()


@pytest.mark.slow
def test_model_reproduces_the_recorded_landmarks() -> None:
    clip = entry("postop_squat")
    ref = load_npz(DATA / clip["poses"])
    with MediaPipePose() as est:
        assert isinstance(est, PoseEstimator)
        rows = []
        for i, (t, rgb, _) in enumerate(iter_frames(DATA / clip["video"])):
            if i >= 40:
                break
            assert rgb.shape[:2] == ref.frame_size
            lm = est.process(rgb, t)
            rows.append(np.full((33, 8), np.nan, np.float32) if lm is None else lm.as_row())
        with pytest.raises(ValueError, match="increase"):
            est.process(rgb, 0.0)
    got = np.stack(rows)
    assert np.array_equal(np.isnan(got), np.isnan(ref.lm[:40]))
    np.testing.assert_allclose(got, ref.lm[:40], atol=0.02, equal_nan=True)


@pytest.mark.slow
def test_score_video_cli_on_the_real_video() -> None:
    clip = entry("postop_squat")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rehab_vision.cli",
            "score-video",
            str(DATA / clip["video"]),
            "--exercise",
            "squat",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.splitlines()[-1])
    assert res["reps"] == clip["reps"]
    assert res["frames"] == clip["frames"]
    assert res["source"] == "video"
    assert res["ms_per_frame"] > 0
