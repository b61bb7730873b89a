"""A participant who leaves leaves nothing behind: its peer connections and publications are freed
while the room and its other participants carry on (the soak benchmark's leak, pinned)."""

from __future__ import annotations

import gc
import weakref

import pytest

from media.client import SyntheticVideoTrack, ToneAudioTrack

from .conftest import Harness, wait_for


@pytest.mark.parametrize("sources", [("microphone",), ("camera", "microphone")])
async def test_departed_publisher_is_freed(harness: Harness, sources: tuple[str, ...]) -> None:
    host = await harness.join("host", decode=False)
    await host.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
    tracks = {"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()}
    guest = await harness.join("guest", decode=False)
    await guest.publish({s: tracks[s] for s in sources})
    # the host is subscribed to the guest's media, and frames flow
    await wait_for(
        lambda: all(("guest", s) in harness.room.sessions["host"].subscriptions for s in sources)
    )
    await wait_for(
        lambda: (
            host.received.get(("guest", sources[0])) is not None
            and host.received[("guest", sources[0])].frames >= 5
        ),
        30,
    )

    session = harness.room.sessions["guest"]
    refs = [weakref.ref(session.pub_pc), weakref.ref(session)]
    refs += [weakref.ref(pub) for pub in session.publications.values()]
    del session
    await harness.leave("guest")
    # the host's subscriber connection renegotiates the removed m-lines away
    await wait_for(
        lambda: not any(k[0] == "guest" for k in harness.room.sessions["host"].subscriptions)
    )

    def freed() -> bool:
        gc.collect()
        return all(r() is None for r in refs)

    # the senders' and negotiation's last tasks finish within moments; a leak never does
    try:
        await wait_for(freed, 10)
    except TimeoutError:
        alive = [type(o).__name__ for r in refs if (o := r()) is not None]
        raise AssertionError(f"still reachable 10 s after leave: {alive}") from None
    # and the room still works for the host
    assert "host" in harness.room.sessions


async def test_subscriber_mlines_are_reused(harness: Harness) -> None:
    """Participants coming and going don't grow the subscriber connection: each newcomer's
    tracks reuse the m-lines freed by the one before (after an offer showed them inactive),
    with a new track id, and their media arrives there."""
    host = await harness.join("host", decode=False)
    mids: dict[str, set[str]] = {"camera": set(), "microphone": set()}
    track_ids: set[str] = set()
    for n in range(3):
        guest = f"guest{n}"
        client = await harness.join(guest, decode=False)
        await client.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})
        for source in ("camera", "microphone"):
            await wait_for(
                lambda s=source, g=guest: (
                    host.received.get((g, s)) is not None and host.received[(g, s)].frames >= 5
                ),
                30,
            )
            mids[source].add(host.received[(guest, source)].mid)
        session = harness.room.sessions["host"]
        track_ids |= {sub.track.id for sub in session.subscriptions.values()}
        await harness.leave(guest)
        # the freed pair becomes reusable once the host has answered the offer marking it inactive
        await wait_for(lambda: len(harness.room.sessions["host"]._free) == 2, 15)

    session = harness.room.sessions["host"]
    assert session.sub_pc is not None
    assert len(session.sub_pc.getTransceivers()) == 2
    assert all(len(m) == 1 for m in mids.values()), mids
    assert len(track_ids) == 6  # a new msid each time: the browser fires a new track event
