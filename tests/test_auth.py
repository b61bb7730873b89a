"""Connection authentication: only valid join tokens get in; refusals say why."""

import time

import jwt
import pytest

from kernel.tokens import mint_token
from tests.helpers import Client, ConnectRefused


async def refused(live, token) -> ConnectRefused:
    client = Client(live.url, token)
    with pytest.raises(ConnectRefused) as info:
        await client.connect()
    await client.close()
    return info.value


async def test_missing_token_refused(live):
    err = await refused(live, None)
    assert err.code == "token_missing"
    assert "token" in err.data["message"].lower()


async def test_malformed_token_refused(live):
    err = await refused(live, "not-a-jwt")
    assert err.code == "token_malformed"


async def test_expired_token_refused(live):
    token = live.tokens("r", "p1", "patient", ttl_s=60, now=time.time() - 3600)
    err = await refused(live, token)
    assert err.code == "token_expired"
    assert "expired" in err.data["message"]


async def test_forged_token_refused(live):
    token = mint_token(
        "another-server-secret-0123456789abcdef", room="r", identity="p1", role="patient"
    )
    err = await refused(live, token)
    assert err.code == "token_invalid"


async def test_token_with_wrong_algorithm_refused(live):
    claims = jwt.decode(live.tokens("r", "p1", "host"), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    err = await refused(live, unsigned)
    assert err.code in ("token_invalid", "token_malformed")


async def test_token_with_bad_claims_refused(live):
    now = int(time.time())
    claims = {
        "iss": "teleconsult",
        "sub": "p1",
        "room": "bad room name with spaces",
        "name": "x",
        "role": "emperor",
        "grants": {},
        "iat": now,
        "exp": now + 60,
        "jti": "x",
    }
    token = jwt.encode(claims, live.tokens.secret, algorithm="HS256")
    err = await refused(live, token)
    assert err.code == "token_invalid"


async def test_valid_token_connects(connect):
    client = await connect("r", "dr", "host", join=False)
    assert client.sio.connected
