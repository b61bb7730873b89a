# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)
"""Consult record export: FHIR R4 that the official JSON schema and fhir.resources accept, with
the hospital's IDs, the pre-consult card, vitals, rehab, plans and fetchable attachments; a
transaction Bundle a FHIR server would take; and a readable summary. Chinese throughout."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import aiohttp
import pydicom
from sqlalchemy import insert

from rehab_vision.tables import rehab_plan_runs, rehab_plans, rehab_sessions
from rtc_server.keys import RECORDS
from tests.helpers import Client, server_sql
from tests.validators import check_fhir

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PATIENT_MRN = ("urn:oid:1.2.156.112604.1.1", "0012345")
SQUAT = "Squat (深蹲)"
DOCTOR_ID = ("urn:oid:1.2.156.112604.1.2", "D-0042")
SYMPTOM_TREE = "urn:teleconsult:questionnaire:symptom-tree"


def symptom(code: str) -> dict[str, Any]:
    return {"valueCoding": {"system": "urn:teleconsult:symptom", "code": code}}


CARD = {
    "chief_complaint": "胸闷气短三天",
    "symptoms": [{"question": "发热？", "answer": "无"}, {"question": "夜间咳嗽？", "answer": ""}],
    "medications": ["阿司匹林 100mg"],
    "allergies": ["青霉素"],
    "vitals": {
        "systolic_bp": 135,
        "diastolic_bp": 85,
        "heart_rate": 88,
        "temperature_c": 37.6,
        "spo2": 96,
        "respiratory_rate": 18,
        "glucose_mmol_l": 6.1,
        "weight_kg": 62.5,
        "measured_at": "2026-12-07T08:30:00+08:00",
    },
    "notes": "夜间加重",
    # the symptom tree's branches as answered (checked against the Questionnaire on join)
    "questionnaire_response": {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": SYMPTOM_TREE,
        "status": "completed",
        "item": [
            {"linkId": "complaint", "answer": [symptom("chest-pain")]},
            {
                "linkId": "chest",
                "item": [
                    {"linkId": "chest.course", "answer": [symptom("continuous")]},
                    {"linkId": "chest.duration", "answer": [symptom("gt20m")]},
                ],
            },
        ],
    },
}


async def consult(live: Any, room: str = "mdt-9", before_end: Any = None) -> None:
    """A host and a patient (Chinese names, card, chat); ``before_end`` runs before host:end."""
    host_token = live.tokens(
        room, "dr-li", "host", "李医生", mrn=DOCTOR_ID[1], mrn_system=DOCTOR_ID[0]
    )
    host = await Client(live.url, host_token).connect()
    await host.call("join", {})
    patient_token = live.tokens(
        room, "p-17", "patient", "王芳", mrn=PATIENT_MRN[1], mrn_system=PATIENT_MRN[0]
    )
    patient = await Client(live.url, patient_token).connect()
    await patient.call("join", {"card": CARD})
    await host.call("lobby:admit", {"identity": "p-17"})
    await patient.next("lobby:admitted")
    first = await host.call("chat:send", {"text": "CT 显示少量胸腔积液"})
    await patient.call("chat:send", {"text": "严重吗？", "reply_to": first["message"]["id"]})
    if before_end is not None:
        await before_end()
    await host.call("host:end", {"reason": "done"})
    await patient.wait_disconnected()
    await host.close()


async def add_rehab(live: Any, room: str = "mdt-9") -> None:
    """A prescribed plan, one guided run of it and its counting session, as rehab stores them."""
    now = time.time()
    plan = {
        "title": "膝关节术后第一周",
        "items": [
            {
                "exercise": "squat",
                "side": None,
                "sets": 2,
                "reps": 10,
                "rest_s": 60.0,
                "target_deg": 90.0,
                "instructions": "慢慢下蹲",
            },
        ],
        "rest_between_exercises_s": 90.0,
        "prescribed_by": "dr-li",
    }
    report = {
        "target_reps": 10,
        "sets": [
            {
                "set": 1,
                "reps_detail": [{"index": 1, "rom_deg": 84.5}, {"index": 2, "rom_deg": 88.0}],
            }
        ],
        "faults": {"knee_valgus": 1},
    }

    async def run(conn: Any) -> None:
        await conn.execute(
            insert(rehab_plans).values(
                id="plan1",
                patient="p-17",
                prescribed_by="dr-li",
                room=room,
                created_at=now - 60,
                plan=plan,
                active=True,
            )
        )
        await conn.execute(
            insert(rehab_plan_runs).values(
                id="run1",
                plan_id="plan1",
                patient="p-17",
                room=room,
                started_by="dr-li",
                started_at=now - 50,
                ended_at=now - 10,
                end_reason="completed",
                sets_prescribed=2,
                sets_done=1,
                reps_prescribed=20,
                reps_done=12,
            )
        )
        await conn.execute(
            insert(rehab_sessions).values(
                id="sess1",
                room=room,
                patient="p-17",
                started_by="dr-li",
                exercise="squat",
                started_at=now - 50,
                ended_at=now - 20,
                end_reason="target_reached",
                reps=2,
                score=81.5,
                report=report,
            )
        )

    await live.app[RECORDS].write(run)


async def fetch(live: Any, path: str, key: bool | str = True) -> tuple[int, str, bytes]:
    headers = {}
    if key is True:
        headers["Authorization"] = f"Bearer {live.settings.admin_api_key.get_secret_value()}"
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    url = path if path.startswith("http") else live.url + path
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def bundle_of(live: Any, query: str = "") -> dict[str, Any]:
    status, ctype, body = await fetch(live, f"/api/rooms/mdt-9/record{query}")
    assert status == 200, body
    assert ctype.startswith("application/fhir+json") and "fhirVersion=4.0" in ctype, ctype
    import json

    bundle = json.loads(body)
    check_fhir(bundle)  # the official R4 JSON schema, and fhir.resources
    return bundle


def by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return out + [r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []


async def test_fhir_record_holds_people_card_vitals_chat_and_rehab(live: Any) -> None:
    await consult(live)
    await add_rehab(live)
    bundle = await bundle_of(live)
    assert bundle["type"] == "collection"
    assert bundle["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/Bundle|4.0.1"]
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(u.startswith("urn:uuid:") for u in urls)
    # every reference resolves inside the Bundle
    dangling = [r for r in references(bundle["entry"]) if r not in urls]
    assert dangling == []
    url_of = {id(e["resource"]): e["fullUrl"] for e in bundle["entry"]}

    # people: the hospital's IDs from the join tokens, Chinese names
    (patient,) = by_type(bundle, "Patient")
    assert patient["name"] == [{"text": "王芳"}]
    mrn = patient["identifier"][0]
    assert (mrn["system"], mrn["value"]) == PATIENT_MRN and mrn["type"]["coding"][0]["code"] == "MR"
    (doctor,) = by_type(bundle, "Practitioner")
    assert doctor["name"] == [{"text": "李医生"}]
    assert (doctor["identifier"][0]["system"], doctor["identifier"][0]["value"]) == DOCTOR_ID
    patient_url, doctor_url = url_of[id(patient)], url_of[id(doctor)]

    (encounter,) = by_type(bundle, "Encounter")
    assert encounter["class"]["code"] == "VR" and encounter["status"] == "finished"
    assert encounter["subject"] == {"reference": patient_url, "display": "王芳"}
    assert [p["individual"]["reference"] for p in encounter["participant"]] == [doctor_url]

    # chat, in Chinese, with the reply linked
    comms = by_type(bundle, "Communication")
    assert [c["payload"][0]["contentString"] for c in comms] == ["CT 显示少量胸腔积液", "严重吗？"]
    assert comms[1]["inResponseTo"][0]["reference"] == url_of[id(comms[0])]
    assert comms[1]["sender"]["reference"] == patient_url
    assert all(c["subject"]["reference"] == patient_url for c in comms)

    # the pre-consult card as a QuestionnaireResponse
    responses = {r["questionnaire"]: r for r in by_type(bundle, "QuestionnaireResponse")}
    assert len(responses) == 2
    card = responses.pop("urn:teleconsult:questionnaire:pre-consult-card")
    # ... and the symptom tree's branches as the patient answered them
    (tree,) = responses.values()
    assert tree["questionnaire"] == SYMPTOM_TREE and tree["status"] == "completed"
    assert tree["subject"]["reference"] == patient_url
    assert tree["encounter"]["reference"] == url_of[id(encounter)]
    assert tree["item"] == CARD["questionnaire_response"]["item"]  # type: ignore[index]
    assert card["status"] == "completed" and card["subject"]["reference"] == patient_url
    items = {i["linkId"]: i for i in card["item"]}
    assert items["chief-complaint"]["answer"] == [{"valueString": "胸闷气短三天"}]
    assert items["allergies"]["answer"] == [{"valueString": "青霉素"}]
    assert items["medications"]["answer"] == [{"valueString": "阿司匹林 100mg"}]
    assert items["symptoms"]["item"][0] == {
        "linkId": "symptom-1",
        "text": "发热？",
        "answer": [{"valueString": "无"}],
    }
    assert "answer" not in items["symptoms"]["item"][1]  # unanswered: no empty string
    assert items["notes"]["answer"] == [{"valueString": "夜间加重"}]

    # the vitals as vital-sign Observations: LOINC code, UCUM unit
    observations = by_type(bundle, "Observation")
    vitals = {
        o["code"]["coding"][0]["code"]: o
        for o in observations
        if o["code"].get("coding")
        and o["code"]["coding"][0]["system"] == LOINC
        and o["category"][0]["coding"][0]["code"] in ("vital-signs", "laboratory")
    }
    expected = {
        "8310-5": (37.6, "Cel"),
        "8867-4": (88, "/min"),
        "59408-5": (96, "%"),
        "9279-1": (18, "/min"),
        "29463-7": (62.5, "kg"),
        "15074-8": (6.1, "mmol/L"),
    }
    for code, (value, unit) in expected.items():
        quantity = vitals[code]["valueQuantity"]
        assert (quantity["value"], quantity["code"], quantity["system"]) == (value, unit, UCUM)
        assert vitals[code]["subject"]["reference"] == patient_url
        assert vitals[code]["effectiveDateTime"] == "2026-12-07T08:30:00+08:00"
    assert vitals["8310-5"]["category"][0]["coding"][0]["code"] == "vital-signs"
    assert [c["code"] for c in vitals["59408-5"]["code"]["coding"]] == ["59408-5", "2708-6"]
    bp = vitals["85354-9"]
    assert "valueQuantity" not in bp
    assert [
        (c["code"]["coding"][0]["code"], c["valueQuantity"]["value"], c["valueQuantity"]["code"])
        for c in bp["component"]
    ] == [("8480-6", 135, "mm[Hg]"), ("8462-4", 85, "mm[Hg]")]

    # rehab: the session (LOINC/SNOMED, UCUM), the plan, its adherence
    (session,) = [
        o for o in observations if o["code"].get("coding", [{}])[0].get("code") == "73985-4"
    ]
    assert session["valueCodeableConcept"] == {"text": SQUAT}
    roms = [
        c
        for c in session["component"]
        if c["code"].get("coding", [{}])[0].get("code") == "364564000"
    ]
    assert [(c["valueQuantity"]["value"], c["valueQuantity"]["code"]) for c in roms] == [
        (84.5, "deg"),
        (88.0, "deg"),
    ]
    reps = session["component"][0]["valueQuantity"]
    assert (reps["value"], reps["code"], reps["system"]) == (2, "{repetitions}", UCUM)
    (plan,) = by_type(bundle, "CarePlan")
    assert plan["title"] == "膝关节术后第一周" and plan["intent"] == "plan"
    assert plan["subject"]["reference"] == patient_url and plan["author"]["reference"] == doctor_url
    assert "慢慢下蹲" in plan["activity"][0]["detail"]["description"]
    (adherence,) = [o for o in observations if o.get("basedOn")]
    assert adherence["basedOn"][0]["reference"] == url_of[id(plan)]
    assert adherence["valueQuantity"] == {"value": 50.0, "unit": "%", "system": UCUM, "code": "%"}


async def test_transaction_bundle_is_what_a_fhir_server_takes(live: Any) -> None:
    await consult(live)
    await add_rehab(live)
    bundle = await bundle_of(live, "?bundle=transaction")
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
        kind = resource["resourceType"]
        if kind in ("Patient", "Practitioner", "RelatedPerson"):
            # found by the hospital's ID if the server knows the person, never overwritten
            assert request["method"] == "POST" and request["url"] == kind
            system, value = resource["identifier"][0]["system"], resource["identifier"][0]["value"]
            assert unquote(request["ifNoneExist"]) == f"identifier={system}|{value}"
        else:
            assert request == {"method": "PUT", "url": f"{kind}/{resource['id']}"}
    first = bundle["entry"][0]
    assert first["resource"]["resourceType"] == "Patient"
    assert unquote(first["request"]["ifNoneExist"]) == "identifier={}|{}".format(*PATIENT_MRN)
    # an unknown bundle type is refused
    assert (await fetch(live, "/api/rooms/mdt-9/record?bundle=batch"))[0] == 400


async def test_attachments_are_absolute_and_fetchable_with_the_admin_key(live: Any) -> None:
    from tests.annotation.conftest import CT_BYTES, upload

    uploaded: list[Any] = []

    async def upload_ct() -> None:  # an ended consult takes no uploads
        uploaded.append(await upload(live, "mdt-9", "dr-li", "host", CT_BYTES, "胸部CT.dcm"))

    await consult(live, before_end=upload_ct)
    status, body = uploaded[0]
    assert status in (200, 201), body
    bundle = await bundle_of(live)
    (ref,) = by_type(bundle, "DocumentReference")
    assert ref["subject"]["display"] == "王芳"
    attachments = [c["attachment"] for c in ref["content"]]
    assert all(a["url"].startswith(live.url + "/api/rooms/mdt-9/") for a in attachments)
    for a in attachments:
        status, ctype, data = await fetch(live, a["url"])
        assert status == 200, (a["url"], data[:200])
        assert ctype.split(";")[0] == a["contentType"], (a["url"], ctype)
        if "size" in a:
            assert len(data) == a["size"]
    original = attachments[0]
    assert original["contentType"] == "application/dicom"
    data = (await fetch(live, original["url"]))[2]
    assert data == CT_BYTES  # the very file uploaded
    assert pydicom.dcmread(__import__("io").BytesIO(data)).Modality == "CT"
    # without a key: refused
    assert (await fetch(live, original["url"], key=False))[0] == 401
    # the admin key's reads are in the audit log as the admin's
    rows = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT subject FROM audit_entries WHERE action = 'document.view'",
    )
    assert "admin" in {r[0] for r in rows} and "invalid-token" not in {r[0] for r in rows}
    # the admin key reads documents, never writes them
    key = live.settings.admin_api_key.get_secret_value()
    form = aiohttp.FormData()
    form.add_field("file", CT_BYTES, filename="x.dcm", content_type="application/octet-stream")
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/rooms/mdt-9/documents",
            data=form,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status == 403, await resp.text()


async def test_summary_is_readable(live: Any) -> None:
    await consult(live)
    await add_rehab(live)
    status, _ctype, body = await fetch(live, "/api/rooms/mdt-9/record?format=summary")
    text = body.decode()
    assert status == 200
    for needle in (
        "# Consult record: mdt-9",
        "李医生",
        "王芳",
        "admitted by dr-li",
        "胸闷气短三天",
        "青霉素",
        "严重吗？",
        "膝关节术后第一周",
        "adherence 50 %",
        "temperature °C 37.6",
        "发热？ 无",
    ):
        assert needle in text, needle


async def test_documents_and_marks_are_in_the_record(live: Any) -> None:
    from annotation.client import AnnotationClient
    from tests.annotation.conftest import CT_BYTES, upload

    status, body = await upload(live, "mdt-9", "dr-li", "host", CT_BYTES, "ct.dcm")
    assert status in (200, 201), body
    doc_id = body["document"]["id"]
    drawer = AnnotationClient(live.url, live.tokens("mdt-9", "dr-li", "host", "李医生"))
    await drawer.connect()
    try:
        doc = await drawer.open(doc_id)
        doc.draw("length", [(10.0, 10.0), (10.0, 60.0)], text="病灶")
        await doc.flush()
    finally:
        await drawer.close()
    bundle = await bundle_of(live)
    refs = by_type(bundle, "DocumentReference")
    assert len(refs) == 1 and "1 annotation(s) by 李医生" in refs[0]["description"]
    _status, _ctype, body = await fetch(live, "/api/rooms/mdt-9/record?format=summary")
    text = body.decode()
    assert "## Shared documents and annotations" in text
    assert "ct.dcm (dicom" in text
    assert "length by 李医生 on frame 0" in text and '"病灶"' in text and "mm" in text


async def test_who_may_read_the_record(live: Any) -> None:
    await consult(live)
    path = "/api/rooms/mdt-9/record"
    assert (await fetch(live, path, key=False))[0] == 401
    assert (await fetch(live, "/api/rooms/nope/record"))[0] == 404
    assert (await fetch(live, path + "?format=xml"))[0] == 400
    # the consult's host reads it with their join token, after the consult
    host = live.tokens("mdt-9", "dr-li", "host", "李医生")
    status, _ctype, body = await fetch(live, path, key=host)
    assert status == 200, body
    # not the patient, not a clinician who never took part, not another room's host
    assert (await fetch(live, path, key=live.tokens("mdt-9", "p-17", "patient")))[0] == 403
    assert (await fetch(live, path, key=live.tokens("mdt-9", "dr-x", "clinician")))[0] == 403
    assert (await fetch(live, path, key=live.tokens("other", "dr-li", "host")))[0] == 403
    assert (await fetch(live, path, key="not-a-token"))[0] == 401
    # a withdrawn join link no longer opens it
    from kernel.tokens import verify_token

    jti = verify_token(live.tokens.secret, host).jti
    await live.app[RECORDS].revoke_token(jti, "test", None)
    assert (await fetch(live, path, key=host))[0] == 401


async def test_every_consent_names_the_patient(live: Any) -> None:
    host = await Client(live.url, live.tokens("mdt-9", "dr-li", "host", "李医生")).connect()
    await host.call("join", {})
    patient = await Client(live.url, live.tokens("mdt-9", "p-17", "patient", "王芳")).connect()
    await patient.call("join", {})
    await host.call("lobby:admit", {"identity": "p-17"})
    await patient.next("lobby:admitted")
    started = await host.call("record:start", {"reason": "教学"})
    assert started["ok"], started
    rec_id = started["recording"]["recording_id"]
    ack = await patient.call("record:consent", {"recording_id": rec_id, "consent": True})
    assert ack["ok"], ack
    assert (await host.call("record:stop", {}))["ok"]
    await host.close()
    await patient.close()
    bundle = await bundle_of(live)
    patient_url = next(
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    consents = by_type(bundle, "Consent")
    assert len(consents) == 2
    # the patient of the consult in every Consent; who agreed is the performer
    assert [c["patient"]["reference"] for c in consents] == [patient_url, patient_url]
    assert sorted(c["performer"][0]["display"] for c in consents) == ["李医生", "王芳"]
    assert all(c["status"] == "active" and c["provision"]["type"] == "permit" for c in consents)
