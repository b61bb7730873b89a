"""The transport-agnostic sync engine and awareness relay, with plain pycrdt peers."""

from __future__ import annotations

import json

import pytest
from pycrdt import Doc, Map, YSyncMessageType

from annotation.awareness import AwarenessRelay, Peer, encode_awareness, parse_awareness_message
from annotation.errors import MalformedMessage, MessageTooLarge, PermissionDenied
from annotation.fixups import Author, ServerFixups
from annotation.model import annotations_map, new_doc, read_annotations
from annotation.sync import (
    SyncEngine,
    parse_sync_message,
    step1,
    sync_message,
    update_message,
)


def mark(doc: Doc, key: str, tool: str = "length", author: str = "alice", **extra) -> None:
    annotations_map(doc)[key] = Map(
        {
            "id": key,
            "author": author,
            "tool": tool,
            "points": [[0.0, 0.0], [3.0, 4.0]],
            "frame": 0,
            "colour": "#ff0000",
            "created": 1.0,
            "updated": 1.0,
            **extra,
        }
    )


def sync_client(engine: SyncEngine, client: Doc, can_write: bool = True) -> None:
    """Full handshake: client step 1 -> server step 2 + step 1 -> client step 2."""
    out = engine.handle(step1(client), can_write=can_write)
    step2, server_step1 = out.replies
    _, payload = parse_sync_message(step2)
    client.apply_update(payload)
    _, sv = parse_sync_message(server_step1)
    engine.handle(
        sync_message(YSyncMessageType.SYNC_STEP2, client.get_update(sv)), can_write=can_write
    )


def test_two_writers_converge_through_the_engine():
    server = new_doc()
    engine = SyncEngine(server)
    a, b = new_doc(), new_doc()
    sync_client(engine, a)
    sync_client(engine, b)
    sent = []
    a.observe(lambda e: sent.append(("a", e.update)))
    b.observe(lambda e: sent.append(("b", e.update)))
    mark(a, "m1", author="alice")
    mark(b, "m2", author="bob")
    for who, update in list(sent):
        out = engine.handle(update_message(update), can_write=True)
        assert out.update is not None and out.broadcast is not None
        target = b if who == "a" else a
        target.apply_update(parse_sync_message(out.broadcast)[1])
    assert a["annotations"].to_py() == b["annotations"].to_py() == server["annotations"].to_py()
    assert set(a["annotations"].to_py()) == {"m1", "m2"}


def test_late_joiner_gets_everything_and_reconnect_gets_a_delta():
    server = new_doc()
    engine = SyncEngine(server)
    for i in range(50):
        mark(server, f"k{i}")
    late = new_doc()
    sync_client(engine, late)
    assert late["annotations"].to_py() == server["annotations"].to_py()
    full = len(engine.handle(step1(new_doc()), can_write=False).replies[0])
    mark(server, "extra")
    delta = engine.handle(step1(late), can_write=False).replies[0]
    assert len(delta) < full / 10
    late.apply_update(parse_sync_message(delta)[1])
    assert "extra" in late["annotations"].to_py()


def test_read_only_caller_can_read_but_not_write():
    server = new_doc()
    engine = SyncEngine(server)
    mark(server, "m1")
    viewer = new_doc()
    sync_client(engine, viewer, can_write=False)  # its (no-op) step 2 is accepted
    before = server.get_update()
    updates = []
    viewer.observe(lambda e: updates.append(e.update))
    mark(viewer, "evil")
    with pytest.raises(PermissionDenied):
        engine.handle(update_message(updates[-1]), can_write=False)
    del annotations_map(viewer)["m1"]
    with pytest.raises(PermissionDenied):
        engine.handle(sync_message(YSyncMessageType.SYNC_STEP2, updates[-1]), can_write=False)
    assert server.get_update() == before
    assert set(server["annotations"].to_py()) == {"m1"}


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00",
        b"\x07\x00\x00",
        b"\x00\x05\x00",
        b"\x00\x02\x10abc",
        b"\x00\x02\x03\xff\xff\xff",
        b"\x00\x02\x02\x00\x00trailing",
        update_message(b"\x01\x02\x03\x04garbage-garbage-garbage"),
    ],
)
def test_malformed_messages_leave_the_doc_intact(bad: bytes):
    server = new_doc()
    engine = SyncEngine(server)
    mark(server, "m1")
    before = server.get_update()
    with pytest.raises(MalformedMessage):
        engine.handle(bad, can_write=True)
    assert server.get_update() == before


def test_oversize_message_is_refused():
    engine = SyncEngine(new_doc(), max_message_bytes=1000)
    with pytest.raises(MessageTooLarge):
        engine.handle(update_message(b"\x00" * 2000), can_write=True)


def test_server_fixups_stamp_author_and_measure():
    server = new_doc()
    fix = ServerFixups(server, (0.5, 0.5))
    engine = SyncEngine(server, after_change=fix)
    client = new_doc()
    updates = []
    client.observe(lambda e: updates.append(e.update))
    mark(client, "m1", author="mallory")
    out = engine.handle(
        update_message(updates[-1]), can_write=True, origin=Author("alice", "Dr Alice")
    )
    assert len(out.replies) == 1  # the server's fix-up goes back to the sender
    client.apply_update(parse_sync_message(out.replies[0])[1])
    entry = client["annotations"].to_py()["m1"]
    assert entry["author"] == "alice" and entry["author_name"] == "Dr Alice"
    assert entry["measurement"]["value"] == pytest.approx(2.5)  # 5 px * 0.5 mm
    anns, invalid = read_annotations(server)
    assert [a.id for a in anns] == ["m1"] and invalid == 0
    # a client forging a measurement gets it recomputed
    annotations_map(client)["m1"]["measurement"] = {"kind": "length", "value": 999}
    out = engine.handle(update_message(updates[-1]), can_write=True, origin=Author("alice", "A"))
    assert server["annotations"].to_py()["m1"]["measurement"]["value"] == pytest.approx(2.5)


def test_fixups_of_a_changed_mark_follow_its_tool():
    """A changed freehand mark is not read whole (nothing to measure), yet a forged
    measurement on it is cleared, and a mark turned into a length gets measured."""
    server = new_doc()
    engine = SyncEngine(server, after_change=ServerFixups(server, (0.5, 0.5)))
    client = new_doc()
    updates: list[bytes] = []
    client.observe(lambda e: updates.append(e.update))
    mark(client, "f1", tool="freehand")
    engine.handle(update_message(updates[-1]), can_write=True, origin=Author("alice", "A"))
    stroke = annotations_map(client)["f1"]
    stroke["points"] = [[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]  # the stroke grows
    engine.handle(update_message(updates[-1]), can_write=True, origin=Author("alice", "A"))
    stroke["measurement"] = {"kind": "length", "value": 999}  # forged
    engine.handle(update_message(updates[-1]), can_write=True, origin=Author("alice", "A"))
    got = server["annotations"].to_py()["f1"]
    assert got["measurement"] is None and len(got["points"]) == 3
    with client.transaction():
        stroke["tool"] = "length"
        stroke["points"] = [[0.0, 0.0], [3.0, 4.0]]
    engine.handle(update_message(updates[-1]), can_write=True, origin=Author("alice", "A"))
    assert server["annotations"].to_py()["f1"]["measurement"]["value"] == pytest.approx(2.5)


def peer(sid: str, identity: str) -> Peer:
    return Peer(sid, identity, identity.title(), "clinician", "#123456")


def test_awareness_is_stamped_and_owned():
    relay = AwarenessRelay()
    msg = encode_awareness([(42, 1, {"cursor": {"x": 1}, "user": {"name": "fake"}})])
    out = relay.apply(msg, peer("s1", "alice"))
    [(cid, clock, state)] = parse_awareness_message(out)
    assert (cid, clock) == (42, 1)
    assert state["user"]["identity"] == "alice" and state["cursor"] == {"x": 1}
    with pytest.raises(PermissionDenied):
        relay.apply(encode_awareness([(42, 2, {})]), peer("s2", "bob"))
    assert relay.full_message() is not None
    gone = relay.remove_peer("s1")
    assert parse_awareness_message(gone) == [(42, 2, None)]
    assert relay.states() == {}


@pytest.mark.parametrize(
    "bad",
    [
        b"\x00\x01\x00",
        b"\x01\x05\x01",
        b"\x01" + bytes([5, 1, 42, 1, 3]) + b"[1]",
    ],
)
def test_awareness_malformed(bad: bytes):
    with pytest.raises(MalformedMessage):
        AwarenessRelay().apply(bad, peer("s1", "alice"))


def test_awareness_state_size_bound():
    big = encode_awareness([(1, 1, {"x": "y" * 20000})])
    with pytest.raises(MessageTooLarge):
        AwarenessRelay().apply(big, peer("s1", "alice"))
    assert json.loads(json.dumps({"ok": True}))


def test_document_size_bound():
    from annotation.errors import DocumentFull

    server = new_doc()
    engine = SyncEngine(server, max_doc_bytes=4000)
    client = new_doc()
    updates = []
    client.observe(lambda e: updates.append(e.update))
    with pytest.raises(DocumentFull):
        for i in range(100):
            mark(client, f"m{i}", text="x" * 100)
            engine.handle(update_message(updates[-1]), can_write=True)
    kept = len(server["annotations"].to_py())
    assert 0 < kept < 100 and len(server.get_update()) <= 4000
