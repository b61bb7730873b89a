"""Feature activity reaches the audit log: document upload/view/export, opens, sync summaries."""

import asyncio
import json

from annotation.client import AnnotationClient
from tests.annotation.conftest import CT_BYTES, http_get, upload
from tests.helpers import server_sql


async def entries(live, action):
    rows = await server_sql(
        live.settings.data_dir / "teleconsult.db",
        "SELECT subject, object, result, detail FROM audit_entries WHERE action = ? ORDER BY seq",
        (action,),
    )
    return [(s, o, r, json.loads(d)) for s, o, r, d in rows]


async def test_document_activity_is_audited(live):
    status, body = await upload(live, "r", "dr-li", "host", CT_BYTES, "ct.dcm")
    assert status in (200, 201)
    doc_id = body["document"]["id"]
    token = live.tokens("r", "dr-li", "host")
    assert (await http_get(live, f"/api/rooms/r/documents/{doc_id}", token))[0] == 200
    assert (await http_get(live, f"/api/rooms/r/documents/{doc_id}/export.png", token))[0] == 200
    assert (await http_get(live, f"/api/rooms/r/documents/{doc_id}", None))[0] == 401

    drawer = AnnotationClient(live.url, token)
    await drawer.connect()
    doc = await drawer.open(doc_id)
    doc.draw("arrow", [(1.0, 1.0), (20.0, 20.0)], text="here")
    await doc.flush()
    doc.draw("length", [(5.0, 5.0), (5.0, 50.0)])
    await doc.flush()
    await drawer.close()

    obj = f"room:r/doc:{doc_id}"
    assert [(s, r) for s, o, r, _d in await entries(live, "document.upload")] == [("dr-li", "ok")]
    views = [(s, o, r) for s, o, r, _d in await entries(live, "document.view")]
    assert views == [("dr-li", obj, "ok"), ("anonymous", obj, "401")]
    assert [(s, o) for s, o, _r, _d in await entries(live, "document.export")] == [("dr-li", obj)]
    opens = await entries(live, "doc:open")
    assert opens and opens[0][0] == "dr-li" and opens[0][3]["doc_id"] == doc_id

    async def summary():
        rows = await entries(live, "events.summary")
        return [d["counts"] for s, _o, _r, d in rows if s == "dr-li"]

    # the summary is written once the server has handled the disconnect: poll, bounded
    async with asyncio.timeout(10):
        while not (found := await summary()):  # noqa: ASYNC110 - no event for a DB row
            await asyncio.sleep(0.05)
    assert found[0]["doc:sync"] >= 2
