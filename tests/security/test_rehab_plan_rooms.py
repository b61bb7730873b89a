"""Rehab plans: a clinician reaches a patient's plan only through a room the patient is in."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.helpers import Client
from tests.rehab.test_guided import PLAN, room_with_patient


async def test_host_of_another_room_cannot_read_or_overwrite_a_plan(live: Any, connect: Any):
    doc_a, pat_a = await room_with_patient(connect, "ward-a", "pat-1", "dr-a")
    assert (await doc_a.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]
    host_b = await connect("ward-b", "host-b", "host")
    for event, body in (
        ("rehab:plan_get", {"patient_identity": "pat-1"}),
        ("rehab:progress", {"patient_identity": "pat-1"}),
        ("rehab:plan_set", {"patient_identity": "pat-1", "plan": dict(PLAN, title="hijack")}),
        ("rehab:plan_stop", {"patient_identity": "pat-1"}),
    ):
        ack = await host_b.call(event, body)
        assert ack["ok"] is False and ack["error"]["code"] == "permission_denied", (event, ack)
    # the plan is untouched, and room A's clinician still reaches it
    got = await doc_a.call("rehab:plan_get", {"patient_identity": "pat-1"})
    assert got["ok"] and got["plan"]["plan"]["title"] == PLAN["title"]
    # a patient who left room A still belongs to it (plans outlive the visit)
    await pat_a.close()
    got = await doc_a.call("rehab:progress", {"patient_identity": "pat-1"})
    assert got["ok"], got
    # once the patient is admitted to room B too, its host may prescribe there
    pat_b = await connect("ward-b", "pat-1", "patient")
    assert (await host_b.call("lobby:admit", {"identity": "pat-1"}))["ok"]
    await pat_b.next("lobby:admitted")
    ack = await host_b.call("rehab:plan_get", {"patient_identity": "pat-1"})
    assert ack["ok"], ack


async def test_an_explicit_care_team_grant_reaches_the_plan(live: Any, connect: Any):
    doc_a, _pat = await room_with_patient(connect, "ward-a", "pat-1", "dr-a")
    assert (await doc_a.call("rehab:plan_set", {"patient_identity": "pat-1", "plan": PLAN}))["ok"]
    # a physiotherapist of another clinic, granted pat-1 by the hospital system (POST /api/tokens)
    key = live.settings.admin_api_key.get_secret_value()
    body = {
        "room": "clinic-b",
        "identity": "pt-zhou",
        "role": "clinician",
        "name": "周治疗师",
        "care_team": ["pat-1"],
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{live.url}/api/tokens", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp,
    ):
        assert resp.status == 201
        token = (await resp.json())["token"]
    therapist = Client(live.url, token)
    await therapist.connect()
    try:
        await therapist.call("join", {})
        got = await therapist.call("rehab:progress", {"patient_identity": "pat-1"})
        assert got["ok"], got
        other = await therapist.call("rehab:plan_get", {"patient_identity": "pat-2"})
        assert other["ok"] is False and other["error"]["code"] == "permission_denied"
    finally:
        await therapist.close()
