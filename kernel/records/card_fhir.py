"""The pre-consult card as FHIR R4: QuestionnaireResponses and vital-sign Observations.

The card's own fields are one QuestionnaireResponse; the patient's answers to a questionnaire
(the symptom tree, checked against it when the card was sent) are another, as answered.

Vitals follow the FHIR vital-signs profile: category `vital-signs`, the LOINC code of each sign
and UCUM units (body temperature 8310-5 Cel, heart rate 8867-4 /min, blood pressure panel
85354-9 with systolic 8480-6 and diastolic 8462-4 mm[Hg], oxygen saturation 59408-5 with 2708-6
%, respiratory rate 9279-1 /min, body weight 29463-7 kg). Blood glucose (15074-8 mmol/L) is a
`laboratory` Observation. All are patient-reported (performer: the patient).
"""

from __future__ import annotations

import datetime
from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
QUESTIONNAIRE = "urn:teleconsult:questionnaire:pre-consult-card"

# vitals field -> (LOINC codes [(code, display)], unit shown, UCUM code, category)
VITALS: dict[str, tuple[list[tuple[str, str]], str, str, str]] = {
    "temperature_c": ([("8310-5", "Body temperature")], "°C", "Cel", "vital-signs"),
    "heart_rate": ([("8867-4", "Heart rate")], "beats/minute", "/min", "vital-signs"),
    "spo2": (
        [
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
            ("2708-6", "Oxygen saturation in Arterial blood"),
        ],
        "%",
        "%",
        "vital-signs",
    ),
    "respiratory_rate": ([("9279-1", "Respiratory rate")], "breaths/minute", "/min", "vital-signs"),
    "weight_kg": ([("29463-7", "Body weight")], "kg", "kg", "vital-signs"),
    "glucose_mmol_l": (
        [("15074-8", "Glucose [Moles/volume] in Blood")],
        "mmol/L",
        "mmol/L",
        "laboratory",
    ),
}
BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
BP_PARTS = {
    "systolic_bp": ("8480-6", "Systolic blood pressure"),
    "diastolic_bp": ("8462-4", "Diastolic blood pressure"),
}


def _quantity(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _category(code: str) -> list[dict[str, Any]]:
    display = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}[code]
    return [{"coding": [{"system": OBS_CATEGORY, "code": code, "display": display}]}]


def _codeable(codes: list[tuple[str, str]], text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": LOINC, "code": c, "display": d} for c, d in codes]}
    if text:
        out["text"] = text
    return out


def effective_time(measured_at: str | None, fallback: str | None) -> str | None:
    """The card's `measured_at` if it is a date-time with a zone, else the fallback instant."""
    if measured_at:
        try:
            parsed = datetime.datetime.fromisoformat(measured_at)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.isoformat()
    return fallback


def vital_observations(
    vitals: dict[str, Any],
    *,
    ids: Any,
    subject: dict[str, Any],
    encounter_url: str,
    effective: str | None,
    note: str | None = None,
) -> list[dict[str, Any]]:
    """One Observation per reported vital sign (blood pressure: one panel, two components).

    ``ids(name)`` gives each Observation its stable id.
    """
    base: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "subject": subject,
        "encounter": {"reference": encounter_url},
        "performer": [subject],
    }
    if effective:
        base["effectiveDateTime"] = effective
    if note:
        base["note"] = [{"text": note}]
    out: list[dict[str, Any]] = []
    parts = [
        {
            "code": _codeable([BP_PARTS[name]]),
            "valueQuantity": _quantity(vitals[name], "mmHg", "mm[Hg]"),
        }
        for name in ("systolic_bp", "diastolic_bp")
        if vitals.get(name) is not None
    ]
    if parts:
        out.append(
            {
                **base,
                "id": ids("blood-pressure"),
                "category": _category("vital-signs"),
                "code": _codeable([BP_PANEL], "Blood pressure"),
                "component": parts,
            }
        )
    for name, (codes, unit, ucum, category) in VITALS.items():
        value = vitals.get(name)
        if value is None:
            continue
        out.append(
            {
                **base,
                "id": ids(name),
                "category": _category(category),
                "code": _codeable(codes),
                "valueQuantity": _quantity(value, unit, ucum),
            }
        )
    return out


def _item(link: str, text: str, answers: list[dict[str, Any]]) -> dict[str, Any] | None:
    return {"linkId": link, "text": text, "answer": answers} if answers else None


ANSWER_KEYS = frozenset(("valueBoolean", "valueDecimal", "valueInteger", "valueString"))
CODING_KEYS = ("system", "version", "code", "display")


def _answered_items(items: Any) -> list[dict[str, Any]]:
    """Items of a response as FHIR allows them (linkId, text, answer, item), nothing else."""
    out: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("linkId"), str):
            continue
        kept: dict[str, Any] = {"linkId": item["linkId"]}
        if isinstance(item.get("text"), str):
            kept["text"] = item["text"]
        answers = []
        for answer in item.get("answer") or []:
            if isinstance(answer, dict):
                a = {k: v for k, v in answer.items() if k in ANSWER_KEYS}
                if isinstance(answer.get("valueCoding"), dict):
                    coding = answer["valueCoding"]
                    a["valueCoding"] = {k: coding[k] for k in CODING_KEYS if k in coding}
                if "item" in answer:
                    a["item"] = _answered_items(answer["item"])
                if a:
                    answers.append(a)
        if answers:
            kept["answer"] = answers
        children = _answered_items(item.get("item"))
        if children:
            kept["item"] = children
        if "answer" in kept or "item" in kept:
            out.append(kept)
    return out


def _response(
    questionnaire: str,
    items: list[dict[str, Any]],
    rid: str,
    subject: dict[str, Any],
    encounter_url: str,
    authored: str | None,
) -> dict[str, Any]:
    """A completed QuestionnaireResponse the patient gave, in the consult's Encounter."""
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": questionnaire,
        "status": "completed",
        "subject": subject,
        "encounter": {"reference": encounter_url},
        "author": subject,
        "source": subject,
        "item": items,
    }
    if authored:
        response["authored"] = authored
    return response


def answered_questionnaire(
    response: dict[str, Any],
    *,
    rid: str,
    subject: dict[str, Any],
    encounter_url: str,
    authored: str | None,
) -> dict[str, Any] | None:
    """The patient's answers to a questionnaire (the symptom tree's branches) for the record,
    tied to the patient and the consult; None when nothing was answered."""
    items = _answered_items(response.get("item"))
    questionnaire = response.get("questionnaire")
    if not items or not isinstance(questionnaire, str):
        return None
    return _response(questionnaire, items, rid, subject, encounter_url, authored)


def questionnaire_response(
    card: dict[str, Any],
    *,
    rid: str,
    subject: dict[str, Any],
    encounter_url: str,
    authored: str | None,
) -> dict[str, Any]:
    """The whole card (complaint, symptoms, medication, allergies, vitals, notes)."""
    items: list[dict[str, Any] | None] = [
        _item(
            "chief-complaint",
            "Chief complaint",
            [{"valueString": card["chief_complaint"]}] if card.get("chief_complaint") else [],
        ),
    ]
    symptoms = [
        {
            "linkId": f"symptom-{i + 1}",
            "text": s["question"],
            **({"answer": [{"valueString": s["answer"]}]} if s.get("answer") else {}),
        }
        for i, s in enumerate(card.get("symptoms") or [])
    ]
    if symptoms:
        items.append({"linkId": "symptoms", "text": "Symptoms", "item": symptoms})
    items.append(
        _item(
            "medications",
            "Current medication",
            [{"valueString": m} for m in card.get("medications") or []],
        )
    )
    items.append(
        _item("allergies", "Allergies", [{"valueString": a} for a in card.get("allergies") or []])
    )
    vitals = card.get("vitals") or {}
    vital_items = []
    if vitals.get("systolic_bp") is not None:
        vital_items.append(("systolic_bp", "Systolic blood pressure", "mmHg", "mm[Hg]"))
    if vitals.get("diastolic_bp") is not None:
        vital_items.append(("diastolic_bp", "Diastolic blood pressure", "mmHg", "mm[Hg]"))
    for name, (codes, unit, ucum, _cat) in VITALS.items():
        if vitals.get(name) is not None:
            vital_items.append((name, codes[0][1], unit, ucum))
    vital_group = [
        {
            "linkId": f"vitals.{name}",
            "text": text,
            "answer": [{"valueQuantity": _quantity(vitals[name], unit, ucum)}],
        }
        for name, text, unit, ucum in vital_items
    ]
    if vitals.get("measured_at"):
        vital_group.append(
            {
                "linkId": "vitals.measured_at",
                "text": "Measured at",
                "answer": [{"valueString": str(vitals["measured_at"])}],
            }
        )
    if vital_group:
        items.append({"linkId": "vitals", "text": "Vital signs", "item": vital_group})
    items.append(
        _item("notes", "Notes", [{"valueString": card["notes"]}] if card.get("notes") else [])
    )
    kept = [i for i in items if i]
    return _response(QUESTIONNAIRE, kept, rid, subject, encounter_url, authored)
