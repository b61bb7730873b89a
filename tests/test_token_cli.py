"""`teleconsult token`: --link prints the join URL, --json the token with its jti and expiry (the
jti revokes it), --ttl has the API's bounds, every flag has help, a bad room is one sentence."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytest

from kernel.tokens import verify_token
from rtc_server.cli import build_parser, main
from rtc_server.config import load_settings, prepare_data_dir, signing_secret


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse refusals
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _base(data: Path) -> list[str]:
    return [
        "token",
        "--room",
        "consult-42",
        "--identity",
        "pat-17",
        "--role",
        "patient",
        "--name",
        "李娜",
        "--data-dir",
        str(data),
    ]


def test_link_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELECONSULT_PUBLIC_URL", "https://consult.hospital.example")
    data = tmp_path / "d"
    code, out, _ = _run(capsys, *_base(data), "--link")
    assert code == 0
    url = out.strip()
    assert url.startswith("https://consult.hospital.example/join?token=")
    secret = signing_secret(
        prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    )
    claims = verify_token(secret, url.split("token=", 1)[1])
    assert (claims.room, claims.identity, claims.name) == ("consult-42", "pat-17", "李娜")

    before = int(time.time())
    code, out, _ = _run(capsys, *_base(data), "--json", "--ttl", "600")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) >= {"token", "jti", "expires_at", "url"}
    assert doc["url"] == f"https://consult.hospital.example/join?token={doc['token']}"
    assert verify_token(secret, doc["token"]).jti == doc["jti"]
    assert before + 600 <= doc["expires_at"] <= int(time.time()) + 600
    # the printed jti is what revoke takes
    code, out, _ = _run(capsys, "revoke", doc["jti"], "--data-dir", str(data))
    assert code == 0 and out.strip() == "revoked"


def test_bounds_and_plain_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d"
    for bad in ("59", "2592001", "ten"):
        code, _out, err = _run(capsys, *_base(data), "--ttl", bad)
        assert code == 2 and "--ttl" in err, err
    assert _run(capsys, *_base(data), "--ttl", "60")[0] == 0
    assert _run(capsys, *_base(data), "--ttl", "2592000")[0] == 0
    code, out, err = _run(
        capsys,
        "token",
        "--room",
        "会诊 室",
        "--identity",
        "pat-17",
        "--role",
        "patient",
        "--data-dir",
        str(data),
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "room name" in err and "pydantic" not in err, err
    code, _out, err = _run(
        capsys,
        "token",
        "--room",
        "ok",
        "--identity",
        "bad id",
        "--role",
        "patient",
        "--data-dir",
        str(data),
    )
    assert code == 2 and err.count("\n") == 1 and "identity" in err
    code, _out, err = _run(capsys, *_base(data), "--link", "--json")
    assert code == 2 and "not allowed with" in err


def test_every_token_flag_has_help() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    token = sub.choices["token"]
    for action in token._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and action.help != argparse.SUPPRESS, action.option_strings
