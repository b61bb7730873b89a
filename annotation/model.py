"""The shared document schema: annotations keyed by UUID and the presenter's view state.

Root ``annotations`` (Y Map): ``<uuid>`` -> Y Map with keys
  id, author, author_name, colour ("#rrggbb"), tool, points ([[x, y], ...] in image pixel
  coordinates, x = column, y = row, origin at the top-left pixel's corner), frame (page/slice
  index), sop_uid (DICOM SOP Instance UID of that frame, else null), text, created, updated
  (epoch seconds), and ``measurement`` (written by the server: see ``measure.py``).
Root ``view`` (Y Map): frame, window_center, window_width, preset, zoom, pan_x, pan_y,
  presenter (identity) -- what "follow the presenter" follows.
"""

from __future__ import annotations

import functools
import hashlib
import math
from typing import Any, Literal

from pycrdt import Doc, Map
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ANNOTATIONS = "annotations"
VIEW = "view"

Tool = Literal["arrow", "length", "angle", "ellipse", "rect", "freehand", "text"]

#: Number of points each tool needs: exact count, or (min, max).
POINT_COUNTS: dict[str, tuple[int, int]] = {
    "arrow": (2, 2),
    "length": (2, 2),
    "angle": (3, 3),
    "ellipse": (2, 2),  # opposite corners of the bounding box
    "rect": (2, 2),  # opposite corners
    "freehand": (2, 4096),
    "text": (1, 1),
}

_PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#469990",
    "#9a6324",
    "#800000",
    "#808000",
    "#000075",
    "#ffe119",
)


@functools.lru_cache(maxsize=4096)
def identity_colour(identity: str) -> str:
    """A stable colour for an identity (the author's colour in every client)."""
    digest = hashlib.sha256(identity.encode()).digest()
    return _PALETTE[digest[0] % len(_PALETTE)]


class Annotation(BaseModel):
    """One mark as read back from the document (entries that fail validation are skipped)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=64)
    author: str = Field(min_length=1, max_length=128)
    author_name: str = Field(default="", max_length=128)
    colour: str = Field(default="#ff0000", pattern=r"^#[0-9a-fA-F]{6}$")
    tool: Tool
    points: list[tuple[float, float]]
    frame: int = Field(default=0, ge=0)
    sop_uid: str | None = Field(default=None, max_length=64)
    text: str = Field(default="", max_length=2000)
    created: float = 0.0
    updated: float = 0.0
    measurement: dict[str, Any] | None = None

    @field_validator("frame", mode="before")
    @classmethod
    def _int_frame(cls, v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    @field_validator("points")
    @classmethod
    def _finite(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not all(math.isfinite(x) and math.isfinite(y) for x, y in v):
            raise ValueError("points must be finite")
        return v

    def model_post_init(self, __context: Any) -> None:
        """Check the point count for the tool."""
        lo, hi = POINT_COUNTS[self.tool]
        if not lo <= len(self.points) <= hi:
            raise ValueError(f"{self.tool} needs {lo}..{hi} points, got {len(self.points)}")


def new_doc(client_id: int | None = None) -> Doc:
    """A document with the two root maps in place."""
    doc = Doc(client_id=client_id) if client_id is not None else Doc()
    annotations_map(doc)
    view_map(doc)
    return doc


def annotations_map(doc: Doc) -> Map:
    """The ``annotations`` root."""
    return doc.get(ANNOTATIONS, type=Map)


def view_map(doc: Doc) -> Map:
    """The ``view`` root."""
    return doc.get(VIEW, type=Map)


def parse_annotation(raw: Any) -> Annotation | None:
    """Validate one entry's plain value; None when it is not a valid annotation."""
    if not isinstance(raw, dict):
        return None
    try:
        return Annotation.model_validate(raw)
    except (ValidationError, ValueError, TypeError):
        return None


def read_annotations(doc: Doc) -> tuple[list[Annotation], int]:
    """Valid annotations sorted by creation time, and how many entries were invalid."""
    valid: list[Annotation] = []
    invalid = 0
    for key, value in annotations_map(doc).items():
        raw = value.to_py() if isinstance(value, Map) else value
        ann = parse_annotation(raw)
        if ann is None or ann.id != key:
            invalid += 1
            continue
        valid.append(ann)
    valid.sort(key=lambda a: (a.created, a.id))
    return valid, invalid


def read_view(doc: Doc) -> dict[str, Any]:
    """The shared view state as a plain dict."""
    return dict(view_map(doc).to_py() or {})
