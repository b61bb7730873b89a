"""Shared documents end to end: the real server and several Python clients."""

from __future__ import annotations

import asyncio
from io import BytesIO

import numpy as np
import pydicom
import pytest
from PIL import Image

from annotation.client import ClientError
from annotation.model import identity_colour
from annotation.service import ANNOTATION
from annotation.sync import update_message
from kernel.grants import Grants
from tests.annotation.conftest import CT_BYTES, CT_SMALL, http_get, upload

SPACING = 0.661468


def same(*docs) -> bool:
    first = docs[0].annotations()
    return all(d.annotations() == first for d in docs[1:])


async def converge(clients, docs, keys=None, timeout=15.0):
    """Polling assertion (bounded): every doc holds ``keys`` and all docs are equal."""

    def done():
        first = docs[0].annotations()
        return (keys is None or set(first) == keys) and all(
            d.annotations() == first for d in docs[1:]
        )

    for _ in range(int(timeout / 0.05)):
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"not converged: expected {len(keys or ())} marks, have "
        f"{[len(d.annotations()) for d in docs]}; missing "
        f"{[sorted((keys or set()) - set(d.annotations())) for d in docs]}; "
        f"differing {_diff(docs)}"
    )


def _diff(docs):
    first = docs[0].annotations()
    out = []
    for i, d in enumerate(docs[1:], start=1):
        for k, v in d.annotations().items():
            if first.get(k) != v:
                fk = first.get(k) or {}
                out.append(
                    (
                        i,
                        k[:6],
                        {
                            f: (fk.get(f), v.get(f))
                            for f in set(fk) | set(v)
                            if fk.get(f) != v.get(f)
                        },
                    )
                )
    return out[:5]


async def test_concurrent_edits_converge(live, ct_doc, make_client):
    clients = [await make_client(f"dr-{i}", "clinician") for i in range(3)]
    docs = [await c.open(ct_doc["id"]) for c in clients]
    assert all(d.can_write for d in docs)

    async def draw(i, d):
        for k in range(15):
            d.draw_length((k, i), (k + 10, i + 20))
            if k % 5 == 0:
                await asyncio.sleep(0)
        d.set_view(frame=0, zoom=1.0 + i)
        await d.flush()

    await asyncio.gather(*(draw(i, d) for i, d in enumerate(docs)))
    expected = {k for d in docs for k in d.own_marks}
    assert len(expected) == 45
    await converge(clients, docs, expected)
    # the server's copy agrees, each mark carries its real author and a measurement
    _info, anns, invalid, view = await live.app[ANNOTATION].state(ct_doc["id"], "mdt")
    assert {a.id for a in anns} == expected and invalid == 0
    for a in anns:
        assert a.author.startswith("dr-") and a.colour == identity_colour(a.author)
        assert a.measurement["unit"] == "mm"
    assert view["zoom"] in (1.0, 2.0, 3.0)
    assert docs[0].view() == docs[1].view() == docs[2].view()


async def test_late_joiner_and_reconnecting_client_converge(live, ct_doc, make_client):
    a = await make_client("dr-a", "clinician")
    c = await make_client("dr-c", "clinician")
    da, dc = await a.open(ct_doc["id"]), await c.open(ct_doc["id"])
    for k in range(20):
        da.draw_arrow((k, 0), (k, 10), text=f"note {k}")
    await da.flush()
    await c.wait_until(lambda: len(dc.annotations()) == 20)

    late = await make_client("dr-late", "clinician")
    dl = await late.open(ct_doc["id"])
    assert dl.annotations() == da.annotations()  # everything arrives with the open

    # c goes away, edits offline while a keeps drawing and undoes one of its own marks
    await c.disconnect()
    offline = dc.draw_text((5, 5), "offline remark")
    for k in range(5):
        da.draw_rect((k, k), (k + 5, k + 5))
    undone = da.undo()
    await da.flush()
    received_before = dc.updates_received
    await c.reconnect()
    assert dc.updates_received - received_before <= 3  # a delta, not the whole history
    await dc.flush()
    keys = set(da.annotations()) | {offline}
    assert undone not in keys
    await converge([a, c, late], [da, dc, dl], keys)


async def test_read_only_roles_cannot_change_the_doc(live, ct_doc, make_client):
    host = await make_client("dr-host", "host")
    dh = await host.open(ct_doc["id"])
    mark = dh.draw_length((1, 1), (11, 1))
    await dh.flush()
    patient = await make_client("pat", "patient")
    await host.call("lobby:admit", {"identity": "pat"})
    await patient.admitted()
    dp = await patient.open(ct_doc["id"])
    assert not dp.can_write and mark in dp.annotations()  # sees, but
    dp.draw_length((2, 2), (50, 50))
    with pytest.raises(ClientError) as err:
        await dp.flush()
    assert err.value.code == "permission_denied"
    _, anns, _, _ = await live.app[ANNOTATION].state(ct_doc["id"], "mdt")
    assert [a.id for a in anns] == [mark]
    # uploading needs the grant too
    status, body = await upload(live, "mdt", "pat", "patient", CT_BYTES, "x.dcm")
    assert status == 403 and body["error"]["code"] == "forbidden"
    # a patient granted "annotate" may draw
    drawer = await make_client("pat2", "patient", grants=Grants(annotate=True))
    await host.call("lobby:admit", {"identity": "pat2"})
    await drawer.admitted()
    dd = await drawer.open(ct_doc["id"])
    granted = dd.draw_arrow((3, 3), (9, 9), text="here it hurts")
    await dd.flush()
    await host.wait_until(lambda: granted in dh.annotations())


async def test_malformed_and_oversize_updates_are_refused(live, ct_doc, make_client):
    writer = await make_client("dr-w", "clinician")
    other = await make_client("dr-o", "clinician")
    dw, do = await writer.open(ct_doc["id"]), await other.open(ct_doc["id"])
    keep = dw.draw_length((0, 0), (10, 0))
    await dw.flush()
    await other.wait_until(lambda: keep in do.annotations())
    service = live.app[ANNOTATION]
    before = service.sessions[ct_doc["id"]].doc.get_update()
    for bad in (b"\x00\x02\x05abc", update_message(b"\x05\x06garbage" * 5), b"\x09"):
        ack = await writer.sio.call("doc:sync", {"doc_id": ct_doc["id"], "msg": bad}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "malformed_update"
    big = update_message(b"\x00" * (600 * 1024))
    ack = await writer.sio.call("doc:sync", {"doc_id": ct_doc["id"], "msg": big}, timeout=10)
    assert ack["ok"] is False and ack["error"]["code"] in ("payload_too_large", "invalid_payload")
    ack = await writer.sio.call("doc:sync", {"doc_id": ct_doc["id"], "msg": "not bytes"})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
    assert service.sessions[ct_doc["id"]].doc.get_update() == before
    # the room carries on: later edits still flow
    later = dw.draw_rect((1, 1), (4, 4))
    await dw.flush()
    await other.wait_until(lambda: later in do.annotations())


async def test_restart_keeps_everything(start_server, make_client, live, ct_doc):
    live.app[ANNOTATION].compact_every = 7  # exercise snapshot + tail
    writer = await make_client("dr-w", "clinician")
    dw = await writer.open(ct_doc["id"])
    for k in range(25):
        dw.draw_freehand([(k, 0), (k + 1, 2), (k + 2, 1)])
    dw.undo()
    dw.set_view(frame=0, window_center=40, window_width=400)
    await dw.flush()  # acknowledged == committed
    expected, view = dw.annotations(), dw.view()
    await writer.close()
    service = live.app[ANNOTATION]

    for _ in range(200):  # polling assertion, bounded: the last member left -> tail folded
        if await service.log.count_updates(ct_doc["id"]) == 0:
            break
        await asyncio.sleep(0.05)
    assert await service.log.count_updates(ct_doc["id"]) == 0
    await live.server.close()

    live2 = await start_server(limits={"rate_per_s": 2000, "rate_burst": 2000})
    from annotation.client import AnnotationClient

    again = AnnotationClient(live2.url, live2.tokens("mdt", "dr-x", "clinician"))
    try:
        await again.connect()
        dx = await again.open(ct_doc["id"])
        assert dx.annotations() == expected and len(expected) == 24
        assert dx.view() == view
    finally:
        await again.close()


async def test_ct_measurements_and_hu(live, ct_doc, make_client):
    assert ct_doc["pixel_spacing"] == pytest.approx([SPACING, SPACING])
    assert ct_doc["calibrated"] and ct_doc["modality"] == "CT"
    c = await make_client("dr-m", "clinician")
    d = await c.open(ct_doc["id"])
    length = d.draw_length((10, 20), (70, 100))
    roi = d.draw_ellipse((44, 48), (84, 72))
    await d.flush()  # the server's measurements come back in the broadcast
    ann = d.annotations()
    assert ann[length]["measurement"]["value"] == pytest.approx(100 * SPACING)
    assert ann[length]["sop_uid"] == ct_doc["sop_uids"][0]
    ds = pydicom.dcmread(CT_SMALL)
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    rows, cols = np.indices(hu.shape)
    inside = (((cols + 0.5) - 64) / 20) ** 2 + (((rows + 0.5) - 60) / 12) ** 2 <= 1
    m = ann[roi]["measurement"]
    assert m["mean"] == pytest.approx(hu[inside].mean()) and m["value_unit"] == "HU"
    assert m["area"] == pytest.approx(np.pi * 20 * 12 * SPACING**2)


async def test_export_png_and_json_show_the_marks(live, ct_doc, make_client):
    c = await make_client("dr-e", "clinician", name="Dr Export")
    d = await c.open(ct_doc["id"])
    d.draw_rect((20, 20), (60, 40))
    d.draw_length((10, 100), (110, 100))
    await d.flush()
    token = live.tokens("mdt", "dr-e", "clinician")
    base = f"/api/rooms/mdt/documents/{ct_doc['id']}"
    status, body, headers = await http_get(live, base + "/export.png", token)
    assert status == 200
    img = np.asarray(Image.open(BytesIO(body)).convert("RGB")).astype(int)
    s = int(headers["X-Export-Scale"])
    assert s == 4 and img.shape[1] == 128 * s and img.shape[0] > 128 * s  # legend band below
    colour = np.array([int(identity_colour("dr-e")[i : i + 2], 16) for i in (1, 3, 5)])

    def near(x, y, r=2):
        patch = img[y * s - r : y * s + r + 1, x * s - r : x * s + r + 1]
        return bool((np.abs(patch - colour).sum(axis=2) < 30).any())

    assert near(20, 30) and near(40, 20) and near(60, 35)  # rectangle edges
    assert near(50, 100) and near(90, 100)  # length line
    assert not near(40, 30, r=1)  # inside the rectangle is the image, not the mark
    legend = img[128 * s :]
    assert (np.abs(legend - colour).sum(axis=2) < 30).any()  # author swatch in the legend
    # the plain rendered slice has none of the mark colour where the rectangle is
    status, plain, _ = await http_get(live, base + "/frames/0.png?preset=soft_tissue", token)
    assert status == 200
    grey = np.asarray(Image.open(BytesIO(plain)).convert("RGB")).astype(int)
    assert grey.shape == (128, 128, 3) and (grey[..., 0] == grey[..., 1]).all()
    status, js, _ = await http_get(live, base + "/export.json", token)
    import json

    data = json.loads(js)
    assert status == 200 and len(data["annotations"]) == 2
    lengths = [a for a in data["annotations"] if a["tool"] == "length"]
    assert lengths[0]["measurement"]["value"] == pytest.approx(100 * SPACING)
    assert data["authors"] == ["dr-e"]


async def test_http_auth_types_and_listing(live, make_client):
    watcher = await make_client("dr-watch", "clinician")
    status, body = await upload(live, "mdt", "dr-host", "host", b"GIF89a not allowed", "x.gif")
    assert status == 415 and body["error"]["code"] == "unsupported_document"
    buf = BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    status, body = await upload(live, "mdt", "dr-host", "host", buf.getvalue(), "photo.png")
    assert status == 201 and not body["document"]["calibrated"]
    doc_id = body["document"]["id"]
    await watcher.wait_until(lambda: [d["id"] for d in watcher.added] == [doc_id])
    status, _, _ = await http_get(live, "/api/rooms/mdt/documents", None)
    assert status == 401
    other_room = live.tokens("elsewhere", "dr-host", "host")
    status, _, _ = await http_get(live, "/api/rooms/mdt/documents", other_room)
    assert status == 401
    status, _, _ = await http_get(live, f"/api/rooms/elsewhere/documents/{doc_id}", other_room)
    assert status == 404
    c = await make_client("dr-l", "clinician")
    docs = await c.list_documents()
    assert [x["id"] for x in docs] == [doc_id] and docs[0]["kind"] == "image"
    d = await c.open(doc_id)
    mark = d.draw_length((0, 0), (30, 40))
    await d.flush()
    m = d.annotations()[mark]["measurement"]
    assert m["unit"] == "px" and m["uncalibrated"] and m["value"] == pytest.approx(50)


async def test_awareness_is_stamped_and_removed(live, ct_doc, make_client):
    a = await make_client("dr-a", "clinician", name="Dr A")
    b = await make_client("dr-b", "clinician")
    da, db = await a.open(ct_doc["id"]), await b.open(ct_doc["id"])
    da.awareness.set_local_state({"user": {"identity": "someone-else"}})
    await da.set_cursor(12.5, 40.0)
    await b.wait_until(lambda: any(s.get("cursor") for s in db.remote_awareness.values()))
    [state] = db.remote_awareness.values()
    assert state["user"]["identity"] == "dr-a" and state["user"]["name"] == "Dr A"
    assert state["user"]["colour"] == identity_colour("dr-a")
    await a.disconnect()
    await b.wait_until(lambda: not db.remote_awareness)


async def test_gsps_export_for_dicom(live, ct_doc, make_client):
    pytest.importorskip("highdicom")
    c = await make_client("dr-g", "clinician", name="Dr GSPS")
    d = await c.open(ct_doc["id"])
    d.draw_length((10, 20), (70, 100))
    d.draw_ellipse((44, 48), (84, 72))
    d.draw_arrow((5, 5), (30, 30), text="lesion")
    await d.flush()
    token = live.tokens("mdt", "dr-g", "clinician")
    path = f"/api/rooms/mdt/documents/{ct_doc['id']}/export.gsps.dcm?preset=lung"
    status, body, _ = await http_get(live, path, token)
    assert status == 200, body[:200]
    pr = pydicom.dcmread(BytesIO(body))
    ct = pydicom.dcmread(CT_SMALL)
    assert pr.Modality == "PR"
    assert (
        pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
        == ct.SOPInstanceUID
    )
    objects = [
        o for ann in pr.GraphicAnnotationSequence for o in ann.get("GraphicObjectSequence", [])
    ]
    assert sorted(o.GraphicType for o in objects) == ["ELLIPSE", "POLYLINE", "POLYLINE"]
    texts = [
        t.UnformattedTextValue
        for ann in pr.GraphicAnnotationSequence
        for t in ann.get("TextObjectSequence", [])
    ]
    assert any("mm" in t for t in texts) and any("lesion" in t for t in texts)
    assert pr.GraphicLayerSequence[0].GraphicLayerDescription == "Dr GSPS"
    voi = pr.SoftcopyVOILUTSequence[0]
    assert float(voi.WindowCenter) == -600 and float(voi.WindowWidth) == 1500
    # a PNG document has no presentation state
    buf = BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    status, doc = await upload(live, "mdt", "dr-host", "host", buf.getvalue(), "p.png")
    status, body, _ = await http_get(
        live, f"/api/rooms/mdt/documents/{doc['document']['id']}/export.gsps.dcm", token
    )
    assert status == 422 and b"not_dicom" in body


async def test_a_change_is_acked_in_text_and_its_fixup_comes_broadcast(live, ct_doc, make_client):
    """The ack of a change is one text frame (seq, fixup); the server's fix-up (author stamp,
    measurement) comes in the document's broadcast, to the sender too, with the seq it holds."""
    c = await make_client("dr-f", "clinician")
    other = await make_client("dr-g", "clinician")
    d = await c.open(ct_doc["id"])
    o = await other.open(ct_doc["id"])
    length = d.draw_length((10, 20), (70, 100))
    await d.flush()  # acked, saved, and the broadcast with the fix-up arrived
    assert d.last_ack["replies"] == [] and d.last_ack["fixup"] is True
    assert d.synced_seq >= d.last_seq >= 1
    mark = d.annotations()[length]
    assert mark["author"] == "dr-f" and mark["measurement"]["value"] == pytest.approx(100 * SPACING)
    await other.wait_until(lambda: "measurement" in o.annotations().get(length, {}))
    assert same(d, o)
