"""Storage of prescribed plans, guided runs and their sets, and the progress a clinician reads.

Plans are keyed by the patient's identity and outlive rooms. Every write goes through
``RecordStore.write`` (one serialized transaction); reads use the engine directly.
"""

from __future__ import annotations

import statistics
import time
import tomllib
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records.store import RecordStore

from .plan import RehabPlan
from .tables import rehab_plan_runs, rehab_plan_sets, rehab_plans, rehab_sessions


@cache
def demo_texts() -> dict[str, dict[str, str]]:
    """Demonstration text per exercise, ``{"en": ..., "zh-CN": ...}`` (demos.toml)."""
    raw = resources.files(__package__).joinpath("demos.toml").read_text("utf-8")
    return {name: {"en": t["en"], "zh-CN": t["zh-CN"]} for name, t in tomllib.loads(raw).items()}


def new_id() -> str:
    return uuid.uuid4().hex


async def set_plan(
    store: RecordStore, patient: str, plan: RehabPlan, prescribed_by: str, room: str | None
) -> dict[str, Any]:
    """Store ``plan`` as the patient's active plan; earlier plans stay, inactive."""
    plan = plan.model_copy(update={"prescribed_by": prescribed_by})
    row = {
        "id": new_id(),
        "patient": patient,
        "prescribed_by": prescribed_by,
        "room": room,
        "created_at": time.time(),
        "plan": plan.model_dump(mode="json"),
        "active": True,
    }

    async def write(conn: AsyncConnection) -> None:
        await conn.execute(
            update(rehab_plans)
            .where(rehab_plans.c.patient == patient, rehab_plans.c.active.is_(True))
            .values(active=False)
        )
        await conn.execute(insert(rehab_plans).values(**row))

    await store.write(write)
    return plan_info(row)


def plan_info(row: Any) -> dict[str, Any]:
    m = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    return {
        "plan_id": m["id"],
        "patient": m["patient"],
        "prescribed_by": m["prescribed_by"],
        "created_at": m["created_at"],
        "active": bool(m["active"]),
        "plan": m["plan"],
    }


async def active_plan(store: RecordStore, patient: str) -> dict[str, Any] | None:
    """The patient's active plan (``plan_info`` shape) or None."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(rehab_plans)
                .where(rehab_plans.c.patient == patient, rehab_plans.c.active.is_(True))
                .order_by(rehab_plans.c.created_at.desc())
                .limit(1)
            )
        ).first()
    return plan_info(row) if row is not None else None


async def start_run(store: RecordStore, row: dict[str, Any]) -> None:
    async def write(conn: AsyncConnection) -> None:
        await conn.execute(insert(rehab_plan_runs).values(**row))

    await store.write(write)


async def add_set(store: RecordStore, row: dict[str, Any]) -> None:
    async def write(conn: AsyncConnection) -> None:
        await conn.execute(insert(rehab_plan_sets).values(**row))

    await store.write(write)


async def end_run(store: RecordStore, run_id: str, values: dict[str, Any]) -> None:
    async def write(conn: AsyncConnection) -> None:
        await conn.execute(
            update(rehab_plan_runs).where(rehab_plan_runs.c.id == run_id).values(**values)
        )

    await store.write(write)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 1) if values else None


async def progress(store: RecordStore, patient: str, since: float) -> dict[str, Any]:
    """The patient's history since ``since`` (epoch s): sessions, guided runs, days.

    - ``sessions``: every counting session (guided or not): date, exercise, reps, mean ROM,
      mean score, and the run it belonged to.
    - ``runs``: each guided run: sets done / prescribed (a set is done when its reps were
      reached, not skipped), reps, adherence = sets done / sets prescribed.
    - ``days``: per UTC day, the runs' sets done / prescribed summed, and the day's mean ROM
      and score over its sessions.
    - ``weeks``: the same per ISO week (what the progress chart draws).
    """
    async with store.engine.connect() as conn:
        sessions = (
            await conn.execute(
                select(rehab_sessions)
                .where(rehab_sessions.c.patient == patient, rehab_sessions.c.started_at >= since)
                .order_by(rehab_sessions.c.started_at)
            )
        ).all()
        runs = (
            await conn.execute(
                select(rehab_plan_runs)
                .where(rehab_plan_runs.c.patient == patient, rehab_plan_runs.c.started_at >= since)
                .order_by(rehab_plan_runs.c.started_at)
            )
        ).all()
        run_ids = [r.id for r in runs]
        sets = (
            (
                await conn.execute(
                    select(rehab_plan_sets).where(rehab_plan_sets.c.run_id.in_(run_ids))
                )
            ).all()
            if run_ids
            else []
        )
    run_of = {s.session_id: s.run_id for s in sets if s.session_id}
    out_sessions = []
    by_day: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sets_done": 0, "sets_prescribed": 0, "rom": [], "score": [], "reps": 0}
    )
    for s in sessions:
        rom = [float(v) for v in (s.report or {}).get("rom_deg", [])]
        day = _day(s.started_at)
        out_sessions.append(
            {
                "session_id": s.id,
                "date": day,
                "started_at": s.started_at,
                "exercise": s.exercise,
                "reps": s.reps,
                "mean_rom_deg": _mean(rom),
                "mean_score": s.score,
                "run_id": run_of.get(s.id) or (s.report or {}).get("run_id"),
            }
        )
        d = by_day[day]
        d["rom"].extend(rom)
        d["reps"] += s.reps
        if s.score is not None:
            d["score"].append(float(s.score))
    out_runs = []
    for r in runs:
        done = sum(1 for s in sets if s.run_id == r.id and not s.skipped)
        out_runs.append(
            {
                "run_id": r.id,
                "plan_id": r.plan_id,
                "date": _day(r.started_at),
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "end_reason": r.end_reason,
                "sets_done": done,
                "sets_prescribed": r.sets_prescribed,
                "reps_done": sum(s.reps for s in sets if s.run_id == r.id),
                "reps_prescribed": r.reps_prescribed,
                "adherence": round(done / r.sets_prescribed, 3),
            }
        )
        d = by_day[_day(r.started_at)]
        d["sets_done"] += done
        d["sets_prescribed"] += r.sets_prescribed
    days = [
        {
            "date": day,
            "reps": d["reps"],
            "sets_done": d["sets_done"],
            "sets_prescribed": d["sets_prescribed"],
            "adherence": round(d["sets_done"] / d["sets_prescribed"], 3)
            if d["sets_prescribed"]
            else None,
            "mean_rom_deg": _mean(d["rom"]),
            "mean_score": _mean(d["score"]),
        }
        for day, d in sorted(by_day.items())
    ]
    return {
        "patient": patient,
        "sessions": out_sessions,
        "runs": out_runs,
        "days": days,
        "weeks": weekly(by_day),
    }


def weekly(by_day: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ISO week ("2026-W49"): mean ROM and score over its sessions' reps and scores,
    adherence = sets done / sets prescribed of its guided runs (None without a run)."""
    weeks: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"sets_done": 0, "sets_prescribed": 0, "rom": [], "score": [], "reps": 0}
    )
    for day, d in by_day.items():
        iso = datetime.fromisoformat(day).isocalendar()
        w = weeks[f"{iso.year}-W{iso.week:02d}"]
        for k in ("sets_done", "sets_prescribed", "reps"):
            w[k] += d[k]
        w["rom"].extend(d["rom"])
        w["score"].extend(d["score"])
    return [
        {
            "week": week,
            "reps": w["reps"],
            "mean_rom_deg": _mean(w["rom"]),
            "mean_score": _mean(w["score"]),
            "adherence": round(w["sets_done"] / w["sets_prescribed"], 3)
            if w["sets_prescribed"]
            else None,
        }
        for week, w in sorted(weeks.items())
    ]
