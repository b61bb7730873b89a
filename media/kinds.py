"""Media sources and what a host-mute kind covers (the rule lives in kernel/sources.py)."""

from __future__ import annotations

from kernel.sources import KIND_SOURCES as KIND_SOURCES
