"""A slow shutdown logs the tasks it is waiting on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web

from rtc_server.shutdown_watch import watch_shutdown


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.event.set()


@pytest.fixture
def seen() -> Iterator[_Seen]:
    """What rtc_server.shutdown_watch logs during the test."""
    handler = _Seen()
    logger = logging.getLogger("rtc_server.shutdown_watch")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def stop(app: web.Application) -> None:
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()


async def test_a_stuck_shutdown_names_the_waiting_task(seen: _Seen) -> None:
    app = web.Application()

    async def flush_records(_app: web.Application) -> None:
        # stands in for a shutdown step that hangs: it waits until the report is out
        await asyncio.wait_for(seen.event.wait(), 30)

    async def holder() -> None:
        await asyncio.Event().wait()

    stuck = asyncio.create_task(holder(), name="stuck-writer")
    app.on_shutdown.append(flush_records)
    watch_shutdown(app, 0.2)
    await stop(app)
    stuck.cancel()

    [record] = seen.records
    text = record.getMessage()
    assert "shutdown is taking more than" in text
    assert "stuck-writer: " in text and "in holder" in text


async def test_a_quick_shutdown_says_nothing(seen: _Seen) -> None:
    app = web.Application()
    timers = watch_shutdown(app, 30.0)
    await stop(app)
    assert len(timers) == 1 and timers[0].cancelled()
    assert seen.records == []
