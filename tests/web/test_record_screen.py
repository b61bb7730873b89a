# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)
"""After the consult, the doctor opens the consult record in the browser (Chinese UI): card,
vitals, documents, rehab and recordings, and downloads the FHIR record and a recording."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from recording.service import RECORDING
from tests.helpers import Client, wait_until
from tests.test_record_export import CARD, PATIENT_MRN, add_rehab
from tests.validators import check_fhir, ffprobe, probe_span
from tests.web.helpers import WAIT_MS, accessibility_violations, pass_device_check


def sink_frames(live: Any, room: str, key: tuple[str, str]) -> int:
    rec = live.app[RECORDING].active.get(room)
    entry = rec.sinks.get(key) if rec else None
    return entry[0].frames if entry else 0


async def test_doctor_opens_the_consult_record_after_the_consult(
    live: Any, new_page: Any, shot: Any, requests_seen: Any, tmp_path: Path
) -> None:
    from tests.annotation.conftest import CT_BYTES, upload

    room = "mdt-9"
    doctor = await new_page(lang="zh-CN")
    token = live.tokens(room, "dr-li", "host", "李医生")
    await pass_device_check(doctor, f"{live.url}/join?token={token}")
    await doctor.click("#join-btn")
    await expect(doctor.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)

    # a clinician admits the patient, who waited with a card; chat in Chinese
    clin = Client(live.url, live.tokens(room, "dr-zhou", "clinician", "周医生"))
    await clin.connect()
    await clin.call("join", {})
    patient_token = live.tokens(
        room, "p-17", "patient", "王芳", mrn=PATIENT_MRN[1], mrn_system=PATIENT_MRN[0]
    )
    patient = Client(live.url, patient_token)
    await patient.connect()
    try:
        await patient.call("join", {"card": CARD})
        assert (await clin.call("lobby:admit", {"identity": "p-17"}))["ok"]
        await patient.next("lobby:admitted")
        assert (await patient.call("chat:send", {"text": "严重吗？"}))["ok"]
        status, body = await upload(live, room, "dr-zhou", "clinician", CT_BYTES, "ct.dcm")
        assert status in (200, 201), body
        await add_rehab(live, room)

        # the doctor records their own camera and microphone from the browser, then ends
        await doctor.click("#btn-record")
        await wait_until(lambda: sink_frames(live, room, ("dr-li", "camera")) >= 20, 60)
        await wait_until(lambda: sink_frames(live, room, ("dr-li", "microphone")) >= 50, 60)
        await doctor.click("#btn-record")
        await clin.next("record:state", where=lambda s: not s.get("active"), timeout=30)
        await doctor.click("#btn-end")  # the confirm dialog is accepted
        await expect(doctor.locator("#screen-ended")).to_be_visible(timeout=WAIT_MS)
    finally:
        await patient.close()
        await clin.close()

    await doctor.click("#open-record")
    screen = doctor.locator("#screen-record")
    await expect(screen.locator("h1")).to_have_text("问诊记录", timeout=WAIT_MS)
    await expect(doctor.locator("#record-patient")).to_contain_text("王芳", timeout=WAIT_MS)
    await expect(doctor.locator("#record-patient")).to_contain_text(PATIENT_MRN[1])
    card = doctor.locator("#record-card")
    await expect(card).to_contain_text("胸闷气短三天")
    await expect(card).to_contain_text("青霉素")
    await expect(card).to_contain_text("阿司匹林 100mg")
    vitals = doctor.locator("#record-vitals")
    await expect(vitals).to_contain_text("体温")
    await expect(vitals).to_contain_text("37.6")
    await expect(vitals).to_contain_text("135/85")
    await expect(doctor.locator("#record-documents")).to_contain_text("ct.dcm")
    rehab = doctor.locator("#record-rehab")
    await expect(rehab).to_contain_text("膝关节术后第一周")
    await expect(rehab).to_contain_text("计划完成率 50")
    await expect(rehab).to_contain_text("深蹲")
    await expect(doctor.locator("#record-recordings li")).to_have_count(2)
    await expect(doctor.locator("#record-recordings")).to_contain_text("李医生 camera")
    await expect(doctor.locator("#record-chat")).to_contain_text("严重吗？")
    await shot(doctor, "30-consult-record")
    assert await accessibility_violations(doctor) == [], "30-consult-record"

    # the FHIR download is the record itself: valid for the R4 schema and fhir.resources
    async with doctor.expect_download() as info:
        await doctor.click("#record-download")
    download = await info.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    bundle = json.loads(saved.read_text(encoding="utf-8"))
    check_fhir(bundle)
    assert bundle["type"] == "collection" and download.suggested_filename.endswith(".fhir.json")

    # a recording downloads through its DocumentReference URL, and ffprobe reads it
    async with doctor.expect_download() as info:
        await doctor.click("#recording-download-0")
    download = await info.value
    video = tmp_path / download.suggested_filename
    await download.save_as(video)
    probe = ffprobe(video)
    assert 0 < probe_span(probe) < 60, probe["format"]

    assert doctor.js_errors == []  # type: ignore[attr-defined]
    assert requests_seen.outside() == []
