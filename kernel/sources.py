"""Media sources and their kinds: one rule shared by the media service, recording and HTTP."""

from __future__ import annotations

from typing import Literal

Source = Literal["camera", "camera_low", "microphone", "screen"]

# what a host-mute "kind" covers (signaling's MediaKind is audio | video | screen)
KIND_SOURCES: dict[str, tuple[str, ...]] = {
    "audio": ("microphone",),
    "video": ("camera", "camera_low"),
    "microphone": ("microphone",),
    "camera": ("camera", "camera_low"),
    "screen": ("screen",),
}


def kind_of(source: str) -> Literal["audio", "video"]:
    """The RTP media kind a source is sent as (the microphone is audio, the rest video)."""
    return "audio" if source == "microphone" else "video"
