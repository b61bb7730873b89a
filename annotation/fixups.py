"""Server-side writes after a client's change: author stamp and measurements.

Runs after a writer's update was applied. For annotations created by that update it makes
``author``/``author_name``/``colour`` the caller's real identity; for every changed mark of a
measuring tool it (re)computes ``measurement`` from the geometry and the document's pixel
spacing (and HU for ROIs on CT/MR). The writes are one server transaction, broadcast like any
other update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycrdt import Doc, Map

from . import measure
from .model import annotations_map, identity_colour, parse_annotation

SERVER_ORIGIN = "server"


@dataclass(frozen=True)
class Author:
    """The verified identity behind a change."""

    identity: str
    name: str


ValuesForFrame = Callable[[int], np.ndarray | None]


class ServerFixups:
    """Tracks which annotations a transaction touched and writes the server's fields."""

    def __init__(self, doc: Doc, spacing: tuple[float, float] | None,
                 values_for_frame: ValuesForFrame | None = None,
                 value_unit: str | None = None) -> None:
        self.doc = doc
        self.spacing = spacing
        self.values_for_frame = values_for_frame
        self.value_unit = value_unit
        self._changed: set[str] = set()
        self._added: set[str] = set()
        self._busy = False
        self._sub = annotations_map(doc).observe_deep(self._on_events)

    def _on_events(self, events: list[Any]) -> None:
        if self._busy:
            return
        for event in events:
            path = list(event.path)
            if path:
                self._changed.add(str(path[0]))
                continue
            for key, change in event.keys.items():
                if change.get("action") in ("add", "update"):
                    self._changed.add(key)
                    if change.get("action") == "add":
                        self._added.add(key)

    def reset(self) -> None:
        """Forget what was tracked (e.g. after loading persisted state)."""
        self._changed.clear()
        self._added.clear()

    def __call__(self, doc: Doc, author: Author | None) -> None:
        """Write the server's fields for the annotations changed since the last call."""
        changed, added = self._changed, self._added
        self._changed, self._added = set(), set()
        if not changed:
            return
        amap = annotations_map(doc)
        self._busy = True
        try:
            with doc.transaction(origin=SERVER_ORIGIN):
                for key in changed:
                    entry = amap.get(key)
                    if not isinstance(entry, Map):
                        continue
                    if key in added and author is not None:
                        self._stamp(entry, author)
                    self._measure(entry)
        finally:
            self._busy = False

    @staticmethod
    def _stamp(entry: Map, author: Author) -> None:
        if entry.get("author") != author.identity:
            entry["author"] = author.identity
        if entry.get("author_name") != author.name:
            entry["author_name"] = author.name
        colour = identity_colour(author.identity)
        if entry.get("colour") != colour:
            entry["colour"] = colour

    def _measure(self, entry: Map) -> None:
        ann = parse_annotation(entry.to_py())
        if ann is None:
            if entry.get("measurement") is not None:
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
        if entry.get("measurement") != result:
            entry["measurement"] = result
