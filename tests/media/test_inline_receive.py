"""Publishers' RTP handled in the socket callback (aiortc_receive.receive_rtp_inline)."""

from __future__ import annotations

import asyncio

import pytest

from media.aiortc_receive import inline_received, run_eagerly

from .conftest import Harness, camera_and_mic_flowing, wait_for


async def test_a_coroutine_that_never_waits_runs_to_its_end_at_once() -> None:
    done: list[str] = []

    async def handler() -> None:
        done.append("ran")

    run_eagerly(handler())
    assert done == ["ran"]  # no task, no loop iteration


async def test_a_coroutine_that_waits_goes_on_in_a_task() -> None:
    steps: list[str] = []
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler() -> None:
        steps.append("before")
        steps.append(f"got {await gate}")

    run_eagerly(handler())
    assert steps == ["before"]
    gate.set_result(7)
    await wait_for(lambda: len(steps) == 2, 5)
    assert steps == ["before", "got 7"]


async def test_an_error_before_the_first_wait_is_raised_to_the_caller() -> None:
    async def handler() -> None:
        raise ValueError("bad packet")

    with pytest.raises(ValueError, match="bad packet"):
        run_eagerly(handler())


async def test_publishers_packets_take_the_inline_path(harness: Harness) -> None:
    assert harness.room.settings.fast_receive  # the default
    await camera_and_mic_flowing(harness, 20)
    pc = harness.room.sessions["alice"].pub_pc
    assert pc is not None
    inline = inline_received(pc)
    pub = harness.room.publications[("alice", "camera")]
    assert inline > 0 and pub.assembler.packets > 0
    # most packets come this way (the queue path keeps order when aiortc's queue is not empty)
    audio = harness.room.publications[("alice", "microphone")].assembler.packets
    assert inline >= 0.8 * (pub.assembler.packets + audio)
    # aiortc's transport statistics still count every datagram
    report = await pc.getStats()
    transport = next(s for s in report.values() if s.type == "transport")
    assert transport.packetsReceived >= inline
