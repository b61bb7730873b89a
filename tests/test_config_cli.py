"""Settings precedence and validation; the CLI token round trip."""

import os
import stat
import subprocess
import sys

import pytest

from kernel.tokens import verify_token
from rtc_server.config import ConfigError, load_settings, prepare_data_dir, signing_secret


def test_precedence_defaults_file_env_flags(tmp_path):
    cfg = tmp_path / "tc.toml"
    cfg.write_text('port = 9001\nhost = "0.0.0.0"\n[limits]\nrate_per_s = 5\n')
    assert load_settings(environ={}).port == 8080
    assert load_settings(cfg, environ={}).port == 9001
    env = {"TELECONSULT_PORT": "9002", "TELECONSULT_LIMITS__RATE_BURST": "7"}
    s = load_settings(cfg, environ=env)
    assert (s.port, s.host, s.limits.rate_per_s, s.limits.rate_burst) == (9002, "0.0.0.0", 5, 7)
    assert load_settings(cfg, {"port": 9003}, environ=env).port == 9003
    assert load_settings(cfg, {"port": None}, environ=env).port == 9002


def test_bad_fields_are_named(tmp_path):
    cfg = tmp_path / "tc.toml"
    cfg.write_text('port = "eighty"\nfavourite_colour = "blue"\n[limits]\nrate_per_s = -1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    text = str(info.value)
    assert "port" in text and "favourite_colour" in text and "limits.rate_per_s" in text


def test_unreadable_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})


def test_secret_generated_once_with_private_mode(tmp_path):
    s1 = prepare_data_dir(load_settings(overrides={"data_dir": tmp_path / "d"}, environ={}))
    s2 = prepare_data_dir(load_settings(overrides={"data_dir": tmp_path / "d"}, environ={}))
    assert signing_secret(s1) == signing_secret(s2)
    mode = stat.S_IMODE(os.stat(tmp_path / "d" / "secret.key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rtc_server.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_token_round_trip(tmp_path):
    data = tmp_path / "d"
    out = run_cli(
        "token",
        "--room",
        "mdt-1",
        "--identity",
        "dr-chen",
        "--role",
        "host",
        "--name",
        "Dr Chen",
        "--ttl",
        "600",
        "--data-dir",
        str(data),
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, "only the JWT is printed on stdout"
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    claims = verify_token(signing_secret(settings), lines[0])
    assert (claims.room, claims.identity, claims.name, claims.role.value) == (
        "mdt-1",
        "dr-chen",
        "Dr Chen",
        "host",
    )
    assert claims.grants.moderate


def test_cli_reports_bad_settings(tmp_path):
    out = run_cli(
        "token",
        "--room",
        "r",
        "--identity",
        "i",
        "--role",
        "host",
        "--data-dir",
        str(tmp_path),
        env={"TELECONSULT_PORT": "nope"},
    )
    assert out.returncode == 2
    assert "port" in out.stderr and "Traceback" not in out.stderr
    out = run_cli(
        "token",
        "--room",
        "bad room",
        "--identity",
        "i",
        "--role",
        "host",
        "--data-dir",
        str(tmp_path),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_cli_score_video_is_a_teleconsult_command():
    import json
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "rehab"
    if not shared.is_dir():
        pytest.skip(f"rehab test data not found at {shared}")
    out = run_cli(
        "score-video",
        str(shared / "videos" / "postop_squat.mp4"),
        "--exercise",
        "squat",
        "--landmarks",
        str(shared / "poses" / "postop_squat.npz"),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["reps"] == 4
