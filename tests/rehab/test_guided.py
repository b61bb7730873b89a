"""Guided rehab plans through the real server: storage, permissions, the guided run (timers
shortened through GuideSettings, reps fed by a stand-in for the camera's counting session)
and the progress / adherence a clinician reads."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import insert, select

from rehab_vision.guide import Guide, GuideSettings
from rehab_vision.service import REHAB
from rehab_vision.tables import rehab_plan_runs, rehab_plan_sets, rehab_plans, rehab_sessions
from rtc_server.keys import RECORDS
from tests.helpers import wait_until

FAST = GuideSettings(countdown_s=0.2, tick_s=0.05, max_set_s=60, rest_scale=0.0)

PLAN = {
    "title": "Knee week 2",
    "rest_between_exercises_s": 90,
    "items": [
        {"exercise": "squat", "sets": 2, "reps": 3, "rest_s": 30, "instructions": "slowly"},
        {"exercise": "knee_extension", "side": "left", "sets": 1, "reps": 2},
    ],
}


class ScriptedCounting:
    """Stands in for the camera's counting session: the test says how many reps were seen.
    Each stopped set leaves a rehab_sessions row, as a real session's report does."""

    def __init__(self, store: Any, roms: list[float] | None = None) -> None:
        self.store = store
        self.roms = roms or [80.0, 90.0]
        self.started: list[tuple[str, str, int]] = []  # (session id, exercise, set)
        self.live: dict[str, Guide] = {}
        self.stopped: list[tuple[str, str]] = []

    async def start(self, guide: Guide) -> str:
        sid = uuid.uuid4().hex
        self.started.append((sid, guide.runner.current.exercise, guide.runner.set))
        self.live[sid] = guide
        return sid

    async def stop(self, session_id: str, reason: str) -> dict[str, Any] | None:
        guide = self.live.pop(session_id)
        self.stopped.append((session_id, reason))
        res = guide.runner.results[-1]
        row = {
            "id": session_id,
            "room": guide.room,
            "patient": guide.patient,
            "started_by": guide.started_by,
            "exercise": guide.plan.items[res.item].exercise,
            "started_at": time.time() - 5,
            "ended_at": time.time(),
            "end_reason": reason,
            "reps": res.reps,
            "score": 90.0,
            "report": {"rom_deg": self.roms[: res.reps]},
        }

        async def write(conn: Any) -> None:
            await conn.execute(insert(rehab_sessions).values(**row))

        await self.store.write(write)
        return {"session_id": session_id, "reps": res.reps}

    def alive(self, session_id: str) -> bool:
        return session_id in self.live

    def count(self, reps: int) -> None:
        sid = self.started[-1][0]
        self.live[sid].on_update({"session_id": sid, "rep": reps})


async def rows(live: Any, table: Any, *where: Any) -> list[dict[str, Any]]:
    async with live.app[RECORDS].engine.connect() as conn:
        return [dict(r._mapping) for r in (await conn.execute(select(table).where(*where))).all()]


async def room_with_patient(
    connect: Any, room: str, patient: str = "pat-1", doctor: str = "dr-a"
) -> tuple[Any, Any]:
    doc = await connect(room, doctor, "clinician")
    pat = await connect(room, patient, "patient")
    if pat.joined.get("status") == "waiting":
        assert (await doc.call("lobby:admit", {"identity": patient}))["ok"]
    return doc, pat


async def test_plan_storage_and_permissions(live: Any, connect: Any) -> None:
    doc, pat = await room_with_patient(connect, "plan-a")
    _doc_b, other = await room_with_patient(connect, "plan-b", "pat-2", "dr-b")
    # a patient cannot prescribe (no annotate grant), nor can a custom token's patient role
    ack = await pat.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN})
    assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    # nothing yet
    ack = await pat.call("rehab:plan_get", {})
    assert ack["ok"] and ack["plan"] is None and ack["patient"] == "pat-1"
    ack = await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN})
    assert ack["ok"], ack
    first = ack["plan_id"]
    assert ack["prescribed_by"] == "dr-a" and ack["plan"]["prescribed_by"] == "dr-a"
    pushed = await pat.next("rehab:plan", timeout=10)
    assert pushed["plan_id"] == first
    got = await pat.call("rehab:plan_get", {})
    assert got["plan"]["plan_id"] == first and got["plan"]["plan"]["items"][1]["side"] == "left"
    # another patient reads neither this plan nor asks for it by name
    ack = await other.call("rehab:plan_get", {"patient_identity": "pat-1"})
    assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    ack = await pat.call("rehab:plan_get", {"patient_identity": "pat-2"})
    assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    ack = await pat.call("rehab:progress", {"patient_identity": "pat-2"})
    assert ack["ok"] is False and ack["error"]["code"] == "permission_denied"
    # a new prescription replaces the active one; the old stays, inactive
    second = dict(PLAN, title="Knee week 3")
    ack = await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": second})
    assert ack["ok"]
    stored = await rows(live, rehab_plans, rehab_plans.c.patient == "pat-1")
    assert {(r["id"] == first, r["active"]) for r in stored} == {(True, False), (False, True)}
    got = await doc.call("rehab:plan_get", {"patient_identity": "pat-1"})
    assert got["plan"]["plan"]["title"] == "Knee week 3"
    # validation and bounds
    bad = dict(PLAN, items=[{"exercise": "moonwalk"}])
    ack = await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": bad})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    ack = await doc.call(
        "rehab:plan_set", {"patient_identity": "pat-1", "plan": dict(PLAN, items=[])}
    )
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    huge = dict(PLAN, items=[{"exercise": "squat", "instructions": "x" * 1000}] * 60)
    ack = await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": huge})
    assert ack["ok"] is False
    assert ack["error"]["code"] in ("payload_too_large", "invalid_payload")


async def test_guided_run_through_the_server(live: Any, connect: Any) -> None:
    service = live.app[REHAB]
    service.guide_settings = FAST
    counting = service.counting = ScriptedCounting(live.app[RECORDS])
    doc, pat = await room_with_patient(connect, "plan-run")
    ack = await pat.call("rehab:plan_run", {})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"  # no plan yet
    assert (await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]

    ack = await pat.call("rehab:plan_run", {"lang": "zh-CN"})
    assert ack["ok"], ack
    run_id = ack["run_id"]
    assert ack["phase"] == "countdown" and ack["demo"]["zh-CN"] and ack["demo"]["en"]
    again = await doc.call("rehab:plan_run", {"patient_identity": "pat-1"})
    assert again["ok"] is False and again["error"]["code"] == "conflict"

    def phase(name: str, **kw: Any) -> Any:
        return lambda g: g["phase"] == name and all(g[k] == v for k, v in kw.items())

    cd = await pat.next("rehab:guide", phase("countdown"))
    assert cd["seconds_left"] is not None and cd["seconds_left"] <= FAST.countdown_s
    ex = await doc.next("rehab:guide", phase("exercise", step=1, set=1))
    assert ex["exercise"] == "squat" and ex["target_reps"] == 3 and ex["sets"] == 2
    assert ex["instructions"] == "slowly" and ex["session_id"] == counting.started[0][0]
    for n in (1, 2):
        counting.count(n)
        assert (await pat.next("rehab:guide", lambda g, n=n: g["reps"] == n))["phase"] == "exercise"
    counting.count(3)
    rest = await pat.next("rehab:guide", phase("rest"))
    assert rest["next"] == {"step": 1, "exercise": "squat", "set": 2}
    await pat.next("rehab:guide", phase("exercise", step=1, set=2))
    counting.count(5)  # more than the target: the set is done, counted at its target
    await pat.next("rehab:guide", phase("exercise", step=2, set=1))
    assert counting.started[-1][1:] == ("knee_extension", 1)
    counting.count(1)
    await pat.next("rehab:guide", lambda g: g["reps"] == 1 and g["step"] == 2)
    # the last set is skipped by the timer: shorten it now
    service.guides["pat-1"].settings = GuideSettings(**{**FAST.model_dump(), "max_set_s": 0.01})
    done = await pat.next("rehab:guide", phase("done"))
    assert done["end_reason"] == "completed"
    assert done["adherence"]["sets_completed"] == 2 and done["adherence"]["sets_prescribed"] == 3
    await wait_until(lambda: "pat-1" not in service.guides)
    assert [r for _s, r in counting.stopped] == ["set_complete"] * 3

    run = (await rows(live, rehab_plan_runs, rehab_plan_runs.c.id == run_id))[0]
    assert (run["sets_done"], run["sets_prescribed"], run["end_reason"]) == (2, 3, "completed")
    assert run["reps_done"] == 3 + 3 + 1 and run["reps_prescribed"] == 8
    sets = await rows(live, rehab_plan_sets, rehab_plan_sets.c.run_id == run_id)
    assert sorted((s["item"], s["set"], s["reps"], s["skipped"]) for s in sets) == [
        (0, 1, 3, False),
        (0, 2, 3, False),
        (1, 1, 1, True),
    ]

    # progress: the clinician sees sessions (ROM, score), the run and the day's adherence
    prog = await doc.call("rehab:progress", {"patient_identity": "pat-1"})
    assert prog["ok"], prog
    assert [s["exercise"] for s in prog["sessions"]] == ["squat", "squat", "knee_extension"]
    assert prog["sessions"][0]["mean_rom_deg"] == 85.0 and prog["sessions"][0]["mean_score"] == 90
    assert prog["sessions"][2]["mean_rom_deg"] == 80.0
    assert all(s["run_id"] == run_id for s in prog["sessions"])
    (r,) = prog["runs"]
    assert r["adherence"] == round(2 / 3, 3) and r["sets_done"] == 2
    (day,) = prog["days"]
    assert day["sets_done"] == 2 and day["sets_prescribed"] == 3
    assert day["reps"] == 3 + 5 + 1  # what the sessions counted (the 2nd set overshot)
    assert day["adherence"] == round(2 / 3, 3)
    (week,) = prog["weeks"]  # the chart's unit: ISO week
    assert week["week"].startswith(day["date"][:4]) and "-W" in week["week"]
    assert week["adherence"] == day["adherence"] and week["reps"] == day["reps"]
    mine = await pat.call("rehab:progress", {})
    assert mine["ok"] and mine["runs"][0]["run_id"] == run_id


async def test_run_stops_when_the_patient_leaves_or_on_request(live: Any, connect: Any) -> None:
    service = live.app[REHAB]
    service.guide_settings = FAST
    counting = service.counting = ScriptedCounting(live.app[RECORDS])
    doc, pat = await room_with_patient(connect, "plan-leave")
    assert (await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]
    # the clinician starts it for the room's only patient and stops it
    ack = await doc.call("rehab:plan_run", {})
    assert ack["ok"] and ack["patient"] == "pat-1"
    await doc.next("rehab:guide", lambda g: g["phase"] == "exercise")
    stop = await doc.call("rehab:plan_stop", {})
    assert stop["ok"] and stop["run_id"] == ack["run_id"]
    end = await pat.next("rehab:guide", lambda g: g["phase"] == "stopped")
    assert end["end_reason"] == "stopped"
    assert "pat-1" not in service.guides and counting.live == {}
    # the patient starts it again and leaves mid-set: the run ends, its timers with it
    ack = await pat.call("rehab:plan_run", {})
    assert ack["ok"]
    await doc.next("rehab:guide", lambda g: g["phase"] == "exercise")
    counting.count(1)
    await pat.close()
    end = await doc.next(
        "rehab:guide", lambda g: g["phase"] == "stopped" and g["run_id"] == ack["run_id"]
    )
    assert end["end_reason"] == "patient_left"
    await wait_until(lambda: "pat-1" not in service.guides)
    assert counting.live == {}
    run = (await rows(live, rehab_plan_runs, rehab_plan_runs.c.id == ack["run_id"]))[0]
    assert run["end_reason"] == "patient_left" and run["sets_done"] == 0
    sets = await rows(live, rehab_plan_sets, rehab_plan_sets.c.run_id == ack["run_id"])
    assert [(s["reps"], s["skipped"]) for s in sets] == [(1, True)]
    ack = await doc.call("rehab:plan_stop", {"patient_identity": "pat-1"})
    assert ack["ok"] is False and ack["error"]["code"] == "not_found"


async def test_guided_run_without_a_camera_says_so(live: Any, connect: Any) -> None:
    """With the real counting (VisionAgent on the SFU tap): no camera published -> the guide
    stays on the set and tells the room why, until stopped."""
    service = live.app[REHAB]
    service.guide_settings = FAST
    doc, pat = await room_with_patient(connect, "plan-nocam")
    assert (await doc.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]
    assert (await pat.call("rehab:plan_run", {}))["ok"]
    g = await pat.next("rehab:guide", lambda g: g["error"] is not None)
    assert g["phase"] == "exercise" and g["error"]["code"] == "not_found"
    assert (await pat.call("rehab:plan_stop", {}))["ok"]
    await asyncio.wait_for(pat.next("rehab:guide", lambda g: g["phase"] == "stopped"), 10)
    assert service.guides == {} and service.sessions == {}


async def test_run_ends_with_the_room(live: Any, connect: Any) -> None:
    """A host watches and runs the plan for the patient, then ends the room: the run, its
    counting session and its timers end with it."""
    service = live.app[REHAB]
    service.guide_settings = FAST
    counting = service.counting = ScriptedCounting(live.app[RECORDS])
    host = await connect("plan-end", "dr-h", "host")
    pat = await connect("plan-end", "pat-1", "patient")
    if pat.joined.get("status") == "waiting":
        assert (await host.call("lobby:admit", {"identity": "pat-1"}))["ok"]
    assert (await host.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]
    ack = await host.call("rehab:plan_run", {"patient_identity": "pat-1"})
    assert ack["ok"], ack
    await pat.next("rehab:guide", lambda g: g["phase"] == "exercise")
    assert (await host.call("host:end", {}))["ok"]
    await wait_until(lambda: service.guides == {})
    assert counting.live == {}
    run = (await rows(live, rehab_plan_runs, rehab_plan_runs.c.id == ack["run_id"]))[0]
    assert run["end_reason"] in ("room_closed", "patient_left") and run["ended_at"] is not None
