"""Hardening: security headers, TLS, CORS allowlist, secrets kept out of logs."""

import logging
import ssl
import urllib.request

import aiohttp
import pytest
import socketio

from tests.helpers import Client, ConnectRefused, self_signed_cert, serve_process


@pytest.mark.parametrize("path", ["/", "/join?token=x", "/healthz", "/no-such-page"])
async def test_security_headers_on_every_response(live, path):
    async with aiohttp.ClientSession() as http, http.get(live.url + path) as resp:
        headers = resp.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert csp["script-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert "camera=(self)" in headers["Permissions-Policy"]
    if path.startswith(("/join", "/?")) or path == "/":
        assert headers["Cache-Control"] == "no-store"


async def test_admin_error_responses_carry_headers(live):
    async with aiohttp.ClientSession() as http, http.post(f"{live.url}/api/tokens") as resp:
        assert resp.status == 401
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_cross_origin_socket_refused_unless_listed(start_server):
    live = await start_server(cors_origins="https://portal.hospital.local")
    token = live.tokens("r", "dr", "host")
    evil = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await evil.connect(
            live.url,
            auth={"token": token},
            transports=["websocket"],
            headers={"Origin": "https://evil.example"},
            wait_timeout=5,
        )
    ok = socketio.AsyncClient(reconnection=False)
    await ok.connect(
        live.url,
        auth={"token": token},
        transports=["websocket"],
        headers={"Origin": "https://portal.hospital.local"},
        wait_timeout=5,
    )
    await ok.disconnect()


async def test_secrets_and_tokens_never_logged(live, caplog):
    caplog.set_level(logging.DEBUG)
    secret = live.settings.secret_key.get_secret_value()
    admin = live.settings.admin_api_key.get_secret_value()
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {admin}"}
        body = {"room": "r", "identity": "dr", "role": "host"}
        async with http.post(f"{live.url}/api/tokens", json=body, headers=headers) as resp:
            minted = await resp.json()
        async with http.post(
            f"{live.url}/api/tokens", json=body, headers={"Authorization": "Bearer guess"}
        ) as resp:
            assert resp.status == 401
    client = Client(live.url, minted["token"])
    await client.connect()
    await client.call("join", {})
    await client.call("chat:send", {"text": "hello"})
    await client.call("chat:send", {"text": 5})
    await client.close()
    bad = Client(live.url, minted["token"][:-3] + "abc")
    with pytest.raises(ConnectRefused):
        await bad.connect()
    text = caplog.text
    assert text, "expected some log output to check"
    for needle in (secret, admin, minted["token"], minted["token"].split(".")[2]):
        assert needle not in text


def test_serve_over_tls(tmp_path):
    cert, key = self_signed_cert(tmp_path, "localhost")
    args = ("--tls-cert", str(cert), "--tls-key", str(key), "--host", "localhost")
    with serve_process(tmp_path / "d", *args) as (proc, port, link):
        assert f"https://localhost:{port}/join?token=" in link, proc.stderr.read()
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(
            f"https://localhost:{port}/healthz", context=context, timeout=10
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://localhost:{port}/healthz", timeout=5)
    assert proc.returncode == 0


def test_tls_settings_must_pair(tmp_path):
    from rtc_server.config import ConfigError, load_settings

    cert, _key = self_signed_cert(tmp_path, "localhost")
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        load_settings(overrides={"tls_cert": cert}, environ={})


async def test_forwarded_address_counts_only_from_trusted_proxies(start_server):
    async def attempt(live, forwarded):
        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(
                live.url,
                auth={"token": live.tokens("r", f"c{id(client)}", "clinician")},
                transports=["websocket"],
                headers={"X-Forwarded-For": forwarded},
                wait_timeout=5,
            )
        except socketio.exceptions.ConnectionError:
            return None
        return client

    trusted = await start_server(trusted_proxies="127.0.0.1", limits={"max_connections_per_ip": 1})
    a = await attempt(trusted, "10.1.1.1")
    b = await attempt(trusted, "10.2.2.2")  # another client behind the same proxy
    c = await attempt(trusted, "10.1.1.1")  # the first client's second connection
    assert a is not None and b is not None and c is None
    for client in (a, b):
        await client.disconnect()


async def test_forwarded_header_ignored_from_untrusted_peers(start_server):
    live = await start_server(limits={"max_connections_per_ip": 1})
    first = socketio.AsyncClient(reconnection=False)
    await first.connect(
        live.url,
        auth={"token": live.tokens("r", "a", "clinician")},
        transports=["websocket"],
        headers={"X-Forwarded-For": "10.1.1.1"},
    )
    second = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await second.connect(
            live.url,
            auth={"token": live.tokens("r", "b", "clinician")},
            transports=["websocket"],
            headers={"X-Forwarded-For": "10.2.2.2"},
            wait_timeout=5,
        )
    await first.disconnect()
