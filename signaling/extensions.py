"""What feature packages see of the signaling framework: ``Caller`` and ``FeatureHost``.

The types live in ``kernel/extensions.py`` (kernel modules name them too); features import
them from here. See docs/architecture.md, "Extension API"."""

from __future__ import annotations

from kernel.extensions import (
    AuditPolicy,
    Caller,
    FeatureHost,
    Handler,
    JoinExtra,
    Listener,
    When,
    admitters_key,
    room_key,
)

__all__ = [
    "AuditPolicy",
    "Caller",
    "FeatureHost",
    "Handler",
    "JoinExtra",
    "Listener",
    "When",
    "admitters_key",
    "room_key",
]
