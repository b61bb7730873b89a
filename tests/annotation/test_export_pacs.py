"""C-STORE of a document's original, GSPS and SR to a PACS: a local dcmtk ``storescp``."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pydicom
import pytest

from tests.annotation.conftest import CT_BYTES, CT_SMALL, upload
from tests.helpers import server_sql

from .dicom_check import new_errors

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A dcmtk storescp on a free loopback port, storing into a fresh directory."""
    exe = shutil.which("storescp")
    if exe is None:
        pytest.fail("storescp is missing: install the Debian package dcmtk (scripts/test does)")
    port, out = _free_port(), tmp_path / "pacs"
    out.mkdir()
    proc = subprocess.Popen(
        [exe, "-aet", "PACS", "-od", str(out), "+B", "+xa", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while not _listening(port):  # bounded wait for the listening socket
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "storescp did not listen within 15 s"
            time.sleep(0.05)
        yield port, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _post(live, path: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(live.url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        return resp.status, await resp.json()


async def test_send_original_gsps_and_sr_to_storescp(start_server, storescp, make_pacs_client):
    port, out = storescp
    live = await start_server(
        pacs={"host": "127.0.0.1", "port": port, "called_ae": "PACS"},
        limits={"rate_per_s": 2000, "rate_burst": 2000},
    )
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 201, body
    doc_id = body["document"]["id"]
    d = await make_pacs_client(live, doc_id)
    d.draw_length((10, 20), (70, 100))
    d.draw("ellipse", [(44, 48), (84, 72)], text="右肺结节")
    await d.flush()
    await d.client.wait_until(lambda: all(a.get("measurement") for a in d.annotations().values()))
    token = live.tokens("mdt", "dr-wang", "clinician")
    status, body = await _post(live, f"/api/rooms/mdt/documents/{doc_id}/send-to-pacs", token)
    assert status == 200, body
    stored = body["stored"]
    assert [s["object"] for s in stored] == ["original", "gsps", "sr"]
    assert all(s["status"] == 0 for s in stored)
    files = {pydicom.dcmread(p).SOPInstanceUID: p for p in out.iterdir()}
    assert set(files) == {s["sop_instance_uid"] for s in stored}
    received = {s["object"]: files[s["sop_instance_uid"]] for s in stored}
    original = pydicom.dcmread(received["original"])
    assert np.array_equal(original.pixel_array, pydicom.dcmread(CT_SMALL).pixel_array)
    for kind in ("gsps", "sr"):
        assert new_errors(received[kind].read_bytes(), CT_SMALL) == []
    texts = [
        t.UnformattedTextValue
        for a in pydicom.dcmread(received["gsps"]).GraphicAnnotationSequence
        for t in a.get("TextObjectSequence", [])
    ]
    assert any("右肺结节" in t for t in texts)
    # only what is asked for
    status, body = await _post(
        live, f"/api/rooms/mdt/documents/{doc_id}/send-to-pacs", token, {"objects": ["sr"]}
    )
    assert status == 200 and [s["object"] for s in body["stored"]] == ["sr"]
    # documents leaving for another system are audited, with who sent them
    rows = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT subject, object, result FROM audit_entries WHERE action = ?",
        ("document.send_to_pacs",),
    )
    assert [tuple(r) for r in rows] == [("dr-wang", f"room:mdt/doc:{doc_id}", "ok")] * 2


async def test_pacs_errors_are_typed(start_server, make_pacs_client):
    closed = _free_port()  # nothing listens there
    live = await start_server(
        pacs={"host": "127.0.0.1", "port": closed, "called_ae": "PACS", "timeout_s": 5}
    )
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    doc_id = body["document"]["id"]
    path = f"/api/rooms/mdt/documents/{doc_id}/send-to-pacs"
    status, body = await _post(live, path, live.tokens("mdt", "dr-host", "host"))
    assert status == 502 and body["error"]["code"] == "pacs_failed", body
    status, body = await _post(live, path, live.tokens("mdt", "pat-1", "patient"))
    assert status == 403
    status, body = await _post(
        live, path, live.tokens("mdt", "dr-host", "host"), {"objects": ["everything"]}
    )
    assert status == 422 and body["error"]["code"] == "invalid_payload"


async def test_pacs_not_configured(live, ct_doc):
    status, body = await _post(
        live,
        f"/api/rooms/mdt/documents/{ct_doc['id']}/send-to-pacs",
        live.tokens("mdt", "dr-host", "host"),
    )
    assert status == 503 and body["error"]["code"] == "pacs_not_configured"


@pytest.fixture
async def make_pacs_client():
    from annotation.client import AnnotationClient

    made: list[AnnotationClient] = []

    async def make(live, doc_id: str):
        client = AnnotationClient(
            live.url, live.tokens("mdt", "dr-wang", "clinician", name="王医生")
        )
        made.append(client)
        await client.connect()
        return await client.open(doc_id)

    yield make
    for client in made:
        await asyncio.wait_for(client.close(), 10)
