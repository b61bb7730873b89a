"""A witness of the audit log: `audit head` prints the newest signed tree head, and
`audit verify --witness` refuses a log cut back together with its heads, or wiped."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from types import SimpleNamespace

from rtc_server.cli import main
from tests.test_audit import joined


async def run_cli(*args: str) -> SimpleNamespace:
    """`teleconsult ARGS` in a worker thread (the command runs its own event loop)."""

    def run() -> SimpleNamespace:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

    return await asyncio.to_thread(run)


def _sql(data_dir, statement: str, params=()) -> None:
    with sqlite3.connect(data_dir / "teleconsult.db", isolation_level=None) as conn:
        conn.execute(statement, params)


async def test_witness_catches_a_cut_tail_with_its_heads_and_a_wipe(audited, start_server):
    data_dir = audited
    out = await run_cli("audit", "head", "--data-dir", str(data_dir))
    assert out.returncode == 0, out.stderr
    [head] = json.loads(out.stdout)
    assert head["log_id"] == "main" and head["tree_size"] > 3
    witness = data_dir.parent / "witness.jsonl"
    witness.write_text(out.stdout)
    assert (
        await run_cli("audit", "verify", "--data-dir", str(data_dir), "--witness", str(witness))
    ).returncode == 0

    # the log grows on: it still extends the witnessed head
    live = await start_server()
    host = await joined(live, "r", "dr", "host")
    await host.call("chat:send", {"text": "复诊 next week"})
    await host.close()
    await live.server.close()
    out = await run_cli("audit", "verify", "--data-dir", str(data_dir), "--witness", str(witness))
    assert out.returncode == 0, out.stderr

    # cut the tail back below the witnessed size, together with every head covering it
    keep = head["tree_size"] - 2
    _sql(data_dir, "DELETE FROM audit_entries WHERE seq >= ?", (keep,))
    _sql(data_dir, "DELETE FROM audit_tree_heads WHERE tree_size > ?", (keep,))
    plain = await run_cli("audit", "verify", "--data-dir", str(data_dir))
    assert plain.returncode == 0  # without a witness the cut is invisible
    out = await run_cli("audit", "verify", "--data-dir", str(data_dir), "--witness", str(witness))
    assert out.returncode == 1 and "cut or the log was wiped" in out.stderr, out.stderr

    # wiped altogether
    _sql(data_dir, "DELETE FROM audit_entries")
    _sql(data_dir, "DELETE FROM audit_tree_heads")
    out = await run_cli("audit", "verify", "--data-dir", str(data_dir), "--witness", str(witness))
    assert out.returncode == 1 and "TAMPERED" in out.stderr


async def test_a_forged_witness_head_is_refused(audited):
    """A head not signed by the audit key proves nothing either way: refused."""
    data_dir = audited
    out = await run_cli("audit", "head", "--data-dir", str(data_dir))
    [head] = json.loads(out.stdout)
    forged = dict(head, root="00" * 32)
    witness = data_dir.parent / "forged.json"
    witness.write_text(json.dumps(forged))
    out = await run_cli("audit", "verify", "--data-dir", str(data_dir), "--witness", str(witness))
    assert out.returncode != 0 and "not signed by this audit key" in out.stderr
