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


MAX_DEPTH = 32  # nesting of a client payload (the deepest schema nests 4)


class PayloadRefused(ValueError):
    """A payload no handler can take: nested too deep, or text that is not valid Unicode."""


def payload_size(payload: Any, max_depth: int = MAX_DEPTH) -> int:
    """Approximate wire size of a decoded Socket.IO payload (bytes count as their length).

    Walks iteratively; raises PayloadRefused for nesting over `max_depth` or a string with a
    lone surrogate (JSON allows "\\ud800"; it cannot be stored or sent on as UTF-8)."""
    total = 0
    stack: list[tuple[Any, int]] = [(payload, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise PayloadRefused(f"the message nests deeper than {max_depth} levels")
        if item is None:
            continue
        if isinstance(item, bytes | bytearray | memoryview):
            total += len(item)
        elif isinstance(item, str):
            try:
                total += len(item.encode())
            except UnicodeEncodeError:
                raise PayloadRefused("the message holds text that is not valid Unicode") from None
        elif isinstance(item, dict):
            total += 2
            for key, value in item.items():
                total += 2
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            stack.extend((v, depth + 1) for v in item)
        else:
            total += len(json.dumps(item, default=str))
    return total
