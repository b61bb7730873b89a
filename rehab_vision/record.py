"""The consult record's rehab section: sessions, the prescribed plan and its adherence (FHIR R4).

- Each counting session: an Observation coded LOINC 73985-4 "Exercise activity" (category
  `activity`) whose value is the exercise; components: repetitions (UCUM `{repetitions}`), mean
  form score (`{score}`), exercise duration (LOINC 55411-3, `min`) and the range of motion of
  each rep (SNOMED CT 364564000 "Range of joint movement", `deg`).
- Each plan prescribed in, or followed in, this consult: a CarePlan (intent `plan`), one
  activity per exercise with its sets x reps, rest, side, target angle and instructions.
- Each set with an angle trace: a Media (PNG) of the joint angle over time, reps marked and
  the target range shaded; each patient: a Media (PNG) of ROM, score and adherence per week
  (drawn by rehab_vision.charts; the service adds them).
- Each guided run of a plan in this consult: an adherence Observation (sets done / prescribed
  in `%`, with sets and reps done and prescribed as components), `basedOn` the CarePlan.
Texts carry the exercise title in English and Chinese.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from kernel.records.consult_record import RecordSection, fhir_time, person_ref, stable_uuid
from kernel.records.store import RecordStore

from .specs import get_spec
from .tables import rehab_plan_runs, rehab_plans, rehab_sessions

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
EXERCISE_ACTIVITY = {"system": LOINC, "code": "73985-4", "display": "Exercise activity"}
EXERCISE_DURATION = {"system": LOINC, "code": "55411-3", "display": "Exercise duration"}
JOINT_ROM = {"system": SNOMED, "code": "364564000", "display": "Range of joint movement"}


def _qty(value: float, unit: str, code: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _title(exercise: str) -> str:
    try:
        title = get_spec(exercise).title
    except KeyError:
        return exercise
    return f"{title.en} ({title.zh_cn})"


def _category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": OBS_CATEGORY, "code": code, "display": display}]}]


def observation(row: dict[str, Any], encounter_url: str) -> dict[str, Any]:
    """A rehab session as a FHIR R4 Observation."""
    report = row["report"]
    comps: list[dict[str, Any]] = [
        {
            "code": {"text": "repetitions"},
            "valueQuantity": _qty(row["reps"], "repetitions", "{repetitions}"),
        },
    ]
    if row["score"] is not None:
        comps.append(
            {
                "code": {"text": "mean form score (0-100)"},
                "valueQuantity": _qty(row["score"], "score", "{score}"),
            }
        )
    if row["ended_at"] and row["started_at"]:
        minutes = round((row["ended_at"] - row["started_at"]) / 60, 2)
        comps.append(
            {"code": {"coding": [EXERCISE_DURATION]}, "valueQuantity": _qty(minutes, "min", "min")}
        )
    for s in report.get("sets", []):
        for rep in s.get("reps_detail", []):
            comps.append(
                {
                    "code": {
                        "coding": [JOINT_ROM],
                        "text": f"set {s['set']} rep {rep['index']} range of motion",
                    },
                    "valueQuantity": _qty(rep["rom_deg"], "deg", "deg"),
                }
            )
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": stable_uuid("rehab", row["id"]),
        "status": "final",
        "category": _category("activity", "Activity"),
        "code": {"coding": [EXERCISE_ACTIVITY], "text": "Rehab exercise"},
        "subject": person_ref(row["patient"], row["patient"]),
        "encounter": {"reference": encounter_url},
        "effectivePeriod": {
            "start": fhir_time(row["started_at"]),
            "end": fhir_time(row["ended_at"]),
        },
        "performer": [person_ref(row["started_by"], row["started_by"])],
        "valueCodeableConcept": {"text": _title(row["exercise"])},
        "component": comps,
    }
    faults = report.get("faults") or {}
    if faults:
        obs["note"] = [
            {"text": "Form faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(faults.items()))}
        ]
    return obs


def _activity(item: dict[str, Any], active: bool) -> dict[str, Any]:
    parts = [f"{item['sets']} x {item['reps']} reps", f"rest {item['rest_s']:g} s"]
    if item.get("side"):
        parts.append(f"side {item['side']}")
    if item.get("target_deg") is not None:
        parts.append(f"target {item['target_deg']:g}°")
    detail: dict[str, Any] = {
        "code": {"text": _title(item["exercise"])},
        "status": "in-progress" if active else "stopped",
        "description": ", ".join(parts)
        + (f". {item['instructions']}" if item.get("instructions") else ""),
        "quantity": _qty(item["sets"] * item["reps"], "repetitions", "{repetitions}"),
    }
    return {"detail": detail}


def care_plan(row: dict[str, Any], encounter_url: str, room: str) -> dict[str, Any]:
    """A prescribed plan as a FHIR R4 CarePlan."""
    plan = row["plan"]
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": stable_uuid("rehab-plan", row["id"]),
        "identifier": [{"system": "urn:teleconsult:rehab-plan", "value": row["id"]}],
        "status": "active" if row["active"] else "revoked",
        "intent": "plan",
        "category": [{"text": "rehabilitation exercise plan"}],
        "title": plan["title"],
        "subject": person_ref(row["patient"], row["patient"]),
        "created": fhir_time(row["created_at"]),
        "author": person_ref(row["prescribed_by"], row["prescribed_by"]),
        "activity": [_activity(item, bool(row["active"])) for item in plan["items"]],
    }
    if row["room"] == room:
        resource["encounter"] = {"reference": encounter_url}
    return resource


def adherence(run: dict[str, Any], plan_url: str, encounter_url: str) -> dict[str, Any]:
    """A guided run of a plan as an adherence Observation."""
    percent = round(100 * run["sets_done"] / run["sets_prescribed"], 1)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": stable_uuid("rehab-run", run["id"]),
        "status": "final",
        "category": _category("therapy", "Therapy"),
        "code": {"text": "Rehab plan adherence (sets done / sets prescribed)"},
        "subject": person_ref(run["patient"], run["patient"]),
        "encounter": {"reference": encounter_url},
        "basedOn": [{"reference": plan_url}],
        "effectivePeriod": {
            k: v
            for k, v in (
                ("start", fhir_time(run["started_at"])),
                ("end", fhir_time(run["ended_at"])),
            )
            if v
        },
        "performer": [person_ref(run["started_by"], run["started_by"])],
        "valueQuantity": _qty(percent, "%", "%"),
        "component": [
            {"code": {"text": text}, "valueQuantity": _qty(run[key], unit, code)}
            for key, text, unit, code in (
                ("sets_done", "sets done", "sets", "{sets}"),
                ("sets_prescribed", "sets prescribed", "sets", "{sets}"),
                ("reps_done", "repetitions done", "repetitions", "{repetitions}"),
                ("reps_prescribed", "repetitions prescribed", "repetitions", "{repetitions}"),
            )
        ],
    }
    if run["end_reason"]:
        obs["note"] = [{"text": f"run ended: {run['end_reason']}"}]
    return obs


async def record_section(store: RecordStore, room: str, encounter_url: str) -> RecordSection:
    """Sessions, plans and adherence of a room's consult."""
    async with store.engine.connect() as conn:
        sessions = [
            dict(r._mapping)
            for r in await conn.execute(
                select(rehab_sessions)
                .where(rehab_sessions.c.room == room)
                .order_by(rehab_sessions.c.started_at)
            )
        ]
        runs = [
            dict(r._mapping)
            for r in await conn.execute(
                select(rehab_plan_runs)
                .where(rehab_plan_runs.c.room == room)
                .order_by(rehab_plan_runs.c.started_at)
            )
        ]
        run_plans = {r["plan_id"] for r in runs}
        plans = [
            dict(r._mapping)
            for r in await conn.execute(
                select(rehab_plans)
                .where(or_(rehab_plans.c.room == room, rehab_plans.c.id.in_(run_plans)))
                .order_by(rehab_plans.c.created_at)
            )
        ]
    section = RecordSection(title="Rehab sessions")
    plan_urls: dict[str, str] = {}
    for plan in plans:
        resource = care_plan(plan, encounter_url, room)
        plan_urls[plan["id"]] = f"urn:uuid:{resource['id']}"
        section.resources.append(resource)
        items = "; ".join(
            f"{_title(i['exercise'])} {i['sets']} x {i['reps']}" for i in plan["plan"]["items"]
        )
        section.summary_lines.append(
            f'- Plan "{plan["plan"]["title"]}" for {plan["patient"]} by {plan["prescribed_by"]}'
            f" ({'active' if plan['active'] else 'replaced'}): {items}"
        )
    for run in runs:
        if run["plan_id"] in plan_urls:
            section.resources.append(adherence(run, plan_urls[run["plan_id"]], encounter_url))
        section.summary_lines.append(
            f"- Guided run {fhir_time(run['started_at'])}: {run['sets_done']}/"
            f"{run['sets_prescribed']} sets, {run['reps_done']}/{run['reps_prescribed']} reps"
            f" (adherence {100 * run['sets_done'] / run['sets_prescribed']:.0f} %)"
        )
    for row in sessions:
        section.resources.append(observation(row, encounter_url))
        section.summary_lines.append(
            f"- {_title(row['exercise'])}: {row['reps']} reps"
            f" (target {row['report'].get('target_reps')}), mean score {row['score']},"
            f" patient {row['patient']}, ended: {row['end_reason']}"
        )
    if not section.summary_lines:
        section.summary_lines.append("- no rehab sessions")
    return section


def chart_media(row: dict[str, Any], encounter_url: str) -> list[dict[str, Any]]:
    """FHIR R4 Media per set of a session: the joint angle over time with the reps marked and
    the target range shaded (PNG, rehab_vision.charts). Sets without a trace get none."""
    import base64

    from .charts import angle_chart_png

    spec = get_spec(row["exercise"])
    out: list[dict[str, Any]] = []
    for s in row["report"].get("sets", []):
        if not (s.get("angle_trace") or {}).get("t"):
            continue
        png = angle_chart_png(
            s, spec.title.en, spec.title.zh_cn, f"{spec.angle.name} angle", "关节角度"
        )
        out.append(
            {
                "resourceType": "Media",
                "id": stable_uuid("rehab-chart", f"{row['id']}-{s['set']}"),
                "status": "completed",
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/media-type",
                            "code": "image",
                            "display": "Image",
                        }
                    ]
                },
                "subject": person_ref(row["patient"], row["patient"]),
                "encounter": {"reference": encounter_url},
                "createdDateTime": fhir_time(row["ended_at"]),
                "content": {
                    "contentType": "image/png",
                    "data": base64.b64encode(png).decode("ascii"),
                    "title": f"{spec.title.en} set {s['set']}: {spec.angle.name} angle "
                    f"over time, {s['reps']} reps",
                },
            }
        )
    return out


def progress_media(
    patient: str,
    weeks: list[dict[str, Any]],
    encounter_url: str,
) -> dict[str, Any] | None:
    """FHIR R4 Media: the patient's ROM, score and adherence per week (PNG), or None."""
    import base64

    from .charts import progress_chart_png

    if not weeks:
        return None
    png = progress_chart_png(
        [
            {
                "week": w["week"],
                "rom_deg": w["mean_rom_deg"],
                "score": w["mean_score"],
                "adherence": w["adherence"],
            }
            for w in weeks
        ],
        "Rehab progress per week",
        "每周康复进展",
    )
    return {
        "resourceType": "Media",
        "id": stable_uuid("rehab-progress", f"{patient}-{weeks[-1]['week']}"),
        "status": "completed",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/media-type",
                    "code": "image",
                    "display": "Image",
                }
            ]
        },
        "subject": person_ref(patient, patient),
        "encounter": {"reference": encounter_url},
        "content": {
            "contentType": "image/png",
            "data": base64.b64encode(png).decode("ascii"),
            "title": f"Rehab progress per week, {weeks[0]['week']} to {weeks[-1]['week']}",
        },
    }
