"""Department queues: consults requested in a department, ordered by triage risk then arrival.

A visit is a room created for one patient in a department (POST /api/clinic/visits). While the
patient waits in that room's lobby, the visit is in the department's queue with its card's
triage (clinic/triage.py). A doctor's dashboard shows the queues of the departments in their
duty token, only the risk levels their level is offered; "take next" gives them the first such
visit and a host link to its room; when they join it, the patient is admitted.

State: visits are rows of `clinic_visits` (kept in memory too); who waits is the live room
registry (one node; see docs/clinic.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records.store import RecordStore
from signaling.extensions import Caller, FeatureHost

from .duty import DutyClaims
from .tables import clinic_visits
from .triage import assess, offered

log = logging.getLogger(__name__)
VISIT_MAX_AGE_S = 7 * 24 * 3600  # the longest a visit's join link lives


@dataclass(slots=True)
class Visit:
    """One consult requested in a department."""

    room: str
    department: str
    patient: str
    patient_name: str
    created_at: float
    taken_by: str | None = None
    taken_at: float | None = None
    risk: str | None = None


class QueueEmpty(Exception):
    """Nobody waiting that this doctor is offered."""


class Queues:
    """Visits by room, their department queues, and taking the next patient."""

    def __init__(self, ns: FeatureHost, store: RecordStore) -> None:
        self.ns = ns
        self.store = store
        self.visits: dict[str, Visit] = {}
        self._take_lock = asyncio.Lock()
        self._loaded = False
        ns.listen("participant_joined", self.on_joined)

    async def load(self) -> None:
        """Visits not yet taken, from the records (after a restart)."""
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(select(clinic_visits).where(clinic_visits.c.taken_by.is_(None)))
            ).all()
        for row in rows:
            m = row._mapping
            self.visits[m["room"]] = Visit(
                m["room"], m["department"], m["patient"], m["patient_name"], m["created_at"]
            )
        self._loaded = True

    async def create_visit(
        self, department: str, patient: str, name: str, taken_by: str | None = None
    ) -> Visit:
        """A new room for `patient` in `department` (already taken: a consult a doctor starts
        from a device alert, outside the queues)."""
        now = time.time()
        visit = Visit(f"v-{secrets.token_hex(8)}", department, patient, name, now)
        if taken_by is not None:
            visit.taken_by, visit.taken_at = taken_by, now
        row = {
            "room": visit.room,
            "department": department,
            "patient": patient,
            "patient_name": name,
            "created_at": visit.created_at,
            "taken_by": visit.taken_by,
            "taken_at": visit.taken_at,
        }

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(insert(clinic_visits).values(**row))

        await self.store.write(write)
        self.visits[visit.room] = visit
        return visit

    def waiting(self, departments: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
        """Waiting visits of these departments, highest risk first, then first come."""
        now = time.time()
        out = []
        for room_name, visit in list(self.visits.items()):
            if now - visit.created_at > VISIT_MAX_AGE_S:
                del self.visits[room_name]  # its join link (<= 7 days) has expired
                continue
            if visit.department not in departments or visit.taken_by is not None:
                continue
            room = self.ns.registry.get(visit.room)
            entry = room.lobby.get(visit.patient) if room is not None else None
            if entry is None:
                continue
            triage = assess(entry.card)
            out.append(
                {
                    "room": visit.room,
                    "department": visit.department,
                    "patient": {"identity": visit.patient, "name": entry.name},
                    "requested_at": entry.requested_at,
                    "waited_s": round(max(0.0, now - entry.requested_at), 1),
                    "card": entry.card,
                    **triage.as_dict(),
                    "_rank": triage.rank,
                }
            )
        out.sort(key=lambda e: (-e["_rank"], e["requested_at"], e["room"]))
        for e in out:
            del e["_rank"]
        return out

    def offered_to(self, duty: DutyClaims) -> list[dict[str, Any]]:
        """The waiting visits this doctor's level is offered, in queue order."""
        levels = offered(duty.level)
        return [e for e in self.waiting(duty.departments) if e["risk"] in levels]

    async def take_next(self, duty: DutyClaims) -> tuple[Visit, dict[str, Any]]:
        """Give the doctor the first visit they are offered (raises QueueEmpty)."""
        async with self._take_lock:  # no I/O inside: decide, mark, then write
            queue = self.offered_to(duty)
            if not queue:
                raise QueueEmpty
            entry = queue[0]
            visit = self.visits[entry["room"]]
            visit.taken_by = duty.identity
            visit.taken_at = time.time()
            visit.risk = entry["risk"]

        async def write(conn: AsyncConnection) -> None:
            await conn.execute(
                update(clinic_visits)
                .where(clinic_visits.c.room == visit.room)
                .values(taken_by=visit.taken_by, taken_at=visit.taken_at, risk=visit.risk)
            )

        await self.store.write(write)
        return visit, entry

    async def consults_today(self, identity: str) -> list[dict[str, Any]]:
        """Visits this doctor took since local midnight."""
        midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
        async with self.store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(clinic_visits)
                    .where(clinic_visits.c.taken_by == identity)
                    .where(clinic_visits.c.taken_at >= midnight)
                    .order_by(clinic_visits.c.taken_at.desc())
                    .limit(200)
                )
            ).all()
        return [
            {
                "room": r.room,
                "department": r.department,
                "patient": {"identity": r.patient, "name": r.patient_name},
                "taken_at": r.taken_at,
                "risk": r.risk,
            }
            for r in rows
        ]

    async def on_joined(self, caller: Caller) -> None:
        """The doctor who took a visit joined its room: admit the waiting patient."""
        visit = self.visits.get(caller.room)
        if visit is None or visit.taken_by != caller.identity or not caller.grants.admit:
            return
        room = self.ns.registry.get(visit.room)
        if room is None:
            return
        joined = None
        async with self.ns.locked(room) as out:  # the lobby's own admit path (signaling/lobby.py)
            entry = room.lobby.get(visit.patient)
            if entry is None:
                return
            room.check_entry(entry.identity, entry.grants, self.ns.max_participants)
            joined = await self.ns.admit_locked(room, entry, caller.identity, out)
            self.ns.broadcast_queue(room, out)
        self.visits.pop(visit.room, None)
        await self.ns.audit("admit", caller.identity, f"room:{visit.room}/{visit.patient}")
        if joined is not None:
            await self.ns.notify("participant_joined", joined)
