"""The consult record of a room: gathered from the records, exported as FHIR or as a summary.

FHIR R4 (4.0.1): a `collection` Bundle (or, with ``kind="transaction"``, a transaction Bundle a
FHIR server such as HAPI accepts: every entry has a `urn:uuid` fullUrl and a request; people
are conditional creates on their identifier, everything else a PUT of its stable id). It holds:
a Patient and a Practitioner (RelatedPerson for a guest) per person, with the hospital's ID from
the join token's `mrn` claim; one Encounter (class VR, virtual); a Communication per chat
message; the pre-consult card as a QuestionnaireResponse plus vital-sign Observations (LOINC,
UCUM); and what feature packages contribute through `RecordContributor`s (DocumentReference
for shared documents, Observations and a CarePlan for rehab, Consent and DocumentReference for
recordings). Contributors refer to people with `person_ref` (a logical identifier reference);
the Bundle turns those into references to the people's entries. Relative attachment URLs
(``/api/...``) become absolute on the server's base URL. Every Bundle is parsed with
fhir.resources' R4B models (R4's structure for every resource used here); the test suite also
checks each one against the official R4 JSON schema.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle

from kernel.records.card_fhir import (
    answered_questionnaire,
    effective_time,
    questionnaire_response,
    vital_observations,
)
from kernel.records.store import RecordStore

FHIR_VERSION = "4.0.1"
FHIR_MIME = "application/fhir+json; fhirVersion=4.0"
BUNDLE_PROFILE = f"http://hl7.org/fhir/StructureDefinition/Bundle|{FHIR_VERSION}"
ID_SYSTEM = "urn:teleconsult:identity"
ROOM_SYSTEM = "urn:teleconsult:room"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_PARTICIPATION = {
    "host": ("PPRF", "primary performer"),
    "clinician": ("CON", "consultant"),
    "patient": ("PART", "participation"),
    "guest": ("PART", "participation"),
    "observer": ("PART", "participation"),
}
NAMESPACE = uuid.UUID("6c0e3f7e-3a52-4d43-9f5e-0d6c1b7a2f10")


def stable_uuid(*parts: object) -> str:
    """A UUID that is the same for the same record item in every export."""
    return str(uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts)))


def fhir_time(ts: float | None) -> str | None:
    """Seconds since the epoch as a FHIR instant."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def person_ref(identity: str, name: str) -> dict[str, Any]:
    """A logical reference to a participant (the server keeps no Patient/Practitioner)."""
    return {"identifier": {"system": ID_SYSTEM, "value": identity}, "display": name}


@dataclass
class RecordSection:
    """What one feature package adds to a record."""

    title: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    summary_lines: list[str] = field(default_factory=list)


RecordContributor = Callable[[str, str], Awaitable[RecordSection]]
"""`await contributor(room, encounter_full_url)` -> RecordSection."""


@dataclass
class ConsultRecord:
    """Everything kept about one consult."""

    room: dict[str, Any]
    sessions: list[dict[str, Any]]
    admissions: list[dict[str, Any]]
    chat: list[dict[str, Any]]
    sections: list[RecordSection]
    hospital_ids: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def encounter_url(self) -> str:
        return f"urn:uuid:{stable_uuid('encounter', self.room['name'])}"


async def _hospital_ids(store: RecordStore, room: str) -> dict[str, tuple[str, str]]:
    from kernel.records.identifiers import hospital_ids

    return await hospital_ids(store, room)


async def gather_record(
    store: RecordStore, room: str, contributors: list[RecordContributor]
) -> ConsultRecord:
    """Read a room's record; LookupError if the room never existed."""
    record = await store.load_room(room)
    if record is None:
        raise LookupError(f"no consult record for room {room!r}")
    chat = [m.as_event() for m in await store.chat_history(room, limit=1_000_000)]
    result = ConsultRecord(
        room={
            "name": record.name,
            "created_at": record.created_at,
            "ended_at": record.ended_at,
            "locked": record.locked,
            "lobby_policy": record.lobby_policy,
        },
        sessions=await store.sessions(room),
        admissions=await store.admissions(room),
        chat=chat,
        sections=[],
        hospital_ids=await _hospital_ids(store, room),
    )
    for contributor in contributors:
        result.sections.append(await contributor(room, result.encounter_url))
    return result


@dataclass
class Person:
    """A person of the consult and their Patient/Practitioner/RelatedPerson resource."""

    identity: str
    name: str
    role: str
    resource: dict[str, Any]
    match: tuple[str, str]  # (system, value) a FHIR server finds them by

    @property
    def url(self) -> str:
        return f"urn:uuid:{self.resource['id']}"

    def ref(self) -> dict[str, Any]:
        return {"reference": self.url, "display": self.name}


PERSON_TYPE = {
    "patient": "Patient",
    "host": "Practitioner",
    "clinician": "Practitioner",
    "observer": "Practitioner",
    "guest": "RelatedPerson",
}


def _people(record: ConsultRecord) -> dict[str, Person]:
    """Everyone who joined, waited or wrote, by identity (the last name and role they had)."""
    seen: dict[str, tuple[str, str]] = {}
    for a in record.admissions:
        seen[a["identity"]] = (a["name"], a["role"])
    for s in record.sessions:
        seen[s["identity"]] = (s["name"], s["role"])
    for m in record.chat:
        sender = m["sender"]
        seen.setdefault(sender["identity"], (sender["name"], sender.get("role") or "guest"))
    patient_id = next((i for i, (_n, r) in seen.items() if r == "patient"), None)
    people: dict[str, Person] = {}
    # the patient first: a RelatedPerson refers to them
    for identity, (name, role) in sorted(seen.items(), key=lambda kv: kv[0] != patient_id):
        kind = PERSON_TYPE.get(role, "Practitioner")
        if kind == "RelatedPerson" and patient_id is None:
            kind = "Practitioner"  # a RelatedPerson needs a patient to relate to
        identifiers = [{"system": ID_SYSTEM, "value": identity}]
        match = (ID_SYSTEM, identity)
        if identity in record.hospital_ids:
            system, value = record.hospital_ids[identity]
            mrn = {"system": system, "value": value}
            if kind == "Patient":
                mrn["type"] = {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                            "display": "Medical record number",
                        }
                    ]
                }
            identifiers.insert(0, mrn)
            match = (system, value)
        if any(p.match == match for p in people.values()):
            match = (ID_SYSTEM, identity)  # two people given one hospital ID: keep them apart
        resource: dict[str, Any] = {
            "resourceType": kind,
            "id": stable_uuid("person", *match),
            "identifier": identifiers,
            "active": True,
            "name": [{"text": name}],
        }
        if kind == "RelatedPerson" and patient_id is not None:
            resource["patient"] = people[patient_id].ref()
        people[identity] = Person(identity, name, role, resource, match)
    return people


def _card_resources(record: ConsultRecord) -> list[dict[str, Any]]:
    """The pre-consult cards: a QuestionnaireResponse of the card, one of the symptom tree's
    answers if given, and vital-sign Observations each."""
    out: list[dict[str, Any]] = []
    room = record.room["name"]
    for a in record.admissions:
        card = a.get("card")
        if not card:
            continue
        subject = person_ref(a["identity"], a["name"])
        authored = fhir_time(a["requested_at"])
        context: dict[str, Any] = {
            "subject": subject,
            "encounter_url": record.encounter_url,
            "authored": authored,
        }
        out.append(questionnaire_response(card, rid=stable_uuid("card", room, a["id"]), **context))
        tree = card.get("questionnaire_response")  # the symptom tree's answers, if sent
        if isinstance(tree, dict):
            rid = stable_uuid("symptoms", room, a["id"])
            if (answered := answered_questionnaire(tree, rid=rid, **context)) is not None:
                out.append(answered)
        vitals = card.get("vitals") or {}
        measured = vitals.get("measured_at")
        effective = effective_time(measured, authored)
        note = f"patient-reported, measured at: {measured}" if measured else "patient-reported"
        out += vital_observations(
            vitals,
            ids=lambda name, _a=a: stable_uuid("vital", room, _a["id"], name),
            subject=subject,
            encounter_url=record.encounter_url,
            effective=effective,
            note=note,
        )
    return out


def _walk(node: Any) -> Any:
    """Every dict inside a resource, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


SUBJECT_OF_PATIENT = ("DocumentReference", "Observation", "Communication", "CarePlan")


def _link_people(
    resource: dict[str, Any], people: dict[str, Person], patient: Person | None
) -> None:
    """Logical person references (`person_ref`) become references to the people's entries;
    records about the consult without a subject get the patient."""
    for node in _walk(resource):
        ident = node.get("identifier")
        if (
            isinstance(ident, dict)
            and ident.get("system") == ID_SYSTEM
            and "reference" not in node
            and ident.get("value") in people
        ):
            person = people[ident["value"]]
            node.clear()
            node.update(person.ref())
    if (
        patient is not None
        and resource["resourceType"] in SUBJECT_OF_PATIENT
        and "subject" not in resource
    ):
        resource["subject"] = patient.ref()


def _absolute_urls(resource: dict[str, Any], base_url: str) -> None:
    if not base_url:
        return
    for node in _walk(resource):
        url = node.get("url")
        if isinstance(url, str) and url.startswith("/api/") and "contentType" in node:
            node["url"] = base_url.rstrip("/") + url


def _request(resource: dict[str, Any], people: dict[str, Person]) -> dict[str, Any]:
    """A transaction entry's request: people are created unless their identifier is known to
    the server (so the hospital's own Patient is referenced, never overwritten); the rest are
    PUT on their stable ids, so exporting a consult twice updates rather than duplicates."""
    kind, rid = resource["resourceType"], resource["id"]
    for person in people.values():
        if person.resource is resource:
            system, value = person.match
            return {
                "method": "POST",
                "url": kind,
                "ifNoneExist": f"identifier={quote(system, safe=':/')}|{quote(value, safe='')}",
            }
    return {"method": "PUT", "url": f"{kind}/{rid}"}


def to_fhir_bundle(
    record: ConsultRecord, base_url: str = "", kind: str = "collection"
) -> dict[str, Any]:
    """The record as a FHIR R4 Bundle, `collection` or `transaction` (validated; raises on an
    invalid resource). ``base_url`` makes relative attachment URLs absolute."""
    if kind not in ("collection", "transaction"):
        raise ValueError(f"unknown bundle type {kind!r}")
    room = record.room
    people = _people(record)
    patient = next((p for p in people.values() if p.role == "patient"), None)
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": stable_uuid("encounter", room["name"]),
        "identifier": [{"system": ROOM_SYSTEM, "value": room["name"]}],
        "status": "finished" if room["ended_at"] else "in-progress",
        "class": {"system": ACT_CODE, "code": "VR", "display": "virtual"},
        "period": {
            k: v
            for k, v in (
                ("start", fhir_time(room["created_at"])),
                ("end", fhir_time(room["ended_at"])),
            )
            if v
        },
        "participant": [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": PARTICIPATION,
                                "code": ROLE_PARTICIPATION[s["role"]][0],
                                "display": ROLE_PARTICIPATION[s["role"]][1],
                            }
                        ],
                        "text": s["role"],
                    }
                ],
                "period": {
                    k: v
                    for k, v in (
                        ("start", fhir_time(s["joined_at"])),
                        ("end", fhir_time(s["left_at"])),
                    )
                    if v
                },
                "individual": person_ref(s["identity"], s["name"]),
            }
            for s in record.sessions
            if s["role"] != "patient"
        ],
    }
    if patient is not None:
        encounter["subject"] = patient.ref()
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{p.resource['id']}", "resource": p.resource} for p in people.values()
    ]
    entries.append({"fullUrl": record.encounter_url, "resource": encounter})
    for resource in _card_resources(record):
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    for msg in record.chat:
        communication: dict[str, Any] = {
            "resourceType": "Communication",
            "id": stable_uuid("chat", room["name"], msg["id"]),
            "identifier": [
                {"system": f"{ROOM_SYSTEM}:{room['name']}:chat", "value": str(msg["id"])}
            ],
            "status": "completed",
            "encounter": {"reference": record.encounter_url},
            "sent": fhir_time(msg["ts"]),
            "sender": person_ref(msg["sender"]["identity"], msg["sender"]["name"]),
            "payload": [{"contentString": msg["text"]}],
        }
        if msg["reply_to"]:
            reply_id = stable_uuid("chat", room["name"], msg["reply_to"])
            communication["inResponseTo"] = [{"reference": f"urn:uuid:{reply_id}"}]
        entries.append({"fullUrl": f"urn:uuid:{communication['id']}", "resource": communication})
    for section in record.sections:
        for resource in section.resources:
            rid = resource.get("id") or stable_uuid(section.title, len(entries))
            entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": {**resource, "id": rid}})
    now = fhir_time(datetime.datetime.now(datetime.UTC).timestamp())
    for entry in entries[len(people) :]:
        _link_people(entry["resource"], people, patient)
        _absolute_urls(entry["resource"], base_url)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": stable_uuid("bundle", room["name"]),
        "meta": {"lastUpdated": now, "profile": [BUNDLE_PROFILE]},
        "identifier": {"system": ROOM_SYSTEM, "value": room["name"]},
        "type": kind,
        "timestamp": now,
        "entry": entries,
    }
    if kind == "transaction":
        for entry in entries:
            entry["request"] = _request(entry["resource"], people)
    # validation: every entry is parsed into its R4B resource class
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True, by_alias=True)


VITAL_LABELS = {
    "systolic_bp": "systolic mmHg",
    "diastolic_bp": "diastolic mmHg",
    "heart_rate": "heart rate /min",
    "temperature_c": "temperature °C",
    "spo2": "SpO2 %",
    "respiratory_rate": "respiratory rate /min",
    "glucose_mmol_l": "glucose mmol/L",
    "weight_kg": "weight kg",
    "measured_at": "measured at",
}


def to_summary(record: ConsultRecord) -> str:
    """A readable summary (Markdown) of the consult record."""
    room = record.room
    lines = [
        f"# Consult record: {room['name']}",
        "",
        f"- Opened: {fhir_time(room['created_at'])}",
        f"- Ended: {fhir_time(room['ended_at']) or 'not ended'}",
        "",
        "## Participants",
        "",
    ]
    for s in record.sessions:
        left = fhir_time(s["left_at"]) or "still connected"
        lines.append(
            f"- {s['name']} ({s['identity']}, {s['role']}): {fhir_time(s['joined_at'])} to "
            f"{left}" + (f" [{s['leave_reason']}]" if s["leave_reason"] else "")
        )
    lines += ["", "## Waiting room", ""]
    if not record.admissions:
        lines.append("- nobody waited")
    for a in record.admissions:
        decided = (
            f"{a['decision']} by {a['decided_by']} after "
            f"{a['decided_at'] - a['requested_at']:.0f} s"
            if a["decided_at"]
            else "still waiting"
        )
        lines.append(f"- {a['name']} ({a['identity']}): {decided}")
        card = a.get("card") or {}
        if card.get("chief_complaint"):
            lines.append(f"  - chief complaint: {card['chief_complaint']}")
        if card.get("allergies"):
            lines.append(f"  - allergies: {', '.join(card['allergies'])}")
        if card.get("medications"):
            lines.append(f"  - medication: {', '.join(card['medications'])}")
        for symptom in card.get("symptoms") or []:
            lines.append(f"  - {symptom['question']} {symptom.get('answer') or '-'}")
        vitals = {k: v for k, v in (card.get("vitals") or {}).items() if v is not None}
        if vitals:
            shown = ", ".join(f"{VITAL_LABELS.get(k, k)} {v}" for k, v in vitals.items())
            lines.append(f"  - vitals: {shown}")
        if card.get("notes"):
            lines.append(f"  - notes: {card['notes']}")
    lines += ["", "## Chat", ""]
    if not record.chat:
        lines.append("- no messages")
    for m in record.chat:
        reply = f" (reply to #{m['reply_to']})" if m["reply_to"] else ""
        lines.append(f"- #{m['id']} {fhir_time(m['ts'])} {m['sender']['name']}{reply}: {m['text']}")
    for section in record.sections:
        lines += ["", f"## {section.title}", "", *section.summary_lines]
    return "\n".join(lines) + "\n"
