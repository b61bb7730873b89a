"""The hospital's identifier (MRN, staff number) rides in the join token: API, CLI, claims."""

from __future__ import annotations

from typing import Any

import aiohttp

from kernel.tokens import verify_token
from rtc_server.config import load_settings, prepare_data_dir, signing_secret
from tests.test_config_cli import run_cli

SYSTEM = "urn:oid:1.2.156.112604.1.1"


async def mint(live: Any, **extra: Any) -> tuple[int, dict[str, Any]]:
    key = live.settings.admin_api_key.get_secret_value()
    body = {"room": "ward-3", "identity": "pat-17", "role": "patient", "name": "王芳", **extra}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/tokens", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_token_api_carries_the_mrn(live: Any) -> None:
    status, minted = await mint(live, mrn="0012345", mrn_system=SYSTEM)
    assert status == 201, minted
    claims = verify_token(live.tokens.secret, minted["token"])
    assert (claims.mrn, claims.mrn_system, claims.name) == ("0012345", SYSTEM, "王芳")
    # without a system, the server's own
    status, minted = await mint(live, mrn="A 77")
    claims = verify_token(live.tokens.secret, minted["token"])
    assert (claims.mrn, claims.mrn_system) == ("A 77", "urn:teleconsult:mrn")
    # no claim at all when none is given
    status, minted = await mint(live)
    assert verify_token(live.tokens.secret, minted["token"]).mrn is None
    # bad input: a clear 400 each
    for bad in (
        {"mrn": "x\n"},
        {"mrn": " "},
        {"mrn": "1", "mrn_system": "not a uri"},
        {"mrn_system": SYSTEM},
        {"mrn": "9" * 65},
    ):
        status, body = await mint(live, **bad)
        assert status == 400 and body["error"]["code"] == "invalid_payload", (bad, body)


def test_cli_token_carries_the_mrn(tmp_path: Any) -> None:
    data = tmp_path / "d"
    args = ["token", "--room", "r", "--identity", "p", "--role", "patient", "--data-dir", str(data)]
    out = run_cli(*args, "--mrn", "0012345", "--mrn-system", SYSTEM)
    assert out.returncode == 0, out.stderr
    settings = prepare_data_dir(load_settings(overrides={"data_dir": data}, environ={}))
    claims = verify_token(signing_secret(settings), out.stdout.strip())
    assert (claims.mrn, claims.mrn_system) == ("0012345", SYSTEM)
    out = run_cli(*args, "--mrn", "1", "--mrn-system", "nope")
    assert out.returncode == 2 and "Traceback" not in out.stderr
