"""Loss repair on both legs (NACK + RTX), and trickle ICE from the client."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from aiortc.rtp import RtpPacket, is_rtcp

from media.client import SyntheticVideoTrack

from .conftest import SEND_PATHS, Harness, send_path_params, wait_for


@pytest.fixture(params=list(SEND_PATHS))
def send_path(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Every test here runs on the compiled fast path, the Python one and aiortc's own."""
    return send_path_params(request)


class _R0:
    frames = 0
    payloads: list[bytes] = []


def _every_nth_media_lost(
    transceiver: Any, every: int, log: dict[str, list[int]]
) -> Callable[[bytes], bool]:
    """``keep(rtp_bytes)``: False for every ``every``-th media packet of ``transceiver``'s codec
    (logged under "dropped"); RTX packets are logged under "rtx" by the sequence number they
    carry and kept."""
    codecs = transceiver._codecs
    media_pt = codecs[0].payloadType
    rtx_pt = next(c.payloadType for c in codecs if c.mimeType.lower().endswith("/rtx"))
    count = [0]

    def keep(data: bytes) -> bool:
        pt = data[1] & 0x7F
        if pt == rtx_pt:  # RTX payload starts with the original sequence number
            log["rtx"].append(int.from_bytes(RtpPacket.parse(data).payload[:2], "big"))
        elif pt == media_pt:
            count[0] += 1
            if count[0] % every == 0:
                log["dropped"].append(int.from_bytes(data[2:4], "big"))
                return False
        return True

    return keep


def drop_some_video(transceiver: Any, every: int, log: dict[str, list[int]]) -> None:
    """Make the transceiver's transport lose every ``every``-th media packet (once each)."""
    keep = _every_nth_media_lost(transceiver, every, log)
    transport = transceiver.sender.transport
    original = transport._send_rtp

    async def lossy(data: bytes) -> None:
        if is_rtcp(data) or keep(data):
            await original(data)

    transport._send_rtp = lossy


def lose_some_received_video(transceiver: Any, every: int, log: dict[str, list[int]]) -> None:
    """Make the receiving side of ``transceiver`` lose every ``every``-th media packet after
    decryption (so on every send path of the far end: aiortc's, the fast path in Python or C)."""
    keep = _every_nth_media_lost(transceiver, every, log)
    transport = transceiver.receiver.transport
    original = transport._handle_rtp_data

    async def lossy(data: bytes, arrival_time_ms: int) -> None:
        if keep(data):
            await original(data, arrival_time_ms)

    transport._handle_rtp_data = lossy


async def test_subscriber_leg_loss_is_repaired_by_retransmission(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False, record=True)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 5, 30)
    sub = harness.room.sessions["bob"].subscriptions[("alice", "camera")]
    log: dict[str, list[int]] = {"dropped": [], "rtx": []}
    received_by_bob = next(t for t in bob.sub_pc.getTransceivers() if t.mid == sub.transceiver.mid)  # type: ignore[union-attr]
    lose_some_received_video(received_by_bob, 7, log)
    rec = bob.received[("alice", "camera")]
    start, sent0 = rec.frames, sub.frames_forwarded
    await wait_for(lambda: rec.frames >= start + 60, 30)
    assert len(log["dropped"]) >= 5
    # bob NACKed, the SFU's sender retransmitted over RTX, and bob got every frame it was sent
    assert set(log["dropped"]) <= set(log["rtx"])
    sent = sub.frames_forwarded - sent0
    assert rec.frames - start >= sent - 3  # (the last frames may still be in flight)


async def test_publisher_leg_loss_is_repaired_by_retransmission(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish({"camera": SyntheticVideoTrack()})
    await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 5, 30)
    transceiver = alice.pub_pc.getTransceivers()[0]  # type: ignore[union-attr]
    log: dict[str, list[int]] = {"dropped": [], "rtx": []}
    drop_some_video(transceiver, 7, log)
    pub = harness.room.publications[("alice", "camera")]
    frames0, losses0 = pub.assembler.frames, pub.assembler.losses
    await wait_for(lambda: pub.assembler.frames >= frames0 + 60, 30)
    assert len(log["dropped"]) >= 5
    assert set(log["dropped"]) <= set(log["rtx"])  # the SFU NACKed every hole
    assert pub.assembler.losses == losses0  # and every hole was filled in time


async def test_trickled_client_candidates_connect(harness: Harness) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    pc = alice._new_pc()
    alice.pub_pc = pc
    transceiver = pc.addTransceiver(SyntheticVideoTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    candidates = re.findall(r"^a=(candidate:.*)$", sdp, flags=re.MULTILINE)
    stripped = re.sub(r"^a=(candidate:.*|end-of-candidates)\r?\n", "", sdp, flags=re.MULTILINE)
    assert candidates and "a=candidate" not in stripped
    # the first candidate races ahead of the offer (as over Socket.IO), the rest follow it
    first, *rest = candidates
    early = {"pc": "publisher", "candidate": first.strip(), "sdp_mid": transceiver.mid}
    assert await harness.request("alice", "rtc:candidate", early) is None
    ack = await harness.request(
        "alice",
        "rtc:offer",
        {"sdp": stripped, "tracks": [{"mid": transceiver.mid, "source": "camera"}]},
    )
    assert ack is not None
    await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
    for cand in rest:
        await harness.request(
            "alice",
            "rtc:candidate",
            {"pc": "publisher", "candidate": cand.strip(), "sdp_mid": transceiver.mid},
        )
    await harness.request("alice", "rtc:candidate", {"pc": "publisher", "candidate": None})
    await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 10, 30)


async def test_lossy_subscriber_is_moved_to_the_low_layer_automatically(
    harness: Harness,
) -> None:
    alice = await harness.join("alice", subscribe=False)
    bob = await harness.join("bob", publish=False, decode=False)
    await alice.publish(
        {"camera": SyntheticVideoTrack(320, 240), "camera_low": SyntheticVideoTrack(160, 120)}
    )
    await wait_for(lambda: bob.received.get(("alice", "camera"), _R0).frames >= 5, 30)
    sub = harness.room.sessions["bob"].subscriptions[("alice", "camera")]
    await wait_for(lambda: sub.layer == "high", 30)  # started low, a padding probe moved it up
    log: dict[str, list[int]] = {"dropped": [], "rtx": []}
    received_by_bob = next(t for t in bob.sub_pc.getTransceivers() if t.mid == sub.transceiver.mid)  # type: ignore[union-attr]
    lose_some_received_video(received_by_bob, 4, log)  # ~25 % loss in bob's receiver reports
    await wait_for(lambda: sub.layer == "low", 30)
    assert sub.auto_layer == "low" and sub.layer_request is None
    # an explicit request wins over the automatic choice
    await harness.request("bob", "rtc:layer", {"publisher": "alice", "layer": "high"})
    await wait_for(lambda: sub.layer == "high", 10)
