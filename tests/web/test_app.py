"""End-to-end: real Chromium pages against a live server (fake camera and microphone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.web.helpers import (
    WAIT_MS,
    accessibility_violations,
    pass_device_check,
    wait_video_playing,
)


def ct_series(folder: Path, slices: int = 3) -> list[str]:
    """A small CT series built from pydicom's bundled CT_small.dcm (128x128, PixelSpacing
    0.661468 mm): same series, one slice per file, 5 mm apart. Nothing is downloaded."""
    import numpy as np
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    paths = []
    for i in range(slices):
        ds = dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        pixels = ds.pixel_array.astype(np.int16)
        ds.PixelData = np.roll(pixels, 10 * i, axis=1).tobytes()  # slices differ
        path = folder / f"ct-{i + 1}.dcm"
        ds.save_as(path)
        paths.append(str(path))
    return paths


async def test_consult_flow(
    live: Any, new_page: Any, shot: Any, requests_seen: Any, tmp_path: Path
) -> None:
    """Patient waits with a card, doctor admits; video both ways; chat; annotation; mute; end."""
    room = "consult-1"
    a11y: dict[str, list[str]] = {}
    doctor = await new_page()
    patient = await new_page()
    doctor_url = f"{live.url}/join?token={live.tokens(room, 'dr-wang', 'host', 'Dr Wang')}"
    patient_url = f"{live.url}/join?token={live.tokens(room, 'pat-li', 'patient', 'Li Na')}"

    # patient: device check, then the waiting room with a pre-consult card
    await pass_device_check(patient, patient_url)
    await shot(patient, "01-device-check")
    a11y["01-device-check"] = await accessibility_violations(patient)
    await patient.click("#join-btn")
    await expect(patient.locator("#screen-waiting")).to_be_visible(timeout=WAIT_MS)
    await expect(patient.locator("#queue-position")).to_contain_text("1", timeout=WAIT_MS)
    await patient.fill("textarea[name=chief_complaint]", "Knee pain after surgery")
    await patient.fill("input[name=pain]", "6")
    await patient.fill("textarea[name=medications]", "paracetamol 500 mg")
    await patient.fill("input[name=systolic_bp]", "130")
    await patient.fill("input[name=diastolic_bp]", "85")
    await patient.click("#card-send")
    await expect(patient.locator("#card-result")).to_have_class("form-result ok", timeout=WAIT_MS)
    await expect(patient.locator(".edu-item").first).to_be_visible(timeout=WAIT_MS)
    await shot(patient, "02-waiting-room")
    a11y["02-waiting-room"] = await accessibility_violations(patient)

    # doctor: joins directly and sees the patient's card in the lobby
    await pass_device_check(doctor, doctor_url)
    await doctor.click("#join-btn")
    await expect(doctor.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    entry = doctor.locator(".lobby-entry[data-identity=pat-li]")
    await expect(entry).to_contain_text("Knee pain after surgery", timeout=WAIT_MS)
    await expect(entry).to_contain_text("BP 130/85")
    await shot(doctor, "03-doctor-lobby")
    a11y["03-doctor-lobby"] = await accessibility_violations(doctor)
    await entry.locator("[data-action=admit]").click()

    # patient is in the call; each side shows the other's video playing
    await expect(patient.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    await wait_video_playing(doctor, ".tile[data-key='p:pat-li'] video")
    await wait_video_playing(patient, ".tile[data-key='p:dr-wang'] video")

    # each camera also publishes a small layer; a subscriber switched to it still plays
    stats = await patient.evaluate("() => window.__tc.session.call('rtc:stats', {})")
    assert {"camera", "camera_low", "microphone"} <= set(stats["stats"]["publications"])
    tile = ".tile[data-key='p:pat-li'] video"
    layer = await doctor.evaluate(
        "() => window.__tc.session.call('rtc:layer', {publisher: 'pat-li', layer: 'low'})"
    )
    assert layer["layer"] == "low"
    await doctor.wait_for_function(
        "(sel) => { const v = document.querySelector(sel); return v && v.videoWidth === 320; }",
        arg=tile,
        timeout=WAIT_MS,
    )
    await doctor.evaluate("() => { delete window.__frames; }")
    await wait_video_playing(doctor, tile)
    await doctor.evaluate(
        "() => window.__tc.session.call('rtc:layer', {publisher: 'pat-li', layer: null})"
    )

    # chat with a reply
    await patient.locator("#tab-chat").click()
    await patient.fill("#chat-input", "Hello doctor")
    await patient.click("#chat-send")
    await doctor.locator("#tab-chat").click()
    msg = doctor.locator(".chat-msg", has_text="Hello doctor")
    await expect(msg).to_be_visible(timeout=WAIT_MS)
    await msg.locator("button.reply").click()
    await doctor.fill("#chat-input", "Hello Li Na, how is the knee?")
    await doctor.press("#chat-input", "Enter")
    reply = patient.locator(".chat-msg", has_text="how is the knee")
    await expect(reply.locator(".quote")).to_contain_text("Hello doctor", timeout=WAIT_MS)
    await shot(patient, "04-patient-call-chat")
    a11y["04-patient-call-chat"] = await accessibility_violations(patient)

    # host mute reaches the patient's browser
    await doctor.locator("#tab-people").click()
    await doctor.locator(".participant[data-identity=pat-li] [data-action=mute]").click()
    await expect(patient.locator("#btn-mute")).to_have_attribute(
        "aria-pressed", "true", timeout=WAIT_MS
    )
    await expect(patient.locator("#call-notice")).to_contain_text("Dr Wang", timeout=WAIT_MS)

    # a shared CT series: the doctor uploads, presents, scrolls and draws; the patient follows
    # (slice and window) and sees the mark with its length in mm
    await doctor.locator("#tab-documents").click()
    await doctor.set_input_files("#doc-upload", files=ct_series(tmp_path))
    await expect(doctor.locator("#doc-viewer")).to_be_visible(timeout=WAIT_MS)
    await patient.locator("#tab-documents").click()
    await patient.locator("#doc-list li[data-doc] button").first.click()
    await expect(patient.locator("#doc-viewer")).to_be_visible(timeout=WAIT_MS)
    await doctor.check("#present-box")
    await doctor.select_option("#preset-select", "bone")
    await expect(patient.locator("#preset-select")).to_have_value("bone", timeout=WAIT_MS)
    await doctor.focus("#doc-canvas")
    await doctor.keyboard.press("ArrowDown")
    await expect(doctor.locator("#frame-label")).to_have_text("Slice 2 / 3")
    await expect(patient.locator("#frame-label")).to_have_text("Slice 2 / 3", timeout=WAIT_MS)
    await doctor.locator("[data-tool=length]").click()
    canvas = doctor.locator("#doc-canvas")
    box = await canvas.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5
    await doctor.mouse.move(x0, y0)
    await doctor.mouse.down()
    await doctor.mouse.move(x0 + box["width"] * 0.3, y0, steps=5)
    await doctor.mouse.up()
    mark = patient.locator("#mark-list li[data-tool=length]")
    await expect(mark).to_have_count(1, timeout=WAIT_MS)
    await expect(mark.locator(".measurement")).to_contain_text("mm", timeout=WAIT_MS)
    await expect(mark).to_have_attribute("data-author", "dr-wang")
    await expect(mark).to_have_attribute("data-frame", "1")
    # the doctor's pointer is shown to the patient (awareness), by name
    await doctor.mouse.move(x0 + 10, y0 + 10)
    await expect(patient.locator("#doc-canvas")).to_have_attribute(
        "data-cursors", "Dr Wang", timeout=WAIT_MS
    )
    await shot(doctor, "05-doctor-mdt")
    a11y["05-doctor-mdt"] = await accessibility_violations(doctor)
    await shot(patient, "06-patient-mdt")
    await expect(doctor.locator("#saved-state")).to_have_attribute("data-state", "saved")
    async with doctor.expect_download(timeout=WAIT_MS) as download:
        await doctor.click("#export-png")
    assert (await download.value).suggested_filename.endswith(".png")
    async with doctor.expect_download(timeout=WAIT_MS) as download:
        await doctor.click("#export-gsps")
    gsps = tmp_path / "export-gsps.dcm"
    await (await download.value).save_as(gsps)
    assert gsps.stat().st_size > 132  # a DICOM Part 10 file: preamble, then "DICM"
    with gsps.open("rb") as fh:
        assert fh.read(132)[128:] == b"DICM"
    await doctor.click("#undo-mark")
    await expect(mark).to_have_count(0, timeout=WAIT_MS)

    # the host ends the consult: the patient's page says so
    await doctor.click("#btn-end")
    await expect(patient.locator("#screen-ended")).to_be_visible(timeout=WAIT_MS)
    await shot(patient, "07-ended")
    a11y["07-ended"] = await accessibility_violations(patient)

    assert {k: v for k, v in a11y.items() if v} == {}
    assert requests_seen.urls, "no requests recorded"
    assert requests_seen.outside() == []
    assert doctor.js_errors == [] and patient.js_errors == []
