"""A patient whose network drops every UDP packet still gets video, through the managed coturn.

The patient's Chromium runs in a network namespace of its own (a veth pair to this machine,
nftables dropping UDP both ways, counted) and reaches the server over TCP only: HTTP and
Socket.IO, and TURN over TCP (or, with plain TCP to the TURN port dropped too, TURN over TLS)
to `teleconsult serve --turn`'s coturn, which relays to the SFU's UDP candidates. The doctor's
Chromium stays outside, on ordinary UDP. Needs root (ip netns, nft); skips with the reason where
namespaces cannot be made.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.helpers import Tokens, free_port, self_signed_cert, serve_process
from tests.web.conftest import BASE_ARGS, EXECUTABLE, playwright_api
from tests.web.helpers import WAIT_MS, media_result, pass_device_check, wait_video_playing

MEDIA_WAIT_MS = 60_000

NFT_RULES = """
table inet tc_block_udp {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "lo" accept
    meta l4proto udp counter drop
  }
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "lo" accept
    meta l4proto udp counter drop
  }
}
"""

# the selected ICE candidate pair of one of the app's peer connections: local candidate type
# and protocols
SELECTED_PAIR_JS = """
async (which) => {
  const side = window.__tc.media[which];
  if (!side || !side.pc) return null;
  const report = await side.pc.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId);
    }
  });
  const local = pair && byId.get(pair.localCandidateId);
  return local ? {type: local.candidateType, protocol: local.protocol,
                  relayProtocol: local.relayProtocol || null,
                  bytes: (pair.bytesSent || 0) + (pair.bytesReceived || 0)} : null;
}
"""


@dataclass
class BlockedNet:
    """A namespace whose only way out is TCP to the host side of its veth pair."""

    name: str
    host_ip: str
    ns_ip: str

    def drop_tcp_port(self, port: int) -> None:
        """Also drop TCP to `port` on this machine (leaves TURN over TLS as the only way)."""
        rule = ("ip", "netns", "exec", self.name, "nft", "add", "rule", "inet", "tc_block_udp")
        _run(*rule, "out", "tcp", "dport", str(port), "counter", "drop")

    def dropped_udp_packets(self) -> int:
        out = _run("ip", "netns", "exec", self.name, "nft", "list", "table", "inet", "tc_block_udp")
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", out))


def _run(*cmd: str, stdin: str | None = None) -> str:
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture
def blocked_net() -> Iterator[BlockedNet]:
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install iproute2 nftables)")
    if shutil.which("turnserver") is None:
        pytest.skip("coturn not installed (apt-get install coturn)")
    tag = f"{os.getpid() % 10000}{random.randrange(100, 999)}"
    name, host_if, ns_if = f"tcudp{tag}", f"tcu{tag}h", f"tcu{tag}n"
    subnet = random.randrange(1, 250)
    net = BlockedNet(name, f"10.213.{subnet}.1", f"10.213.{subnet}.2")
    try:
        _run("ip", "netns", "add", name)
    except RuntimeError as exc:
        pytest.skip(f"network namespaces unavailable here: {exc}")
    try:
        try:
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        except RuntimeError as exc:
            pytest.skip(f"no veth pairs here (namespace without a link): {exc}")
        _run("ip", "link", "set", ns_if, "netns", name)
        _run("ip", "addr", "add", f"{net.host_ip}/24", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        inside = ("ip", "netns", "exec", name)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{net.ns_ip}/24", "dev", ns_if)
        _run(*inside, "ip", "link", "set", ns_if, "up")
        _run(*inside, "ip", "route", "add", "default", "via", net.host_ip)
        _run(*inside, "nft", "-f", "-", stdin=NFT_RULES)
        yield net
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=30)
    assert name not in _run("ip", "netns", "list"), "namespace left behind"


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def extra_chromium_args(blocked_net: BlockedNet, http_port: int) -> list[str]:
    # camera and microphone need a secure context: this plain-HTTP origin counts as one.
    # Chromium verifies TURN-over-TLS certificates (a self-signed one fails to allocate, as
    # it should); the test's certificate is self-signed, so certificate errors are ignored.
    return [
        f"--unsafely-treat-insecure-origin-as-secure=http://{blocked_net.host_ip}:{http_port}",
        "--ignore-certificate-errors",
    ]


@pytest.fixture
async def ns_browser(
    blocked_net: BlockedNet, extra_chromium_args: list[str], tmp_path: Path
) -> AsyncIterator[Any]:
    """A Chromium started inside the namespace (through `ip netns exec`)."""
    wrapper = tmp_path / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {blocked_net.name} {EXECUTABLE} "$@"\n')
    wrapper.chmod(0o755)
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(wrapper), headless=True, args=BASE_ARGS + extra_chromium_args
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _page(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    await context.grant_permissions(["camera", "microphone"])
    return await context.new_page()


@pytest.mark.parametrize("turn_over", ["tcp", "tls"])
async def test_patient_without_udp_gets_video_through_turn_over_tcp_or_tls(
    turn_over: str,
    blocked_net: BlockedNet,
    http_port: int,
    ns_browser: Any,
    new_page: Any,
    shot: Any,
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    turn_port, tls_port = free_port(), free_port()
    low = random.randrange(50000, 59000, 100)
    config = tmp_path / "teleconsult.toml"
    lines = ["[turn]", f"relay_port_min = {low}", f"relay_port_max = {low + 49}"]
    if turn_over == "tls":
        # TURN over TLS with its own certificate; plain TURN over TCP is blocked too
        cert, key = self_signed_cert(tmp_path, blocked_net.host_ip)
        lines += [f'tls_cert = "{cert}"', f'tls_key = "{key}"']
        blocked_net.drop_tcp_port(turn_port)
    config.write_text("\n".join(lines) + "\n")
    args = ("--host", blocked_net.host_ip, "--config", str(config))
    args += ("--turn", "--turn-port", str(turn_port), "--turn-tls-port", str(tls_port))
    with serve_process(data, *args, port=http_port) as (proc, _port, link):
        assert link, proc.stderr.read() if proc.poll() is not None else "no link printed"
        settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
        tokens = Tokens(signing_secret(settings))
        base = f"http://{blocked_net.host_ip}:{http_port}"
        room = "ward-udp"

        # the patient's device check: the echo came back through the relay, over TCP
        patient = await _page(ns_browser)
        await pass_device_check(
            patient, f"{base}/join?token={tokens(room, 'pat-chen', 'patient', '陈静')}"
        )
        result = await media_result(patient, MEDIA_WAIT_MS)
        print(f"device check through TURN over {turn_over}:", result)  # figures, with -s
        assert result["state"] == "ok", result
        assert (result["transport"], result["relayProtocol"]) == ("relay", turn_over), result
        assert int(result["kbps"]) > 0
        assert "经医院中继服务器" in result["text"], result
        await shot(patient, f"udp-blocked-{turn_over}-device-check")

        # the consultation: the doctor (outside, UDP) admits the patient; video both ways
        doctor = await new_page()
        await pass_device_check(
            doctor, f"{base}/join?token={tokens(room, 'dr-zhou', 'host', 'Dr Zhou')}"
        )
        await doctor.click("#join-btn")
        await expect(doctor.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
        await patient.click("#join-btn")
        entry = doctor.locator(".lobby-entry[data-identity=pat-chen]")
        await entry.locator("[data-action=admit]").click(timeout=WAIT_MS)
        await expect(patient.locator("#screen-call")).to_be_visible(timeout=WAIT_MS)
        await wait_video_playing(doctor, ".tile[data-key='p:pat-chen'] video", MEDIA_WAIT_MS)
        await wait_video_playing(patient, ".tile[data-key='p:dr-zhou'] video", MEDIA_WAIT_MS)
        await shot(patient, f"udp-blocked-{turn_over}-call")

        # both of the patient's connections run over the TURN relay, reached over TCP / TLS
        for which in ("pub", "sub"):
            pair = await patient.evaluate(SELECTED_PAIR_JS, which)
            assert pair is not None and pair["type"] == "relay", (which, pair)
            assert pair["relayProtocol"] == turn_over, (which, pair)
            # (not its `state`: Chromium shows "in-progress" while a consent check is out)
            assert pair["bytes"] > 0, (which, pair)
        # and UDP was really tried and dropped (host candidates, TURN over UDP)
        assert blocked_net.dropped_udp_packets() > 0
