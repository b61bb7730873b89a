"""KeyframeGatedQueue: the bounded queue of every frame consumer (subscription, tap, recording)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from media.sink import KeyframeGatedQueue, Overflow


@dataclass(frozen=True)
class Frame:
    n: int
    keyframe: bool = False


K = True


def make(
    capacity: int, overflow: Overflow, gated: bool = True
) -> tuple[KeyframeGatedQueue[Frame], list[str]]:
    events: list[str] = []
    q: KeyframeGatedQueue[Frame] = KeyframeGatedQueue(
        capacity,
        gated=gated,
        overflow=overflow,
        on_ready=lambda: events.append("ready"),
        on_keyframe_needed=lambda: events.append("keyframe?"),
    )
    return q, events


def drain(q: KeyframeGatedQueue[Frame]) -> list[int]:
    return [f.n for f in q.take_all()]


def test_gated_queue_starts_at_a_keyframe() -> None:
    q, events = make(8, "flush")
    assert [q.offer(Frame(1)), q.offer(Frame(2)), q.offer(Frame(3, K)), q.offer(Frame(4))] == [
        False,
        False,
        True,
        True,
    ]
    assert drain(q) == [3, 4]
    assert q.dropped == 2
    assert events == ["ready", "ready"]  # gating alone asks for nothing


def test_ungated_queue_takes_any_frame() -> None:
    q, _ = make(8, "drop_oldest", gated=False)
    q.offer(Frame(1))
    q.skip_to_keyframe()  # no gate to close on an audio queue
    q.offer(Frame(2))
    assert drain(q) == [1, 2]
    assert q.dropped == 0


def test_flush_on_overflow_drops_the_backlog_and_waits_for_the_next_keyframe() -> None:
    q, events = make(3, "flush")
    for f in (Frame(1, K), Frame(2), Frame(3)):
        q.offer(f)
    events.clear()
    assert not q.offer(Frame(4))  # full: 1-3 stale, 4 undecodable without them
    assert len(q) == 0 and q.dropped == 4
    assert events == ["keyframe?"]
    assert not q.offer(Frame(5))  # still waiting; asked once only
    assert q.offer(Frame(6, K))
    assert q.offer(Frame(7))
    assert drain(q) == [6, 7]
    assert q.dropped == 5
    assert events == ["keyframe?", "ready", "ready"]


def test_flush_keeps_a_keyframe_that_arrives_on_a_full_queue() -> None:
    q, events = make(2, "flush")
    q.offer(Frame(1, K))
    q.offer(Frame(2))
    assert q.offer(Frame(3, K))
    assert drain(q) == [3]
    assert q.dropped == 2
    assert "keyframe?" not in events


def test_drop_oldest_keeps_the_newest_frames() -> None:
    q, events = make(3, "drop_oldest", gated=False)
    for n in range(1, 6):
        assert q.offer(Frame(n))
    assert len(q) == q.capacity == 3
    assert drain(q) == [3, 4, 5]
    assert q.dropped == 2
    assert "keyframe?" not in events


def test_drop_newest_keeps_the_backlog_and_resumes_at_a_keyframe() -> None:
    q, events = make(2, "drop_newest")
    q.offer(Frame(1, K))
    q.offer(Frame(2))
    events.clear()
    assert not q.offer(Frame(3))
    assert events == ["keyframe?"]
    assert q.popleft() == Frame(1, K)  # the writer catches up
    assert not q.offer(Frame(4))  # room again, but 4 needs 3
    assert q.offer(Frame(5, K))
    assert drain(q) == [2, 5]
    assert q.dropped == 2


def test_drop_newest_ungated_drops_only_what_does_not_fit() -> None:
    q, events = make(1, "drop_newest", gated=False)
    assert q.offer(Frame(1))
    assert not q.offer(Frame(2))
    assert q.popleft() == Frame(1)
    assert q.offer(Frame(3))
    assert q.dropped == 1
    assert "keyframe?" not in events


def test_skip_to_keyframe_closes_the_gate_without_asking() -> None:
    q, events = make(8, "flush")
    q.offer(Frame(1, K))
    q.skip_to_keyframe()
    assert q.need_keyframe
    assert not q.offer(Frame(2))
    assert q.offer(Frame(3, K))
    assert drain(q) == [1, 3]
    assert "keyframe?" not in events


def test_popleft_and_clear() -> None:
    q, _ = make(4, "flush")
    assert q.popleft() is None
    q.offer(Frame(1, K))
    q.offer(Frame(2))
    assert q and len(q) == 2
    q.clear()
    assert not q and q.popleft() is None
    assert q.dropped == 0  # clearing (pause, layer switch) is not a drop


def test_capacity_must_hold_a_frame() -> None:
    with pytest.raises(ValueError):
        KeyframeGatedQueue(0, gated=True, overflow="flush")
