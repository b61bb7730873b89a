"""In-process harness: a RoomMedia and real aiortc clients, signaling through asyncio queues."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from media import native_send
from media.client import MediaClient
from media.messages import CLIENT_EVENTS, MediaError
from media.room import RoomMedia
from media.settings import MediaSettings


class Harness:
    def __init__(self, room: RoomMedia) -> None:
        self.room = room
        self.clients: dict[str, MediaClient] = {}
        self.errors: list[tuple[str, str, str]] = []

    async def request(
        self, identity: str, event: str, data: dict[str, Any]
    ) -> dict[str, Any] | None:
        model = CLIENT_EVENTS[event].model_validate(data)
        try:
            return await self.room.handle(identity, event, model)
        except MediaError as exc:
            self.errors.append((identity, event, exc.code))
            raise

    async def join(
        self, identity: str, publish: bool = True, subscribe: bool = True, **kw: Any
    ) -> MediaClient:
        client = MediaClient(identity, lambda ev, data: self.request(identity, ev, data), **kw)
        self.clients[identity] = client

        async def send(event: str, payload: dict[str, Any]) -> None:
            client.deliver(event, payload)

        await self.room.add_participant(identity, send, publish, subscribe)
        return client

    async def leave(self, identity: str, reason: str = "left") -> None:
        await self.room.remove_participant(identity, reason)
        await self.clients.pop(identity).close()

    async def close(self) -> None:
        await self.room.close()
        for client in list(self.clients.values()):
            await client.close()
        self.clients.clear()


async def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true or fail after ``timeout`` seconds."""

    async def _poll() -> None:
        while not predicate():  # noqa: ASYNC110 - polling assertion with a bound
            await asyncio.sleep(interval)

    await asyncio.wait_for(_poll(), timeout)


#: the three media paths: the compiled fast path, the same in Python (both receiving publishers'
#: RTP inline), aiortc's own send and receive paths
SEND_PATHS = {
    "native": {"fast_path": True, "native_send": True, "fast_receive": True},
    "python": {"fast_path": True, "native_send": False, "fast_receive": True},
    "fallback": {"fast_path": False, "native_send": False, "fast_receive": False},
}


def send_path_params(request: pytest.FixtureRequest) -> dict[str, bool]:
    """A ``send_path`` fixture body for modules that run every test on all three paths."""
    path: dict[str, bool] = SEND_PATHS[request.param]
    if path["native_send"] and native_send.load() is None:
        pytest.fail(f"{native_send.LIBRARY} is not built: run scripts/setup-venv.sh")
    return path


@pytest.fixture
def send_path() -> dict[str, bool]:
    """The send path under test: the default, unless a module overrides this fixture with
    ``params=list(SEND_PATHS)`` to run on all (the forwarding tests do)."""
    settings = MediaSettings()
    return {k: getattr(settings, k) for k in SEND_PATHS["native"]}


@pytest.fixture
def media_settings(send_path: dict[str, bool]) -> MediaSettings:
    return MediaSettings(stats_interval_s=0.5, active_speaker_interval_s=0.1, **send_path)


@pytest.fixture
async def harness(media_settings: MediaSettings) -> AsyncIterator[Harness]:
    h = Harness(RoomMedia("room-1", media_settings))
    try:
        yield h
    finally:
        with contextlib.suppress(Exception):
            await h.close()


async def camera_and_mic_flowing(harness: Harness, frames: int) -> tuple[Any, Any, list[Any]]:
    """alice publishes a camera and a microphone, bob receives both: (alice, bob, keys) once
    bob has ``frames`` frames of each."""
    from media.client import SyntheticVideoTrack, ToneAudioTrack

    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    keys = [("alice", "camera"), ("alice", "microphone")]
    await wait_for(
        lambda: all(k in bob.received and bob.received[k].frames >= frames for k in keys)
    )
    return alice, bob, keys
