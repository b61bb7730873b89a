"""Home devices and gateways: per-device keys (only their SHA-256 is stored).

`teleconsult device add --patient P --department D` prints a key once; the server looks keys up
in the records on every request, so a key minted while it runs works at once.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records.store import RecordStore

from .tables import clinic_devices

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
KEY_PREFIX = "tcd_"


@dataclass(frozen=True, slots=True)
class Device:
    """A device allowed to post observations for one patient."""

    id: str
    patient: str
    department: str


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def add_device(
    store: RecordStore, patient: str, department: str, device_id: str | None = None
) -> tuple[Device, str]:
    """Register a device; returns it and its key (shown once, never stored)."""
    device_id = device_id or f"dev-{secrets.token_hex(6)}"
    if not DEVICE_ID.match(device_id):
        raise ValueError("device id: 1-64 of A-Z a-z 0-9 _ . : -")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {
        "id": device_id,
        "key_hash": key_hash(key),
        "patient": patient,
        "department": department,
        "created_at": time.time(),
    }

    async def write(conn: AsyncConnection) -> None:
        existing = await conn.execute(
            select(clinic_devices.c.id).where(clinic_devices.c.id == device_id)
        )
        if existing.first() is not None:
            raise ValueError(f"device {device_id} exists already")
        await conn.execute(insert(clinic_devices).values(**row))

    await store.write(write)
    return Device(device_id, patient, department), key


async def revoke_device(store: RecordStore, device_id: str) -> bool:
    """Withdraw a device's key; False if there is no such active device."""

    async def write(conn: AsyncConnection) -> bool:
        result = await conn.execute(
            update(clinic_devices)
            .where(clinic_devices.c.id == device_id, clinic_devices.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
        return bool(result.rowcount)

    return await store.write(write)


async def device_for_key(store: RecordStore, key: str) -> Device | None:
    """The active device with this key, if any."""
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(clinic_devices).where(
                    clinic_devices.c.key_hash == key_hash(key),
                    clinic_devices.c.revoked_at.is_(None),
                )
            )
        ).first()
    return Device(row.id, row.patient, row.department) if row is not None else None
