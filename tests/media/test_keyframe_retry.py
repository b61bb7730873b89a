"""A keyframe request that no keyframe answers is repeated until one comes (a PLI can be lost,
and Chromium drops one that arrives within 300 ms of the one before): mediasoup's
KeyFrameRequestManager does the same. Without it a consumer that attached just after a keyframe
(the rehab tap, a late subscriber) could wait for the next one for as long as the call lasts."""

from __future__ import annotations

import asyncio

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from media.forwarder import Publication
from media.frames import EncodedFrame
from media.settings import MediaSettings

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
SETTINGS = MediaSettings(pli_min_interval_s=0.05, keyframe_retry_s=0.1)


class Receiver:
    """Stands in for the RTCRtpReceiver: counts the PLIs sent upstream."""

    def __init__(self) -> None:
        self.plis: list[int] = []
        self.sent = asyncio.Event()

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.plis.append(ssrc)
        self.sent.set()

    async def next_pli(self) -> None:
        self.sent.clear()
        async with asyncio.timeout(10):
            await self.sent.wait()


def publication() -> tuple[Publication, Receiver]:
    pub = Publication("alice", "camera", VP8, SETTINGS)
    receiver = Receiver()
    pub.receiver = receiver  # type: ignore[assignment]
    pub.assembler.media_ssrc = 1234  # type: ignore[union-attr]
    return pub, receiver


def frame(key: bool) -> EncodedFrame:
    return EncodedFrame(data=b"\x10" + bytes(20), timestamp=0, keyframe=key, arrival=0.0)


async def test_an_unanswered_request_is_sent_again_until_a_keyframe_comes() -> None:
    pub, receiver = publication()
    pub.request_keyframe("tap")
    await receiver.next_pli()
    pub.on_frame(frame(key=False))  # frames go on, none of them a keyframe
    await receiver.next_pli()
    await receiver.next_pli()
    assert receiver.plis == [1234, 1234, 1234] and pub.pli_retries == 2
    pub.on_frame(frame(key=True))
    assert pub._retry_timer is None and not pub._keyframe_wanted  # answered: no more retries
    pub.close()


async def test_a_muted_publication_is_not_asked_again() -> None:
    pub, receiver = publication()
    pub.request_keyframe("subscriber")
    await receiver.next_pli()
    pub.muted = True
    pub._retry_keyframe()  # the retry comes: it finds the publication muted and gives up
    assert not pub._keyframe_wanted and receiver.plis == [1234] and pub.pli_retries == 0
    pub.close()


async def test_close_cancels_a_pending_retry() -> None:
    pub, receiver = publication()
    pub.request_keyframe("tap")
    await receiver.next_pli()
    assert pub._retry_timer is not None
    pub.close()
    assert pub._retry_timer is None
