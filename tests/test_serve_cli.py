"""`teleconsult serve` starts with embedded defaults, prints a join link, stops cleanly."""

import json
import urllib.request
from urllib.parse import parse_qs, urlparse

from kernel.tokens import verify_token
from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.helpers import serve_process


def test_serve_prints_link_and_stops_on_sigterm(tmp_path):
    data = tmp_path / "data"
    with serve_process(data, "--room", "ward-7") as (proc, port, link):
        assert link, proc.stderr.read() if proc.poll() is not None else "no link printed"
        url = urlparse(link)
        assert url.netloc == f"127.0.0.1:{port}" and url.path == "/join"
        token = parse_qs(url.query)["token"][0]
        settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
        claims = verify_token(signing_secret(settings), token)
        assert claims.room == "ward-7" and claims.role.value == "host"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
        # start-up objects are frozen out of garbage collection (rtc_server.heap)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = dict(
                line.split(" ", 1)
                for line in resp.read().decode().splitlines()
                if line and not line.startswith("#")
            )
        assert float(metrics["teleconsult_gc_frozen_objects"]) > 10_000
        assert (data / "teleconsult.db").exists()
    assert proc.returncode == 0
