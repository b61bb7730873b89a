"""Per-connection rate limiting and payload size bounds."""

from __future__ import annotations

import json
import time
from typing import Any


class TokenBucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def take(self, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are enough; False means the caller is over its rate."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


def payload_size(payload: Any) -> int:
    """Approximate wire size of a decoded Socket.IO payload (bytes count as their length)."""
    if payload is None:
        return 0
    if isinstance(payload, bytes | bytearray | memoryview):
        return len(payload)
    if isinstance(payload, str):
        return len(payload.encode())
    if isinstance(payload, dict):
        return 2 + sum(payload_size(k) + payload_size(v) + 2 for k, v in payload.items())
    if isinstance(payload, list | tuple):
        return 2 + sum(payload_size(v) + 1 for v in payload)
    return len(json.dumps(payload, default=str))
