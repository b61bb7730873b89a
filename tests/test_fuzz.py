"""Property-based fuzzing of every signaling event's payload against a live server.

Each example sends one event with a generated payload (arbitrary JSON, or an object built from
the event's own field names with arbitrary values) and requires a result or a typed error; after
the run the room must be intact and working. The server and its clients live on a background
event loop so that hypothesis drives plain synchronous examples.

CI runs a bounded number of examples; `FUZZ_EXAMPLES=5000 pytest tests/test_fuzz.py` runs longer.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kernel.errors import ErrorCode
from rtc_server.app import create_app
from rtc_server.config import load_settings, signing_secret
from rtc_server.keys import SETTINGS, SIGNALING
from tests.helpers import Client, Tokens

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
CODES = {c.value for c in ErrorCode}
# valid payloads of these would end, empty or lock the room under test: only invalid ones are sent
DESTRUCTIVE = {"host:end", "host:remove", "leave", "host:lock", "room:policy", "lobby:deny"}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=20), inner, max_size=6)
    ),
    max_leaves=30,
)


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    host: Client
    peer: Client
    ns: Any

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Any:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, Harness]:
        data = tmp_path_factory.mktemp("fuzz")
        app = create_app(
            load_settings(
                overrides={
                    "data_dir": data,
                    "limits": {"rate_per_s": 100000, "rate_burst": 100000},
                },
                environ={},
            )
        )
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}"
        tokens = Tokens(signing_secret(app[SETTINGS]))
        host = await Client(url, tokens("fuzz", "dr", "host")).connect()
        await host.call("join", {})
        peer = await Client(url, tokens("fuzz", "cardio", "clinician")).connect()
        await peer.call("join", {})
        return runner, Harness(loop, host, peer, app[SIGNALING])

    runner, h = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield h

    async def stop() -> None:
        await h.host.close()
        await h.peer.close()
        await runner.cleanup()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def payloads_for(model: Any) -> st.SearchStrategy[Any]:
    fields = sorted(model.model_fields)
    keyed = st.dictionaries(
        st.sampled_from(fields) if fields else st.text(max_size=10), json_values, max_size=6
    )
    return json_values | keyed


@st.composite
def event_and_payload(draw: st.DrawFn, events: list[tuple[str, Any]]) -> tuple[str, Any]:
    event, model = draw(st.sampled_from(events))
    return event, draw(payloads_for(model))


def check_answer(answer: Any) -> None:
    assert isinstance(answer, dict), answer
    if answer.get("ok") is True:
        return
    assert answer.get("ok") is False, answer
    error = answer["error"]
    assert error["code"] in CODES, error
    assert error["code"] != "internal_error", error
    assert isinstance(error["message"], str) and error["message"]


def test_every_event_answers_with_result_or_typed_error(harness: Harness) -> None:
    events = sorted((name, spec.model) for name, spec in harness.ns.handlers.items())
    assert len(events) >= 14

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(event_and_payload(events))
    def check(case: tuple[str, Any]) -> None:
        event, payload = case
        if event in DESTRUCTIVE:
            model = harness.ns.handlers[event].model
            try:
                model.model_validate({} if payload is None else payload)
                assume(False)
            except ValidationError:
                pass
        check_answer(harness.run(harness.host.call(event, payload)))

    check()

    # the room is intact: both participants are still in it and chat flows
    ack = harness.run(harness.peer.call("chat:send", {"text": "after the fuzz"}))
    assert ack["ok"], ack
    room = harness.ns.registry.get("fuzz")
    assert room is not None and set(room.participants) == {"dr", "cardio"}


def test_unknown_and_odd_event_names(harness: Harness) -> None:
    @settings(max_examples=max(20, EXAMPLES // 5), deadline=None, database=None)
    @given(st.text(min_size=1, max_size=80), json_values)
    def check(event: str, payload: Any) -> None:
        assume(event not in harness.ns.handlers and event not in ("connect", "disconnect"))
        assume("\x00" not in event)
        check_answer(harness.run(harness.host.call(event, payload)))

    check()
