"""`teleconsult device add|revoke`: per-device keys for POST /api/observations and MQTT."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from kernel.records.store import RecordStore

#: (config file, data dir) -> the records store of those settings (the composition root's)
OpenRecords = Callable[[Path | None, Path | None], RecordStore]


def cmd_device(args: argparse.Namespace, open_records: OpenRecords) -> int:
    """Add a device (prints its key once) or revoke one; the running server sees it at once."""
    from . import tables  # noqa: F401  (the clinic tables exist before create_all)
    from .devices import add_device, revoke_device

    async def run() -> int:
        store = open_records(args.config, args.data_dir)
        await store.start()
        try:
            if args.action == "add":
                device, key = await add_device(store, args.patient, args.department, args.id)
                out: dict[str, Any] = {
                    "device": device.id,
                    "patient": device.patient,
                    "department": device.department,
                    "key": key,
                }
                print(json.dumps(out))
                return 0
            done = await revoke_device(store, args.id)
            print("revoked" if done else "no such active device")
            return 0 if done else 1
        finally:
            await store.close()

    return asyncio.run(run())


def add_parser(sub: Any, open_records: OpenRecords) -> None:
    """Register `device` on the top-level sub-parsers; ``open_records`` opens the store."""
    device = sub.add_parser("device", help="home devices that post observations")
    actions = device.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a device; prints its key once (JSON)")
    add.add_argument("--patient", required=True, help="the patient's identity")
    add.add_argument("--department", required=True, help="whose care team gets the alerts")
    add.add_argument("--id", help="device id (default: generated)")
    revoke = actions.add_parser("revoke", help="withdraw a device's key")
    revoke.add_argument("id")
    for p in (add, revoke):
        p.add_argument("--data-dir", type=Path)
        p.add_argument("--config", type=Path)
        p.set_defaults(func=partial(cmd_device, open_records=open_records))
