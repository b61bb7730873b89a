"""The consult record of a room: gathered from the records, exported as FHIR or as a summary.

FHIR: a `collection` Bundle validated with fhir.resources' R4B models (FHIR 4.3.0, which keeps
R4's structure for every resource used here): one Encounter (class VR, virtual), a Communication
per chat message, and whatever feature packages contribute (DocumentReference for shared
documents, Observation for rehab results, Consent for recordings) through `RecordContributor`s.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from rtc_server.records.store import RecordStore

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

    @property
    def encounter_url(self) -> str:
        return f"urn:uuid:{stable_uuid('encounter', self.room['name'])}"


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
    )
    for contributor in contributors:
        result.sections.append(await contributor(room, result.encounter_url))
    return result


def to_fhir_bundle(record: ConsultRecord) -> dict[str, Any]:
    """The record as a FHIR collection Bundle (validated; raises on an invalid resource)."""
    room = record.room
    patients = [s for s in record.sessions if s["role"] == "patient"]
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
    if patients:
        encounter["subject"] = person_ref(patients[0]["identity"], patients[0]["name"])
    entries: list[dict[str, Any]] = [{"fullUrl": record.encounter_url, "resource": encounter}]
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
    bundle = {
        "resourceType": "Bundle",
        "id": stable_uuid("bundle", room["name"]),
        "type": "collection",
        "timestamp": fhir_time(datetime.datetime.now(datetime.UTC).timestamp()),
        "entry": entries,
    }
    # validation: every entry is parsed into its R4B resource class
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True, by_alias=True)


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
    lines += ["", "## Chat", ""]
    if not record.chat:
        lines.append("- no messages")
    for m in record.chat:
        reply = f" (reply to #{m['reply_to']})" if m["reply_to"] else ""
        lines.append(f"- #{m['id']} {fhir_time(m['ts'])} {m['sender']['name']}{reply}: {m['text']}")
    for section in record.sections:
        lines += ["", f"## {section.title}", "", *section.summary_lines]
    return "\n".join(lines) + "\n"
