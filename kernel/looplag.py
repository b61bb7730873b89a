"""Event-loop lag: how late the server's event loop runs a timer.

Everything the server does (signalling, media receive and forwarding, transport feedback) runs
on one event loop. When the process is short of CPU, datagrams wait in the sockets and the
loop runs its timers late; the lag shows here before anyone sees a frozen picture. (A bug that
used 80 % of a core for a two-party call once delayed everything received by seconds:
docs/media.md, "The publisher's fall under loss".) A lag of a second or more is logged at
WARNING, at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from prometheus_client import CollectorRegistry, Gauge, Histogram

logger = logging.getLogger(__name__)

INTERVAL_S = 0.25
WARN_S = 1.0
WARN_EVERY_S = 60.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLag:
    """Measures the lag every ``interval_s`` once :meth:`start` is called on the loop."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.seconds = Histogram(
            "teleconsult_event_loop_lag_seconds",
            f"How late the event loop ran a {interval_s:g} s timer (a busy loop)",
            buckets=BUCKETS,
            registry=registry,
        )
        self.worst = 0.0
        Gauge(
            "teleconsult_event_loop_lag_max_seconds",
            "The largest event-loop lag since the last scrape",
            registry=registry,
        ).set_function(self._take_worst)
        self._task: asyncio.Task[None] | None = None

    def _take_worst(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def observe(self, lag: float, now: float, last_warning: float) -> float:
        """Record one lag; returns when the last warning was logged."""
        self.seconds.observe(lag)
        self.worst = max(self.worst, lag)
        if lag >= WARN_S and now - last_warning >= WARN_EVERY_S:
            logger.warning(
                "the event loop ran %.1f s late: the server is short of CPU, "
                "media and signalling are delayed (teleconsult_event_loop_lag_seconds)",
                lag,
            )
            return now
        return last_warning

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_warning = -math.inf
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            now = loop.time()
            last_warning = self.observe(max(0.0, now - start - self.interval_s), now, last_warning)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
