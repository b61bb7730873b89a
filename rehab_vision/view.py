"""Is the patient in view? Decided from which of the exercise's landmarks are really missing,
and for how long, rather than from one frame's tracking flag.

Per frame: ``ok`` when the frame gave a usable angle; ``absent`` when the pose model finds
nobody; ``cut`` when a person is found but on every measured side one of the exercise's joints
lies outside the picture (the patient is too close or off to one side); else ``ok`` again (a
joint that is in the picture but poorly visible, e.g. on a blurred, heavily compressed frame,
is no reason to send the patient anywhere). The
status changes to ``not_in_view`` / ``step_back`` only once that state has lasted
``after_s`` seconds of frame time, and back to ``ok`` on the first good frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .landmarks import INDEX, Landmarks

ViewStatus = Literal["ok", "step_back", "not_in_view"]
FrameView = Literal["ok", "cut", "absent"]

EDGE = 0.03
"""A landmark further than this (fraction of the frame) beyond an edge is out of the picture."""


def frame_view(
    lm: Landmarks | None,
    sides: list[tuple[str, ...]],
    tracked: bool,
) -> FrameView:
    """One frame's state; ``sides`` holds the landmark names each measured side needs and
    ``tracked`` says whether the frame gave a usable angle (then nothing is missing, even if
    the model places a joint it is sure of just outside the picture)."""
    if tracked:
        return "ok"
    if lm is None:
        return "absent"
    xy = lm.image[:, :2]

    def inside(name: str) -> bool:
        x, y = (float(v) for v in xy[INDEX[name]])
        return -EDGE <= x <= 1 + EDGE and -EDGE <= y <= 1 + EDGE

    if sides and all(any(not inside(n) for n in names) for names in sides):
        return "cut"
    return "ok"


@dataclass(slots=True)
class ViewWatch:
    """Turns per-frame states into a status that holds for ``after_s`` of frame time."""

    after_s: float = 1.5
    status: ViewStatus = "ok"
    _state: FrameView = "ok"
    _since: float | None = None

    def update(self, t: float, state: FrameView) -> ViewStatus | None:
        """Feed one frame; returns the new status when it changed, else None."""
        if state == "ok":
            self._state, self._since = "ok", None
            return self._set("ok")
        if state != self._state or self._since is None:
            self._state, self._since = state, t
        if t - self._since >= self.after_s:
            return self._set("not_in_view" if state == "absent" else "step_back")
        return None

    def _set(self, status: ViewStatus) -> ViewStatus | None:
        if status == self.status:
            return None
        self.status = status
        return status
