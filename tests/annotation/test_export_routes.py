"""DICOM and PNG export routes against a live server: SR + GSPS/CSPS + PNG, in Chinese.

The DICOM files are judged by dciodvfy (no Error line beyond the source image's).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.annotation.conftest import CT_SMALL, http_get, upload

from .dicom_check import new_errors

pytest.importorskip("highdicom")

RGB_SMALL = Path(get_testdata_file("SC_rgb_small_odd.dcm"))
RGB_BYTES = RGB_SMALL.read_bytes()


def _walk(item):
    for child in item.get("ContentSequence", []):
        yield child
        yield from _walk(child)


async def test_sr_route_references_the_gsps_of_the_same_marks(live, ct_doc, make_client):
    c = await make_client("dr-wang", "clinician", name="王医生")
    d = await c.open(ct_doc["id"])
    d.draw_length((10, 20), (70, 100))
    d.draw_angle((20, 10), (50, 50), (90, 15))
    d.draw("ellipse", [(44, 48), (84, 72)], text="右肺结节")
    d.draw_arrow((5, 5), (30, 30), text="病灶")
    d.set_view(window_center=40.0, window_width=400.0)
    await d.flush()
    await c.wait_until(
        lambda: all(a.get("measurement") for a in d.annotations().values() if a["tool"] != "arrow")
    )
    token = live.tokens("mdt", "dr-wang", "clinician")
    base = f"/api/rooms/mdt/documents/{ct_doc['id']}"
    status, sr_body, headers = await http_get(live, base + "/export.sr.dcm", token)
    assert status == 200, sr_body[:300]
    assert headers["Content-Type"] == "application/dicom"
    assert new_errors(sr_body, CT_SMALL) == []
    status, pr_body, _ = await http_get(live, base + "/export.gsps.dcm", token)
    assert status == 200 and new_errors(pr_body, CT_SMALL) == []
    sr, pr = pydicom.dcmread(BytesIO(sr_body)), pydicom.dcmread(BytesIO(pr_body))
    assert float(pr.SoftcopyVOILUTSequence[0].WindowWidth) == 400  # the shared view's window
    images = [i for i in _walk(sr) if i.ValueType == "IMAGE"]
    assert images and {
        i.ReferencedSOPSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images
    } == {pr.SOPInstanceUID}
    nums = {i.ConceptNameCodeSequence[0].CodeMeaning for i in _walk(sr) if i.ValueType == "NUM"}
    assert nums == {"Length", "Angle", "Area", "Attenuation Coefficient"}
    texts = " ".join(
        t.UnformattedTextValue
        for a in pr.GraphicAnnotationSequence
        for t in a.get("TextObjectSequence", [])
    )
    assert "右肺结节" in texts and "病灶" in texts and "°" in texts
    assert pr.GraphicLayerSequence[0].GraphicLayerDescription == "王医生"


async def test_sr_route_access_and_typed_errors(live, ct_doc):
    path = f"/api/rooms/mdt/documents/{ct_doc['id']}/export.sr.dcm"
    status, _, _ = await http_get(live, path, None)
    assert status == 401
    status, _, _ = await http_get(live, path, live.tokens("elsewhere", "dr-x", "host"))
    assert status == 401
    other = live.tokens("elsewhere", "dr-x", "host")
    status, body, _ = await http_get(
        live, f"/api/rooms/elsewhere/documents/{ct_doc['id']}/export.sr.dcm", other
    )
    assert status == 404
    buf = BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    status, doc = await upload(live, "mdt", "dr-host", "host", buf.getvalue(), "p.png")
    token = live.tokens("mdt", "dr-host", "host")
    status, body, _ = await http_get(
        live, f"/api/rooms/mdt/documents/{doc['document']['id']}/export.sr.dcm", token
    )
    assert status == 422 and b"not_dicom" in body
    # a DICOM without a series UID cannot be referenced: 422 with the reason, not a 500
    ds = pydicom.dcmread(CT_SMALL)
    del ds.SeriesInstanceUID
    raw = BytesIO()
    ds.save_as(raw)
    status, doc = await upload(live, "mdt", "dr-host", "host", raw.getvalue(), "x.dcm")
    assert status == 201  # the upload accepts it (one file); the exports explain why they cannot
    for kind in ("gsps", "sr"):
        status, body, _ = await http_get(
            live, f"/api/rooms/mdt/documents/{doc['document']['id']}/export.{kind}.dcm", token
        )
        assert status == 422 and b"SeriesInstanceUID" in body, body


async def test_colour_dicom_gets_a_color_presentation_state(live, make_client):
    status, body = await upload(live, "mdt", "dr-host", "host", RGB_BYTES, "c.dcm")
    assert status == 201, body
    doc_id = body["document"]["id"]
    c = await make_client("dr-li", "clinician", name="李医生")
    d = await c.open(doc_id)
    d.draw_text((10, 10), "彩色图像标注")
    d.draw_angle((5, 5), (20, 20), (40, 5))
    await d.flush()
    token = live.tokens("mdt", "dr-li", "clinician")
    for kind in ("gsps", "sr"):
        status, data, _ = await http_get(
            live, f"/api/rooms/mdt/documents/{doc_id}/export.{kind}.dcm", token
        )
        assert status == 200, data[:300]
        assert new_errors(data, RGB_SMALL) == []
        if kind == "gsps":
            pr = pydicom.dcmread(BytesIO(data))
            assert pr.SOPClassUID.name == "Color Softcopy Presentation State Storage"


async def test_png_export_draws_chinese_labels_legibly(live, ct_doc, make_client):
    c = await make_client("dr-navy", "clinician", name="王医生")
    d = await c.open(ct_doc["id"])
    d.draw_text((8, 8), "右肺上叶结节")
    await d.flush()
    token = live.tokens("mdt", "dr-navy", "clinician")
    base = f"/api/rooms/mdt/documents/{ct_doc['id']}/export.png"
    # the same label on an all-white and an all-black window of the slice
    for window, fill in (("wc=-3000&ww=10", 255), ("wc=5000&ww=10", 0)):
        status, body, headers = await http_get(live, f"{base}?{window}", token)
        assert status == 200
        img = np.asarray(Image.open(BytesIO(body)).convert("RGB")).astype(int)
        s = int(headers["X-Export-Scale"])
        image = img[: 128 * s, : 128 * s]
        assert (np.abs(image - fill) < 8).all(axis=2).mean() > 0.9
        label = img[8 * s - 4 : 8 * s + 60, 8 * s : 8 * s + 300]
        # light fill in a dark outline: plenty of ink of the opposite brightness on either
        # background (the author's colour, dark navy here, only marks the swatch)
        assert (np.abs(label - fill) > 200).all(axis=2).sum() > 100, window
