"""``score-video``: JSON output, errors without tracebacks, and the sub-command wiring."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from rehab_vision import cli

from .conftest import DATA, entry

REPO = Path(__file__).resolve().parents[2]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["score-video", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_from_landmarks(capsys: pytest.CaptureFixture[str]) -> None:
    clip = entry("vengaza_squats")
    rc, out, err = run_main(
        capsys,
        str(DATA / clip["video"]),
        "--exercise",
        "squat",
        "--json",
        "--landmarks",
        str(DATA / clip["poses"]),
    )
    assert rc == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["exercise"] == "squat"
    assert res["reps"] == clip["reps"] == len(res["reps_detail"])
    assert res["frames"] == clip["frames"]
    assert res["ms_per_frame"] > 0
    assert 0 <= res["score"] <= 100
    for rep in res["reps_detail"]:
        assert set(rep) >= {"start_s", "end_s", "rom_deg", "score", "faults"}
        assert rep["start_s"] < rep["end_s"]


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    clip = entry("sagor_elbow_flexion")
    rc, out, _ = run_main(
        capsys, "x.mp4", "--exercise", "elbow_flexion", "--landmarks", str(DATA / clip["poses"])
    )
    assert rc == 0
    assert out.startswith("elbow_flexion: 6 reps")


@pytest.mark.parametrize(
    "case", ["unknown-exercise", "missing-video", "not-a-video", "bad-landmarks"]
)
def test_errors_are_clear(capsys: pytest.CaptureFixture[str], tmp_path: Path, case: str) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    args: dict[str, list[str]] = {
        "unknown-exercise": [str(junk), "--exercise", "jumping_jacks"],
        "missing-video": [str(tmp_path / "nope.mp4"), "--exercise", "squat"],
        "not-a-video": [str(junk), "--exercise", "squat"],
        "bad-landmarks": [str(junk), "--exercise", "squat", "--landmarks", str(junk)],
    }
    rc, out, err = run_main(capsys, *args[case])
    assert rc == 2
    assert out == ""
    assert err.startswith("score-video: error: ")
    assert "Traceback" not in err
    expected = {
        "unknown-exercise": "unknown exercise 'jumping_jacks'",
        "missing-video": "video not found",
        "not-a-video": "cannot open video",
        "bad-landmarks": "cannot read landmarks file",
    }[case]
    assert expected in err


def _blank_video(path: Path, frames: int = 12) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=12)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for _ in range(frames):
            img = np.full((120, 160, 3), 90, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_no_person_in_view(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    video = tmp_path / "empty_room.mp4"
    _blank_video(video)
    rc, out, err = run_main(capsys, str(video), "--exercise", "squat", "--json")
    assert rc == 2
    assert "no person in view" in err
    assert out == ""


def test_add_parser_wires_into_a_host_cli(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="teleconsult")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(sub)
    clip = entry("postop_squat")
    args = parser.parse_args(
        [
            "score-video",
            "v.mp4",
            "--exercise",
            "squat",
            "--json",
            "--landmarks",
            str(DATA / clip["poses"]),
        ]
    )
    assert args.func(args) == 0
    res: dict[str, Any] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert res["reps"] == clip["reps"]


def test_module_entry_point_subprocess() -> None:
    clip = entry("medflex_squat")
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
            "--landmarks",
            str(DATA / clip["poses"]),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["reps"] == clip["reps"]
    bad = subprocess.run(
        [sys.executable, "-m", "rehab_vision.cli", "score-video", "x.mp4", "--exercise", "yoga"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "unknown exercise" in bad.stderr


def test_progress_on_a_long_video(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    _blank_video(video, frames=48)  # 4 s at 12 fps (nobody in it: the run ends in an error)
    rc, _, err = run_main(capsys, str(video), "--exercise", "squat", "--progress")
    assert rc == 2 and "no person in view" in err
    lines = [ln for ln in err.splitlines() if ln.startswith("score-video: ") and "%" in ln]
    assert len(lines) >= 5  # a line per 10 %
    assert "4.0 s of video" in lines[-1] or "/4.0 s" in lines[-1]
    assert "frames/s" in lines[-1]
    rc, _, err = run_main(capsys, str(video), "--exercise", "squat", "--no-progress")
    assert "%" not in err


def test_progress_line_on_a_terminal() -> None:
    import io

    out = io.StringIO()
    line = cli.ProgressLine(out, tty=True)
    for i in range(1, 11):
        line._last_draw = 0.0  # draw every call (it throttles to 5 a second)
        line(i * 3.0, 30.0, i * 90)
    line.close()
    text = out.getvalue()
    assert text.count("\r") == 10 and text.endswith("\n")
    assert "100% " in text and "about 0 s left" in text
