"""Say what holds up a slow shutdown.

A graceful stop tells clients, closes media, flushes queued record writes and deregisters from
Redis; each step is bounded, but when a stop still takes long, an operator (or a CI log) should
see why rather than wait for the service manager's SIGKILL. After ``after_s`` the pending
asyncio tasks are logged with where each one waits; if the event loop itself is stuck, Python's
faulthandler dumps every thread's stack to stderr a little later.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys

from aiohttp import web

log = logging.getLogger(__name__)


def pending_tasks_report() -> list[str]:
    """One line per pending task of the running loop: its name and where it waits."""
    lines = []
    current = asyncio.current_task()
    for task in asyncio.all_tasks():
        if task is current or task.done():
            continue
        frames = task.get_stack(limit=1)
        where = (
            f"{frames[0].f_code.co_filename}:{frames[0].f_lineno} in {frames[0].f_code.co_name}"
            if frames
            else repr(task.get_coro())
        )
        lines.append(f"{task.get_name()}: {where}")
    return sorted(lines)


def watch_shutdown(app: web.Application, after_s: float) -> list[asyncio.TimerHandle]:
    """Log the pending tasks if shutting ``app`` down takes longer than ``after_s``.

    Returns the (initially empty) list of timers it arms at shutdown, cancelled at cleanup.
    """
    timers: list[asyncio.TimerHandle] = []

    def report() -> None:
        lines = pending_tasks_report()
        log.warning(
            "shutdown is taking more than %.0f s; %d task(s) pending:\n  %s",
            after_s,
            len(lines),
            "\n  ".join(lines) or "(none: waiting on open connections)",
        )

    async def arm(_app: web.Application) -> None:
        timers.append(asyncio.get_running_loop().call_later(after_s, report))
        faulthandler.dump_traceback_later(3 * after_s, exit=False, file=sys.stderr)

    async def disarm(_app: web.Application) -> None:
        for timer in timers:
            timer.cancel()
        faulthandler.cancel_dump_traceback_later()

    app.on_shutdown.insert(0, arm)
    app.on_cleanup.append(disarm)
    return timers
