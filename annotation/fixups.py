"""Server-side writes after a client's change: author stamp and measurements.

Runs after a writer's update was applied. For annotations created by that update it makes
``author``/``author_name``/``colour`` the caller's real identity; for every changed mark of a
measuring tool it (re)computes ``measurement`` from the geometry and the document's pixel
spacing (and HU for ROIs on CT/MR). The writes are one server transaction, broadcast like any
other update.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycrdt import Doc, Map

from . import measure
from .model import annotations_map, identity_colour, parse_annotation

SERVER_ORIGIN = "server"
#: Fields a measurement depends on (a change to any other field keeps the measurement).
MEASURED_FIELDS = frozenset({"points", "tool", "frame", "measurement"})
#: Tools with a measurement (every other tool's is null: measure.measure).
MEASURING_TOOLS = frozenset({"length", "angle", "ellipse", "rect"})


@dataclass(frozen=True)
class Author:
    """The verified identity behind a change."""

    identity: str
    name: str


ValuesForFrame = Callable[[int], np.ndarray | None]


def _entry_dict(entry: Map) -> dict[str, Any]:
    """A mark as a dict: one JSON encoding in yrs (Rust) instead of a Python read per field.

    Integral numbers come back as ``int`` (``to_py`` gives ``float``); they compare equal and
    the annotation model accepts both.
    """
    try:
        raw = json.loads(str(entry))
    except ValueError:  # not JSON (a non-finite number): the slow, exact path
        raw = entry.to_py()
    return raw if isinstance(raw, dict) else {}


class ServerFixups:
    """Tracks which annotations a transaction touched and writes the server's fields."""

    def __init__(
        self,
        doc: Doc,
        spacing: tuple[float, float] | None,
        values_for_frame: ValuesForFrame | None = None,
        value_unit: str | None = None,
    ) -> None:
        self.doc = doc
        self.spacing = spacing
        self.values_for_frame = values_for_frame
        self.value_unit = value_unit
        self._changed: set[str] = set()
        self._added: set[str] = set()
        self._geometry: set[str] = set()  # marks whose measurement may have changed
        self._busy = False
        self._amap = annotations_map(doc)  # a root type: the same Map for the doc's lifetime
        # on the yrs map itself: pycrdt's own observe_deep converts every event's old and new
        # values to Python (recursively) first, which this handler never reads (about a fifth
        # of the server's CPU per drawn mark)
        self._sub = self._amap.integrated.observe_deep(self._on_events)

    def _on_events(self, events: list[Any]) -> None:
        if self._busy:
            return
        for event in events:
            path = list(event.path)
            if path:
                key = str(path[0])
                if len(path) > 1 or MEASURED_FIELDS.intersection(getattr(event, "keys", ())):
                    self._geometry.add(key)
                self._changed.add(key)
                continue
            for key, change in event.keys.items():
                if change.get("action") in ("add", "update"):
                    self._changed.add(key)
                    self._geometry.add(key)
                    if change.get("action") == "add":
                        self._added.add(key)

    def reset(self) -> None:
        """Forget what was tracked (e.g. after loading persisted state)."""
        self._changed.clear()
        self._added.clear()
        self._geometry.clear()

    def __call__(self, doc: Doc, author: Author | None) -> None:
        """Write the server's fields for the annotations changed since the last call."""
        changed, added, geometry = self._changed, self._added, self._geometry
        self._changed, self._added, self._geometry = set(), set(), set()
        if not changed:
            return
        amap = self._amap if doc is self.doc else annotations_map(doc)
        self._busy = True
        try:
            with doc.transaction(origin=SERVER_ORIGIN):
                for key in changed:
                    try:
                        entry = amap[key]
                    except KeyError:  # removed again by the same update
                        continue
                    if not isinstance(entry, Map):
                        continue
                    if key in added and author is not None:
                        raw = _entry_dict(entry)
                        self._stamp(entry, raw, author)
                        if key in geometry:
                            self._measure(entry, raw)
                    elif key in geometry:
                        self._remeasure(entry)
        finally:
            self._busy = False

    @staticmethod
    def _stamp(entry: Map, raw: dict[str, Any], author: Author) -> None:
        colour = identity_colour(author.identity)
        for field, value in (
            ("author", author.identity),
            ("author_name", author.name),
            ("colour", colour),
        ):
            if raw.get(field) != value:
                entry[field] = value
                raw[field] = value

    def _remeasure(self, entry: Map) -> None:
        """A changed mark: read it whole only if its tool measures something (a freehand
        stroke grows by one update per pointer move, up to 4,096 points)."""
        if entry.get("tool") in MEASURING_TOOLS:
            self._measure(entry, _entry_dict(entry))
        elif entry.get("measurement") is not None:
            entry["measurement"] = None

    def _measure(self, entry: Map, raw: dict[str, Any]) -> None:
        ann = parse_annotation(raw)
        if ann is None:
            if raw.get("measurement") is not None:
                entry["measurement"] = None
            return
        values = None
        if ann.tool in ("ellipse", "rect") and self.values_for_frame is not None:
            try:
                values = self.values_for_frame(ann.frame)
            except IndexError:
                values = None
        result = measure.measure(ann.tool, ann.points, self.spacing, values)
        if result is not None and "mean" in result and self.value_unit:
            result["value_unit"] = self.value_unit
        if result is not None:
            result["label"] = measure.label(result)
        if raw.get("measurement") != result:
            entry["measurement"] = result
