"""`teleconsult backup` and `teleconsult restore`: a consistent copy of a data dir, taken while
the server runs, and its restore into a new data dir.

The SQLite records database is copied with SQLite's online backup API (a consistent snapshot
while writers go on), first; then every other file of the data dir (secrets and keys, uploaded
documents, recordings, education content, whatever else lives there). Documents are
content-addressed and stored before the rows that name them, so every document the snapshot
refers to is among the files copied after it. A manifest (`backup.json`) lists each file with
its size and SHA-256; restore checks them all before it writes anything. PostgreSQL records are
not copied here: `pg_dump` them beside the files (docs/operations.md, "Backup and restore").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from kernel.records.audit import KEY_FILE, PUBLIC_KEY_FILE
from rtc_server import __version__
from rtc_server.config import ConfigError, Settings

MANIFEST = "backup.json"
FORMAT = 1
DB_FILE = "teleconsult.db"
# SQLite's side files are never copied: the snapshot is one self-contained file
SKIP = {DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal"}
SECRET_SUFFIXES = (".key", ".pem")


class BackupError(ConfigError):
    """A backup could not be taken or restored; the message says why."""


@dataclass(frozen=True, slots=True)
class Report:
    """What a backup or restore did."""

    path: Path
    files: int
    bytes: int
    database: str  # "sqlite" or "postgresql"
    revision: str | None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(settings: Settings) -> Path | None:
    url = make_url(settings.db_url)
    if not url.get_backend_name().startswith("sqlite"):
        return None
    if not url.database:
        raise BackupError("the SQLite records database has no file (in-memory?)")
    return Path(url.database)


def _empty_dir(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{what} {path} exists and is not empty; give a new folder")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _snapshot_sqlite(src: Path, dst: Path) -> str | None:
    """Copy `src` to `dst` with the online backup API; returns the schema revision."""
    if not src.exists():
        raise BackupError(f"no records database at {src}")
    # a plain connection (a read-only one cannot open a WAL database whose -shm is absent);
    # the backup API only reads from it
    source = sqlite3.connect(src, timeout=30)
    target = sqlite3.connect(dst)
    try:
        # pages copied in steps; a write in between restarts the copy of what changed
        source.backup(target, pages=4096)
        target.execute("PRAGMA journal_mode=DELETE")
        ok = target.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise BackupError(f"the database snapshot failed its integrity check: {ok}")
        try:
            row = target.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError:
            row = None
        return row[0] if row else None
    finally:
        target.close()
        source.close()


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(src, dst)
    if src.suffix in SECRET_SUFFIXES:
        os.chmod(dst, 0o600)


def backup(settings: Settings, out: Path) -> Report:
    """Take a consistent copy of the data dir (and a SQLite database) into `out`."""
    data_dir = settings.data_dir.resolve()
    if not data_dir.is_dir():
        raise BackupError(f"no data dir at {data_dir}")
    out = out.resolve()
    _empty_dir(out, "backup folder")
    files_dir = out / "data"
    files_dir.mkdir(mode=0o700)
    db_path = _sqlite_path(settings)
    revision = None
    if db_path is not None:
        revision = _snapshot_sqlite(db_path, files_dir / DB_FILE)
    copied: list[Path] = [files_dir / DB_FILE] if db_path is not None else []
    for root, dirs, names in os.walk(data_dir):
        here = Path(root)
        # never copy the backup into itself
        dirs[:] = [d for d in sorted(dirs) if (here / d).resolve() != out]
        for name in sorted(names):
            src = here / name
            rel = src.relative_to(data_dir)
            if (here == data_dir and name in SKIP) or not src.is_file() or src.is_symlink():
                continue
            try:
                _copy_file(src, files_dir / rel)
            except FileNotFoundError:
                continue  # deleted while we walked (retention, a finished upload's temp file)
            copied.append(files_dir / rel)
    # an audit key kept outside the data dir is part of the backup too (restored inside it)
    if settings.audit_key_file is not None:
        key = settings.audit_key_file.resolve()
        if data_dir not in key.parents:
            for src, name in ((key, KEY_FILE), (key.with_name(PUBLIC_KEY_FILE), PUBLIC_KEY_FILE)):
                if src.exists():
                    _copy_file(src, files_dir / name)
                    copied.append(files_dir / name)
    entries = {
        str(p.relative_to(files_dir)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in copied
    }
    manifest = {
        "format": FORMAT,
        "teleconsult": __version__,
        "created_at": time.time(),
        "source": str(data_dir),
        "database": "sqlite" if db_path is not None else "postgresql",
        "schema_revision": revision,
        "files": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return Report(
        out, len(entries), sum(e["size"] for e in entries.values()), manifest["database"], revision
    )


def _read_manifest(src: Path) -> dict[str, object]:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} is not a teleconsult backup (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise BackupError(f"{src / MANIFEST} is damaged: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src} has backup format {manifest.get('format')}; expected {FORMAT}")
    return manifest


def verify(src: Path) -> dict[str, object]:
    """Check every file of a backup against its manifest; returns the manifest."""
    manifest = _read_manifest(src)
    files = manifest["files"]
    assert isinstance(files, dict)
    for rel, entry in files.items():
        path = src / "data" / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BackupError(f"backup manifest names a path outside the backup: {rel}")
        if not path.is_file():
            raise BackupError(f"backup file {rel} is missing")
        if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
            raise BackupError(f"backup file {rel} does not match its checksum")
    return manifest


def restore(src: Path, data_dir: Path) -> Report:
    """Restore the backup in `src` into a new, empty data dir."""
    src = src.resolve()
    manifest = verify(src)
    _empty_dir(data_dir, "data dir")
    files = manifest["files"]
    assert isinstance(files, dict)
    total = 0
    for rel, entry in files.items():
        _copy_file(src / "data" / rel, data_dir / rel)
        total += int(entry["size"])
    return Report(
        data_dir.resolve(),
        len(files),
        total,
        str(manifest["database"]),
        manifest.get("schema_revision"),
    )  # type: ignore[arg-type]
