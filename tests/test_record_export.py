"""Consult record export: a FHIR Bundle that validates, and a readable summary."""

import aiohttp
from fhir.resources.R4B.bundle import Bundle

from rtc_server.keys import RECORD_CONTRIBUTORS
from rtc_server.records.consult_record import RecordSection
from tests.helpers import Client

CARD = {"chief_complaint": "shortness of breath", "allergies": ["penicillin"]}


async def consult(live):
    host = await Client(live.url, live.tokens("mdt-9", "dr-li", "host", "Dr Li")).connect()
    await host.call("join", {})
    patient = await Client(live.url, live.tokens("mdt-9", "p-17", "patient", "Wang Fang")).connect()
    await patient.call("join", {"card": CARD})
    await host.call("lobby:admit", {"identity": "p-17"})
    await patient.next("lobby:admitted")
    first = await host.call("chat:send", {"text": "CT shows a small effusion"})
    await patient.call(
        "chat:send", {"text": "Is that serious?", "reply_to": first["message"]["id"]}
    )
    await host.call("host:end", {"reason": "done"})
    await patient.wait_disconnected()
    await host.close()


async def fetch(live, path, key=True):
    headers = {}
    if key:
        headers["Authorization"] = f"Bearer {live.settings.admin_api_key.get_secret_value()}"
    async with aiohttp.ClientSession() as http, http.get(live.url + path, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_fhir_bundle_validates_and_holds_the_consult(live):
    async def rehab_results(room, encounter_url):
        return RecordSection(
            "Rehab",
            resources=[
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "squat repetitions"},
                    "encounter": {"reference": encounter_url},
                    "valueQuantity": {"value": 10, "unit": "reps"},
                }
            ],
            summary_lines=["- squats: 10 reps"],
        )

    live.app[RECORD_CONTRIBUTORS].append(rehab_results)
    await consult(live)
    status, ctype, body = await fetch(live, "/api/rooms/mdt-9/record")
    assert status == 200 and ctype.startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(body)
    kinds = [e.resource.__resource_type__ for e in bundle.entry]
    assert kinds.count("Encounter") == 1
    assert kinds.count("Communication") == 2
    assert kinds.count("Observation") == 1
    encounter = bundle.entry[0].resource
    assert encounter.class_fhir.code == "VR" and encounter.status == "finished"
    assert encounter.subject.display == "Wang Fang"
    assert [p.individual.display for p in encounter.participant] == ["Dr Li"]
    urls = {e.fullUrl for e in bundle.entry}
    comms = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "Communication"]
    reply = next(c for c in comms if c.inResponseTo)
    assert reply.inResponseTo[0].reference in urls
    assert reply.payload[0].contentString == "Is that serious?"
    assert all(c.encounter.reference == bundle.entry[0].fullUrl for c in comms)


async def test_summary_is_readable(live):
    await consult(live)
    status, _ctype, body = await fetch(live, "/api/rooms/mdt-9/record?format=summary")
    text = body.decode()
    assert status == 200
    for needle in (
        "# Consult record: mdt-9",
        "Dr Li",
        "Wang Fang",
        "admitted by dr-li",
        "shortness of breath",
        "penicillin",
        "Is that serious?",
    ):
        assert needle in text


async def test_documents_and_marks_are_in_the_record(live):
    from annotation.client import AnnotationClient
    from tests.annotation.conftest import CT_BYTES, upload

    status, body = await upload(live, "mdt-9", "dr-li", "host", CT_BYTES, "ct.dcm")
    assert status in (200, 201), body
    doc_id = body["document"]["id"]
    drawer = AnnotationClient(live.url, live.tokens("mdt-9", "dr-li", "host", "Dr Li"))
    await drawer.connect()
    try:
        doc = await drawer.open(doc_id)
        doc.draw("length", [(10.0, 10.0), (10.0, 60.0)], text="lesion")
        await doc.flush()
    finally:
        await drawer.close()
    _status, _ctype, body = await fetch(live, "/api/rooms/mdt-9/record")
    bundle = Bundle.model_validate_json(body)
    refs = [e.resource for e in bundle.entry if e.resource.__resource_type__ == "DocumentReference"]
    assert len(refs) == 1 and "1 annotation(s) by Dr Li" in refs[0].description
    _status, _ctype, body = await fetch(live, "/api/rooms/mdt-9/record?format=summary")
    text = body.decode()
    assert "## Shared documents and annotations" in text
    assert "ct.dcm (dicom" in text
    assert "length by Dr Li on frame 0" in text and '"lesion"' in text and "mm" in text


async def test_export_needs_admin_key_and_known_room(live):
    await consult(live)
    assert (await fetch(live, "/api/rooms/mdt-9/record", key=False))[0] == 401
    assert (await fetch(live, "/api/rooms/nope/record"))[0] == 404
    assert (await fetch(live, "/api/rooms/mdt-9/record?format=xml"))[0] == 400
