"""Operations through the HTTP API, on SQLite and PostgreSQL: health, readiness, metrics (parsed
with the Prometheus text parser), interaction search, the CDR, reports, export and delete."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from cti import rights
from cti.agents import InteractionNote
from cti.http import build_api
from cti.metrics import sample_value
from cti.ops import add_readiness_check
from cti.store import NewInteraction, Segment
from tests.cti.conftest import API_KEY, Api, Target, make_config
from voice.config import IvrConfig

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def ops(target: Target, tmp_path: Path) -> AsyncIterator[Api]:
    config = replace(make_config(target.url), ivr=IvrConfig(recordings=tmp_path / "recordings"))
    app = build_api(config, schema=target.schema)
    client = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await client.start_server()
    try:
        yield Api(client)
    finally:
        await client.close()


async def call(
    api: Api,
    *,
    phone: str,
    at: datetime,
    ivr: dict[str, Any],
    call_id: str,
    meta: dict[str, Any] | None = None,
    seconds: float = 30.0,
    recording: str | None = None,
    transcript: tuple[Segment, ...] = (),
) -> str:
    """A finished voice call, written the way cti.history writes one."""
    store = api.store
    result = await store.ingest(
        NewInteraction(
            channel="voice",
            direction="inbound",
            started_at=at,
            identities=[("phone", phone)],
            status="in_progress",
            subject="Call to 100",
            metadata={"caller": phone, "caller_name": None, "dialled": "100", **(meta or {})},
            call_id=call_id,
            idempotency_key=f"call:{call_id}",
        )
    )
    await store.finish_interaction(
        result.interaction_id,
        ended_at=at + timedelta(seconds=seconds),
        status="completed",
        disposition=ivr.get("ended"),
        ivr=ivr,
        recording=recording,
        transcript=list(transcript),
    )
    return result.interaction_id


def path(*nodes: str) -> list[dict[str, Any]]:
    return [{"flow": "main", "node": n, "t": i} for i, n in enumerate(nodes)]


async def test_health_and_readiness_without_a_key(ops: Api) -> None:
    resp = await ops.client.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await ops.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body == {"status": "ready", "checks": {"database": "ok"}}

    app = ops.client.server.app
    add_readiness_check(app, "sip", lambda: "not listening yet")

    async def speech() -> bool:
        return True

    add_readiness_check(app, "speech", speech)
    resp = await ops.client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["status"] == "not ready"
    assert body["checks"] == {"database": "ok", "sip": "not listening yet", "speech": "ok"}


async def test_metrics_parse_and_count_requests(ops: Api) -> None:
    status, _ = await ops.call(
        "POST",
        "/api/v1/interactions",
        json={
            "channel": "chat",
            "direction": "inbound",
            "started_at": "2026-03-02T10:00:00Z",
            "customer": {"email": "m@example.com"},
        },
    )
    assert status == 201
    await ops.call("GET", "/api/v1/customers/00000000-0000-0000-0000-000000000000")
    resp = await ops.client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    families = list(text_string_to_metric_families(await resp.text()))
    names = {f.name for f in families}
    for expected in (
        "voice_calls_active",
        "voice_calls",
        "voice_sip_requests",
        "voice_sip_responses",
        "voice_rtp_packets_sent",
        "voice_rtp_packets_received",
        "voice_rtp_packets_late",
        "voice_rtp_send_lateness_seconds",
        "voice_flow_steps",
        "voice_speech_recognitions",
        "voice_speech_recognition_seconds",
        "voice_queue_waiting",
        "voice_queue_longest_wait_seconds",
        "voice_agents",
        "voice_ingest_requests",
        "voice_ingest_request_seconds",
        "voice_database_errors",
        "voice_http_requests",
    ):
        assert expected in names, expected
    ingested = sample_value(families, "voice_ingest_requests_total", {"status": "2xx"})
    assert ingested is not None and ingested >= 1
    # the route template, not the path with the id in it
    not_found = sample_value(
        families,
        "voice_http_requests_total",
        {"route": "/api/v1/customers/{id}", "method": "GET", "status": "4xx"},
    )
    assert not_found is not None and not_found >= 1
    assert not any("00000000-0000" in str(s.labels) for f in families for s in f.samples)
    assert sample_value(families, "voice_agents", {"state": "available"}) == 0


async def test_search_finds_calls_by_phone_customer_channel_call_id_and_time(ops: Api) -> None:
    ids = []
    for i in range(5):
        ids.append(
            await call(
                ops,
                phone="+4930111111",
                at=T0 + timedelta(minutes=i),
                call_id=f"c-{i}",
                ivr={"flow": "main", "path": path("welcome"), "ended": "hangup"},
            )
        )
    other = await call(
        ops,
        phone="+4930222222",
        at=T0,
        call_id="c-other",
        ivr={"flow": "main", "path": path("welcome"), "ended": "hangup"},
    )
    status, body = await ops.call("GET", "/api/v1/interactions", params={"call_id": "c-3"})
    assert status == 200 and [i["id"] for i in body["interactions"]] == [ids[3]]
    assert body["interactions"][0]["call_id"] == "c-3"

    # by phone (national format, normalized), newest first, two pages of 3 + 2
    status, body = await ops.call("GET", "/api/v1/interactions", params={"phone": "030 111111", "limit": "3"})
    assert status == 200 and [i["id"] for i in body["interactions"]] == ids[4:1:-1]
    status, page2 = await ops.call(
        "GET",
        "/api/v1/interactions",
        params={"phone": "030 111111", "limit": "3", "cursor": body["next_cursor"]},
    )
    assert [i["id"] for i in page2["interactions"]] == [ids[1], ids[0]] and page2["next_cursor"] is None

    customer_id = body["interactions"][0]["customer_id"]
    status, body = await ops.call(
        "GET",
        "/api/v1/interactions",
        params={
            "customer_id": customer_id,
            "since": "2026-03-02T09:01:00Z",
            "until": "2026-03-02T10:03:00+01:00",
        },
    )
    assert status == 200 and [i["id"] for i in body["interactions"]] == [ids[2], ids[1]]
    status, body = await ops.call("GET", "/api/v1/interactions", params={"channel": "voice"})
    assert status == 200 and {i["id"] for i in body["interactions"]} == {*ids, other}
    status, body = await ops.call("GET", "/api/v1/interactions", params={"phone": "+4930999999"})
    assert status == 200 and body == {"interactions": [], "next_cursor": None}

    for params, field in (
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-03-02T09:00:00"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"channel": "fax"}, "channel"),
        ({"customer_id": "nope"}, "customer_id"),
        ({"phone": "abc"}, "phone"),
        ({"cursor": "!!"}, "cursor"),
        ({"colour": "red"}, "colour"),
        ({"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"}, "until"),
    ):
        status, body = await ops.call("GET", "/api/v1/interactions", params=params)
        assert status == 422 and body["error"]["field"] == field, (params, body)
    resp = await ops.client.get("/api/v1/interactions")
    assert resp.status == 401


async def test_cdr_csv_and_summary(ops: Api) -> None:
    contained = await call(
        ops,
        phone="+4930111111",
        at=T0,
        call_id="a",
        ivr={"flow": "main", "path": path("welcome", "main_menu", "billing", "goodbye"), "ended": "hangup"},
    )
    with_agent = await call(
        ops,
        phone="+4930111112",
        at=T0 + timedelta(minutes=1),
        call_id="b",
        seconds=100,
        ivr={
            "flow": "main",
            "path": path("welcome", "main_menu", "support"),
            "ended": "transfer",
            "transfer_target": "queue:support",
        },
        meta={"agent_id": "alice", "wait_seconds": 12.0, "talk_seconds": 80.0},
    )
    abandoned = await call(
        ops,
        phone="+4930111113",
        at=T0 + timedelta(minutes=2),
        call_id="=c",
        seconds=40,
        ivr={
            "flow": "main",
            "path": path("welcome", "main_menu", "support"),
            "ended": "caller_hangup",
            "transfers_failed": ["queue:support"],
        },
    )
    await call(
        ops,
        phone="+4930111114",
        at=T0 + timedelta(days=2),
        call_id="later",
        ivr={"flow": "main", "path": path("welcome"), "ended": "caller_hangup"},
    )

    resp = await ops.client.get(
        "/api/v1/reports/calls.csv",
        headers=ops.headers,
        params={"since": "2026-03-02T00:00:00Z", "until": "2026-03-03T00:00:00Z"},
    )
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["interaction_id"] for r in rows] == [contained, with_agent, abandoned]
    first, second, third = rows
    assert first["start"] == "2026-03-02T09:00:00Z" and first["end"] == "2026-03-02T09:00:30Z"
    assert first["caller"] == "+4930111111" and first["dialled"] == "100" and first["flow"] == "main"
    assert first["last_node"] == "goodbye" and first["outcome"] == "contained" and first["queue"] == ""
    assert second["queue"] == "support" and second["agent"] == "alice" and second["outcome"] == "agent"
    assert second["wait_seconds"] == "12.0" and second["talk_seconds"] == "80.0"
    assert second["duration_seconds"] == "100.0"
    assert third["outcome"] == "abandoned" and third["queue"] == "support"
    assert third["call_id"] == "'=c"  # not a spreadsheet formula

    status, report = await ops.call(
        "GET",
        "/api/v1/reports/summary",
        params={"since": "2026-03-02T00:00:00Z", "until": "2026-03-03T00:00:00Z"},
    )
    assert status == 200
    totals = report["totals"]
    assert totals["calls"] == 3 and totals["contained"] == 1 and totals["agent"] == 1
    assert totals["abandoned"] == 1 and totals["containment_rate"] == round(1 / 3, 4)
    assert (
        totals["abandonment_rate"] == 0.5 and totals["asa_seconds"] == 12.0 and totals["aht_seconds"] == 80.0
    )
    assert totals["service_level"] == 0.5
    assert [d["day"] for d in report["days"]] == ["2026-03-02"]
    nodes = report["flows"][0]["nodes"]
    assert nodes["welcome"] == {"reached": 3, "left": 0} and nodes["support"] == {"reached": 2, "left": 2}
    assert nodes["goodbye"] == {"reached": 1, "left": 1}

    status, body = await ops.call("GET", "/api/v1/reports/summary", params={"since": "2026-13-02T00:00:00Z"})
    assert status == 422 and body["error"]["field"] == "since"


async def test_export_and_delete_a_customer_with_recordings(ops: Api, tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    call_wav = recordings / "call-1.wav"
    voicemail = recordings / "vm-1.wav"
    outside = tmp_path / "keep.wav"
    for f in (call_wav, voicemail, outside):
        f.write_bytes(b"RIFF")
    status, customer = await ops.call(
        "POST",
        "/api/v1/customers",
        json={
            "name": "Dana Scully",
            "phone": "+4930123456",
            "email": "dana@example.com",
            "account": "ACC-9",
            "attributes": {"tier": "gold"},
        },
    )
    assert status == 201
    first = await call(
        ops,
        phone="+4930123456",
        at=T0,
        call_id="x1",
        recording=str(call_wav),
        ivr={
            "flow": "main",
            "path": path("welcome"),
            "ended": "hangup",
            "recordings": [str(voicemail), str(outside)],
        },
        transcript=(Segment(start=0, end=1, speaker="caller", kind="speech", text="hello there"),),
    )
    await ops.store.db.run_write(
        lambda conn: conn.execute(
            insert(InteractionNote.__table__),
            {"interaction_id": first, "agent_id": "alice", "text": "wants a callback", "created_at": T0},
        )
    )
    # someone else's interaction stays
    status, _ = await ops.call("POST", "/api/v1/customers", json={"name": "Fox", "phone": "+4930999000"})
    other = await call(
        ops,
        phone="+4930999000",
        at=T0,
        call_id="y1",
        ivr={"flow": "main", "path": path("welcome"), "ended": "hangup"},
    )

    status, exported = await ops.call("GET", f"/api/v1/customers/{customer['id']}/export")
    assert status == 200
    assert exported["customer"]["name"] == "Dana Scully" and exported["customer"]["accounts"] == ["ACC-9"]
    [item] = exported["interactions"]
    assert item["id"] == first and item["transcript"][0]["text"] == "hello there"
    assert item["notes"][0]["text"] == "wants a callback"
    assert set(exported["recordings"]) == {str(call_wav), str(voicemail), str(outside)}

    status, body = await ops.call("DELETE", f"/api/v1/customers/{customer['id']}")
    assert status == 200
    assert (
        body["interactions"] == 1 and body["segments"] == 1 and body["notes"] == 1 and body["identities"] == 3
    )
    assert body["recordings_removed"] == 2 and body["recordings_not_found"] == 1
    assert not call_wav.exists() and not voicemail.exists() and outside.exists()  # never outside recordings/
    for url in (
        f"/api/v1/customers/{customer['id']}",
        f"/api/v1/interactions/{first}",
        f"/api/v1/customers/{customer['id']}/export",
    ):
        status, _ = await ops.call("GET", url)
        assert status == 404, url
    status, _ = await ops.call("DELETE", f"/api/v1/customers/{customer['id']}")
    assert status == 404
    status, _ = await ops.call("GET", f"/api/v1/interactions/{other}")
    assert status == 200
    status, found = await ops.call("GET", "/api/v1/customers", params={"phone": "+4930123456"})
    assert found == {"customers": []}

    audit = await ops.store.db.run_read(rights.audit_rows, customer["id"])
    assert len(audit) == 1 and audit[0]["action"] == "customer.delete"
    assert audit[0]["actor"].startswith("api-key:") and API_KEY not in audit[0]["actor"]
    text = str(audit)
    for personal in ("Dana", "+4930123456", "dana@example.com", "ACC-9", "hello", "callback"):
        assert personal not in text


async def test_call_facts_from_call_control_reach_the_cdr(ops: Api) -> None:
    from cti.history import CallHistory

    history = CallHistory(ops.store)
    interaction = await call(
        ops,
        phone="+4930555000",
        at=T0,
        call_id="facts",
        ivr={
            "flow": "main",
            "path": path("welcome", "to_support"),
            "ended": "transfer",
            "transfer_target": "queue:support",
        },
    )
    answered = T0 + timedelta(seconds=2)
    assert await history.add_call_facts(
        interaction,
        answered_at=answered,
        queue="support",
        agent_id="ann",
        wait_seconds=14.5,
        talk_seconds=61.0,
        outcome="agent",
    )
    assert not await history.add_call_facts("00000000-0000-0000-0000-000000000000", queue="x")
    with pytest.raises(ValueError, match="not a call fact"):
        await history.add_call_facts(interaction, colour="red")
    resp = await ops.client.get("/api/v1/reports/calls.csv", headers=ops.headers)
    [row] = list(csv.DictReader(io.StringIO(await resp.text())))
    assert row["answer"] == "2026-03-02T09:00:02Z" and row["agent"] == "ann" and row["queue"] == "support"
    assert row["wait_seconds"] == "14.5" and row["talk_seconds"] == "61.0" and row["outcome"] == "agent"
    status, item = await ops.call("GET", f"/api/v1/interactions/{interaction}")
    assert status == 200
    assert item["metadata"]["caller"] == "+4930555000"  # merged, not replaced
