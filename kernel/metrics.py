"""Prometheus metrics of one server process (a registry per app, no globals)."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from .looplag import LoopLag


class Metrics:
    """The counters and gauges /metrics exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Counter(
            "teleconsult_connections", "Socket.IO connections accepted", registry=r
        )
        self.refused = Counter(
            "teleconsult_connections_refused",
            "Connections refused, by reason",
            ["code"],
            registry=r,
        )
        self.events = Counter(
            "teleconsult_events", "Client events handled, by event", ["event"], registry=r
        )
        self.errors = Counter(
            "teleconsult_event_errors", "Error replies sent, by code", ["code"], registry=r
        )
        self.event_seconds = Histogram(
            "teleconsult_event_seconds",
            "Time to handle a client event",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.rooms = Gauge("teleconsult_rooms", "Rooms open on this process", registry=r)
        self.participants = Gauge(
            "teleconsult_participants", "Participants joined on this process", registry=r
        )
        self.waiting = Gauge("teleconsult_waiting", "Participants in waiting rooms", registry=r)
        # leak watch: process RSS/CPU/fds, asyncio tasks and threads
        ProcessCollector(registry=r)
        Gauge(
            "teleconsult_asyncio_tasks", "asyncio tasks in the server loop", registry=r
        ).set_function(_task_count)
        Gauge("teleconsult_threads", "Threads in the server process", registry=r).set_function(
            threading.active_count
        )
        Gauge(
            "teleconsult_gc_frozen_objects",
            "Objects frozen out of garbage collection at start-up (rtc_server.heap)",
            registry=r,
        ).set_function(gc.get_freeze_count)

        self.loop_lag = LoopLag(r)

    def track_totals(self, totals: Callable[[], tuple[int, int, int]]) -> None:
        """Read the room gauges from `totals()` -> (rooms, participants, waiting) at scrape."""
        self.rooms.set_function(lambda: totals()[0])
        self.participants.set_function(lambda: totals()[1])
        self.waiting.set_function(lambda: totals()[2])


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the loop
        return float("nan")
