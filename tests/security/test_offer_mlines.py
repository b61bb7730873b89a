"""An offer with 200 recvonly m-lines is refused without leaving the publisher PC stuck: the
same participant publishes right after."""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection

from media.client import SyntheticVideoTrack
from media.service import MEDIA
from tests.media.conftest import wait_for
from tests.media.test_signaling_integration import media_peer


async def _bloated_offer(lines: int) -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    head, media = sdp.split("m=audio", 1)
    media = "m=audio" + media
    codec = next(line for line in media.splitlines() if line.startswith("a=rtpmap:"))
    keep = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:sha-256", "a=setup:")
    transport = "".join(f"{line}\r\n" for line in media.splitlines() if line.startswith(keep))
    pt = codec.split(":")[1].split()[0]
    extra = []
    for i in range(1, lines):
        extra.append(
            f"m=audio 9 UDP/TLS/RTP/SAVPF {pt}\r\na=mid:{i}\r\n"
            f"a=recvonly\r\na=rtcp-mux\r\n{transport}{codec}\r\n"
        )
    bundle = "a=group:BUNDLE " + " ".join(str(i) for i in range(lines))
    head = "\r\n".join(
        bundle if line.startswith("a=group:BUNDLE") else line for line in head.split("\r\n")
    )
    return head + media + "".join(extra)


async def test_200_recvonly_mlines_do_not_stop_publishing(live: Any, connect: Any) -> None:
    sio, media = await media_peer(connect, "ward", "dr-host", "host", decode=False)
    try:
        await media.wait_event(lambda ev, p: ev == "rtc:config" and p["can_publish"])
        sdp = await _bloated_offer(200)
        assert len(sdp) < 64_000
        ack = await sio.call("rtc:offer", {"sdp": sdp, "tracks": []}, timeout=30)
        assert ack["ok"] is False and ack["error"]["code"] != "internal_error", ack
        # the sender still publishes
        await media.publish({"camera": SyntheticVideoTrack()})
        room = live.app[MEDIA].rooms["ward"]
        await wait_for(lambda: ("dr-host", "camera") in room.publications, 15)
    finally:
        await media.close()
