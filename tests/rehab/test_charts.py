"""Charts as PNG: angle over time with reps and target range, progress over weeks; Chinese
labels drawn with a CJK font found at run time; the chart lands in the record as FHIR Media."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from rehab_vision import charts
from rehab_vision.record import chart_media
from rehab_vision.session import analyze_sequence
from rehab_vision.specs import get_spec

from .conftest import entry, poses


def _set_report(stem: str) -> dict[str, Any]:
    clip = entry(stem)
    s = analyze_sequence(poses(clip), get_spec(clip["exercise"])).summary()
    return {
        "set": 1,
        "reps": s["reps"],
        "reps_detail": s["reps_detail"],
        "angle_trace": s["angle_trace"],
        "rest_deg": s["rest_deg"],
        "target_deg": s["target_deg"],
    }


def _image(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


def test_trace_is_bounded_and_in_time_order() -> None:
    rep = _set_report("vengaza_squats")
    t = rep["angle_trace"]["t"]
    assert len(t) == len(rep["angle_trace"]["deg"])
    assert np.all(np.diff(t) >= 0.1 - 1e-6)  # at most 10 points a second
    assert len(t) >= 100  # the 13.8 s clip at 25 fps (a point every 0.12 s), tracked throughout


def test_angle_chart_has_reps_target_band_and_chinese() -> None:
    assert charts.cjk_font() is not None, "fonts-noto-cjk / fonts-wqy-microhei are installed"
    rep = _set_report("postop_squat")
    png = charts.angle_chart_png(rep, "Squat", "深蹲", "knee angle", "膝关节角度")
    img = _image(png)
    assert img.shape[:2] == (360, 800)
    colours = {tuple(int(c) for c in px) for px in img.reshape(-1, 3)[::7]}
    assert len(colours) > 50  # a drawing, not a blank canvas
    # the rep spans (#e9c46a at 35 %) and the target band (#2a9d8f at 12 %) are there
    yellowish = ((img[..., 0] > 240) & (img[..., 1] > 220) & (img[..., 2] < 215)).mean()
    assert yellowish > 0.02


def test_progress_chart() -> None:
    weeks = [
        {
            "week": f"W{i}",
            "rom_deg": 80 + 6 * i,
            "score": 70 + 4 * i,
            "adherence": min(1.0, 0.5 + 0.1 * i),
        }
        for i in range(1, 7)
    ]
    img = _image(charts.progress_chart_png(weeks, "Progress", "康复进展"))
    assert img.shape[:2] == (380, 800)


def test_chart_in_the_record_as_fhir_media() -> None:
    rep = _set_report("vengaza_squats")
    row = {
        "id": "s1",
        "exercise": "squat",
        "patient": "pat-1",
        "ended_at": 1.8e9,
        "report": {
            "sets": [
                rep,
                {"set": 2, "reps": 0, "reps_detail": [], "angle_trace": {"t": [], "deg": []}},
            ]
        },
    }
    media = chart_media(row, "urn:uuid:enc")
    assert len(media) == 1  # the set without a trace gets no chart
    m = media[0]
    assert m["resourceType"] == "Media" and m["status"] == "completed"
    assert m["content"]["contentType"] == "image/png"
    _image(base64.b64decode(m["content"]["data"]))


def test_weekly_progress() -> None:
    from rehab_vision.plans import weekly

    def day(done: int, prescribed: int, rom: list[float], score: list[float]) -> dict[str, Any]:
        return {
            "sets_done": done,
            "sets_prescribed": prescribed,
            "rom": rom,
            "score": score,
            "reps": len(rom),
        }

    weeks = weekly(
        {
            "2026-11-30": day(1, 2, [80.0, 90.0], [70.0]),  # Monday, W49
            "2026-12-06": day(2, 2, [100.0], [90.0]),  # Sunday, W49
            "2026-12-07": day(0, 0, [110.0], [95.0]),
        }
    )  # Monday, W50, no guided run
    assert [w["week"] for w in weeks] == ["2026-W49", "2026-W50"]
    assert weeks[0]["adherence"] == 0.75 and weeks[0]["mean_rom_deg"] == 90.0
    assert weeks[0]["mean_score"] == 80.0 and weeks[0]["reps"] == 3
    assert weeks[1]["adherence"] is None and weeks[1]["mean_rom_deg"] == 110.0


def test_progress_chart_in_the_record() -> None:
    from rehab_vision.record import progress_media

    assert progress_media("pat-1", [], "urn:uuid:enc") is None
    m = progress_media(
        "pat-1",
        [{"week": "2026-W49", "mean_rom_deg": 90.0, "mean_score": 80.0, "adherence": 0.75}],
        "urn:uuid:enc",
    )
    assert m is not None and m["resourceType"] == "Media"
    _image(base64.b64decode(m["content"]["data"]))
