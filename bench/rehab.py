"""Rehab vision benchmark: pose + scoring cost per frame, live processed fps for 1 and 2
concurrent patient streams through VisionAgent, frame-arrival-to-update (cue) latency, and
through the SFU (bench/rehab_sfu.py): labelled clips published by an aiortc peer under live
conditions (picture size, frame rate, VP8 at ~300 kbit/s), counts against the labels and the
latency from the publisher's capture of a frame to its ``rehab:update`` at a client.

Run: .venv/bin/python bench/rehab.py [--quick] [--clip NAME] [--no-sfu | --sfu-only]
     [--sfu-clip NAME] [--sfu-condition 640x30] [--repeat N]
Needs ../shared/data/rehab beside the repo. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = (REPO / ".." / "shared" / "data" / "rehab").resolve()

from rehab_vision.agent import VisionAgent  # noqa: E402
from rehab_vision.models import RehabSessionStart  # noqa: E402
from rehab_vision.pose import MediaPipePose  # noqa: E402
from rehab_vision.session import ExerciseSession  # noqa: E402
from rehab_vision.sources import VideoFileTrack  # noqa: E402
from rehab_vision.specs import get_spec  # noqa: E402
from rehab_vision.video import iter_frames  # noqa: E402


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 2) if xs else None


def offline_cost(video: Path, exercise: str, max_frames: int) -> dict[str, Any]:
    """Pose + scoring per frame, decoding excluded (frames decoded beforehand)."""
    frames = []
    for i, (t, rgb, _) in enumerate(iter_frames(video)):
        if i >= max_frames:
            break
        frames.append((t, rgb))
    session = ExerciseSession(get_spec(exercise))
    pose_ms, score_ms = [], []
    with MediaPipePose() as est:
        for t, rgb in frames:
            t0 = time.perf_counter()
            lm = est.process(rgb, t)
            t1 = time.perf_counter()
            session.feed(t, lm, rgb.shape[1] / rgb.shape[0])
            t2 = time.perf_counter()
            pose_ms.append((t1 - t0) * 1000)
            score_ms.append((t2 - t1) * 1000)
    total = [p + s for p, s in zip(pose_ms, score_ms, strict=True)]
    return {
        "frames": len(frames),
        "ms_per_frame_p50": pct(total, 50),
        "ms_per_frame_p95": pct(total, 95),
        "pose_ms_p50": pct(pose_ms, 50),
        "scoring_ms_p50": pct(score_ms, 50),
        "reps": len(session.reps),
    }


async def live(
    video: Path,
    exercise: str,
    streams: int,
    seconds: float,
    source_fps: float,
    target_deg: float | None,
) -> dict[str, Any]:
    """``streams`` agents in parallel, each on its own paced file track."""
    agents: list[VisionAgent] = []
    latencies: list[float] = []
    event_latencies: list[float] = []  # updates that carry a rep or a cue
    cues = 0
    for _ in range(streams):

        async def on_update(payload: dict[str, Any]) -> None:
            nonlocal cues
            latencies.append(payload["latency_ms"])
            if payload["rep_detail"] or payload["cue"]:
                event_latencies.append(payload["latency_ms"])
            cues += payload["cue"] is not None

        track = VideoFileTrack(video, fps=source_fps, loops=1000)
        request = RehabSessionStart(exercise=exercise, target_deg=target_deg)
        agents.append(VisionAgent(track, request, on_update, update_interval_s=0.0))
    await asyncio.gather(*(a.start() for a in agents))
    # Event-loop responsiveness while the agents work: worst lag of a 10 ms ticker.
    lag = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        lag = max(lag, time.perf_counter() - t0 - 0.01)
    reports = await asyncio.gather(*(a.stop() for a in agents))
    stats = [r["stats"] for r in reports]
    return {
        "streams": streams,
        "source_fps": source_fps,
        "processed_fps": [s["processed_fps"] for s in stats],
        "dropped": [s["frames_dropped"] for s in stats],
        "ms_per_frame_p50": [s["ms_per_frame_p50"] for s in stats],
        "latency_ms_p50": pct(latencies, 50),
        "latency_ms_p95": pct(latencies, 95),
        "rep_or_cue_latency_ms_p95": pct(event_latencies, 95),
        "rep_or_cue_updates": len(event_latencies),
        "cues": cues,
        "loop_lag_ms_max": round(lag * 1000, 1),
        "reps": [r["reps"] for r in reports],
    }


def pct_of(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    vals = [x for x in (a[key], b[key]) if x is not None]
    return max(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (under a minute)")
    ap.add_argument("--clip", default="postop_squat", help="labelled clip name (videos/NAME.mp4)")
    ap.add_argument("--exercise", default="squat")
    ap.add_argument(
        "--source-fps",
        type=float,
        default=30.0,
        help="rate at which each simulated camera delivers frames",
    )
    ap.add_argument("--no-sfu", action="store_true", help="skip the through-the-SFU table")
    ap.add_argument("--kbps", type=int, default=300, help="publisher VP8 bitrate (SFU table)")
    ap.add_argument(
        "--sfu-clip",
        action="append",
        default=None,
        metavar="NAME",
        help="SFU table: only this clip (repeatable; default every labelled clip)",
    )
    ap.add_argument(
        "--sfu-condition",
        action="append",
        default=None,
        metavar="PXxFPS",
        help="SFU table: only this condition, e.g. 640x30 (repeatable)",
    )
    ap.add_argument("--sfu-only", action="store_true", help="only the through-the-SFU table")
    ap.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="DIR",
        help="SFU table: save the landmarks each agent was fed (npz) in DIR",
    )
    ap.add_argument(
        "--replay",
        action="store_true",
        help="SFU table: send every file frame at the condition's rate (plays the "
        "clip faster or slower), not a camera filming it at its own speed",
    )
    ap.add_argument("--repeat", type=int, default=1, help="SFU table: runs per clip x condition")
    ap.add_argument(
        "--target-deg",
        type=float,
        default=None,
        help="ROM target given to the agents (a deeper one makes ROM cues flow)",
    )
    args = ap.parse_args()
    video = DATA / "videos" / f"{args.clip}.mp4"
    if not video.is_file():
        print(f"bench/rehab.py: test clip not found: {video}", file=sys.stderr)
        return 2
    if args.sfu_only:
        conds = (
            [tuple(int(v) for v in c.split("x")) for c in args.sfu_condition]
            if args.sfu_condition
            else None
        )
        only = {"bench": "rehab", "quick": args.quick, "cpus": os.cpu_count()}
        only.update(
            sfu_table(
                args.quick,
                args.kbps,
                args.sfu_clip,
                conds,
                args.repeat,
                args.record,
                not args.replay,
            )
        )
        print(json.dumps(only))
        return 0
    seconds = 8.0 if args.quick else 25.0
    off = offline_cost(video, args.exercise, 80 if args.quick else 100_000)
    print(f"offline: {off}", flush=True)
    one = asyncio.run(live(video, args.exercise, 1, seconds, args.source_fps, args.target_deg))
    print(f"1 stream: {one}", flush=True)
    two = asyncio.run(live(video, args.exercise, 2, seconds, args.source_fps, args.target_deg))
    print(f"2 streams: {two}", flush=True)
    result = {
        "bench": "rehab",
        "quick": args.quick,
        "clip": args.clip,
        "cpus": os.cpu_count(),
        "ms_per_frame_p50": off["ms_per_frame_p50"],
        "pose_ms_p50": off["pose_ms_p50"],
        "scoring_ms_p50": off["scoring_ms_p50"],
        "source_fps": args.source_fps,
        "fps_1_stream": one["processed_fps"][0],
        "fps_2_streams": round(min(two["processed_fps"]), 2),
        "fps_2_streams_each": two["processed_fps"],
        "latency_ms_p95_1_stream": one["latency_ms_p95"],
        "latency_ms_p95_2_streams": two["latency_ms_p95"],
        # Frame arrival -> the update of a rep-completing frame, which is where a rep's fault
        # cue is chosen and sent (same frame, same update); max of the 1- and 2-stream runs.
        "cue_latency_ms_p95": pct_of(one, two, "rep_or_cue_latency_ms_p95"),
        "rep_or_cue_updates": one["rep_or_cue_updates"] + two["rep_or_cue_updates"],
        "cues": one["cues"] + two["cues"],
        "loop_lag_ms_max": max(one["loop_lag_ms_max"], two["loop_lag_ms_max"]),
    }
    if not args.no_sfu:
        conds = (
            [tuple(int(v) for v in c.split("x")) for c in args.sfu_condition]
            if args.sfu_condition
            else None
        )
        result.update(
            sfu_table(
                args.quick,
                args.kbps,
                args.sfu_clip,
                conds,
                args.repeat,
                args.record,
                not args.replay,
            )
        )
    print(json.dumps(result))
    return 0


SFU_CONDITIONS = [(640, 30), (320, 30), (640, 12), (320, 12)]  # (long side px, fps)


def sfu_table(
    quick: bool,
    kbps: int,
    clips: list[str] | None = None,
    conditions: list[tuple[int, ...]] | None = None,
    repeat: int = 1,
    record: Path | None = None,
    realtime: bool = True,
) -> dict[str, Any]:
    """Counts vs labels per clip and condition through the SFU, and capture -> update
    latency (all updates, and those carrying a rep or a cue), split at the hand-over of the
    decoded frame to the agent."""
    from rehab_sfu import pct as p1
    from rehab_sfu import run_condition

    labels = json.loads((DATA / "labels.json").read_text())
    conds: list[tuple[int, ...]] = list(SFU_CONDITIONS)
    if quick:
        labels = [e for e in labels if "medflex_squat" in e["video"]]  # 10 s, 2 squats
        conds = [SFU_CONDITIONS[0], SFU_CONDITIONS[3]]
    if clips:
        labels = [e for e in labels if Path(e["video"]).stem in clips]
    if conditions:
        conds = conditions
    rows = []
    lat: list[float] = []
    ev: list[float] = []
    to_agent: list[float] = []
    in_agent: list[float] = []
    for e in labels:
        for side, fps in conds:
            for run in range(repeat):
                name = f"{side}px-{fps}fps-{kbps}k"
                load = Path("/proc/loadavg").read_text().split()[0]
                stem = f"{Path(e['video']).stem}-{name}-{run}"
                if record is not None:
                    record.mkdir(parents=True, exist_ok=True)
                res = asyncio.run(
                    run_condition(
                        DATA / e["video"],
                        e["exercise"],
                        side,
                        fps,
                        kbps,
                        room=f"bench-{stem}",
                        record=None if record is None else record / f"{stem}.npz",
                        realtime=realtime,
                    )
                )
                lat += res["latency_ms"]
                ev += res["event_latency_ms"]
                to_agent += res["to_agent_ms"]
                in_agent += res["in_agent_ms"]
                row = {
                    "clip": Path(e["video"]).stem,
                    "condition": name,
                    "camera": "realtime" if realtime else "replay",
                    "reps": res["reps"],
                    "label": e["reps"],
                    "exact": res["reps"] == e["reps"],
                    "tracked": res["tracked"],
                    "processed_fps": res["stats"]["processed_fps"],
                    "captured": res["captured"],
                    "tap_decoded": res["tap_decoded"],
                    "tap_dropped": res["tap_dropped"],
                    "frames_received": res["stats"]["frames_received"],
                    "frames_processed": res["stats"]["frames_processed"],
                    "ms_per_frame_p50": res["stats"]["ms_per_frame_p50"],
                    "ms_per_frame_p95": res["stats"]["ms_per_frame_p95"],
                    "agent_wait_ms_p95": res["stats"]["wait_ms_p95"],
                    "agent_emit_ms_p95": res["stats"]["emit_ms_p95"],
                    "capture_to_update_ms_p50": p1(res["latency_ms"], 50),
                    "capture_to_update_ms_p95": p1(res["latency_ms"], 95),
                    "capture_to_cue_ms_p95": p1(res["event_latency_ms"], 95),
                    "to_agent_ms_p95": p1(res["to_agent_ms"], 95),
                    "in_agent_ms_p95": p1(res["in_agent_ms"], 95),
                    "load_before": load,
                    "load_after": Path("/proc/loadavg").read_text().split()[0],
                }
                rows.append(row)
                print(f"sfu: {row}", flush=True)
    return {
        "sfu_rows": rows,
        "sfu_exact": sum(r["exact"] for r in rows),
        "sfu_runs": len(rows),
        "sfu_capture_to_update_ms_p50": p1(lat, 50),
        "sfu_capture_to_update_ms_p95": p1(lat, 95),
        "sfu_capture_to_cue_ms_p95": p1(ev, 95),
        "sfu_to_agent_ms_p95": p1(to_agent, 95),
        "sfu_in_agent_ms_p95": p1(in_agent, 95),
        "sfu_cue_updates": len(ev),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


if __name__ == "__main__":
    sys.exit(main())
