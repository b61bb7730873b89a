"""The on-duty dashboard in Chromium: a triaged queue, sound + title + desktop notification
when a patient arrives, and "take next" opening the consult with that patient."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import aiohttp
from playwright.async_api import expect

from clinic.devices import add_device
from rtc_server.keys import RECORDS
from tests.helpers import Client
from tests.web.helpers import WAIT_MS, accessibility_violations

# record desktop notifications (then show them as the real API would)
CAPTURE_NOTIFICATIONS = """(() => {
  const Real = window.Notification;
  window.__notes = [];
  class Recorded extends Real {
    constructor(title, opts) {
      super(title, opts);
      window.__notes.push({title, body: opts && opts.body});
    }
  }
  Object.defineProperty(Recorded, 'permission', {get: () => Real.permission});
  Recorded.requestPermission = (...a) => Real.requestPermission(...a);
  window.Notification = Recorded;
})()"""

OBSERVATION = {
    "resourceType": "Observation",
    "id": "hr-77",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    "valueQuantity": {"value": 135, "system": "http://unitsofmeasure.org", "code": "/min"},
}

RED_FLAG = {
    "resourceType": "QuestionnaireResponse",
    "questionnaire": "Questionnaire/symptom-tree",
    "item": [
        {"linkId": "complaint", "answer": [{"valueCoding": {"code": "chest-pain"}}]},
        {
            "linkId": "chest",
            "item": [
                {"linkId": "chest.red-flags", "answer": [{"valueCoding": {"code": "sweating"}}]}
            ],
        },
    ],
}


async def admin_post(live: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    key = live.settings.admin_api_key.get_secret_value()
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as res,
    ):
        assert res.status == 201, await res.text()
        return await res.json()


async def test_dashboard_announces_patients_and_takes_next(
    live: Any, browser: Any, shot: Any, requests_seen: Any
) -> None:
    duty = await admin_post(
        live,
        "/api/clinic/duty-tokens",
        {
            "identity": "dr-chen",
            "name": "陈医生",
            "level": "attending",
            "departments": ["cardiology"],
        },
    )
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="en")
    await context.grant_permissions(["notifications", "camera", "microphone"], origin=live.url)
    context.on("request", requests_seen.record)
    await context.add_init_script(CAPTURE_NOTIFICATIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    patients: list[Client] = []
    try:
        await page.goto(f"{live.url}/dashboard?token={duty['token']}")
        await expect(page.locator("#dash-status")).to_have_text("Up to date.", timeout=WAIT_MS)
        await expect(page.locator("#dash-me")).to_contain_text("attending")
        await expect(page).to_have_title("(0) On duty")
        assert await page.evaluate("Notification.permission") == "granted"

        # a routine patient, then an emergency: the queue orders by risk, each arrival announced
        for identity, card in (
            ("pat-wu", {"chief_complaint": "cough"}),
            ("pat-he", {"chief_complaint": "胸痛", "questionnaire_response": RED_FLAG}),
        ):
            visit = await admin_post(
                live,
                "/api/clinic/visits",
                {"department": "cardiology", "identity": identity, "name": identity.upper()},
            )
            client = Client(live.url, parse_qs(urlparse(visit["url"]).query)["token"][0])
            patients.append(client)
            await client.connect()
            assert (await client.call("join", {"card": card}))["status"] == "waiting"
            await expect(page.locator(f".dash-entry[data-identity={identity}]")).to_be_visible(
                timeout=WAIT_MS
            )
        entries = page.locator(".dash-entry")
        await expect(entries).to_have_count(2)
        await expect(entries.nth(0)).to_have_attribute("data-identity", "pat-he")
        await expect(entries.nth(0)).to_contain_text("emergency")
        await expect(entries.nth(0)).to_contain_text("chest pain with a red flag")
        await expect(entries.nth(1)).to_have_attribute("data-identity", "pat-wu")
        await expect(page).to_have_title("● (2) On duty")
        # the triage reasons follow the page's language (and back)
        await page.click("#lang-switch")
        await expect(entries.nth(0).locator(".reasons")).to_have_text("胸痛伴危险信号\uff1b胸痛")
        await page.click("#lang-switch")
        reasons = entries.nth(0).locator(".reasons")
        await expect(reasons).to_contain_text("chest pain with a red flag")
        notes = await page.evaluate("window.__notes")
        assert [n["title"] for n in notes] == ["1 new patient(s) waiting"] * 2
        assert "PAT-HE" in notes[1]["body"]
        assert await page.evaluate("window.__tcDash.events.beeps") == 2
        await shot(page, "45-dashboard-queue")
        assert await accessibility_violations(page) == [], "45-dashboard-queue"

        # take next: the emergency first, in a new tab; joining admits the patient
        async with context.expect_page() as opened:
            await page.click("#take-next")
        consult = await opened.value
        await expect(page.locator("#take-result")).to_contain_text("PAT-HE")
        await expect(consult.locator("#join-btn")).to_be_enabled(timeout=WAIT_MS)
        await consult.click("#join-btn")
        await expect(consult.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
        admitted = await patients[1].next("lobby:admitted")
        assert admitted["by"] == "dr-chen"
        await expect(page.locator(".dash-entry")).to_have_count(1, timeout=WAIT_MS)
        await expect(page.locator("#dash-today li")).to_contain_text("PAT-HE", timeout=WAIT_MS)

        # a home device's reading crosses a threshold: alert announced, "start consult"
        _device, key = await add_device(live.app[RECORDS], "pat-gao", "cardiology", "cuff-1")
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{live.url}/api/observations",
                json=OBSERVATION,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/fhir+json"},
            ) as res,
        ):
            assert res.status == 201, await res.text()
        alert = page.locator(".dash-alert[data-identity=pat-gao]")
        await expect(alert).to_contain_text("Heart rate: 135 /min", timeout=WAIT_MS)
        await expect(alert).to_contain_text("above 120")
        await page.wait_for_function("window.__notes.length === 3", timeout=WAIT_MS)
        assert (await page.evaluate("window.__notes"))[2]["title"] == "1 new device alert(s)"
        await expect(page).to_have_title("● (1 · 1!) On duty")
        await shot(page, "47-dashboard-alert")
        async with context.expect_page() as opened_alert:
            await alert.locator(".start-consult").click()
        alert_consult = await opened_alert.value
        await expect(page.locator("#patient-link")).to_have_value(re.compile("/join\\?token="))
        await expect(alert_consult.locator("#screen-check")).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator(".dash-alert")).to_have_count(0, timeout=WAIT_MS)

        # the dashboard in Chinese
        await page.click("#lang-switch")
        await expect(page.locator("#take-next")).to_have_text("接诊下一位")
        await expect(page.locator(".dash-entry .risk-badge").first).to_have_text("普通")
        await shot(page, "46-dashboard-zh")
        assert errors == []
        assert requests_seen.outside() == []
    finally:
        for client in patients:
            await client.close()
        await context.close()
