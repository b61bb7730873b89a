"""`teleconsult backup` while a real server runs (Chinese chat, an uploaded CT, annotations),
`teleconsult restore` into a new data dir, and a server started on it: the audit log verifies,
the chat, the document and its annotations are there. A damaged backup is refused."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from annotation.client import AnnotationClient
from rtc_server.app import create_app
from rtc_server.cli import main
from rtc_server.config import load_settings, signing_secret
from rtc_server.keys import SETTINGS
from tests.annotation.conftest import CT_BYTES, http_get, upload
from tests.conftest import Live
from tests.helpers import Client, Tokens

CHINESE = "复查结果：腰椎间盘轻度突出，建议康复训练。"  # noqa: RUF001
LIMITS = {"rate_per_s": 2000, "rate_burst": 2000}


async def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The `teleconsult` command in this process (a thread: it runs its own event loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_backup_while_serving_then_restore(
    start_server: Any,
    aiohttp_server: Any,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live: Live = await start_server(limits=LIMITS)
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "胸部CT.dcm")
    assert status == 201, body
    doc_id = body["document"]["id"]
    drawer = AnnotationClient(live.url, live.tokens("mdt", "dr-zhang", "clinician", "张医生"))
    await drawer.connect()
    doc = await drawer.open(doc_id)
    doc.draw_length((10, 10), (60, 40))
    doc.draw_text((20, 30), "病灶")
    await doc.flush()  # acknowledged == committed
    marks = doc.annotations()
    chat = Client(live.url, live.tokens("mdt", "dr-zhang", "clinician", "张医生"))
    await chat.connect()
    await chat.call("join", {})
    sent = await chat.call("chat:send", {"text": CHINESE})
    assert sent["ok"], sent

    # the server keeps running (and writing) while the backup is taken
    out = tmp_path / "backup"
    code, stdout, stderr = await _cli(
        capsys, "backup", "--data-dir", str(data_dir), "--out", str(out)
    )
    assert code == 0, stderr
    assert "SQLite records (schema" in stdout
    assert (await chat.call("chat:send", {"text": "备份之后"}))["ok"]
    await chat.close()
    await drawer.close()
    await live.server.close()

    restored = tmp_path / "restored"
    code, stdout, stderr = await _cli(
        capsys, "restore", "--from", str(out), "--data-dir", str(restored)
    )
    assert code == 0, stderr
    for secret in ("secret.key", "admin_api.key", "audit_ed25519.pem"):
        assert stat.S_IMODE(os.stat(restored / secret).st_mode) == 0o600, secret
    assert stat.S_IMODE(os.stat(restored).st_mode) == 0o700
    code, stdout, stderr = await _cli(capsys, "audit", "verify", "--data-dir", str(restored))
    assert code == 0, stderr
    assert "audit log intact" in stdout

    settings = load_settings(overrides={"data_dir": restored, "limits": LIMITS}, environ={})
    app = create_app(settings)
    server = await aiohttp_server(app)
    again = Live(server, app[SETTINGS], Tokens(signing_secret(app[SETTINGS])))
    # the restored secret still verifies links minted before the backup
    assert again.tokens.secret == live.tokens.secret
    reader = Client(again.url, again.tokens("mdt", "pat-1", "clinician", "李娜"))
    await reader.connect()
    try:
        joined = await reader.call("join", {})
        texts = [m["text"] for m in joined["chat"]]
        assert CHINESE in texts and "备份之后" not in texts
    finally:
        await reader.close()
    status, raw, _ = await http_get(
        again, "/api/rooms/mdt/documents", again.tokens("mdt", "dr-li", "clinician")
    )
    assert status == 200 and doc_id in raw.decode()
    viewer = AnnotationClient(again.url, again.tokens("mdt", "dr-li", "clinician"))
    await viewer.connect()
    try:
        assert (await viewer.open(doc_id)).annotations() == marks
    finally:
        await viewer.close()


async def test_damaged_or_misplaced_backup_is_refused(
    start_server: Any,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    live: Live = await start_server()
    status, _body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 201
    out = tmp_path / "backup"
    assert (await _cli(capsys, "backup", "--data-dir", str(data_dir), "--out", str(out)))[0] == 0
    await live.server.close()
    # into a data dir that is not empty: one sentence, exit 2
    code, _out, err = await _cli(capsys, "restore", "--from", str(out), "--data-dir", str(data_dir))
    assert code == 2 and "is not empty" in err
    blob = next(p for p in (out / "data" / "documents").rglob("*") if p.is_file())
    damaged = bytearray(blob.read_bytes())
    damaged[-1] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    code, _out, err = await _cli(
        capsys, "restore", "--from", str(out), "--data-dir", str(tmp_path / "new")
    )
    assert code == 2 and "does not match its checksum" in err
    assert not (tmp_path / "new").exists()


async def test_postgresql_route_pg_dump_plus_file_copy(
    aiohttp_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The documented PostgreSQL route: `teleconsult backup` copies the files (and says to
    pg_dump), pg_dump/pg_restore carry the records, a server on both has the chat."""
    import subprocess

    from tests.cluster.conftest import Postgres

    pg = Postgres()
    try:
        await asyncio.to_thread(pg.start)
    except subprocess.CalledProcessError as exc:
        pg.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr.decode()[-2000:]}") from None
    try:
        data = tmp_path / "data"
        settings = load_settings(overrides={"data_dir": data, "database_url": pg.url}, environ={})
        app = create_app(settings)
        server = await aiohttp_server(app)
        live = Live(server, app[SETTINGS], Tokens(signing_secret(app[SETTINGS])))
        chat = Client(live.url, live.tokens("ward-9", "dr-sun", "host", "孙医生"))
        await chat.connect()
        await chat.call("join", {})
        assert (await chat.call("chat:send", {"text": CHINESE}))["ok"]
        await chat.close()

        out = tmp_path / "backup"
        monkeypatch.setenv("TELECONSULT_DATABASE_URL", pg.url)  # as the config file would
        code, stdout, stderr = await _cli(
            capsys, "backup", "--data-dir", str(data), "--out", str(out)
        )
        assert code == 0, stderr
        assert "pg_dump -Fc" in stdout
        libpq = f"postgresql://postgres@127.0.0.1:{pg.port}"
        dump = out / "records.pgdump"
        await _run(str(pg.bin / "pg_dump"), "-Fc", "-f", str(dump), f"{libpq}/teleconsult")
        await server.close()

        await _run(
            str(pg.bin / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(pg.port),
            "-U",
            "postgres",
            "restored",
        )
        await _run(str(pg.bin / "pg_restore"), "-d", f"{libpq}/restored", str(dump))
        restored = tmp_path / "restored"
        code, stdout, stderr = await _cli(
            capsys, "restore", "--from", str(out), "--data-dir", str(restored)
        )
        assert code == 0 and "pg_restore" in stdout, stderr
        url = pg.url.rsplit("/", 1)[0] + "/restored"
        settings = load_settings(overrides={"data_dir": restored, "database_url": url}, environ={})
        app = create_app(settings)
        server = await aiohttp_server(app)
        again = Live(server, app[SETTINGS], Tokens(signing_secret(app[SETTINGS])))
        assert again.tokens.secret == live.tokens.secret
        reader = Client(again.url, again.tokens("ward-9", "dr-li", "clinician"))
        await reader.connect()
        try:
            joined = await reader.call("join", {})
            assert CHINESE in [m["text"] for m in joined["chat"]]
        finally:
            await reader.close()
        await server.close()
        code, stdout, stderr = await asyncio.to_thread(lambda: _audit_verify(restored, url))
        assert code == 0 and "audit log intact" in stdout, stderr
    finally:
        pg.stop()


async def _run(*cmd: str) -> None:
    import subprocess

    await asyncio.to_thread(subprocess.run, list(cmd), check=True, timeout=120)


def _audit_verify(data: Path, url: str) -> tuple[int, str, str]:
    import subprocess
    import sys

    from tests.cluster.conftest import REPO, cluster_env

    proc = subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=cluster_env(database_url=url),
    )
    return proc.returncode, proc.stdout, proc.stderr
