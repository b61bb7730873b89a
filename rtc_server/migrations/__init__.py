"""Schema migrations of the records database (Alembic).

Every database carries a version stamp (Alembic's ``alembic_version`` table). A fresh, empty
database is created from the table definitions and stamped at the newest revision; a database
at an older revision (or one made before migrations existed) is refused at start-up until
``teleconsult db upgrade`` has run. Adding a table or column: docs/operations.md, "Schema
migrations".
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, inspect

from kernel.records.store import RecordStore
from rtc_server.config import ConfigError

log = logging.getLogger(__name__)

# every module that defines tables on the shared records metadata; a new one goes here too
TABLE_MODULES = (
    "kernel.records.tables",
    "recording.tables",
    "annotation.tables",
    "rehab_vision.tables",
    "rtc_server.webhook_tables",
    "kernel.records.identifiers",
    "clinic.tables",
)
# the revision that describes the schema made by releases before migrations existed
BASELINE = "0001"
VERSION_TABLE = "alembic_version"


class SchemaError(ConfigError):
    """The database's schema does not match this release; the message names the command."""


def load_metadata() -> MetaData:
    """The shared records metadata with every table module imported."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    from kernel.records.tables import metadata

    return metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config on this package's scripts (no alembic.ini), bound to `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this release knows."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def current(conn: Connection) -> str | None:
    """The database's revision stamp, or None (empty, or made before migrations)."""
    return MigrationContext.configure(conn).get_current_revision()


def _user_tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {VERSION_TABLE}


def known_revisions() -> set[str]:
    """Every revision id in this release's scripts."""
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def check_or_create(conn: Connection) -> str:
    """At start-up: create and stamp an empty database, accept one at head, refuse the rest."""
    metadata = load_metadata()
    rev = current(conn)
    newest = head()
    if rev is None and not _user_tables(conn):
        metadata.create_all(conn)
        command.stamp(alembic_config(conn), "head")
        log.info("created the records schema at revision %s", newest)
        return "created"
    if rev == newest:
        return "current"
    if rev is not None and rev not in known_revisions():
        raise SchemaError(
            f"the records database is at revision {rev}, made by a newer teleconsult release "
            f"than this one (which knows up to {newest}); run that release or restore a backup"
        )
    at = f"at revision {rev}" if rev else "not versioned (made before schema migrations)"
    raise SchemaError(
        f"the records database is {at}; this release needs revision {newest}: "
        "run `teleconsult db upgrade` (back it up first: `teleconsult backup`)"
    )


def upgrade(conn: Connection, target: str = "head") -> tuple[str | None, str]:
    """Bring the database to `target`; returns (revision before, revision after).

    An empty database is built by running every revision; one made before migrations existed
    is stamped at the baseline revision first (its schema is that revision's)."""
    load_metadata()
    cfg = alembic_config(conn)
    before = current(conn)
    if before is None and _user_tables(conn):
        command.stamp(cfg, BASELINE)
    command.upgrade(cfg, target)
    return before, current(conn) or ""


def open_store(url: str, node: str = "main") -> RecordStore:
    """A records store whose start checks the schema version (``check_or_create``)."""
    return RecordStore(url, node=node, schema_check=check_or_create)
