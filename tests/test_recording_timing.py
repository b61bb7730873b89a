"""Recording timestamps: ffprobe reads a file as long as the wall clock, and audio and video
of one participant stay in step (a flash and a beep sent together land together)."""

from __future__ import annotations

import asyncio
import fractions
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from recording.clock import RecordingTimeline
from recording.service import RECORDING
from tests.helpers import wait_until
from tests.media.test_signaling_integration import media_peer
from tests.validators import ffprobe, probe_span

PERIOD_S = 1.0  # one flash + beep per second
FLASH_S = 0.2


class FlashTrack(MediaStreamTrack):
    """Dark video with a white flash at each whole second after ``t0``; RTP follows capture."""

    kind = "video"

    def __init__(self, t0: float, fps: int = 30) -> None:
        super().__init__()
        self.t0, self.fps, self.count = t0, fps, 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self.t0 + self.count / self.fps - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.monotonic() - self.t0  # capture time, as a browser stamps it
        self.count = max(self.count + 1, int(now * self.fps) + 1)
        bright = (now % PERIOD_S) < FLASH_S
        frame = av.VideoFrame.from_ndarray(
            np.full((240 * 3 // 2, 320), 128, np.uint8), format="yuv420p"
        )
        frame.planes[0].update(bytes([235 if bright else 16]) * (320 * 240))
        frame.pts = int(now * 90000)
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


class BeepTrack(MediaStreamTrack):
    """Silence with a 1 kHz beep at each whole second after ``t0`` (20 ms frames, 48 kHz)."""

    kind = "audio"

    def __init__(self, t0: float) -> None:
        super().__init__()
        self.t0, self.count = t0, 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        delay = self.t0 + self.count * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        start = self.count * 960
        t = (np.arange(960) + start) / 48000
        loud = (t % PERIOD_S) < FLASH_S
        pcm = (loud * 0.5 * 32767 * np.sin(2 * math.pi * 1000 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = start
        frame.time_base = fractions.Fraction(1, 48000)
        self.count += 1
        return frame


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def onsets(times: list[float], on: list[bool]) -> list[float]:
    """Times where the signal turns on."""
    return [t for i, t in enumerate(times) if on[i] and (i == 0 or not on[i - 1])]


def video_onsets(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        frames = [(float(f.time), float(f.to_ndarray()[:240].mean())) for f in c.decode(video=0)]
    return onsets([t for t, _ in frames], [y > 128 for _, y in frames])


def audio_onsets(path: Path) -> list[float]:
    times, on = [], []
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            pcm = f.to_ndarray().astype(np.float64).reshape(-1)
            # 5 ms windows: the beep starts on a 20 ms frame boundary at the sender
            step = f.sample_rate // 200
            for k in range(0, pcm.size - step + 1, step):
                times.append(float(f.time) + k / f.sample_rate / max(1, len(f.layout.channels)))
                on.append(float(np.sqrt(np.mean(pcm[k : k + step] ** 2))) > 0.05)
    return onsets(times, on)


def paired(a: list[float], b: list[float]) -> list[float]:
    """b - a for each onset of a that has one in b within half a period."""
    out = []
    for t in a:
        near = [u for u in b if abs(u - t) < PERIOD_S / 2]
        if near:
            out.append(near[0] - t)
    return out


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) not installed")
async def test_recording_duration_and_av_sync_follow_the_wall_clock(
    live: Any, connect: Any
) -> None:
    host_sio, host = await media_peer(connect, "sync", "dr", "host", decode=False)
    t0 = time.monotonic() + 0.5
    try:
        await host.publish({"camera": FlashTrack(t0), "microphone": BeepTrack(t0)})
        service = live.app[RECORDING]
        await wait_until(lambda: len(service.media.rooms["sync"].publications) == 2, 30)
        ack = await host_sio.call("record:start", {"reason": "同步测试"})
        assert ack["ok"], ack
        rec = service.active["sync"]

        def frames(source: str) -> int:
            entry = rec.sinks.get(("dr", source))
            return entry[0].frames if entry else 0

        # five seconds of media, counted in frames (the event), bounded by 60 s
        await wait_until(lambda: frames("camera") >= 150 and frames("microphone") >= 250, 60)
        stop_sent = time.monotonic()
        ack = await host_sio.call("record:stop", {})
        stopped = time.monotonic()
        assert ack["ok"], ack
    finally:
        await host.close()

    root = live.settings.data_dir / "recordings"
    files = {f["source"]: f for f in ack["files"]}
    probes = {s: ffprobe(root / f["path"]) for s, f in files.items()}
    report: dict[str, Any] = {"loadavg": loadavg()}
    for source, f in files.items():
        fmt = probes[source]["format"]
        packets = probes[source]["packets"]
        start = float(fmt["start_time"])
        span = probe_span(probes[source])
        first_pts = float(packets[0]["pts_time"])
        last_end = float(packets[-1]["pts_time"]) + float(packets[-1]["duration_time"])
        # the file's own clock: what the sink reported, what the container says, the packets
        assert abs(first_pts - f["start_s"]) < 0.002 and abs(start - f["start_s"]) < 0.002
        # (the last packet's duration is the demuxer's guess: up to one frame apart)
        assert abs((last_end - first_pts) - f["duration_s"]) < 0.05
        assert abs(span - f["duration_s"]) < 0.05, (source, span, f["duration_s"])
        # against the wall clock: the file covers first frame .. stop (the bug made it 90x)
        # the wall clock from the file's first frame to the stop request (and to its answer)
        wall = stop_sent - (rec.clock_origin + start)
        wall_max = stopped - (rec.clock_origin + start)
        error = (span - wall) / wall
        report[source] = {
            "ffprobe_s": round(span, 3),
            "wall_s": round(wall, 3),
            "error_pct": round(100 * error, 2),
            "start_s": start,
        }
        # a publisher starved by a loaded machine may end its last frames early: 20 % slack
        # below; above, never longer than the wall clock allows (the bug made it 48-90x)
        assert 0.8 * wall < span <= wall_max + 0.1, report
        assert probes[source]["format"]["tags"].get("creation_time", "").startswith("20")

    cam, mic = root / files["camera"]["path"], root / files["microphone"]["path"]
    flashes, beeps = video_onsets(cam), audio_onsets(mic)
    assert len(flashes) >= 3 and len(beeps) >= 3, (flashes, beeps)
    # the media clock runs at wall-clock speed: one flash per second of file time
    # (a fit over the onsets: one late frame on a loaded machine moves one onset, not the slope)
    k = np.round(np.array(flashes) - flashes[0]) / PERIOD_S
    slope = float(np.polyfit(k, flashes, 1)[0])
    report["flash_period_s"] = round(slope, 4)
    assert abs(slope - PERIOD_S) < 0.03, report
    # lip sync: each flash and its beep land together (ITU-R BT.1359 detectability +45/-125 ms)
    skew = paired(flashes, beeps)
    assert len(skew) >= 3, (flashes, beeps)
    report["av_skew_ms"] = [round(1000 * s) for s in skew]
    assert abs(float(np.median(skew))) < 0.1, report
    # and both sit where the wall clock put them: flash k at t0 + k on the recording's clock
    capture = [t0 + k * PERIOD_S - rec.clock_origin for k in range(20)]
    latency = paired(capture, flashes)
    report["capture_to_file_ms"] = [round(1000 * s) for s in latency]
    assert len(latency) >= 3 and -0.05 < float(np.median(latency)) < 0.3, report
    print(json.dumps(report))  # the figures: pytest -s shows them


def test_timeline_maps_rtp_clock_to_milliseconds_across_wrap_and_pauses() -> None:
    tl = RecordingTimeline(90000, origin=100.0)
    start = (1 << 32) - 90000  # one second before the 32-bit wrap
    assert tl.map(start, 102.0) == 2000  # the start offset: arrival after the origin
    assert tl.map((start + 45000) & 0xFFFFFFFF, 102.5) == 2500
    assert tl.map((start + 180000) & 0xFFFFFFFF, 103.0) == 4000  # across the wrap; jitter kept
    assert tl.map((start + 90000) & 0xFFFFFFFF, 103.1) is None  # a late frame never goes back
    # a pause the RTP clock saw (browser): the gap stays what it was
    assert tl.map((start + 90000 * 4) & 0xFFFFFFFF, 104.5) == 6000
    assert tl.resyncs == 0
    # a pause the RTP clock did not see (timestamps stood still for 10 s): back on the wall clock
    assert tl.map((start + 90000 * 4 + 3000) & 0xFFFFFFFF, 114.0) == 14000
    assert tl.resyncs == 1
    # a publisher restarting its RTP clock: re-anchored, still increasing
    assert tl.map(12345, 114.5) == 14500
    assert tl.resyncs == 2


def test_timeline_primes_on_the_least_delayed_frame() -> None:
    tl = RecordingTimeline(48000, origin=0.0)
    # the first packet was held up 75 ms; the third shows the real path delay
    tl.prime([(1000, 1.080), (1960, 1.030), (2920, 1.045)])
    assert tl.map(1000, 1.080) == 1005
    assert tl.map(1960, 1.030) == 1025


class FakePublication:
    """Just enough of a Publication for a sink fed by hand."""

    publisher, source, kind, mime, closed = "p", "microphone", "audio", "audio/opus", False

    def attach(self, sub: Any) -> None: ...
    def detach(self, sub: Any) -> None: ...
    def request_keyframe(self, reason: str) -> None: ...


class Frame:
    def __init__(self, data: bytes, timestamp: int, arrival: float) -> None:
        self.data, self.timestamp, self.arrival, self.keyframe = data, timestamp, arrival, True


def opus_packets(n: int) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format = 48000, "mono", "s16"
    out: list[bytes] = []
    for i in range(n):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 960), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, i * 960
        frame.time_base = fractions.Fraction(1, 48000)
        out += [bytes(p) for p in codec.encode(frame)]
    return out


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) not installed")
async def test_sink_file_keeps_wall_time_across_wrap_and_pauses(tmp_path: Path) -> None:
    """Raw 32-bit RTP timestamps wrapping mid-file, a 3 s pause the RTP clock saw, and a 5 s
    pause it did not see (timestamps stood still): ffprobe reads 1 s start, 10 s of media."""
    from recording.sink import EncodedFileSink

    packets = opus_packets(200)
    origin = 1000.0
    sink = EncodedFileSink(FakePublication(), tmp_path / "mic", origin=origin)  # type: ignore[arg-type]
    rtp = (1 << 32) - 48000  # wraps one second in
    t = origin + 1.0  # the first packet comes 1 s after the recording started
    plan = [(0, 50), (3.0, 50), (5.0, 50)]  # (pause before, packets): 1 s + 3 s + 1 s + 5 s + 1 s
    i = 0
    for pause, count in plan:
        if pause:
            t += pause
            if pause == 3.0:
                rtp = (rtp + 48000 * 3) & 0xFFFFFFFF  # a pause the RTP clock saw
        for _ in range(count):
            sink.push(Frame(packets[i], rtp, t))  # type: ignore[arg-type]
            i += 1
            rtp = (rtp + 960) & 0xFFFFFFFF
            t += 0.02
    result = await sink.close()
    probe = ffprobe(result.path)
    pts = [float(p["pts_time"]) for p in probe["packets"]]
    assert len(pts) == 150 and result.frames == 150
    assert float(probe["format"]["start_time"]) == pytest.approx(1.0, abs=0.002)
    # 1 s of sound, 3 s pause, 1 s, 5 s pause, 1 s: the last packet starts 10.98 s after the first
    assert pts[-1] - pts[0] == pytest.approx(10.98, abs=0.002)
    assert pts[100] - pts[99] == pytest.approx(5.02, abs=0.002)
    assert probe_span(probe) == pytest.approx(11.0, abs=0.03)
    assert sink.timeline.resyncs == 1  # only the pause the RTP clock did not see
