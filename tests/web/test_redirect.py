"""Scale-out in the browser: a join link opened on a node that does not host the room follows
the server's `wrong_node` redirect to the room's node and joins there."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.cluster.test_workers import room_for, workers  # noqa: F401  (fixture)
from tests.helpers import Tokens
from tests.web.helpers import WAIT_MS, pass_device_check


async def test_join_link_on_the_wrong_worker_lands_on_the_room_s_worker(
    workers: Any,  # noqa: F811
    new_page: Any,
    requests_seen: Any,
    shot: Any,
) -> None:
    _proc, port, data, _log = workers
    secret = signing_secret(
        prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    )
    room = room_for(1)  # hosted by worker 1, at port + 1
    token = Tokens(secret)(room, "dr-redirect", "host", "Dr Redirect")
    page = await new_page()
    # opened on worker 0: the connection test is refused with wrong_node and the page moves
    await pass_device_check(page, f"http://127.0.0.1:{port}/join?token={token}")
    assert page.url.startswith(f"http://127.0.0.1:{port + 1}/join?token=")
    await page.click("#join-btn")
    await expect(page.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
    await shot(page, "24-redirected-to-room-node")
    assert requests_seen.outside() == []
