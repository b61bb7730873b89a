"""Waiting room in the browser: doctor presence and positions, the symptom tree (en, zh-CN,
elderly mode) whose answers reach the doctor as a FHIR QuestionnaireResponse."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.helpers import Client
from tests.web.helpers import WAIT_MS, accessibility_violations, pass_device_check


async def test_waiting_patient_sees_position_and_doctor_arrive(
    live: Any, new_page: Any, shot: Any, requests_seen: Any
) -> None:
    """Position moves up when the patient ahead leaves; 'doctor is here' once the host joins,
    'not arrived' again when the host leaves (lobby:position carries admitters_present)."""
    ahead = Client(live.url, live.tokens("r-wait", "pat-ahead", "patient", "Zhao"))
    await ahead.connect()
    host: Client | None = None
    try:
        assert (await ahead.call("join", {}))["position"] == 1
        page = await new_page()
        await pass_device_check(
            page, f"{live.url}/join?token={live.tokens('r-wait', 'pat-2', 'patient', 'Sun')}"
        )
        await page.click("#join-btn")
        await expect(page.locator("#queue-position")).to_have_text(
            "You are number 2 in the queue", timeout=WAIT_MS
        )
        await page.click("#elderly-switch")  # spoken prompts are an elderly-mode feature
        presence = page.locator("#doctor-presence")
        await expect(presence).to_have_attribute("data-present", "false")
        await expect(presence).to_contain_text("has not arrived")

        host = Client(live.url, live.tokens("r-wait", "dr-li", "host", "Dr Li"))
        await host.connect()
        assert (await host.call("join", {}))["status"] == "joined"
        await expect(presence).to_have_attribute("data-present", "true", timeout=WAIT_MS)
        await expect(presence).to_contain_text("The doctor is here")
        spoken = await page.evaluate("window.__tcLastSpoken")
        assert spoken and "doctor is here" in spoken["text"]
        await shot(page, "40-waiting-doctor-present")

        await ahead.call("leave", {})
        await expect(page.locator("#queue-position")).to_have_text(
            "You are number 1 in the queue", timeout=WAIT_MS
        )
        await host.call("leave", {})
        await expect(presence).to_have_attribute("data-present", "false", timeout=WAIT_MS)
        assert page.js_errors == []
        assert requests_seen.outside() == []
    finally:
        await ahead.close()
        if host is not None:
            await host.close()


async def test_symptom_tree_branches_and_reaches_the_doctor(
    live: Any, new_page: Any, shot: Any
) -> None:
    """Chest pain opens its branch (character, course; duration only when continuous; red
    flags); answers go with the card as a QuestionnaireResponse; zh-CN and elderly mode."""
    host = Client(live.url, live.tokens("r-sym", "dr-zhou", "host", "Dr Zhou"))
    await host.connect()
    try:
        await host.call("join", {})
        page = await new_page()
        await pass_device_check(
            page, f"{live.url}/join?token={live.tokens('r-sym', 'pat-s', 'patient', 'Liu')}"
        )
        await page.click("#join-btn")
        tree = page.locator("#symptom-tree")
        chest = tree.locator('[data-link-id="chest"]')
        await expect(tree.locator('[data-link-id="complaint"]')).to_contain_text(
            "What troubles you most?", timeout=WAIT_MS
        )
        await expect(chest).to_be_hidden()
        await tree.get_by_label("Chest pain").check()
        await expect(chest).to_be_visible()
        await expect(tree.locator('[data-link-id="headache"]')).to_be_hidden()
        duration = tree.locator('[data-link-id="chest.duration"]')
        await tree.get_by_label("Pressing or squeezing").check()
        await tree.get_by_label("Continuous").check()
        await expect(duration).to_be_visible()
        await tree.get_by_label("Comes and goes").check()
        await expect(duration).to_be_hidden()
        await tree.get_by_label("Cold sweat").check()
        await tree.get_by_label("Short of breath").check()
        await tree.locator('input[name="sym-pain"]').fill("7")
        assert await accessibility_violations(page) == [], "41-symptom-tree"
        await shot(page, "41-symptom-tree-en")

        # zh-CN and elderly mode: the same tree in Chinese, answers kept
        await page.click("#lang-switch")
        await page.click("#elderly-switch")
        await expect(tree.locator('[data-link-id="complaint"] legend')).to_have_text(
            "您最主要的不适是什么？"  # noqa: RUF001
        )
        await expect(tree.get_by_label("胸痛")).to_be_checked()
        await expect(tree.get_by_label("出冷汗")).to_be_checked()
        await shot(page, "42-symptom-tree-zh-elderly")
        assert await accessibility_violations(page) == [], "42-symptom-tree-zh-elderly"

        # sent with an empty complaint: the first answer becomes the chief complaint
        await page.click("#card-send")
        await expect(page.locator("#card-result")).to_have_class("form-result ok", timeout=WAIT_MS)
        queue = await host.next(
            "lobby:queue", where=lambda q: q["entries"] and q["entries"][0]["card"]
        )
        card = queue["entries"][0]["card"]
        assert card["chief_complaint"] == "胸痛"
        qr = card["questionnaire_response"]
        assert qr["resourceType"] == "QuestionnaireResponse" and qr["language"] == "zh-CN"
        by_link = {}

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                by_link[item["linkId"]] = item
                walk(item.get("item", []))

        walk(qr["item"])
        assert by_link["complaint"]["answer"][0]["valueCoding"]["code"] == "chest-pain"
        assert by_link["chest.course"]["answer"][0]["valueCoding"]["code"] == "episodic"
        assert "chest.duration" not in by_link  # its branch closed again
        flags = {a["valueCoding"]["code"] for a in by_link["chest.red-flags"]["answer"]}
        assert flags == {"sweating", "breathless"}
        assert by_link["pain"]["answer"] == [{"valueInteger": 7}]
        assert by_link["chest.character"]["text"] == "疼痛是什么感觉？"  # noqa: RUF001
        assert page.js_errors == []
    finally:
        await host.close()
