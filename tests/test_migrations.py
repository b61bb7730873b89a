"""Schema migrations (Alembic, rtc_server/migrations): a database made by the previous revision,
with data in it, is refused at start-up with the command to run, upgraded by `teleconsult db
upgrade` with its data intact, on SQLite and on a real PostgreSQL; fresh databases are stamped
at the newest revision; the revisions describe exactly the tables the code defines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from rtc_server import migrations
from rtc_server.migrations import open_store
from tests.cluster.conftest import REPO, Postgres, _reset_database, cluster_env

CHINESE = "患者诉腰痛三天，建议复查核磁共振。"  # noqa: RUF001


@pytest.fixture(scope="module")
def postgres_db() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        pg.start()
    except subprocess.CalledProcessError as exc:
        pg.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()[-2000:]}") from None
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'teleconsult.db'}"
    pg: Postgres = request.getfixturevalue("postgres_db")
    await _reset_database(pg.url)
    return pg.url


async def _sync(url: str, fn):  # type: ignore[no-untyped-def]
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", *args],
        capture_output=True,
        text=True,
        env=cluster_env(),
        cwd=REPO,
        timeout=120,
    )


async def _db_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, *args: str
) -> tuple[int, str]:
    """`teleconsult db ...` in this process (a thread: it runs its own event loop)."""
    from rtc_server.cli import main

    monkeypatch.setenv("TELECONSULT_DATABASE_URL", url)
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["db", *args])
    return code, capsys.readouterr().out


def _made_by_previous_revision(conn: Connection) -> None:
    """The schema of revision 0001 with a consult in it, as the release before 0002 left it."""
    migrations.upgrade(conn, "0001")
    conn.execute(
        text(
            "INSERT INTO rooms (name, created_at, locked, lobby_policy) "
            "VALUES ('ward-7', :t, false, 'clinicians_direct')"
        ),
        {"t": time.time()},
    )
    conn.execute(
        text(
            "INSERT INTO chat_messages (room, sender_identity, sender_name, sender_role, text, "
            "created_at) VALUES ('ward-7', 'dr-li', '李医生', 'clinician', :m, :t)"
        ),
        {"m": CHINESE, "t": time.time()},
    )


async def test_upgrade_from_previous_revision_keeps_data(
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _sync(db_url, _made_by_previous_revision)
    assert await _sync(db_url, migrations.current) == "0001"

    # start-up refuses the older schema and names the command
    store = open_store(db_url)
    with pytest.raises(migrations.SchemaError, match=r"teleconsult db upgrade"):
        await store.start()
    await store.engine.dispose()

    data = str(tmp_path / "data")
    code, out = await _db_cli(capsys, monkeypatch, db_url, "current", "--data-dir", data)
    assert code == 1 and "0001" in out, out
    code, out = await _db_cli(capsys, monkeypatch, db_url, "upgrade", "--data-dir", data)
    assert code == 0
    assert f"0001 -> {migrations.head()}" in out

    store = open_store(db_url)
    await store.start()
    try:
        history = await store.chat_history("ward-7", 10)
        assert [(m.sender_name, m.text) for m in history] == [("李医生", CHINESE)]
    finally:
        await store.close()
    tables = await _sync(db_url, lambda c: set(inspect(c).get_table_names()))
    assert "webhook_deliveries" in tables
    code, out = await _db_cli(capsys, monkeypatch, db_url, "current", "--data-dir", data)
    assert code == 0, out


async def test_fresh_database_is_stamped_at_head(db_url: str) -> None:
    store = open_store(db_url)
    await store.start()
    await store.close()
    assert await _sync(db_url, migrations.current) == migrations.head()


async def test_database_from_before_migrations_is_upgraded(tmp_path: Path) -> None:
    """No stamp at all (a release before migrations): refused, then stamped at the baseline
    (0001) and upgraded."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"

    def old_release(conn: Connection) -> None:
        _made_by_previous_revision(conn)
        conn.execute(text("DROP TABLE alembic_version"))

    await _sync(url, old_release)
    store = open_store(url)
    with pytest.raises(migrations.SchemaError, match="not versioned"):
        await store.start()
    await store.engine.dispose()
    before, after = await _sync(url, migrations.upgrade)
    assert (before, after) == (None, migrations.head())


async def test_newer_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"

    def from_the_future(conn: Connection) -> None:
        migrations.upgrade(conn)
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    await _sync(url, from_the_future)
    store = open_store(url)
    with pytest.raises(migrations.SchemaError, match="newer teleconsult release"):
        await store.start()
    await store.engine.dispose()


def test_serve_refuses_an_old_schema_with_one_sentence(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    asyncio.run(_sync(f"sqlite+aiosqlite:///{data / 'teleconsult.db'}", _made_by_previous_revision))
    proc = _cli("serve", "--port", "0", "--data-dir", str(data))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "run `teleconsult db upgrade`" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_revisions_describe_every_table(tmp_path: Path) -> None:
    """A database built by running every revision matches the table definitions. When this
    fails, a table or column was added without a revision: docs/operations.md, "Schema
    migrations", says how to generate one."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"

    def diff(conn: Connection) -> list[object]:
        migrations.upgrade(conn)
        return compare_metadata(MigrationContext.configure(conn), migrations.load_metadata())

    assert await _sync(url, diff) == []
