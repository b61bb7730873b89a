"""rtc:echo, the device check's loopback: a real aiortc peer sends video and gets it back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media.client import SyntheticVideoTrack
from media.echo import EchoService
from rtc_server.keys import SIGNALING

from .conftest import SEND_PATHS, send_path_params, wait_for


@pytest.fixture(params=list(SEND_PATHS))
def send_path(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Every test here runs on the compiled fast path, the Python one and aiortc's own."""
    return send_path_params(request)


@pytest.fixture
async def live(start_server: Any, send_path: dict[str, bool]) -> Any:
    return await start_server(media=send_path)


def _echo_service(live: Any) -> EchoService:
    handler = live.app[SIGNALING].handlers["rtc:echo"].handler
    service = handler.__self__
    assert isinstance(service, EchoService)
    return service


async def test_echo_returns_the_video_before_joining_and_cleans_up(live: Any, connect: Any) -> None:
    client = await connect("ward-9", "pat-zhang", "patient", "张伟", join=False)
    config = await client.call("rtc:echo_config", {})
    assert config["ok"] and config["ice_servers"] == [] and config["max_seconds"] > 0
    pc = RTCPeerConnection()
    received: list[Any] = []
    pulls: list[asyncio.Future[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def pull() -> None:
            while True:
                try:
                    received.append(await track.recv())
                except Exception:
                    return

        pulls.append(asyncio.ensure_future(pull()))

    try:
        pc.addTransceiver(SyntheticVideoTrack(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        ack = await client.call("rtc:echo", {"sdp": pc.localDescription.sdp})
        assert ack["ok"], ack
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        await wait_for(lambda: len(received) >= 5, 30)
        assert received[-1].width > 0
        service = _echo_service(live)
        assert len(service.sessions) == 1
        stop = await client.call("rtc:echo_stop", {})
        assert stop["ok"] and stop["stats"]["frames_echoed"] >= 5
        assert service.sessions == {}
        # a connection that goes away takes its echo with it
        ack = await client.call("rtc:echo", {"sdp": pc.localDescription.sdp})
        assert ack["ok"] and len(service.sessions) == 1
        await client.close()
        await wait_for(lambda: service.sessions == {}, 10)
    finally:
        await pc.close()


async def test_echo_refuses_anything_but_one_video_line(connect: Any) -> None:
    client = await connect("ward-9", "pat-li", "patient", join=False)
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        ack = await client.call("rtc:echo", {"sdp": pc.localDescription.sdp})
        assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
        ack = await client.call("rtc:echo", {"sdp": "v=0\r\nnonsense"})
        assert ack["ok"] is False and ack["error"]["code"] in ("bad_sdp", "bad_request")
    finally:
        await pc.close()
