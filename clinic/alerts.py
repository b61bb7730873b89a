"""Device readings in, threshold alerts out (docs/clinic.md, "Device alerts").

`ingest` stores a device's readings in one transaction: a reading already received (same
device, Observation id and code) with the same value is a duplicate and raises no alert; with
another value it is a conflict (409) and nothing of the request is stored. A reading below a
code's `low` or at/above its `high` (defaults in clinic/data/thresholds.json, per-patient
overrides in `clinic_thresholds`) opens an alert for the device's department.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records.store import RecordStore

from .devices import Device
from .observations import ObservationRefused, Reading, catalogue
from .tables import clinic_alerts, clinic_observations, clinic_thresholds

log = logging.getLogger(__name__)
AlertListener = Callable[[dict[str, Any]], Awaitable[None]]


def alert_view(row: Any) -> dict[str, Any]:
    """An alert as the API and the dashboard show it."""
    m = row._mapping if hasattr(row, "_mapping") else row
    spec = catalogue()["codes"].get(m["code"], {})
    rule = m["rule"] or {}
    return {
        "id": m["id"],
        "patient": {"identity": m["patient"]},
        "department": m["department"],
        "code": m["code"],
        "label": spec.get("label", m["code"]),
        "label_zh": spec.get("label_zh", ""),
        "value": m["value"],
        "unit": m["unit"],
        "direction": rule.get("direction"),
        "limit": rule.get("limit"),
        "opened_at": m["opened_at"],
        "status": m["status"],
        "room": m["room"],
        "handled_by": m["handled_by"],
    }


def crossing(
    reading: Reading, overrides: dict[str, tuple[float | None, float | None]]
) -> dict[str, Any] | None:
    """The rule a reading crosses, if any: {direction, limit, source}."""
    spec = catalogue()["codes"][reading.code]
    low, high = spec["low"], spec["high"]
    source = "default"
    if reading.code in overrides:
        low, high = overrides[reading.code]
        source = "patient"
    if low is not None and reading.value < low:
        return {"direction": "low", "limit": low, "source": source}
    if high is not None and reading.value >= high:
        return {"direction": "high", "limit": high, "source": source}
    return None


class DeviceAlerts:
    """Ingest readings, keep thresholds, list and hand over alerts."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.listeners: list[AlertListener] = []  # e.g. a webhook sender

    async def ingest(self, device: Device, readings: list[Reading]) -> dict[str, Any]:
        """Store readings and open alerts (all or nothing); raises ObservationRefused(409)."""
        now = time.time()

        async def write(conn: AsyncConnection) -> dict[str, Any]:
            rows = await conn.execute(
                select(clinic_thresholds).where(clinic_thresholds.c.patient == device.patient)
            )
            overrides = {r.code: (r.low, r.high) for r in rows}
            accepted, duplicates, opened = 0, 0, []
            for reading in readings:
                seen = (
                    await conn.execute(
                        select(clinic_observations.c.value).where(
                            clinic_observations.c.device == device.id,
                            clinic_observations.c.observation_id == reading.observation_id,
                            clinic_observations.c.code == reading.code,
                        )
                    )
                ).first()
                if seen is not None:
                    if seen.value != reading.value:
                        raise ObservationRefused(
                            409,
                            "conflict",
                            f"Observation/{reading.observation_id} ({reading.code}) was already "
                            f"received with another value ({seen.value}).",
                        )
                    duplicates += 1
                    continue
                result = await conn.execute(
                    insert(clinic_observations).values(
                        device=device.id,
                        observation_id=reading.observation_id,
                        patient=device.patient,
                        code=reading.code,
                        value=reading.value,
                        unit=reading.unit,
                        effective=reading.effective,
                        received_at=now,
                    )
                )
                accepted += 1
                rule = crossing(reading, overrides)
                if rule is None:
                    continue
                values = {
                    "patient": device.patient,
                    "department": device.department,
                    "observation": result.inserted_primary_key[0],
                    "code": reading.code,
                    "value": reading.value,
                    "unit": reading.unit,
                    "rule": rule,
                    "opened_at": now,
                    "status": "open",
                    "room": None,
                    "handled_by": None,
                }
                alert = await conn.execute(insert(clinic_alerts).values(**values))
                opened.append(alert_view({"id": alert.inserted_primary_key[0], **values}))
            return {"accepted": accepted, "duplicates": duplicates, "alerts": opened}

        outcome = await self.store.write(write)
        for alert in outcome["alerts"]:
            for listener in self.listeners:
                try:
                    await listener(alert)
                except Exception:
                    log.exception("alert listener failed")
        return outcome

    async def list(
        self, status: str | None = None, departments: list[str] | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        """Alerts, newest first."""
        stmt = select(clinic_alerts).order_by(clinic_alerts.c.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(clinic_alerts.c.status == status)
        if departments is not None:
            stmt = stmt.where(clinic_alerts.c.department.in_(departments))
        async with self.store.engine.connect() as conn:
            return [alert_view(r) for r in (await conn.execute(stmt)).all()]

    async def get(self, alert_id: int) -> dict[str, Any] | None:
        async with self.store.engine.connect() as conn:
            row = (
                await conn.execute(select(clinic_alerts).where(clinic_alerts.c.id == alert_id))
            ).first()
        return alert_view(row) if row is not None else None

    async def hand_over(self, alert_id: int, room: str, by: str) -> bool:
        """Mark an open alert as being handled in a consult; False if it was not open."""

        async def write(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(clinic_alerts)
                .where(clinic_alerts.c.id == alert_id, clinic_alerts.c.status == "open")
                .values(status="consult", room=room, handled_by=by)
            )
            return bool(result.rowcount)

        return await self.store.write(write)

    async def set_thresholds(
        self, patient: str, limits: dict[str, tuple[float | None, float | None]]
    ) -> None:
        """Replace a patient's overrides for the given codes."""

        async def write(conn: AsyncConnection) -> None:
            for code, (low, high) in limits.items():
                await conn.execute(
                    delete(clinic_thresholds).where(
                        clinic_thresholds.c.patient == patient, clinic_thresholds.c.code == code
                    )
                )
                await conn.execute(
                    insert(clinic_thresholds).values(patient=patient, code=code, low=low, high=high)
                )

        await self.store.write(write)
