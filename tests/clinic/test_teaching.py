"""Teaching rounds: observers ask in chat and raise hands; the host promotes one to speaker,
whose camera then reaches the others through the SFU; demotion stops it again."""

from __future__ import annotations

from typing import Any

from media.client import SyntheticVideoTrack
from tests.media.conftest import wait_for
from tests.media.test_signaling_integration import media_peer

QUESTION = "ST 段抬高怎么判断\uff1f"  # ends with a full-width question mark


class _R0:
    frames = 0


async def test_hand_promote_publish_demote(live: Any, connect: Any) -> None:
    host_sio, host = await media_peer(connect, "round-1", "dr-teach", "host", decode=False)
    obs_sio, observer = await media_peer(connect, "round-1", "vil-doc-1", "observer", decode=False)
    other_sio, other = await media_peer(connect, "round-1", "vil-doc-2", "observer", decode=False)
    try:
        assert (await host_sio.call("lobby:admit_all", {}))["ok"]
        await obs_sio.next("lobby:admitted")
        await other_sio.next("lobby:admitted")
        # observers ask in chat
        assert (await obs_sio.call("chat:send", {"text": "请问这个心电图的ST段\uff1f"}))["ok"]
        await host_sio.next("chat:message", where=lambda m: m["sender"]["identity"] == "vil-doc-1")

        # a hand (with the question) reaches the host; a publisher cannot raise one
        ack = await obs_sio.call("teach:hand", {"raised": True, "question": QUESTION})
        assert ack["ok"] and ack["position"] == 1
        hands = await host_sio.next("teach:hands", where=lambda d: d["hands"])
        assert hands["hands"][0]["identity"] == "vil-doc-1"
        assert hands["hands"][0]["question"] == QUESTION
        assert (await host_sio.call("teach:hand", {}))["error"]["code"] == "conflict"
        # an admitter joining now gets the hands so far in its join payload; others do not
        late = await connect("round-1", "dr-late", "clinician")
        assert [h["identity"] for h in late.joined["teach_hands"]] == ["vil-doc-1"]
        newcomer = await connect("round-1", "vil-doc-3", "observer")
        assert (await host_sio.call("lobby:admit", {"identity": "vil-doc-3"}))["ok"]
        admitted = await newcomer.next("lobby:admitted")
        assert admitted["status"] == "joined" and "teach_hands" not in admitted
        # only a moderator promotes
        denied = await other_sio.call("teach:promote", {"identity": "vil-doc-2"})
        assert denied["error"]["code"] == "permission_denied"

        # before promotion the observer may not publish
        refused = await obs_sio.call("rtc:offer", {"sdp": "v=0\r\n" + "x" * 20, "tracks": []})
        assert refused["error"]["code"] == "permission_denied"
        ack = await host_sio.call("teach:promote", {"identity": "vil-doc-1"})
        assert ack["ok"] and ack["publish"] is True
        await obs_sio.next("teach:promoted")
        updated = await other_sio.next(
            "participant:updated", where=lambda p: p["identity"] == "vil-doc-1"
        )
        assert updated["grants"]["publish"] is True
        await host_sio.next("teach:hands", where=lambda d: not d["hands"])

        # the new speaker's camera reaches the host and the other observer
        await observer.publish({"camera": SyntheticVideoTrack()})
        cam = ("vil-doc-1", "camera")
        for peer in (host, other):
            await wait_for(lambda p=peer: p.received.get(cam, _R0).frames >= 5, 30)

        ack = await host_sio.call("teach:demote", {"identity": "vil-doc-1"})
        assert ack["ok"] and ack["publish"] is False
        await obs_sio.next("teach:demoted")
        # the room sees the demoted speaker muted (its tile shows the camera off)
        gone = await other_sio.next(
            "participant:updated",
            where=lambda p: p["identity"] == "vil-doc-1" and not p["grants"]["publish"],
        )
        assert gone["muted"]["video"] and gone["muted"]["audio"] and gone["forced_mute"]["video"]
        await host.wait_event(
            lambda ev, p: ev == "rtc:track_muted" and p["publisher"] == "vil-doc-1" and p["forced"]
        )
        again = await host_sio.call("teach:demote", {"identity": "vil-doc-1"})
        assert again["error"]["code"] == "conflict"
    finally:
        for m in (host, observer, other):
            await m.close()


async def test_a_speaker_who_drops_and_rejoins_speaks_again(live: Any, connect: Any) -> None:
    host_sio, host = await media_peer(connect, "round-2", "dr-teach", "host", decode=False)
    obs_sio, observer = await media_peer(connect, "round-2", "vil-doc-1", "observer", decode=False)
    try:
        assert (await host_sio.call("lobby:admit_all", {}))["ok"]
        await obs_sio.next("lobby:admitted")
        assert (await host_sio.call("teach:promote", {"identity": "vil-doc-1"}))["ok"]
        await obs_sio.next("teach:promoted")
        # the speaker's network drops: its connection goes, then it comes back
        await observer.close()
        await obs_sio.sio.disconnect()
        await host_sio.next(
            "participant:left", where=lambda p: p["identity"] == "vil-doc-1", timeout=20
        )
        back_sio, back = await media_peer(connect, "round-2", "vil-doc-1", "observer", decode=False)
        try:
            promoted = await back_sio.next("teach:promoted", timeout=20)
            assert promoted["by"] == "rejoin"
            updated = await host_sio.next(
                "participant:updated",
                where=lambda p: p["identity"] == "vil-doc-1" and p["grants"]["publish"],
            )
            assert not updated["forced_mute"]["video"]
            # and it may publish again: its camera reaches the host
            await back.publish({"camera": SyntheticVideoTrack()})
            cam = ("vil-doc-1", "camera")
            await wait_for(lambda: host.received.get(cam, _R0).frames >= 5, 30)
            # a demoted speaker who drops comes back as an observer
            assert (await host_sio.call("teach:demote", {"identity": "vil-doc-1"}))["ok"]
            await back_sio.next("teach:demoted")
        finally:
            await back.close()
            await back_sio.sio.disconnect()
        await host_sio.next(
            "participant:left", where=lambda p: p["identity"] == "vil-doc-1", timeout=20
        )
        again_sio, again = await media_peer(
            connect, "round-2", "vil-doc-1", "observer", decode=False
        )
        try:
            assert again_sio.joined["self"]["grants"]["publish"] is False
            refused = await again_sio.call("rtc:offer", {"sdp": "v=0\r\n" + "x" * 20, "tracks": []})
            assert refused["error"]["code"] == "permission_denied"
            assert not again_sio.events["teach:promoted"]
        finally:
            await again.close()
    finally:
        for m in (host, observer):
            await m.close()
