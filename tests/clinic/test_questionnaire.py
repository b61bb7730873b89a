"""The symptom-tree Questionnaire as data, and QuestionnaireResponse checks on the card."""

from __future__ import annotations

from typing import Any

import aiohttp

from clinic.questionnaire import load

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"


def coding(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": "urn:teleconsult:symptom", "code": code}}


def response(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "urn:teleconsult:questionnaire:symptom-tree",
        "status": "completed",
        "item": list(items),
    }


CHEST = response(
    {"linkId": "complaint", "answer": [coding("chest-pain")]},
    {
        "linkId": "chest",
        "item": [
            {"linkId": "chest.course", "answer": [coding("continuous")]},
            {"linkId": "chest.duration", "answer": [coding("gt20m")]},
        ],
    },
)


def zh(element: dict[str, Any] | None) -> str | None:
    for ext in (element or {}).get("extension", []):
        parts = {e["url"]: e.get("valueCode") or e.get("valueString") for e in ext["extension"]}
        if ext["url"] == TRANSLATION and parts["lang"] == "zh-CN":
            return parts["content"]
    return None


def test_every_question_and_option_has_chinese() -> None:
    q = load("symptom-tree")
    assert q.resource["resourceType"] == "Questionnaire"
    for item in q.items.values():
        assert zh(item.get("_text")), item["linkId"]
        for option in item.get("answerOption", []):
            assert zh(option["valueCoding"].get("_display")), option["valueCoding"]["code"]


async def test_questionnaire_route(live: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{live.url}/api/questionnaires/symptom-tree") as res:
            assert res.status == 200
            assert res.content_type == "application/fhir+json"
            assert (await res.json())["id"] == "symptom-tree"
        async with http.get(f"{live.url}/api/questionnaires/..%2Fsecret") as res:
            assert res.status == 404
            assert (await res.json())["error"]["code"] == "not_found"


async def test_card_carries_a_checked_response(connect: Any) -> None:
    host = await connect("r", "dr", "host")
    patient = await connect("r", "pat", "patient", join=False)
    card = {"chief_complaint": "胸痛", "questionnaire_response": CHEST}
    ack = await patient.call("join", {"card": card})
    assert ack["status"] == "waiting"
    queue = await host.next("lobby:queue", where=lambda q: q["entries"])
    stored = queue["entries"][0]["card"]["questionnaire_response"]
    assert stored["item"][1]["item"][1] == {"linkId": "chest.duration", "answer": [coding("gt20m")]}


async def test_bad_responses_are_refused_with_the_reason(connect: Any) -> None:
    patient = await connect("r", "pat", "patient", join=False)
    closed_branch = response(
        {"linkId": "complaint", "answer": [coding("headache")]},
        {"linkId": "chest", "item": [{"linkId": "chest.course", "answer": [coding("episodic")]}]},
    )
    not_an_option = response({"linkId": "complaint", "answer": [coding("toothache")]})
    out_of_range = response({"linkId": "pain", "answer": [{"valueInteger": 11}]})
    unknown_item = response({"linkId": "nope", "answer": [{"valueBoolean": True}]})
    wrong_type = response(
        {"linkId": "complaint", "answer": [coding("headache")]},
        {"linkId": "headache.sudden", "answer": [{"valueInteger": 1}]},
    )
    unknown_q = {**CHEST, "questionnaire": "Questionnaire/other"}
    cases = {
        "chest.course: answered, but its branch is not enabled": closed_branch,
        "complaint: 'toothache' is not one of the options": not_an_option,
        "pain: 11 is above 10": out_of_range,
        "nope: not a question": unknown_item,
        "headache.sudden: a boolean item takes one valueBoolean": wrong_type,
        "unknown 'Questionnaire/other'": unknown_q,
    }
    for reason, qr in cases.items():
        ack = await patient.call(
            "join", {"card": {"chief_complaint": "x", "questionnaire_response": qr}}
        )
        assert ack["error"]["code"] == "invalid_payload", reason
        assert reason in ack["error"]["message"], ack["error"]["message"]
