"""A client that follows `wrong_node` redirects and fails over to any listed node.

This is what every client of a cluster does (the browser app too, see docs/protocol.md):
connect anywhere; on `wrong_node` reconnect at `data.url` (a few hops at most); when a node
cannot be reached, try the next known URL, with a short pause between rounds, until a deadline.
"""

from __future__ import annotations

import asyncio
import time

from tests.helpers import Client, ConnectRefused

MAX_HOPS = 3


class Unreachable(Exception):
    """No node accepted the connection before the deadline."""


async def connect_routed(url: str, token: str, max_hops: int = MAX_HOPS) -> Client:
    """Connect at `url`, following redirects; ConnectRefused for any other refusal."""
    for _ in range(max_hops + 1):
        client = Client(url, token)
        try:
            return await client.connect()
        except ConnectRefused as exc:
            inner = exc.data.get("data")
            if exc.code == "wrong_node" and isinstance(inner, dict) and inner.get("url"):
                url = str(inner["url"])
                continue
            raise
    raise ConnectRefused({"message": f"more than {max_hops} redirects"})


def _unreachable(exc: ConnectRefused) -> bool:
    # a refusal without a code is a transport failure (nothing listening, reset...)
    return exc.code in (None, "node_unavailable", "internal_error")


async def connect_any(
    urls: list[str], token: str, deadline_s: float = 15.0, pause_s: float = 0.2
) -> Client:
    """Connect through whichever node answers, following redirects, until `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        for url in urls:
            try:
                return await connect_routed(url, token)
            except ConnectRefused as exc:
                if not _unreachable(exc):
                    raise
                last = exc
        await asyncio.sleep(pause_s)
    raise Unreachable(f"no node accepted within {deadline_s} s (last: {last})")


async def locate(urls: list[str], token: str, deadline_s: float = 15.0) -> str:
    """The URL of the node that hosts the token's room (connects once, then leaves)."""
    client = await connect_any(urls, token, deadline_s)
    url = client.url
    await client.close()
    return url
