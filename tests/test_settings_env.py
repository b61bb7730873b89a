"""Settings from the environment through pydantic-settings: every field, lists and nested
tables included (JSON), comma lists as before, unrelated TELECONSULT_* variables ignored, the
former constants (rehab sessions, guide timers, upload limits) reaching the running server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from annotation.service import ANNOTATION
from rehab_vision.service import REHAB
from rtc_server.config import ConfigError, load_settings
from tests.annotation.conftest import CT_BYTES, upload


def test_lists_and_nested_tables_from_the_environment() -> None:
    env = {
        "TELECONSULT_MEDIA__BIND_ADDRESSES": '["10.0.0.1"]',
        "TELECONSULT_MEDIA__ICE_SERVERS": '[{"urls": ["turn:turn.hospital.example:3478"]}]',
        "TELECONSULT_LIMITS": '{"max_rooms": 7}',
        "TELECONSULT_LIMITS__RATE_PER_S": "5",
        "TELECONSULT_WEBHOOKS__URLS": '["https://his.hospital.example/hook"]',
        "TELECONSULT_REHAB__GUIDE__COUNTDOWN_S": "2",
        "TELECONSULT_UPLOADS__MAX_FILE_BYTES": "1048576",
        "TELECONSULT_FRAME_ANCESTORS": '["https://portal.hospital.example"]',
        "TELECONSULT_CORS_ORIGINS": "https://a.example, https://b.example",
        "TELECONSULT_TRUSTED_PROXIES": '["127.0.0.1", "10.0.0.2"]',
    }
    s = load_settings(environ=env)
    assert s.media.bind_addresses == ["10.0.0.1"]
    assert s.media.ice_servers[0].urls == ["turn:turn.hospital.example:3478"]
    assert (s.limits.max_rooms, s.limits.rate_per_s) == (7, 5)
    assert s.webhooks.urls == ["https://his.hospital.example/hook"]
    assert s.rehab.guide.countdown_s == 2 and s.rehab.max_sessions == 2
    assert s.uploads.max_file_bytes == 1048576
    assert s.frame_ancestors == ["https://portal.hospital.example"]
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.trusted_proxies == ["127.0.0.1", "10.0.0.2"]


def test_environment_beats_the_file_inside_a_table(tmp_path: Path) -> None:
    cfg = tmp_path / "tc.toml"
    cfg.write_text(
        '[media]\nbind_addresses = ["10.0.0.9"]\nudp_port_min = 40000\nudp_port_max = 40099\n'
    )
    s = load_settings(cfg, environ={"TELECONSULT_MEDIA__BIND_ADDRESSES": '["10.0.0.1"]'})
    assert s.media.bind_addresses == ["10.0.0.1"]
    assert (s.media.udp_port_min, s.media.udp_port_max) == (40000, 40099)


def test_unrelated_variables_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "rtc_server.config"):
        s = load_settings(environ={"TELECONSULT_HOME": "/opt/x", "TELECONSULT_PORT": "9000"})
    assert s.port == 9000
    assert "TELECONSULT_HOME" in caplog.text


def test_misspelt_or_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match=r"limits\.rate"):
        load_settings(environ={"TELECONSULT_LIMITS__RATE": "1"})
    with pytest.raises(ConfigError, match=r"media\.bind_addresses"):
        load_settings(environ={"TELECONSULT_MEDIA__BIND_ADDRESSES": '{"a": 1}'})
    with pytest.raises(ConfigError, match=r"rehab\.max_sessions"):
        load_settings(environ={"TELECONSULT_REHAB__MAX_SESSIONS": "0"})


def test_cli_starts_despite_an_unrelated_variable(tmp_path: Path) -> None:
    env = {**os.environ, "TELECONSULT_DEPLOY_COLOUR": "blue", "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtc_server.cli",
            "token",
            "--room",
            "r1",
            "--identity",
            "me",
            "--role",
            "host",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert "TELECONSULT_DEPLOY_COLOUR" in out.stderr  # named in a warning, not fatal


async def test_former_constants_reach_the_server(start_server: Any) -> None:
    live = await start_server(
        rehab={"max_sessions": 1, "guide": {"countdown_s": 0.5, "max_runs": 3}},
        uploads={"max_file_bytes": 4096},
    )
    rehab = live.app[REHAB]
    assert rehab.max_sessions == 1
    assert (rehab.guide_settings.countdown_s, rehab.guide_settings.max_runs) == (0.5, 3)
    assert live.app[ANNOTATION].limits.max_file_bytes == 4096
    status, body = await upload(live, "mdt", "dr-host", "host", CT_BYTES, "ct.dcm")
    assert status == 413, body


def test_webhook_key_is_generated_once_with_private_mode(tmp_path: Path) -> None:
    from rtc_server.config import prepare_data_dir

    data = tmp_path / "d"
    first = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    again = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    assert first.webhook_key is not None and again.webhook_key is not None
    assert first.webhook_key.get_secret_value() == again.webhook_key.get_secret_value()
    assert oct(os.stat(data / "webhook.key").st_mode & 0o777) == "0o600"
    given = load_settings(
        overrides={"data_dir": tmp_path / "e"},
        environ={"TELECONSULT_WEBHOOK_KEY": "shared-by-all-nodes"},
    )
    assert prepare_data_dir(given).webhook_key.get_secret_value() == "shared-by-all-nodes"
    assert not (tmp_path / "e" / "webhook.key").exists()


def test_worker_url_template_names_each_worker() -> None:
    from rtc_server.workers import worker_settings

    base = load_settings(
        environ={
            "TELECONSULT_WORKERS": "2",
            "TELECONSULT_PUBLIC_URL": "https://consult.example",
            "TELECONSULT_WORKER_URL_TEMPLATE": "https://w{index}.consult.example",
        }
    )
    w1 = worker_settings(base, 1)
    assert (w1.public_url, w1.port, w1.node_id) == ("https://w1.consult.example", 8081, "main-w1")
    assert base.base_url == "https://consult.example"  # join links: the entry name
    for bad in ("w{index}.consult.example", "https://consult.example", "https://w{index}.{x}"):
        with pytest.raises(ConfigError, match="worker_url_template"):
            load_settings(environ={"TELECONSULT_WORKER_URL_TEMPLATE": bad})


def test_each_worker_gets_its_own_metrics_port() -> None:
    """With a metrics listener of its own, worker N binds metrics_port + N (all on one port,
    every worker after the first failed to start its listener)."""
    from rtc_server.workers import worker_settings

    base = load_settings(environ={"TELECONSULT_WORKERS": "3", "TELECONSULT_METRICS_PORT": "9400"})
    assert [worker_settings(base, i).metrics_port for i in range(3)] == [9400, 9401, 9402]
    plain = load_settings(environ={"TELECONSULT_WORKERS": "2"})
    assert worker_settings(plain, 1).metrics_port is None
