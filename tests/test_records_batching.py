"""Join storms share database work: revocation checks share reads, audit entries share inserts,
and neither gives up correctness (a revocation is seen, every entry verifies)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from kernel.records.audit import AuditLog, verify_log
from kernel.records.store import RecordStore
from rtc_server.migrations import open_store


def count_statements(store: RecordStore, word: str) -> list[str]:
    seen: list[str] = []

    def before(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith(word):
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_concurrent_revocation_checks_share_reads(tmp_path: Path) -> None:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await store.start()
    try:
        await store.revoke_token("jti-3", "admin", "lost phone")
        await store.revoke_token("jti-七", "admin", None)
        selects = count_statements(store, "SELECT")
        ids = [f"jti-{i}" for i in range(40)] + ["jti-七", "jti-3"]
        answers = await asyncio.gather(*(store.is_revoked(j) for j in ids))
        assert dict(zip(ids, answers, strict=True)) == {j: j in ("jti-3", "jti-七") for j in ids}
        assert 1 <= len(selects) <= 3  # 42 callers, a couple of shared reads
        # a revocation committed before the check starts is always seen
        await store.revoke_token("jti-5", "admin", None)
        assert await store.is_revoked("jti-5")
        assert not await store.is_revoked("jti-6")
    finally:
        await store.close()


async def test_concurrent_audit_entries_share_inserts_and_verify(tmp_path: Path) -> None:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    await store.start()
    key = Ed25519PrivateKey.generate()
    log = AuditLog(store, key, head_interval_s=3600)
    await log.start()
    try:
        inserts = count_statements(store, "INSERT INTO AUDIT_ENTRIES")
        seqs = await asyncio.gather(
            *(log.append("connect", f"医生{i}", "room:会诊", detail={"i": i}) for i in range(60))
        )
        assert sorted(seqs) == list(range(60))
        assert len(inserts) < 10  # 60 entries, a few executemany inserts
        await log.append("join", "医生0", "room:会诊", "joined")  # one alone still commits
        await log.close()
        report = await verify_log(store, key.public_key())
        assert report.ok and report.entries == 61, report
    finally:
        await store.close()


class _FlakyEngine:
    """The store's engine, but `begin()` fails while `down` is set (the database is away)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.down = False

    def begin(self) -> Any:
        if self.down:
            raise OperationalError("BEGIN", {}, Exception("database is away"))
        return self._engine.begin()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


async def test_audit_recovers_after_the_database_was_away(tmp_path: Path) -> None:
    """An insert that failed before it ran (no connection) must not swallow later entries,
    and its entries (their sequence numbers taken) are written once the database is back:
    the log verifies with no gap."""
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    await store.start()
    key = Ed25519PrivateKey.generate()
    log = AuditLog(store, key, head_interval_s=3600)
    await log.start()
    flaky = _FlakyEngine(store.engine)
    try:
        assert await log.append("join", "医生甲", "room:会诊") == 0
        store.engine = flaky
        flaky.down = True
        with pytest.raises(OperationalError):
            await log.append("chat", "医生甲", "room:会诊")
        flaky.down = False
        assert await log.append("leave", "医生甲", "room:会诊") == 2
        await log.close()
        report = await verify_log(store, key.public_key())
        assert report.ok and report.entries == 3, report
    finally:
        store.engine = flaky._engine
        await store.close()
