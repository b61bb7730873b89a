"""Leave, kick, end and network loss tear everything down: no leaked tasks, threads or PCs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from media.client import SyntheticVideoTrack, ToneAudioTrack
from media.room import RoomMedia
from media.settings import MediaSettings

from .conftest import SEND_PATHS, Harness, send_path_params, wait_for


@pytest.fixture(params=list(SEND_PATHS))
def send_path(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Every test here runs on the compiled fast path, the Python one and aiortc's own."""
    return send_path_params(request)


class _R0:
    frames = 0


def _other_tasks(me: asyncio.Task[object] | None = None) -> set[asyncio.Task[object]]:
    skip = {asyncio.current_task(), me}
    return {t for t in asyncio.all_tasks() if t not in skip and not t.done()}


def _decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.endswith("-decoder"))


async def _room_with_three(harness: Harness) -> None:
    for name in ("alice", "bob", "carol"):
        client = await harness.join(name, decode=False)
        await client.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    clients = harness.clients

    def all_flowing() -> bool:
        return all(
            c.received.get((other, "camera"), _R0).frames >= 5
            for name, c in clients.items()
            for other in clients
            if other != name
        )

    await wait_for(all_flowing, timeout=40)


async def test_leave_kick_and_end_release_everything(send_path: dict[str, bool]) -> None:
    base_threads = set(threading.enumerate())
    base_tasks = _other_tasks()
    harness = Harness(RoomMedia("room-teardown", MediaSettings(**send_path)))
    room = harness.room
    await _room_with_three(harness)
    assert len(room.publications) == 6
    bob_session = room.sessions["bob"]
    bob_pcs = [bob_session.pub_pc, bob_session.sub_pc]

    # leave: bob's publications vanish, the others are told and stop receiving him
    await harness.leave("bob", "left")
    assert all(pc is not None and pc.connectionState == "closed" for pc in bob_pcs)
    assert ("bob", "camera") not in room.publications
    for name in ("alice", "carol"):
        session = room.sessions[name]
        assert all(k[0] != "bob" for k in session.subscriptions)
        await harness.clients[name].wait_event(
            lambda ev, p: ev == "rtc:track_unpublished" and p["publisher"] == "bob"
        )

    # kick is the same call with another reason, from the signaling layer
    await room.remove_participant("carol", "kicked")
    await harness.clients.pop("carol").close()
    assert set(room.sessions) == {"alice"}
    assert list(room.publications) == [("alice", "camera"), ("alice", "microphone")]
    assert not room.sessions["alice"].subscriptions

    # end: the room closes, cascading; close() is idempotent
    await room.close()
    await room.close()
    assert room.closed and not room.sessions and not room.publications
    for client in list(harness.clients.values()):
        await client.close()

    await wait_for(lambda: _decoder_threads() == 0, timeout=10)
    me = asyncio.current_task()
    try:
        await wait_for(lambda: not (_other_tasks(me) - base_tasks), timeout=10)
    except TimeoutError:
        raise AssertionError(sorted(repr(t) for t in _other_tasks(me) - base_tasks)) from None
    await wait_for(lambda: set(threading.enumerate()) <= base_threads | _executor_threads(), 10)


def _executor_threads() -> set[threading.Thread]:
    # the default executor's idle workers (aiortc encodes the clients' media there) live on
    return {t for t in threading.enumerate() if t.name.startswith(("asyncio_", "ThreadPool"))}


async def test_network_loss_resets_the_session(harness: Harness) -> None:
    alice = await harness.join("alice", decode=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 5, 30)

    # alice's network dies: her publisher PC goes to "failed" (simulated by closing her side's
    # ICE; the server only learns through its connection state)
    session = harness.room.sessions["alice"]
    await harness.room.reset_session("alice", "network")
    await alice.wait_event(lambda ev, p: ev == "rtc:disconnected" and p["reason"] == "network")
    assert session.closed and session.pub_pc is None
    assert ("alice", "camera") not in harness.room.publications
    await bob.wait_event(lambda ev, p: ev == "rtc:track_unpublished" and p["publisher"] == "alice")
    # she is still a member and may publish again on a fresh connection
    assert "alice" in harness.room.sessions and harness.room.sessions["alice"] is not session
    await wait_for(lambda: alice.pub_pc is None, 10)  # the client dropped its old PCs
    await alice.publish({"camera": SyntheticVideoTrack()})
    before = bob.received[("alice", "camera")].frames
    await wait_for(lambda: bob.received[("alice", "camera")].frames >= before + 10, 30)


async def test_failed_connection_state_triggers_reset(harness: Harness) -> None:
    alice = await harness.join("alice", decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: ("alice", "camera") in harness.room.publications, 10)
    pc = harness.room.sessions["alice"].pub_pc
    assert pc is not None
    await wait_for(lambda: pc.connectionState == "connected", 20)
    # kill the client's side abruptly: consent checks fail and the server PC fails
    await alice.pub_pc.close()  # type: ignore[union-attr]
    await alice.wait_event(lambda ev, p: ev == "rtc:disconnected", timeout=60)
    assert ("alice", "camera") not in harness.room.publications
