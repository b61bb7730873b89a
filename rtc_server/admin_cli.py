"""Operator sub-commands of `teleconsult`: `db upgrade|current`, `backup`, `restore`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from rtc_server.config import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), {"data_dir": args.data_dir})


def _where(settings: Settings) -> str:
    """The database URL without its password (for what the operator sees)."""
    return make_url(settings.db_url).render_as_string(hide_password=True)


async def _on_database(settings: Settings, fn: object) -> object:
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(settings.db_url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)  # type: ignore[arg-type]
    finally:
        await engine.dispose()


def cmd_db(args: argparse.Namespace) -> int:
    """`db upgrade` brings the records schema to this release; `db current` prints its stamp."""
    from rtc_server import migrations

    settings = _settings(args)
    newest = migrations.head()
    if args.action == "current":

        def read(conn: Connection) -> str | None:
            return migrations.current(conn)

        rev = asyncio.run(_on_database(settings, read))
        if rev == newest:
            print(f"{rev} (current: this release's newest revision)")
        elif rev is None:
            print("none (empty, or made before migrations): run `teleconsult db upgrade`")
        else:
            print(f"{rev} (this release needs {newest}: run `teleconsult db upgrade`)")
        return 0 if rev == newest else 1

    def run(conn: Connection) -> tuple[str | None, str]:
        return migrations.upgrade(conn, args.revision)

    before, after = asyncio.run(_on_database(settings, run))  # type: ignore[misc]
    if before == after:
        print(f"records schema already at {after} ({_where(settings)})")
    else:
        print(f"records schema upgraded: {before or 'empty'} -> {after} ({_where(settings)})")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


PG_DUMP = (
    "the records are in PostgreSQL: dump them beside this copy with "
    "`pg_dump -Fc -f {out}/records.pgdump <database>` (docs/operations.md, Backup and restore)"
)
PG_RESTORE = (
    "the records were in PostgreSQL: restore them with "
    "`pg_restore -d <new database> {src}/records.pgdump` and set database_url"
)


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the data dir (SQLite online backup, then every file) into a new folder."""
    from rtc_server.backup import backup

    settings = _settings(args)
    report = backup(settings, args.out)
    what = f"SQLite records (schema {report.revision})" if report.database == "sqlite" else "files"
    print(f"backup written to {report.path}: {what}, {report.files} files, {_size(report.bytes)}")
    if report.database != "sqlite":
        print(PG_DUMP.format(out=report.path))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Check a backup against its manifest and restore it into a new data dir."""
    from rtc_server.backup import restore

    report = restore(args.src, args.data_dir)
    print(f"restored {report.files} files ({_size(report.bytes)}) into {report.path}")
    if report.database != "sqlite":
        print(PG_RESTORE.format(src=args.src.resolve()))
    print(f"check it: teleconsult audit verify --data-dir {report.path}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `db` (and the other operator commands) on the `teleconsult` parser."""
    db = sub.add_parser("db", help="records schema: upgrade it, or print its version")
    db_sub = db.add_subparsers(dest="action", required=True)
    for name, helptext in (
        ("upgrade", "bring the records schema to this release (back up first)"),
        ("current", "print the schema revision; exit 1 when an upgrade is needed"),
    ):
        p = db_sub.add_parser(name, help=helptext)
        if name == "upgrade":
            p.add_argument(
                "--revision", default="head", help="target revision (default: head, the newest)"
            )
        p.add_argument("--data-dir", type=Path, help="data dir holding the SQLite database")
        p.add_argument("--config", type=Path, help="TOML settings file (database_url)")
        p.set_defaults(func=cmd_db)

    bk = sub.add_parser("backup", help="copy the data dir consistently, also while serving")
    bk.add_argument("--data-dir", type=Path, help="the data dir to back up")
    bk.add_argument("--out", type=Path, required=True, help="new (or empty) folder to write to")
    bk.add_argument("--config", type=Path, help="TOML settings file (database_url)")
    bk.set_defaults(func=cmd_backup)

    rs = sub.add_parser("restore", help="restore a backup into a new data dir")
    rs.add_argument("--from", dest="src", type=Path, required=True, help="a backup folder")
    rs.add_argument("--data-dir", type=Path, required=True, help="new (or empty) data dir")
    rs.set_defaults(func=cmd_restore)
