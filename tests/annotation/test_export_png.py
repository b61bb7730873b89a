"""PNG export: Chinese labels render as glyphs in a real CJK font, legible on any background."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from annotation import export, fonts
from annotation.documents import DocumentInfo
from annotation.model import Annotation

NAVY = "#000075"  # a palette colour that vanished on black CT in the old export
NOTDEF = "\ue000\ue001\ue002\ue003\ue004\ue005"  # private use: no glyph, drawn as .notdef boxes


def _info() -> DocumentInfo:
    return DocumentInfo(
        id="d",
        room="r",
        name="ct.dcm",
        kind="dicom",
        mime="application/dicom",
        sha256="x",
        size=1,
        frames=1,
        width=128,
        height=128,
        modality="CT",
        pixel_spacing=[0.5, 0.5],
        spacing_source="PixelSpacing",
        series_uid=None,
        frame_index=[],
        uploaded_by="dr",
        uploaded_by_name="王医生",
        uploaded_at=0.0,
    )


def _text_mark(text: str, colour: str = NAVY) -> Annotation:
    return Annotation(
        id="t",
        author="dr-wang",
        author_name="王医生",
        colour=colour,
        tool="text",
        points=[(8.0, 8.0)],
        text=text,
    )


def _label_ink(text: str, background: int = 0) -> np.ndarray:
    """The label area of an export of one text mark on a uniform 128 px image."""
    base = Image.new("RGB", (128, 128), (background,) * 3)
    body, scale = export.render_png(base, _info(), [_text_mark(text)], 0)
    img = np.asarray(Image.open(BytesIO(body)).convert("L"))
    return img[8 * scale - 6 : 8 * scale + 60, 8 * scale : 8 * scale + 320]


def test_the_font_is_a_real_cjk_font() -> None:
    path, _index = fonts.cjk_font_file()
    assert Path(path).is_file()
    font = fonts.cjk_font(24)

    def mask(t: str) -> np.ndarray:
        return np.asarray(font.getmask(t))

    assert not np.array_equal(mask("肺"), mask("\ue000"))  # a glyph, not the .notdef box
    assert not np.array_equal(mask("肺"), mask("节"))
    # negative control: Pillow's default font draws every Chinese character as the same box
    default = ImageFont.load_default(size=24)
    assert np.array_equal(np.asarray(default.getmask("肺")), np.asarray(default.getmask("节")))


def test_chinese_label_renders_glyphs_not_boxes() -> None:
    chinese, shuffled = _label_ink("右肺上叶结节"), _label_ink("节结叶上肺右")
    boxes = _label_ink(NOTDEF)
    assert (chinese > 200).sum() > 100  # light ink on the black image
    assert not np.array_equal(chinese, boxes)
    assert not np.array_equal(chinese, shuffled)  # boxes would make any order look the same
    # the ink is that of the font: a direct render of the same text in the same font matches
    font = fonts.cjk_font(max(14, round(512 / 34)))
    direct = Image.new("L", (600, 80), 0)
    ImageDraw.Draw(direct).text((0, 0), "右肺上叶结节", font=font, fill=255)
    direct_cols = (np.asarray(direct) > 128).any(axis=0).sum()
    drawn_cols = (chinese > 128).any(axis=0).sum()
    assert abs(int(drawn_cols) - int(direct_cols)) < 0.25 * direct_cols + 30


@pytest.mark.parametrize("background", [0, 255])
def test_label_reads_on_black_and_white(background: int) -> None:
    ink = _label_ink("90.0° 结节", background)
    assert (np.abs(ink.astype(int) - background) > 200).sum() > 100


def test_marks_get_a_contrasting_halo_on_black() -> None:
    base = Image.new("RGB", (128, 128), (0, 0, 0))
    line = Annotation(
        id="l",
        author="dr-wang",
        colour=NAVY,
        tool="length",
        points=[(10.0, 64.0), (118.0, 64.0)],
        measurement={"kind": "length", "value": 54.0, "unit": "mm"},
    )
    body, s = export.render_png(base, _info(), [line], 0)
    img = np.asarray(Image.open(BytesIO(body)).convert("RGB")).astype(int)
    column = img[64 * s - 12 : 64 * s + 12, 60 * s]
    assert (column > 240).all(axis=1).any()  # white halo beside the navy line
    assert (np.abs(column - [0, 0, 0x75]).sum(axis=1) < 30).any()  # the line keeps its colour


def test_missing_font_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fonts, "_fontconfig", lambda: None)
    monkeypatch.setattr(fonts, "KNOWN_FONTS", ())
    fonts.cjk_font_file.cache_clear()
    fonts.cjk_font.cache_clear()
    try:
        with pytest.raises(fonts.FontMissing, match="fonts-noto-cjk") as err:
            export.render_png(Image.new("RGB", (8, 8)), _info(), [], 0)
        assert err.value.code == "font_missing" and err.value.http_status == 503
    finally:
        fonts.cjk_font_file.cache_clear()
        fonts.cjk_font.cache_clear()
