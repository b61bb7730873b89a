"""The hospital's identifiers of a consult's people (from the join token's `mrn` claim).

A join token may carry ``mrn`` and ``mrn_system`` (the patient's MRN, a clinician's staff
number): when its holder joins, they are kept per room and identity, so the consult record's
Patient and Practitioner resources carry the hospital's own identifier and match its records.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, String, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.extensions import Caller, FeatureHost
from kernel.records.store import RecordStore
from kernel.records.tables import metadata

participant_ids = Table(
    "participant_ids",
    metadata,
    Column("room", String(128), primary_key=True),
    Column("identity", String(128), primary_key=True),
    Column("mrn", String(64), nullable=False),
    Column("mrn_system", String(256), nullable=False),
    Column("at", Float, nullable=False),
)


async def hospital_ids(store: RecordStore, room: str) -> dict[str, tuple[str, str]]:
    """identity -> (system, value) for the people of a room whose token carried one."""
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(participant_ids).where(participant_ids.c.room == room))
        return {r.identity: (r.mrn_system, r.mrn) for r in rows}


def setup(host: FeatureHost, store: RecordStore) -> None:
    """Keep the `mrn` claim of everyone who joins."""

    async def on_joined(caller: Caller) -> None:
        claims = host.claims_for(caller.sid)
        if claims is None or not claims.mrn or not claims.mrn_system:
            return
        mrn, system = claims.mrn, claims.mrn_system

        async def run(db: AsyncConnection) -> None:
            key = (participant_ids.c.room == caller.room) & (
                participant_ids.c.identity == caller.identity
            )
            await db.execute(delete(participant_ids).where(key))
            await db.execute(
                insert(participant_ids).values(
                    room=caller.room,
                    identity=caller.identity,
                    mrn=mrn,
                    mrn_system=system,
                    at=time.time(),
                )
            )

        await store.write(run)

    host.listen("participant_joined", on_joined)
