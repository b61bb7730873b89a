"""`teleconsult serve` starts with embedded defaults, prints a join link, stops cleanly."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from urllib.parse import parse_qs, urlparse

from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from signaling.tokens import verify_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_prints_link_and_stops_on_sigterm(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELECONSULT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--room",
            "ward-7",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        link = None
        for _ in range(20):  # bounded: the announcement is three lines
            line = proc.stdout.readline()
            if not line:
                break
            if "host join link" in line:
                link = line.split(": ", 1)[1].strip()
                break
        assert link, proc.stderr.read() if proc.poll() is not None else "no link printed"
        url = urlparse(link)
        assert url.netloc == f"127.0.0.1:{port}" and url.path == "/join"
        token = parse_qs(url.query)["token"][0]
        settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
        claims = verify_token(signing_secret(settings), token)
        assert claims.room == "ward-7" and claims.role.value == "host"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        assert (data / "teleconsult.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
