"""The live VisionAgent: newest frame only, worker thread, rehab:update events, report."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from rehab_vision.agent import VisionAgent
from rehab_vision.landmarks import Landmarks, PoseSequence
from rehab_vision.models import RehabSessionStart, RehabUpdate

from .conftest import DATA, entry, poses


class PacedBlankTrack(MediaStreamTrack):
    """A live video track of ``n`` small blank frames at ``rate`` frames per second of wall
    time, stamped with the clip's own media time (``fps``)."""

    kind = "video"

    def __init__(self, n: int, fps: float, rate: float) -> None:
        super().__init__()
        self.n, self.fps, self.rate = n, fps, rate
        self.sent = 0
        self._start: float | None = None
        self._img = np.zeros((48, 64, 3), dtype=np.uint8)

    async def recv(self) -> av.VideoFrame:
        if self.sent >= self.n:
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self.sent / self.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame.from_ndarray(self._img, format="rgb24")
        frame.time_base = fractions.Fraction(1, 90000)
        frame.pts = round(self.sent / self.fps * 90000)
        self.sent += 1
        return frame


class ReplayPose:
    """A PoseEstimator that returns a recorded clip's landmarks for the frame's media time,
    slowly (``cost_s`` per frame), like a real model would on a loaded machine."""

    def __init__(self, seq: PoseSequence, cost_s: float) -> None:
        self.seq, self.cost_s = seq, cost_s
        self.calls: list[float] = []
        self.closed = False

    def process(self, rgb: np.ndarray, timestamp_s: float) -> Landmarks | None:
        assert not self.calls or timestamp_s > self.calls[-1], "timestamps must increase"
        self.calls.append(timestamp_s)
        time.sleep(self.cost_s)
        i = min(len(self.seq) - 1, round(timestamp_s * self.seq.fps))
        return self.seq.frame(i)

    def close(self) -> None:
        self.closed = True


async def run_agent(agent: VisionAgent, timeout: float = 60) -> dict[str, Any]:
    await agent.start()
    assert await agent.wait_finished(timeout), "agent did not finish in time"
    return await agent.stop()


async def test_agent_counts_and_drops_instead_of_queueing() -> None:
    clip = entry("postop_squat")
    seq = poses(clip)
    # The source runs at 3x real time (60 fps); the "model" costs 25 ms, so the agent can
    # only take some frames: it must drop the rest and never hold the source back.
    track = PacedBlankTrack(len(seq), seq.fps, rate=3 * seq.fps)
    est = ReplayPose(seq, cost_s=0.025)
    updates: list[dict[str, Any]] = []

    async def on_update(payload: dict[str, Any]) -> None:
        updates.append(payload)

    agent = VisionAgent(
        track,
        RehabSessionStart(exercise="squat", target_reps=4),
        on_update,
        estimator_factory=lambda: est,
    )
    report = await run_agent(agent)
    st = report["stats"]
    assert st["frames_received"] == len(seq) == track.sent  # the source was drained fully
    assert st["frames_dropped"] > 0
    assert st["frames_processed"] + st["frames_dropped"] == st["frames_received"]
    assert st["frames_processed"] == len(est.calls) < len(seq)
    assert est.closed
    rep_events = [u for u in updates if u["rep_detail"]]
    assert [u["rep"] for u in rep_events] == [1, 2, 3, 4]
    assert rep_events[-1]["set_complete"] is True
    assert report["reps"] == 4 and len(report["rom_deg"]) == 4
    assert report["sets"][0]["reps"] == 4
    for u in updates:
        assert u["exercise"] == "squat" and u["session_id"] == agent.id
        assert u["phase"] in {"standing", "lowering", "bottom", "rising"}
        assert u["latency_ms"] >= 0
    assert await agent.stop() == report  # idempotent


class GapPose(ReplayPose):
    """ReplayPose with nobody in view between ``gap[0]`` and ``gap[1]`` seconds."""

    def __init__(self, seq: PoseSequence, gap: tuple[float, float]) -> None:
        super().__init__(seq, 0.0)
        self.gap = gap

    def process(self, rgb: np.ndarray, timestamp_s: float) -> Landmarks | None:
        lm = super().process(rgb, timestamp_s)
        return None if self.gap[0] <= timestamp_s < self.gap[1] else lm


async def test_updates_carry_the_2d_pose_of_the_processed_frame() -> None:
    clip = entry("postop_squat")
    seq = poses(clip)
    track = PacedBlankTrack(len(seq), seq.fps, rate=4 * seq.fps)  # 64 x 48 frames
    updates: list[dict[str, Any]] = []

    async def on_update(payload: dict[str, Any]) -> None:
        updates.append(payload)

    est = GapPose(seq, gap=(2.0, 3.0))
    agent = VisionAgent(
        track,
        RehabSessionStart(exercise="squat", target_reps=4),
        on_update,
        estimator_factory=lambda: est,
    )
    report = await run_agent(agent)
    assert report["reps"] == 4
    seen = [u for u in updates if u["landmarks"] is not None]
    unseen = [u for u in updates if u["landmarks"] is None]
    assert len(seen) > 10 and unseen, (len(seen), len(unseen))
    # nobody in view: in the gap, or on a frame where the recorded clip has no pose
    assert all(2.0 <= u["t"] < 3.0 or seq.frame(round(u["t"] * seq.fps)) is None for u in unseen), [
        u["t"] for u in unseen
    ]
    for u in updates:
        RehabUpdate.model_validate(u)  # the wire model accepts what was sent
        assert (u["frame_w"], u["frame_h"]) == (64, 48)
        assert len(json.dumps(u, ensure_ascii=False)) < 2048, u  # compact, even with a rep
    for u in seen:
        pts = np.asarray(u["landmarks"]).reshape(33, 3)
        assert all(round(v, 3) == v for v in u["landmarks"])
        # the values are the frame's own landmarks (x, y, visibility), not a neighbour's
        i = min(len(seq) - 1, round(u["t"] * seq.fps))
        want = seq.lm[i][:, (0, 1, 3)]
        np.testing.assert_allclose(pts, want, atol=6e-4)
        assert (pts[:, 2] >= 0).all() and (pts[:, 2] <= 1).all()
        # a standing person: shoulders above hips above ankles in image y (y grows down)
        assert pts[11, 1] < pts[23, 1] < pts[27, 1]
    assert any(u["rep_detail"] and u["landmarks"] for u in updates)


async def test_callback_failure_does_not_stop_the_agent() -> None:
    clip = entry("vengaza_squats")
    seq = poses(clip)
    track = PacedBlankTrack(len(seq), seq.fps, rate=4 * seq.fps)
    calls = 0

    async def broken(payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("room went away")

    agent = VisionAgent(
        track,
        RehabSessionStart(exercise="squat"),
        broken,
        estimator_factory=lambda: ReplayPose(seq, 0.0),
    )
    report = await run_agent(agent)
    assert calls > 1
    assert report["reps"] == clip["reps"]


async def test_next_set_starts_a_new_count() -> None:
    clip = entry("sagor_elbow_flexion")
    seq = poses(clip)
    track = PacedBlankTrack(len(seq), seq.fps, rate=2 * seq.fps)
    third_rep = asyncio.Event()

    async def on_update(payload: dict[str, Any]) -> None:
        if payload["set"] == 1 and payload["rep"] >= 3:
            third_rep.set()

    agent = VisionAgent(
        track,
        RehabSessionStart(exercise="elbow_flexion", target_reps=3, sets=2),
        on_update,
        estimator_factory=lambda: ReplayPose(seq, 0.0),
    )
    await agent.start()
    await asyncio.wait_for(third_rep.wait(), 30)
    agent.next_set()
    assert await agent.wait_finished(60)
    report = await agent.stop()
    assert len(report["sets"]) == 2
    assert report["sets"][0]["reps"] == 3
    assert report["sets"][1]["reps"] >= 1
    assert report["reps"] == sum(s["reps"] for s in report["sets"])


async def _ignore(payload: dict[str, Any]) -> None:
    return None


@pytest.mark.slow
async def test_media_player_real_model_real_time() -> None:
    """aiortc's MediaPlayer decodes a labelled clip in real time; real MediaPipe."""
    from aiortc.contrib.media import MediaPlayer

    clip = entry("postop_squat")
    player = MediaPlayer(str(DATA / clip["video"]))
    updates: list[dict[str, Any]] = []

    async def on_update(payload: dict[str, Any]) -> None:
        updates.append(payload)

    agent = VisionAgent(player.video, RehabSessionStart(exercise="squat", target_reps=4), on_update)
    report = await run_agent(agent, timeout=90)
    stats = report["stats"]  # in the messages: on a saturated machine fewer frames get through
    assert [u["rep"] for u in updates if u["rep_detail"]] == [1, 2, 3, 4], stats
    assert report["reps"] == clip["reps"], stats
    assert stats["frames_processed"] + stats["frames_dropped"] == stats["frames_received"]
