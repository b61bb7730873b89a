"""Rehab mode in the browser: the patient's fake camera plays a real exercise clip (converted to
Y4M at test time from ../shared/data/rehab), a doctor starts a session from the Exercise tab,
and the patient's page shows the rep count the server computed and the skeleton of the pose the
server found, over the patient's own video and over the doctor's tile of the patient."""

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


def rehab_state(app: Any) -> dict[str, Any]:
    """What the server's rehab sessions and guides hold (printed when a count never comes)."""
    from rehab_vision.service import REHAB

    service = app[REHAB]
    sessions = {}
    for sid, run in service.sessions.items():
        agent, tap = run.agent, run.tap  # a media.tap.DecodingTap
        sessions[sid] = {
            "stats": agent.stats.summary(),
            "reps": [r.as_dict() for r in agent.session.reps],
            "counter": vars(agent.session.counter),
            "tap": {
                k: getattr(tap, k)
                for k in ("frames_decoded", "frames_returned", "frames_dropped", "readyState")
            },
            "plis_sent": tap.pub.plis_sent,
            "pli_retries": tap.pub.pli_retries,
        }
    guides = {
        g.patient: {k: getattr(g, k) for k in ("phase", "reps", "session_id", "error")}
        for g in service.guides.values()
    }
    return {"sessions": sessions, "guides": guides}


# Pixels of an overlay canvas that are not transparent, and where they lie (CSS px inside the
# canvas), with the picture's rectangle inside the <video> box for its object-fit.
INK_JS = """
(sel) => {
  const c = document.querySelector(sel);
  // no picture size yet (a video element whose metadata has not loaded): nothing to judge by
  if (!c || !c.width || !c.height || !c.previousElementSibling.videoWidth) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  for (let i = 3; i < d.length; i += 4) {
    if (d[i] === 0) continue;
    n++;
    const p = (i - 3) / 4, x = p % c.width, y = Math.floor(p / c.width);
    x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
  }
  const v = c.previousElementSibling, s = getComputedStyle(v), k = c.width / c.clientWidth;
  const cb = c.getBoundingClientRect(), vb = v.getBoundingClientRect();
  const fit = s.objectFit, sx = v.clientWidth / v.videoWidth, sy = v.clientHeight / v.videoHeight;
  const sc = fit === 'contain' ? Math.min(sx, sy) : fit === 'cover' ? Math.max(sx, sy) : null;
  const w = sc ? v.videoWidth * sc : v.clientWidth, h = sc ? v.videoHeight * sc : v.clientHeight;
  return {n, points: Number(c.dataset.points), box: [x0 / k, y0 / k, x1 / k, y1 / k],
          content: [(v.clientWidth - w) / 2, (v.clientHeight - h) / 2,
                    (v.clientWidth + w) / 2, (v.clientHeight + h) / 2],
          same_box: ['x', 'y', 'width', 'height'].every(q => Math.abs(cb[q] - vb[q]) < 1),
          transform: getComputedStyle(c).transform, video_transform: s.transform};
}
"""


async def skeleton_drawn(page: Any, selector: str, min_points: int = 8) -> dict[str, Any]:
    """Wait (bounded) until the overlay canvas has drawn a skeleton; check it lies over the
    picture: same box and transform (mirror) as its video, ink inside the object-fit rect."""
    # the measurement is the one that satisfied the wait (the overlay is cleared whenever the
    # model loses the person, so a second look may find it empty)
    handle = await page.wait_for_function(
        f"() => {{ const r = ({INK_JS})({selector!r});"
        f" return r && r.n > 500 && r.points >= {min_points} ? r : null; }}",
        timeout=WAIT_MS,
        polling=200,
    )
    ink = await handle.json_value()
    assert ink["same_box"] and ink["transform"] == ink["video_transform"], ink
    margin = 1  # drawing is clipped to the picture (not the letterbox)
    x0, y0, x1, y1 = ink["box"]
    cx0, cy0, cx1, cy1 = ink["content"]
    assert x0 >= cx0 - margin and y0 >= cy0 - margin, ink
    assert x1 <= cx1 + margin and y1 <= cy1 + margin, ink
    return ink


def overlay_pixels(png: Path, box: dict[str, float]) -> int:
    """Pixels of the overlay's bone and joint colours inside `box` of a screenshot."""
    import numpy as np
    from PIL import Image

    x, y = int(box["x"]), int(box["y"])
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    area = rgb[y : y + int(box["height"]), x : x + int(box["width"])]
    return sum(
        int((np.abs(area - np.array(colour)).max(axis=2) <= 40).sum())
        for colour in ((255, 214, 10), (0, 229, 255))  # skeleton.js BONE, JOINT
    )


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
        # the server's pose, drawn over the patient's own (mirrored, letterboxed) video ...
        mine = await skeleton_drawn(patient, "#rehab-skeleton")
        assert "matrix(-1" in mine["transform"], mine
        # a screenshot that shows a whole body drawn: the model loses the person at the bottom
        # of some squats, and the overlay is cleared then, so look at the picture itself
        video_box = await patient.locator("video.rehab-self").bounding_box()
        for _ in range(6):
            await skeleton_drawn(patient, "#rehab-skeleton", min_points=25)
            painted = overlay_pixels(await shot(patient, "23-rehab-skeleton"), video_box)
            if painted > 300:
                break
        assert painted > 300, "no screenshot showed the skeleton overlay"
        # ... and over the doctor's tile of the patient (object-fit: cover, not mirrored)
        theirs = await skeleton_drawn(doctor, "#rehab-skeleton-tile")
        assert theirs["transform"] == "none", theirs
        # the patient shrinks the exercise view: their mirrored self tile has it too
        await patient.click("#rehab-toggle")
        self_tile = await skeleton_drawn(patient, ".tile[data-key=self] canvas.skeleton")
        assert "matrix(-1" in self_tile["transform"], self_tile
        await patient.click("#rehab-toggle")
        # wait for the server to count a rep of the looping clip, then stop
        try:
            await observer.next("rehab:update", lambda u: u["rep"] >= 1, timeout=90)
        except TimeoutError as exc:
            raise AssertionError(f"no rep counted: {rehab_state(live.app)}") from exc
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
        # the report's chart: the set's joint angle over time, reps marked (uPlot canvas)
        chart = doctor.locator("#rehab-chart-1")
        await expect(chart.locator("canvas")).to_have_count(1, timeout=WAIT_MS)
        assert await chart.get_attribute("data-reps") == str(report["reps"])
        # the session is over: no skeleton any more
        await expect(patient.locator("canvas.skeleton")).to_have_count(0, timeout=WAIT_MS)
        await expect(doctor.locator("canvas.skeleton")).to_have_count(0, timeout=WAIT_MS)
        await shot(patient, "22-rehab-patient-done")
        spoken = await patient.evaluate("window.__tcLastSpoken")
        assert spoken and str(report["reps"]) in spoken["text"]
    finally:
        await observer.close()
    assert requests_seen.outside() == []
    assert doctor.js_errors == [] and patient.js_errors == []


async def test_patient_runs_a_prescribed_plan_alone(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    """A clinician prescribes a one-step plan from the form; the patient starts it and the
    server guides: countdown, the counted set (the clip's squats), done; then the clinician
    reads the progress table. Timers shortened through the service's GuideSettings."""
    if "rehab:plan_run" not in live.app[SIGNALING].handlers:
        pytest.skip("the rehab plan events are not wired into create_app")
    from rehab_vision.guide import GuideSettings
    from rehab_vision.service import REHAB

    live.app[REHAB].guide_settings = GuideSettings(
        countdown_s=3.0, tick_s=0.25, max_set_s=150, rest_scale=0.0
    )
    room = "r-plan"
    doctor = await new_page()
    patient = await new_page()
    await pass_device_check(
        doctor, f"{live.url}/join?token={live.tokens(room, 'dr-p', 'clinician', 'Dr P')}"
    )
    await doctor.click("#join-btn")
    await pass_device_check(
        patient, f"{live.url}/join?token={live.tokens(room, 'pat-g', 'patient', 'Wang')}"
    )
    await patient.click("#join-btn")
    entry = doctor.locator(".lobby-entry[data-identity=pat-g]")
    await entry.locator("[data-action=admit]").click(timeout=WAIT_MS)
    await wait_video_playing(doctor, ".tile[data-key='p:pat-g'] video")

    # the clinician prescribes: squats, 1 set of 2, with their own words
    await doctor.locator("#tab-rehab").click()
    await patient.locator("#tab-rehab").click()
    await expect(patient.locator("#rehab-plan-none")).to_be_visible(timeout=WAIT_MS)
    await doctor.select_option("#plan-patient", "pat-g")
    await doctor.fill("#plan-name", "Knee, week 1")
    step = doctor.locator(".plan-step").first
    await step.locator("select[name=exercise]").select_option("squat")
    await step.locator("input[name=sets]").fill("1")
    await step.locator("input[name=reps]").fill("2")
    await step.locator("input[name=rest]").fill("0")
    await step.locator("textarea[name=instructions]").fill("Hold the chair if you need to.")
    await shot(doctor, "24-plan-form")
    await doctor.click("#plan-prescribe")
    message = doctor.locator("#rehab-plan-message")
    await expect(message).to_contain_text("Plan saved", timeout=WAIT_MS)

    # the patient sees it and starts it alone
    start = patient.locator("#rehab-plan-start")
    await expect(start).to_be_visible(timeout=WAIT_MS)
    await expect(patient.locator("#rehab-plan-mine")).to_contain_text("Squat: 1 \u00d7 2")
    await start.click()
    await expect(patient.locator("#rehab-live")).to_be_visible(timeout=WAIT_MS)
    phase = patient.locator("#guide-phase")
    await expect(phase).to_have_attribute("data-phase", "countdown", timeout=WAIT_MS)
    await expect(patient.locator("#guide-timer")).to_be_visible()
    await expect(patient.locator("#guide-demo")).to_contain_text("Bend your knees")
    await expect(patient.locator("#rehab-guide")).to_contain_text("Hold the chair")
    await expect(patient.locator("#rehab-guide")).not_to_contain_text("null")
    await shot(patient, "25-plan-countdown")
    await expect(phase).to_have_attribute("data-phase", "exercise", timeout=WAIT_MS)
    await expect(patient.locator("#guide-set")).to_have_text("Set 1 of 1")
    # the server counts the clip's squats: the rep counter moves, then the plan is done
    try:
        await patient.wait_for_function(
            "() => Number((document.querySelector('#rehab-count') || {}).textContent) >= 1",
            timeout=90_000,
            polling=250,
        )
    except Exception as exc:
        await shot(patient, "26-plan-no-count")
        raise AssertionError(f"no rep counted: {rehab_state(live.app)}") from exc
    await shot(patient, "26-plan-exercise")
    await expect(phase).to_have_attribute("data-phase", "done", timeout=90_000)
    await expect(patient.locator("#rehab-count")).to_have_text("2")
    await expect(doctor.locator("#rehab-guide-status")).to_contain_text("All done", timeout=WAIT_MS)
    spoken = await patient.evaluate("window.__tcLastSpoken")
    assert spoken and "All done" in spoken["text"], spoken
    await shot(patient, "27-plan-done")
    assert await accessibility_violations(patient) == []

    # the clinician's progress table: today's session and the plan's adherence
    await expect(doctor.locator("#rehab-plan-run-for")).to_be_visible()
    await doctor.click("#rehab-progress-btn")
    days = doctor.locator("#rehab-progress-days")
    await expect(days).to_contain_text("1 / 1", timeout=WAIT_MS)
    await expect(days).to_contain_text("100 %")
    await expect(doctor.locator("#rehab-progress-sessions")).to_contain_text("Squat")
    await expect(doctor.locator("#rehab-progress-chart canvas")).to_have_count(1)
    await days.scroll_into_view_if_needed()
    await shot(doctor, "28-plan-progress")
    assert await accessibility_violations(doctor) == []
    # back to the call
    await patient.click("#rehab-toggle")
    await expect(patient.locator("#rehab-live")).to_have_count(0, timeout=WAIT_MS)
    assert requests_seen.outside() == []
    assert doctor.js_errors == [] and patient.js_errors == []
