"""Scale-out end to end: real server processes on loopback, our own Redis and PostgreSQL.

Clients that connect through different nodes are redirected to the room's node and meet there;
events from other nodes (a revocation, an upload) reach them; `kill -9` of the hosting node
brings the room back on another node with chat and annotations intact; a Redis restart is
survived.
"""

from __future__ import annotations

import asyncio
import time
from io import BytesIO

import aiohttp
import jwt
import redis.asyncio as aioredis
from PIL import Image

from annotation.client import AnnotationClient
from tests.cluster.conftest import Cluster, http_json
from tests.cluster.routed import connect_any, connect_routed, locate
from tests.helpers import Client, ConnectRefused

# a bound on the reconnect wait, not a goal: bench/cluster.py measures failover time
RECONNECT_BOUND_S = 30.0


def admin_headers(cluster: Cluster) -> dict[str, str]:
    key = (cluster.data_dir / "admin_api.key").read_text().strip()
    return {"Authorization": f"Bearer {key}"}


async def upload_png(url: str, room: str, token: str) -> dict:
    buf = BytesIO()
    Image.new("RGB", (64, 48), (20, 120, 200)).save(buf, format="PNG")
    form = aiohttp.FormData()
    form.add_field("file", buf.getvalue(), filename="wound.png", content_type="image/png")
    status, body = await http_json(
        "POST",
        f"{url}/api/rooms/{room}/documents",
        data=form,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 201, body
    return body["document"]


async def joined(client: Client) -> Client:
    client.joined = await client.call("join", {})
    assert client.joined.get("status") == "joined", client.joined
    return client


async def node_ids(url: str) -> set[str]:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return {n for n in await client.smembers("tc:nodes") if await client.exists(f"tc:node:{n}")}
    finally:
        await client.aclose()


async def test_clients_through_different_nodes_meet_and_chat(cluster: Cluster):
    a = cluster.start_node("na")
    b = cluster.start_node("nb")
    t = cluster.tokens
    host = await joined(await connect_routed(a.url, t("ward", "dr", "host")))
    other = b.url if host.url == a.url else a.url
    # the clinician starts at the node that does NOT host the room and is redirected
    clin = await joined(await connect_routed(other, t("ward", "cl", "clinician")))
    try:
        assert clin.url == host.url
        await host.next("participant:joined", lambda p: p["identity"] == "cl")
        sent = await clin.call("chat:send", {"text": "BP 130/85, starting the review"})
        assert sent["ok"], sent
        msg = await host.next("chat:message")
        assert msg["text"] == "BP 130/85, starting the review"

        # an upload served by the other node reaches the room's clients (AsyncRedisManager)
        doc = await upload_png(other, "ward", t("ward", "dr", "host"))
        added = await host.next("doc:added")
        assert added["document"]["id"] == doc["id"]

        # revocation through the other node's admin API drops the live connection here
        victim = await joined(await connect_routed(other, t("ward", "guest-1", "clinician")))
        claims = jwt.decode(victim.token, options={"verify_signature": False})
        status, body = await http_json(
            "POST",
            f"{other}/api/tokens/revoke",
            json={"jti": claims["jti"]},
            headers=admin_headers(cluster),
        )
        assert status == 200, body
        await victim.wait_disconnected()
        refused = None
        try:
            await connect_routed(other, victim.token)
        except Exception as exc:  # the refusal is what we want to see
            refused = exc
        assert refused is not None and getattr(refused, "code", None) == "token_revoked"
    finally:
        await clin.close()
        await host.close()


async def test_kill9_of_hosting_node_fails_over_with_chat_and_annotations(cluster: Cluster):
    for name in ("n1", "n2", "n3"):
        cluster.start_node(name)
    t = cluster.tokens
    urls = cluster.urls
    host = await joined(await connect_any(urls, t("mdt", "dr-host", "host")))
    home = host.url
    for i in range(5):
        assert (await host.call("chat:send", {"text": f"finding {i}"}))["ok"]

    # annotation documents come back from the shared records
    doc = await upload_png(home, "mdt", t("mdt", "dr-host", "host"))
    drawer = AnnotationClient(
        await locate(urls, t("mdt", "dr-a", "clinician")), t("mdt", "dr-a", "clinician")
    )
    await drawer.connect()
    cdoc = await drawer.open(doc["id"])
    marks = {cdoc.draw_arrow((5 + k, 5), (20 + k, 30), text=f"mark {k}") for k in range(6)}
    await cdoc.flush()
    clin = await joined(await connect_any(urls, t("mdt", "dr-b", "clinician")))
    assert clin.url == home == drawer.url
    # a patient waits in the lobby
    pat = await connect_any(urls, t("mdt", "pat-1", "patient"))
    assert (await pat.call("join", {}))["status"] == "waiting"
    queue = await host.next("lobby:queue", lambda q: len(q["entries"]) == 1)
    requested_at = queue["entries"][0]["requested_at"]

    victim = next(n for n in cluster.nodes.values() if n.url == home)
    started = time.monotonic()
    victim.kill9()
    await asyncio.gather(
        host.wait_disconnected(), clin.wait_disconnected(), pat.wait_disconnected()
    )

    # every client reconnects through the nodes its join listed, following redirects
    survivors = host.joined["nodes"]
    assert sorted(survivors) == sorted(urls)
    host2, clin2 = await asyncio.gather(
        connect_any(survivors, t("mdt", "dr-host", "host"), deadline_s=RECONNECT_BOUND_S),
        connect_any(survivors, t("mdt", "dr-b", "clinician"), deadline_s=RECONNECT_BOUND_S),
    )
    await joined(host2)
    await joined(clin2)
    failover_s = time.monotonic() - started
    try:
        assert host2.url == clin2.url != home
        history = [m["text"] for m in host2.joined["chat"]]
        assert history[-5:] == [f"finding {i}" for i in range(5)]
        ids = {p["identity"] for p in host2.joined["room"]["participants"]}
        assert "dr-b" in ids or "dr-host" in ids

        drawer.url = host2.url
        await drawer.reconnect()
        await drawer.wait_until(lambda: marks <= set(cdoc.annotations()))
        assert marks <= set(cdoc.annotations())
        assert (await clin2.call("chat:send", {"text": "back again"}))["ok"]
        await host2.next("chat:message", lambda m: m["text"] == "back again")

        # the patient comes back to the lobby with the original place in the queue
        pat2 = await connect_any(survivors, t("mdt", "pat-1", "patient"))
        assert pat2.url == host2.url
        assert (await pat2.call("join", {}))["status"] == "waiting"
        queue = await host2.next("lobby:queue", lambda q: len(q["entries"]) == 1)
        assert queue["entries"][0]["requested_at"] == requested_at
        assert (await host2.call("lobby:admit", {"identity": "pat-1"}))["ok"]
        await pat2.next("lobby:admitted")
        await pat2.close()
        print(f"failover {failover_s:.2f} s (kill -9 to both clients re-joined)")
    finally:
        await drawer.close()
        await host2.close()
        await clin2.close()


async def test_redis_restart_is_survived(cluster: Cluster):
    a = cluster.start_node("ra")
    b = cluster.start_node("rb")
    assert cluster.redis is not None
    t = cluster.tokens
    host = await joined(await connect_any(cluster.urls, t("clinic", "dr", "host")))
    try:
        cluster.redis.stop()
        # Redis down: the room's own node keeps serving it; a room needing placement is refused
        # with a code that says "retry"
        assert (await host.call("chat:send", {"text": "during the outage"}))["ok"]
        await host.next("chat:message", lambda m: m["text"] == "during the outage")
        refused = None
        try:
            await connect_routed(host.url, t("elsewhere", "dr9", "host"))
        except ConnectRefused as exc:
            refused = exc
        assert refused is not None and refused.code == "node_unavailable", refused
        cluster.redis.start()  # empty: no registry, no placements

        async def registered() -> None:
            while await node_ids(cluster.redis.url) != {"ra", "rb"}:  # noqa: ASYNC110
                await asyncio.sleep(0.1)

        await asyncio.wait_for(registered(), 15)
        # the hosting node re-claimed its room: a newcomer at the other node is sent there
        other = b.url if host.url == a.url else a.url
        clin = await joined(await connect_routed(other, t("clinic", "cl", "clinician")))
        assert clin.url == host.url
        assert (await clin.call("chat:send", {"text": "after the restart"}))["ok"]
        await host.next("chat:message", lambda m: m["text"] == "after the restart")
        # a new room is placed on a live node
        fresh = await joined(await connect_any(cluster.urls, t("fresh", "dr2", "host")))
        assert fresh.url in (a.url, b.url)
        await fresh.close()
        await clin.close()
    finally:
        await host.close()


async def test_media_flows_through_the_hosting_node(cluster: Cluster):
    from media.client import MediaClient, SyntheticVideoTrack, ToneAudioTrack
    from tests.media.test_signaling_integration import SERVER_EVENTS

    a = cluster.start_node("ma")
    b = cluster.start_node("mb")
    t = cluster.tokens

    async def peer(start: str, identity: str, role: str) -> tuple[Client, MediaClient]:
        sio = await connect_routed(start, t("cardio", identity, role))

        async def request(event: str, data: dict) -> dict:
            ack = await sio.call(event, data)
            if not ack.get("ok"):
                raise RuntimeError(f"{event} refused: {ack}")
            return ack

        media = MediaClient(identity, request, decode=False)
        for event in SERVER_EVENTS:
            sio.sio.on(event, lambda data=None, _e=event: media.deliver(_e, data))
        await joined(sio)
        return sio, media

    pub_sio, pub = await peer(a.url, "dr-pub", "host")
    other = b.url if pub_sio.url == a.url else a.url
    sub_sio, sub = await peer(other, "dr-sub", "clinician")
    try:
        assert sub_sio.url == pub_sio.url
        await pub.publish({"camera": SyntheticVideoTrack(), "microphone": ToneAudioTrack()})

        def frames(source: str) -> int:
            got = sub.received.get(("dr-pub", source))
            return got.frames if got is not None else 0

        async with asyncio.timeout(30):
            while frames("microphone") < 10 or frames("camera") < 5:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        await pub.close()
        await sub.close()
        await sub_sio.close()
        await pub_sio.close()
