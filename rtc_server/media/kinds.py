"""Media sources and what a host-mute kind covers."""

from __future__ import annotations

# what a host-mute "kind" covers (signaling's MediaKind is audio | video | screen)
KIND_SOURCES: dict[str, tuple[str, ...]] = {
    "audio": ("microphone",),
    "video": ("camera", "camera_low"),
    "microphone": ("microphone",),
    "camera": ("camera", "camera_low"),
    "screen": ("screen",),
}
