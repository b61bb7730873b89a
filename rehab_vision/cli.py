"""``teleconsult score-video``: count and score the reps of an exercise in a video file.

Wired into the ``teleconsult`` console script by ``rtc_server/cli.py`` through
:func:`add_parser`; also runnable as ``python -m rehab_vision.cli score-video ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from .landmarks import PoseSequence, load_npz
from .session import analyze_sequence
from .specs import UnknownExerciseError, exercise_names, get_spec


class CliError(Exception):
    """A user-facing error: message on stderr, exit status 2."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``score-video`` sub-command; ``args.func(args)`` returns the exit status."""
    p = subparsers.add_parser(
        "score-video",
        help="count reps and score form of an exercise in a video file",
        description="Run pose estimation on a video (or read landmarks from an npz file), "
        "count the repetitions of an exercise and score each one.",
    )
    p.add_argument("path", type=Path, help="video file (mp4, webm, ...)")
    p.add_argument("--exercise", required=True, help=f"one of: {', '.join(exercise_names())}")
    p.add_argument(
        "--side",
        choices=["left", "right", "both", "auto"],
        default=None,
        help="which side to measure (default: the exercise's own)",
    )
    p.add_argument(
        "--target-deg",
        type=float,
        default=None,
        help="clinician's target angle at the peak, overriding the exercise's",
    )
    p.add_argument(
        "--landmarks",
        type=Path,
        default=None,
        help="read landmarks from this npz file instead of running the pose model",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    p.add_argument("--verbose", action="store_true", help="let the model's own logs through")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress on stderr while the pose model runs "
        "(default: when stderr is a terminal)",
    )
    p.set_defaults(func=run_score_video)


class ProgressLine:
    """Progress of a long video on stderr: one line rewritten in place on a terminal, else a
    line per ``step`` percent (or per ``step`` x 10 frames when the length is unknown)."""

    def __init__(self, stream: TextIO, tty: bool | None = None, step: int = 10) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.step = step
        self.t0 = time.perf_counter()
        self._shown = -1
        self._last_draw = 0.0

    def __call__(self, done_s: float, total_s: float | None, frames: int) -> None:
        now = time.perf_counter()
        rate = frames / max(1e-6, now - self.t0)
        if total_s and total_s > 0:
            pct = min(100, int(100 * done_s / total_s))
            left = max(0.0, (total_s - done_s) * frames / max(done_s, 1e-6) / rate)
            text = (
                f"score-video: {pct:3d}% {done_s:6.1f}/{total_s:.1f} s of video, "
                f"{frames} frames, {rate:.1f} frames/s, about {left:.0f} s left"
            )
            mark = pct // self.step
        else:
            text = f"score-video: {done_s:6.1f} s of video, {frames} frames, {rate:.1f} frames/s"
            mark = frames // (self.step * 10)
        if self.tty:
            if now - self._last_draw >= 0.2:
                self._last_draw = now
                self.stream.write("\r" + text)
                self.stream.flush()
        elif mark > self._shown:
            self._shown = mark
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _pose_from_video(path: Path, verbose: bool, progress: bool | None = None) -> PoseSequence:
    from .pose import MediaPipePose, _stderr_silenced
    from .video import VideoError, video_landmarks

    if not path.is_file():
        raise CliError(f"video not found: {path}")
    # The progress line goes to a duplicate of stderr taken before the model's start-up noise
    # is silenced (that silencing points fd 2 at /dev/null for the whole run).
    show = sys.stderr.isatty() if progress is None else progress
    stream = _own_stderr() if show else None
    line = ProgressLine(stream) if stream is not None else None
    try:
        with _stderr_silenced(not verbose), MediaPipePose(quiet=not verbose) as est:
            return video_landmarks(path, est, progress=line)
    except VideoError as exc:
        raise CliError(str(exc)) from None
    finally:
        if line is not None:
            line.close()
        if stream is not None and stream is not sys.stderr:
            stream.close()


def _own_stderr() -> TextIO:
    """A stream on a duplicate of fd 2 (kept while fd 2 is silenced), or ``sys.stderr`` when
    that is not fd 2 (captured, redirected in-process)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr
    if fd != 2:
        return sys.stderr
    return os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8")


def _load_landmarks(path: Path) -> PoseSequence:
    try:
        return load_npz(path)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"cannot read landmarks file {path}: {exc}") from None


def score_video(
    path: Path,
    exercise: str,
    landmarks: Path | None = None,
    side: str | None = None,
    target_deg: float | None = None,
    verbose: bool = False,
    progress: bool | None = None,
) -> dict[str, object]:
    """The ``score-video`` result as a dict (raises :class:`CliError` on bad input)."""
    try:
        spec = get_spec(exercise).with_target(target_deg)
    except UnknownExerciseError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"bad --target-deg: {exc}") from None
    t0 = time.perf_counter()
    seq = _load_landmarks(landmarks) if landmarks else _pose_from_video(path, verbose, progress)
    pose_s = time.perf_counter() - t0
    if len(seq) == 0 or np.isnan(seq.lm).any(axis=(1, 2)).all():
        raise CliError(f"no person in view in {path}")
    t1 = time.perf_counter()
    session = analyze_sequence(seq, spec, side=side)  # type: ignore[arg-type]
    score_s = time.perf_counter() - t1
    if session.tracked_frames == 0:
        raise CliError(
            f"no usable pose for {exercise} in {path} (the joints it needs are never visible)"
        )
    result = session.summary()
    # With --landmarks, the pose time is the one recorded when the npz was made.
    recorded = bool(landmarks) and len(seq.ms) > 0
    ms_pose = float(np.mean(seq.ms)) if recorded else 1000.0 * pose_s / len(seq)
    result.update(
        {
            "source": "landmarks" if landmarks else "video",
            "path": str(path),
            "fps": round(seq.fps, 3),
            "ms_per_frame": round(ms_pose + 1000.0 * score_s / len(seq), 2),
            "ms_per_frame_scoring": round(1000.0 * score_s / len(seq), 3),
        }
    )
    return result


def _print_human(res: dict[str, object]) -> None:
    print(
        f"{res['exercise']}: {res['reps']} reps, mean score {res['score']}, "
        f"{res['frames']} frames ({res['tracked_frames']} with a pose), "
        f"{res['ms_per_frame']} ms/frame"
    )
    for rep in res["reps_detail"]:  # type: ignore[attr-defined]
        faults = ", ".join(f["kind"] for f in rep["faults"]) or "-"
        print(
            f"  rep {rep['index']}: {rep['start_s']:.2f}-{rep['end_s']:.2f} s, "
            f"ROM {rep['rom_deg']} deg (peak {rep['peak_deg']}), score {rep['score']}, "
            f"faults: {faults}"
        )


def run_score_video(args: argparse.Namespace) -> int:
    try:
        res = score_video(
            args.path,
            args.exercise,
            landmarks=args.landmarks,
            side=args.side,
            target_deg=args.target_deg,
            verbose=args.verbose,
            progress=args.progress,
        )
    except CliError as exc:
        print(f"score-video: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, ensure_ascii=False))
    else:
        _print_human(res)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry: ``python -m rehab_vision.cli score-video PATH --exercise NAME``."""
    parser = argparse.ArgumentParser(prog="rehab_vision")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
