"""A read-only participant's changes are refused without copying the document, and after a
few refusals the rest are refused outright (rate_limited)."""

from __future__ import annotations

from pycrdt import Doc, Map

import annotation.sync as sync_module
from annotation.sync import update_message
from tests.annotation.conftest import CT_BYTES, upload


async def test_refusals_copy_nothing_and_are_rate_limited(live, make_client, monkeypatch):
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 201
    doc_id = body["document"]["id"]
    host = await make_client("dr-host", "host")
    dh = await host.open(doc_id)
    for i in range(200):  # a document with some weight
        dh.draw_text((float(i), 1.0), f"标注 {i} " + "x" * 200)
    await dh.flush()
    patient = await make_client("pat", "patient")
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.admitted()
    await patient.open(doc_id)

    copies = []

    class CountingDoc(Doc):
        def __init__(self, *args, **kwargs):
            copies.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sync_module, "Doc", CountingDoc, raising=False)

    codes = []
    for i in range(12):
        change = Doc()
        change["annotations"] = m = Map()
        m[f"forged-{i}"] = "x"
        ack = await patient.sio.call(
            "doc:sync", {"doc_id": doc_id, "msg": update_message(change.get_update())}, timeout=10
        )
        assert ack["ok"] is False
        codes.append(ack["error"]["code"])
    assert copies == []  # no throw-away copy of the document per refusal
    assert codes[:5] == ["permission_denied"] * 5
    assert set(codes[5:]) == {"rate_limited"}
    # reading still works while refused
    from annotation.sync import step1

    ack = await patient.sio.call("doc:sync", {"doc_id": doc_id, "msg": step1(Doc())}, timeout=10)
    assert ack["ok"] and ack["replies"]
