"""Webhooks to the hospital's own systems (LiveKit-style): room started/ended, participant
joined/left, lobby entered, recording finished, rehab report ready.

Each event is a JSON body POSTed to every `webhooks.urls` entry, signed with HMAC-SHA256 of the
exact body bytes under the data dir's `webhook.key`: `X-Teleconsult-Signature: sha256=<hex>`.
`send()` never blocks and never does I/O: room and connection code call it under their locks.
A task moves queued events into the outbox table (webhook_deliveries, committed through the
records writer) and delivers them; a receiver that fails or times out is retried with
exponential backoff (`retry_min_s` doubling to `retry_max_s`) until it answers 2xx or the
delivery is `max_age_s` old. Undelivered events survive a restart: each node delivers the
rows it queued (several nodes may share one database).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kernel.records.store import RecordStore
from rtc_server.config import WebhookSettings
from rtc_server.webhook_tables import webhook_deliveries as wd
from signaling.extensions import Caller, FeatureHost

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Teleconsult-Signature"
EVENTS = (
    "room_started",
    "room_ended",
    "participant_joined",
    "participant_left",
    "lobby_entered",
    "recording_finished",
    "rehab_report_ready",
    "device_alert",
)
BATCH = 50
# after a wake-up, events arriving within this window share one outbox write
BATCH_WINDOW_S = 0.05


def sign(key: bytes, body: bytes) -> str:
    """The signature header value of `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, header: str) -> bool:
    """Whether `header` is the signature of `body` (for receivers; constant time)."""
    return hmac.compare_digest(sign(key, body), header)


def _participant(caller: Caller) -> dict[str, Any]:
    return {"identity": caller.identity, "name": caller.name, "role": caller.role.value}


class Webhooks:
    """Queue (never blocking), persist and deliver webhook events."""

    def __init__(self, store: RecordStore, settings: WebhookSettings, key: str, node: str) -> None:
        self.store = store
        self.settings = settings
        self.key = key.encode()
        self.node = node
        self._queued: list[tuple[str, bytes]] = []
        # outbox changes of the last delivery round, written with the next round's inserts
        self._done: list[int] = []
        self._retries: list[tuple[int, int, float, str]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        # rooms announced as started on this node, and why each one is ending
        self._live_rooms: set[str] = set()
        self._ending: dict[str, str] = {}
        self.delivered = 0
        self.failed_attempts = 0

    @property
    def enabled(self) -> bool:
        return bool(self.settings.urls)

    # -- producing ---------------------------------------------------------------------------

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Queue `event` for every configured URL (no I/O: safe under any lock)."""
        if not self.enabled:
            return
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        body = {
            "event": event,
            "id": uuid.uuid4().hex,
            "created_at": time.time(),
            "node": self.node,
            **data,
        }
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        self._queued.append((event, raw))
        self._wakeup.set()

    def listen(self, ns: FeatureHost) -> None:
        """Turn the signaling lifecycle into webhook events."""
        ns.listen("participant_joined", self._on_joined)
        ns.listen("participant_left", self._on_left)
        ns.listen("room_closed", self._on_room_closed)
        ns.listen("lobby_entered", self._on_lobby)
        ns.listen("recording_finished", self._on_recording)
        ns.listen("rehab_report", self._on_rehab_report)

    async def _on_joined(self, caller: Caller) -> None:
        if caller.room not in self._live_rooms:
            self._live_rooms.add(caller.room)
            self.send("room_started", {"room": caller.room})
        self.send("participant_joined", {"room": caller.room, "participant": _participant(caller)})

    async def _on_left(self, caller: Caller, reason: str) -> None:
        if reason in ("room_ended", "server_shutdown"):
            self._ending[caller.room] = "ended" if reason == "room_ended" else reason
        self.send(
            "participant_left",
            {"room": caller.room, "participant": _participant(caller), "reason": reason},
        )

    async def _on_room_closed(self, room: str) -> None:
        reason = self._ending.pop(room, "empty")
        if room in self._live_rooms:
            self._live_rooms.discard(room)
            self.send("room_ended", {"room": room, "reason": reason})

    async def _on_lobby(self, caller: Caller) -> None:
        self.send("lobby_entered", {"room": caller.room, "participant": _participant(caller)})

    async def _on_recording(self, room: str, recording: dict[str, Any]) -> None:
        self.send("recording_finished", {"room": room, "recording": recording})

    async def _on_rehab_report(self, room: str, report: dict[str, Any]) -> None:
        summary = {
            k: report.get(k)
            for k in ("session_id", "patient", "exercise", "reps", "score", "end_reason")
        }
        self.send("rehab_report_ready", {"room": room, "report": summary})

    # -- delivering --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start delivering (rows left by an earlier run of this node first)."""
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s), trust_env=False
        )
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def close(self) -> None:
        """Persist what is queued, stop delivering; the outbox keeps the rest."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self._flush()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _flush(self) -> None:
        """One write: queued events into the outbox, delivered ones out, retries rescheduled."""
        if not (self._queued or self._done or self._retries):
            return
        queued, self._queued = self._queued, []
        done, self._done = self._done, []
        retries, self._retries = self._retries, []
        now = time.time()
        rows = [
            {
                "node": self.node,
                "url": url,
                "event": event,
                "body": raw.decode(),
                "created_at": now,
                "attempts": 0,
                "next_at": now,
            }
            for event, raw in queued
            for url in self.settings.urls
        ]

        async def run(conn: AsyncConnection) -> None:
            if done:
                await conn.execute(delete(wd).where(wd.c.id.in_(done)))
            for rid, n, at, error in retries:
                await conn.execute(
                    update(wd)
                    .where(wd.c.id == rid)
                    .values(attempts=n, next_at=at, last_error=error)
                )
            if rows:
                await conn.execute(insert(wd), rows)

        try:
            await self.store.write(run)
        except Exception:
            # keep them for the next try (a delivered row may then be sent again: at least once)
            self._queued[:0] = queued
            self._done[:0] = done
            self._retries[:0] = retries
            raise

    async def _run(self) -> None:
        delay = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
            self._wakeup.clear()
            try:
                if self._queued:
                    await asyncio.sleep(BATCH_WINDOW_S)
                await self._flush()
                delay = await self._deliver_due()
                if self._done or self._retries:
                    delay = min(delay, 1.0)  # record the outcome soon, even when idle
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhooks: delivery round failed")
                delay = self.settings.retry_min_s

    async def _deliver_due(self) -> float:
        """Deliver what is due, each receiver's events in order; returns the seconds until the
        next delivery is due (bounded)."""
        async with self.store.engine.connect() as conn:
            urls = list(
                (
                    await conn.execute(select(wd.c.url).where(wd.c.node == self.node).distinct())
                ).scalars()
            )
            queues = []
            for url in urls:
                rows = await conn.execute(
                    select(wd)
                    .where(wd.c.node == self.node, wd.c.url == url)
                    .order_by(wd.c.id)
                    .limit(BATCH)
                )
                queues.append(list(rows))
        # receivers in parallel; each one's events in order, stopping at its first failure
        results = await asyncio.gather(*(self._deliver_to(rows) for rows in queues))
        return max(0.0, min([3600.0, *results]))

    async def _deliver_to(self, rows: list[Any]) -> float:
        """Deliver one receiver's queue head first; returns the seconds until it is due. The
        outcome is written with the next round's inserts (`_flush`: one commit per round)."""
        done: list[int] = []
        wait = 0.0 if len(rows) == BATCH else 3600.0
        retry: tuple[int, int, float, str] | None = None
        for row in rows:
            now = time.time()
            if row.next_at > now:
                wait = row.next_at - now  # its head waits for a retry: so does the rest
                break
            error = await self._post(row.url, row.event, row.id, row.body.encode())
            if error is None:
                self.delivered += 1
                done.append(row.id)
                continue
            self.failed_attempts += 1
            attempts = row.attempts + 1
            if now - row.created_at > self.settings.max_age_s:
                log.warning(
                    "webhooks: gave up on %s event %d after %d attempts: %s",
                    row.event,
                    row.id,
                    attempts,
                    error,
                )
                done.append(row.id)
                continue
            wait = min(self.settings.retry_max_s, self.settings.retry_min_s * 2 ** (attempts - 1))
            log.info(
                "webhooks: %s event %d not delivered (%s); retry %d in %.1f s",
                row.event,
                row.id,
                error,
                attempts,
                wait,
            )
            retry = (row.id, attempts, now + wait, error)
            break
        self._done.extend(done)
        if retry is not None:
            self._retries.append(retry)
        return wait

    async def _post(self, url: str, event: str, delivery: int, body: bytes) -> str | None:
        """POST one delivery; None when the receiver answered 2xx, else the reason."""
        assert self._http is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.key, body),
            "X-Teleconsult-Event": event,
            "X-Teleconsult-Delivery": str(delivery),
        }
        try:
            async with self._http.post(url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__


WEBHOOKS = web.AppKey("webhooks", Webhooks)
