"""Transport-cc feedback: hand-built packets, the draft's chunk examples, round trips."""

from __future__ import annotations

import struct

import pytest

from media.twcc import (
    FeedbackError,
    TwccRecorder,
    _chunks,
    build_feedback,
    parse_feedback,
)


def test_draft_chunk_examples() -> None:
    # run-length: 221 packets received with small deltas -> 0 | 01 | 0000011011101
    assert _chunks([1] * 221) == [0b0010000011011101]
    # one-bit vector (draft's example): 0 0 1 1 1 1 1 0 0 0 1 1 1 0 -> 1 | 0 | those bits
    symbols = [0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
    assert _chunks([*symbols, 1]) == [0b1000111110001110, 0b0010000000000001]
    # two-bit vector: a large delta forces 2-bit symbols (7 per chunk)
    assert _chunks([1, 2, 0, 1, 1, 0, 1, 1]) == [0b1101100001010001, 0b0010000000000001]


def test_hand_built_packet() -> None:
    # seq 100 arrives 1 ms after the reference time (1 x 64 ms), seq 101 is lost, seq 102
    # 0.5 ms later, seq 103 0.25 ms after that
    arrivals = [256 + 4, None, 256 + 6, 256 + 7]
    data = build_feedback(0x11111111, 0x22222222, 100, 7, arrivals)
    chunk = 0b1000000000000000 | (1 << 13) | (0 << 12) | (1 << 11) | (1 << 10)  # 1 0 1 1
    body = struct.pack("!LLHHL", 0x11111111, 0x22222222, 100, 4, (1 << 8) | 7)
    body += struct.pack("!H", chunk) + bytes([4, 2, 1])
    body += b"\x00\x00\x03"  # 3 bytes of padding, the last = 3 (P bit set)
    header = struct.pack("!BBH", 0x80 | 0x20 | 15, 205, len(body) // 4)
    assert data == header + body
    fb = parse_feedback(data)
    assert (fb.base_seq, fb.fb_count, fb.media_ssrc) == (100, 7, 0x22222222)
    assert fb.arrivals == [(100, 260 * 250), (101, None), (102, 262 * 250), (103, 263 * 250)]


def test_negative_and_large_deltas_round_trip() -> None:
    arrivals = [1000, 1300, 1200, None, None, 9000, 9001]  # +300 and -100 are large deltas
    fb = parse_feedback(build_feedback(1, 2, 65534, 0, arrivals))
    assert [s for s, _ in fb.arrivals] == [65534, 65535, 0, 1, 2, 3, 4]
    assert [t // 250 if t is not None else None for _, t in fb.arrivals] == arrivals


def test_recorder_wraps_reports_gaps_and_drops_late() -> None:
    rec = TwccRecorder()
    for i, seq in enumerate([65533, 65534, 1, 2]):  # 65535 and 0 lost
        rec.record(seq, 1_000_000 + i * 5_000)
    [pkt] = rec.feedback(9, 10)
    fb = parse_feedback(pkt)
    assert fb.base_seq == 65533
    assert [t is not None for _, t in fb.arrivals] == [True, True, False, False, True, True]
    rec.record(0, 1_100_000)  # arrives after it was reported lost: late, not re-reported
    assert rec.late == 1 and rec.feedback(9, 10) == []
    rec.record(3, 1_200_000)
    [pkt] = rec.feedback(9, 10)
    fb = parse_feedback(pkt)
    assert (fb.base_seq, fb.fb_count, len(fb.arrivals)) == (3, 1, 1)


def test_recorder_splits_long_gaps_in_time() -> None:
    rec = TwccRecorder()
    rec.record(10, 0)
    rec.record(11, 10_000_000)  # 10 s later: beyond a 16-bit delta of 250 us ticks
    packets = rec.feedback(1, 2)
    assert len(packets) == 2
    assert [parse_feedback(p).base_seq for p in packets] == [10, 11]


def test_recorder_many_packets_fit_datagrams() -> None:
    rec = TwccRecorder()
    for seq in range(5000):
        if seq % 3:
            rec.record(seq, seq * 1_000)
    packets = rec.feedback(1, 2)
    assert all(len(p) <= 1400 for p in packets)
    seen = [a for p in packets for a in parse_feedback(p).arrivals]
    received = [s for s, t in seen if t is not None]
    assert received == [s for s in range(5000) if s % 3]


def test_parse_rejects_garbage() -> None:
    with pytest.raises(FeedbackError):
        parse_feedback(b"\x80\xcd\x00\x01" + bytes(4))
    good = build_feedback(1, 2, 0, 0, [5, 6, 7])
    with pytest.raises(FeedbackError):
        parse_feedback(good[:-4] + bytes(0))


def test_without_feedback_the_recorder_keeps_the_newest_and_sorts_rarely(monkeypatch) -> None:
    """No feedback asked for (no RTCP sender yet): the recorder stays bounded, trims in halves
    (one sort per window/2 packets, not one per packet) and then reports the newest."""
    import builtins

    from media import twcc

    sorts = 0
    real_sorted = builtins.sorted

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal sorts
        sorts += 1
        return real_sorted(*args, **kwargs)

    monkeypatch.setattr(twcc, "sorted", counted, raising=False)
    rec = twcc.TwccRecorder(window=1000)
    for i in range(10_000):
        rec.record(i % 65536, 1_000_000 + i * 1000)
        assert rec.pending <= 1000
    assert sorts <= 10_000 // 500 + 1, sorts
    (packet,) = rec.feedback(1, 2)
    fb = twcc.parse_feedback(packet)
    assert fb.arrivals[-1][0] == 9_999 and fb.arrivals[0][0] >= 10_000 - 1000
    assert all(t is not None for _, t in fb.arrivals)
