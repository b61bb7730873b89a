"""Rehab mode in the browser: the patient's fake camera plays a real exercise clip (converted to
Y4M at test time from ../shared/data/rehab), a doctor starts a session from the Exercise tab,
and the patient's page shows the rep count the server computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from rtc_server.keys import SIGNALING
from tests.helpers import Client
from tests.web.helpers import (
    WAIT_MS,
    accessibility_violations,
    pass_device_check,
    wait_video_playing,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rehab"
CLIP = DATA / "videos" / "postop_squat.mp4"  # frontal squats, 640x480, 20 fps, 4 reps

# MediaPipe runs in the server process next to two browsers: give a loaded CI machine time
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def to_y4m(src: Path, dst: Path, width: int = 480, height: int = 360) -> Path:
    """Decode a clip and write it as Y4M (what Chromium's fake camera can play)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="yuv4mpegpipe") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or 20
        stream = out.add_stream("rawvideo", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in inp.decode(vin):
            img = frame.reformat(width=width, height=height, format="yuv420p")
            img.pts = None
            for packet in stream.encode(img):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return dst


@pytest.fixture
def rehab_clip(tmp_path: Path) -> Path:
    if not CLIP.is_file():
        pytest.skip(f"rehab clip not found: {CLIP}")
    return to_y4m(CLIP, tmp_path / "clip.y4m")


@pytest.fixture
def extra_chromium_args(rehab_clip: Path) -> list[str]:
    return [f"--use-file-for-fake-video-capture={rehab_clip}"]


async def test_patient_sees_the_server_rep_count(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    if "rehab:start" not in live.app[SIGNALING].handlers:
        pytest.skip("the rehab server side is not wired into create_app")
    room = "r-rehab"
    observer = Client(live.url, live.tokens(room, "nurse-1", "clinician", "Nurse"))
    doctor = await new_page()
    patient = await new_page()
    try:
        await pass_device_check(
            doctor, f"{live.url}/join?token={live.tokens(room, 'dr-r', 'host', 'Dr R')}"
        )
        await doctor.click("#join-btn")
        await pass_device_check(
            patient, f"{live.url}/join?token={live.tokens(room, 'pat-r', 'patient', 'Zhou')}"
        )
        await patient.click("#join-btn")
        entry = doctor.locator(".lobby-entry[data-identity=pat-r]")
        await entry.locator("[data-action=admit]").click(timeout=WAIT_MS)
        await wait_video_playing(doctor, ".tile[data-key='p:pat-r'] video")
        await observer.connect()
        await observer.call("join", {})

        await doctor.locator("#tab-rehab").click()
        await doctor.select_option("#rehab-exercise", "squat")
        await doctor.select_option("#rehab-patient", "pat-r")
        await doctor.fill("#rehab-form input[name=target]", "10")
        await doctor.click("#rehab-start")
        await expect(patient.locator("#rehab-live")).to_be_visible(timeout=WAIT_MS)
        # wait for the server to count a rep of the looping clip, then stop
        await observer.next("rehab:update", lambda u: u["rep"] >= 1, timeout=90)
        await expect(doctor.locator("#rehab-reps")).not_to_have_text("0 / 10", timeout=WAIT_MS)
        await shot(patient, "20-rehab-patient")
        await shot(doctor, "21-rehab-doctor")
        assert await accessibility_violations(patient) == []
        assert await accessibility_violations(doctor) == []
        await doctor.click("#rehab-stop")
        report = await observer.next("rehab:report", timeout=30)
        assert report["reps"] >= 1
        await expect(patient.locator("#rehab-count")).to_have_text(
            str(report["reps"]), timeout=WAIT_MS
        )
        await expect(doctor.locator("#rehab-report")).to_contain_text(f"{report['reps']} of 10")
        await shot(patient, "22-rehab-patient-done")
        spoken = await patient.evaluate("window.__tcLastSpoken")
        assert spoken and str(report["reps"]) in spoken["text"]
    finally:
        await observer.close()
    assert requests_seen.outside() == []
    assert doctor.js_errors == [] and patient.js_errors == []
