"""Exports: an annotated PNG (marks, labels, measurements, legend of authors) and JSON.

Legibility on any image: marks are drawn in the author's colour over a halo of the opposite
brightness (white under dark colours, black under light ones); labels are light text outlined
in black (Pillow's stroke), led by a swatch of the author's colour, in a CJK font
(:mod:`annotation.fonts`) so Chinese labels render as glyphs, not boxes.
"""

from __future__ import annotations

import math
from io import BytesIO
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from . import measure
from .documents import DocumentInfo
from .fonts import cjk_font
from .model import Annotation

MIN_EXPORT_SIDE = 512


def export_scale(width: int, height: int) -> int:
    """Integer upscale so small images (e.g. 128 px CT) get legible labels."""
    return max(1, math.ceil(MIN_EXPORT_SIDE / max(width, height, 1)))


LABEL_FILL = (255, 255, 255)
LABEL_OUTLINE = (0, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont:
    return cjk_font(size)


def _halo(colour: str) -> tuple[int, int, int]:
    """White behind dark colours, black behind light ones (relative luminance, Rec. 709)."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b >= 110 else (255, 255, 255)


def _stroke(font: Any) -> int:
    return max(2, round(getattr(font, "size", 16) / 8))


def _label(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour: str, font: Any
) -> None:
    """Outlined light text led by a swatch of the author's colour: legible on any image."""
    if not text:
        return
    x, y = xy
    stroke = _stroke(font)
    box = draw.textbbox((x, y), text, font=font, stroke_width=stroke)
    side = max(4, (box[3] - box[1]) // 2)
    top = (box[1] + box[3]) / 2 - side / 2
    draw.rectangle(
        (x, top, x + side, top + side),
        fill=colour,
        outline=_halo(colour),
        width=max(1, stroke // 2),
    )
    draw.text(
        (x + side + stroke + 3, y),
        text,
        fill=LABEL_FILL,
        font=font,
        stroke_width=stroke,
        stroke_fill=LABEL_OUTLINE,
    )


def _arrowhead(
    draw: ImageDraw.ImageDraw,
    tail: tuple[float, float],
    head: tuple[float, float],
    colour: str,
    size: float,
) -> None:
    ang = math.atan2(head[1] - tail[1], head[0] - tail[0])
    left = (head[0] - size * math.cos(ang - 0.45), head[1] - size * math.sin(ang - 0.45))
    right = (head[0] - size * math.cos(ang + 0.45), head[1] - size * math.sin(ang + 0.45))
    draw.polygon([head, left, right], fill=colour, outline=_halo(colour))


def draw_annotation(
    draw: ImageDraw.ImageDraw, ann: Annotation, scale: float, width: int, font: Any
) -> None:
    """Draw one mark (and its label) onto an image scaled by ``scale``."""
    pts = [(x * scale, y * scale) for x, y in ann.points]
    colour = ann.colour
    label = measure.label(ann.measurement) if ann.measurement else ""
    if ann.measurement and ann.measurement.get("label"):
        label = str(ann.measurement["label"])
    text = " ".join(t for t in (ann.text, label) if t)
    halo = _halo(colour)
    if ann.tool in ("arrow", "length"):
        draw.line(pts, fill=halo, width=width + 4)
        draw.line(pts, fill=colour, width=width)
        if ann.tool == "arrow":
            _arrowhead(draw, pts[0], pts[1], colour, 4 * width + 6)
        else:
            for px, py in pts:
                draw.ellipse((px - width, py - width, px + width, py + width), fill=colour)
        _label(draw, (pts[0][0] + 4, pts[0][1] + 4), text, colour, font)
    elif ann.tool == "angle":
        draw.line(pts, fill=halo, width=width + 4, joint="curve")
        draw.line(pts, fill=colour, width=width, joint="curve")
        _label(draw, (pts[1][0] + 6, pts[1][1] + 6), text, colour, font)
    elif ann.tool in ("ellipse", "rect"):
        (x0, y0), (x1, y1) = pts
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        outer = (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2)
        shape = draw.ellipse if ann.tool == "ellipse" else draw.rectangle
        shape(outer, outline=halo, width=width + 4)
        shape(box, outline=colour, width=width)
        _label(draw, (box[0], box[3] + 4), text, colour, font)
    elif ann.tool == "freehand":
        draw.line(pts, fill=halo, width=width + 4, joint="curve")
        draw.line(pts, fill=colour, width=width, joint="curve")
        _label(draw, (pts[-1][0] + 4, pts[-1][1] + 4), text, colour, font)
    elif ann.tool == "text":
        _label(draw, pts[0], ann.text or "", colour, font)


def render_png(
    base: Image.Image, info: DocumentInfo, annotations: list[Annotation], frame: int
) -> tuple[bytes, int]:
    """The annotated PNG of one frame and the scale used (mark at (x, y) -> (x*s, y*s))."""
    marks = [a for a in annotations if a.frame == frame]
    scale = export_scale(*base.size)
    img = base.convert("RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    width = max(2, round(max(img.size) / 300))
    font = _font(max(14, round(max(img.size) / 34)))
    authors: dict[str, tuple[str, str, int]] = {}
    for ann in marks:
        name, colour, count = authors.get(
            ann.author, (ann.author_name or ann.author, ann.colour, 0)
        )
        authors[ann.author] = (name, colour, count + 1)
    line_h = font.size + 8 if hasattr(font, "size") else 20
    notes = [] if info.calibrated else ["uncalibrated: no pixel spacing, values in pixels"]
    legend_h = 8 + line_h * (len(authors) + len(notes) + 1)
    out = Image.new("RGB", (img.width, img.height + legend_h), (24, 24, 24))
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for ann in marks:
        draw_annotation(draw, ann, scale, width, font)
    y = img.height + 4
    title = f"{info.name} - frame {frame + 1}/{info.frames}"
    draw.text((8, y), title, fill=(230, 230, 230), font=font)
    y += line_h
    for name, colour, count in authors.values():
        draw.rectangle(
            (8, y + 2, 8 + line_h - 8, y + line_h - 6), fill=colour, outline=_halo(colour)
        )
        draw.text((8 + line_h, y), f"{name} ({count})", fill=(230, 230, 230), font=font)
        y += line_h
    for note in notes:
        draw.text((8, y), note, fill=(255, 200, 0), font=font)
        y += line_h
    buf = BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue(), scale


def export_json(
    info: DocumentInfo, annotations: list[Annotation], invalid: int, view: dict[str, Any]
) -> dict[str, Any]:
    """Document metadata, every valid annotation with its measurement, and the view state."""
    return {
        "document": info.public(),
        "annotations": [a.model_dump() for a in annotations],
        "invalid_entries": invalid,
        "view": view,
        "authors": sorted({a.author for a in annotations}),
    }
