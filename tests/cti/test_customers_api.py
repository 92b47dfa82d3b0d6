"""Customers CRUD, the timeline, interaction detail and CTI lookup through the HTTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.cti.conftest import Api

BASE = datetime(2024, 1, 1, tzinfo=UTC)


async def test_create_find_get_and_patch_a_customer(api: Api) -> None:
    st, created = await api.call("POST", "/api/v1/customers", json={
        "name": "Carla", "phone": ["030 555 0101", "+1 212 555 0199"], "email": "Carla@Example.org",
        "account": "ACC-9", "attributes": {"tier": "gold", "balance": 12.5}})
    assert st == 201
    assert created["phones"] == ["+49305550101", "+12125550199"]
    assert created["attributes"] == {"tier": "gold", "balance": 12.5}
    cid = created["id"]

    for query in ({"phone": "+49 30 5550101"}, {"email": "carla@example.ORG"}, {"account": "ACC-9"}):
        st, found = await api.call("GET", "/api/v1/customers", params=query)
        assert st == 200 and [c["id"] for c in found["customers"]] == [cid], query
    st, none = await api.call("GET", "/api/v1/customers", params={"phone": "+1 999 555 0000"})
    assert st == 200 and none["customers"] == []

    st, patched = await api.call("PATCH", f"/api/v1/customers/{cid}", json={
        "attributes": {"balance": 0, "tier": None, "vip": True}, "email": "carla@work.example"})
    assert st == 200
    assert patched["attributes"] == {"balance": 0, "vip": True}
    assert patched["emails"] == ["carla@example.org", "carla@work.example"]
    st, got = await api.call("GET", f"/api/v1/customers/{cid}")
    assert st == 200 and got == patched


async def test_customer_errors(api: Api) -> None:
    _, first = await api.call("POST", "/api/v1/customers", json={"name": "D", "phone": "+4930999"})
    st, err = await api.call("POST", "/api/v1/customers", json={"name": "E", "phone": "030 999"})
    assert st == 409 and err["error"]["customer_ids"] == [first["id"]] and err["error"]["field"] == "phone"
    _, other = await api.call("POST", "/api/v1/customers", json={"email": "e@example.com"})
    st, err = await api.call("PATCH", f"/api/v1/customers/{other['id']}", json={"phone": "+4930999"})
    assert st == 409 and set(err["error"]["customer_ids"]) == {first["id"], other["id"]}
    st, err = await api.call("GET", "/api/v1/customers/00000000-0000-0000-0000-000000000000")
    assert st == 404 and err["error"]["field"] == "id"
    st, err = await api.call("GET", "/api/v1/customers/not-an-id")
    assert st == 404
    st, err = await api.call("PATCH", "/api/v1/customers/00000000-0000-0000-0000-000000000000",
                             json={"name": "x"})
    assert st == 404
    st, err = await api.call("PATCH", f"/api/v1/customers/{first['id']}", json={})
    assert st == 422
    st, err = await api.call("POST", "/api/v1/customers", json={"attributes": {"a": 1}})
    assert st == 422 and err["error"]["field"] == "name"
    st, err = await api.call("GET", "/api/v1/customers")
    assert st == 422
    st, err = await api.call("GET", "/api/v1/customers", params={"shoe": "44"})
    assert st == 422 and err["error"]["field"] == "shoe"
    st, err = await api.call("PUT", f"/api/v1/customers/{first['id']}")
    assert st == 405 and err["error"]["status"] == 405


async def test_timeline_is_newest_first_across_channels_and_paginates(api: Api) -> None:
    channels = ["voice", "chat", "email", "sms", "web", "social"]
    ids = []
    # Two interactions share a start time: the id breaks the tie, and pagination must not lose either.
    times = [BASE + timedelta(minutes=i) for i in range(13)] + [BASE + timedelta(minutes=5)]
    for i, when in enumerate(times):
        st, r = await api.call("POST", "/api/v1/interactions", json={
            "channel": channels[i % 6], "direction": "inbound", "started_at": when.isoformat(),
            "customer": {"account": "T-1"}, "subject": f"#{i}"})
        assert st == 201
        ids.append(r["interaction_id"])
    cid = r["customer_id"]
    seen: list[dict] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "4", **({"cursor": cursor} if cursor else {})}
        st, page = await api.call("GET", f"/api/v1/customers/{cid}/interactions", params=params)
        assert st == 200 and len(page["interactions"]) <= 4
        seen += page["interactions"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4 and len(seen) == 14 and sorted(i["id"] for i in seen) == sorted(ids)
    keys = [(i["started_at"], i["id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)
    assert seen[0]["subject"] == "#12" and seen[-1]["subject"] == "#0"

    for bad in ({"limit": "0"}, {"limit": "201"}, {"limit": "ten"}, {"cursor": "garbage!"}):
        st, err = await api.call("GET", f"/api/v1/customers/{cid}/interactions", params=bad)
        assert st == 422 and err["error"]["field"] in bad
    st, _ = await api.call("GET", "/api/v1/customers/00000000-0000-0000-0000-000000000000/interactions")
    assert st == 404


async def test_interaction_detail_has_the_transcript(api: Api) -> None:
    st, r = await api.call("POST", "/api/v1/interactions", json={
        "channel": "voice", "direction": "inbound", "started_at": "2024-05-01T10:00:00Z",
        "ended_at": "2024-05-01T10:02:00Z", "customer": {"phone": "+4930777"},
        "metadata": {"queue": "billing"},
        "transcript": [
            {"start": 0.0, "end": 2.5, "speaker": "system", "kind": "prompt", "text": "Welcome"},
            {"start": 3.0, "end": 3.1, "speaker": "caller", "kind": "dtmf", "text": "2"},
            {"start": 4.0, "end": 6.0, "speaker": "caller", "kind": "speech", "text": "billing",
             "confidence": 0.91, "engine": "vosk"},
        ]})
    assert st == 201
    st, detail = await api.call("GET", f"/api/v1/interactions/{r['interaction_id']}")
    assert st == 200
    assert detail["metadata"] == {"queue": "billing"} and detail["ended_at"] == "2024-05-01T10:02:00Z"
    assert [(s["kind"], s["text"]) for s in detail["transcript"]] == [
        ("prompt", "Welcome"), ("dtmf", "2"), ("speech", "billing")]
    assert detail["transcript"][2]["confidence"] == 0.91
    st, _ = await api.call("GET", "/api/v1/interactions/00000000-0000-0000-0000-000000000000")
    assert st == 404


async def test_lookup_known_and_unknown_callers(api: Api) -> None:
    _, c = await api.call("POST", "/api/v1/customers", json={
        "name": "Erik", "phone": "+4930123123", "account": "77", "attributes": {"balance": "42.10"}})
    for i in range(7):
        await api.call("POST", "/api/v1/interactions", json={
            "channel": "chat", "direction": "inbound", "customer": {"account": "77"},
            "started_at": (BASE + timedelta(days=i)).isoformat(), "summary": f"chat {i}"})
    st, hit = await api.call("GET", "/api/v1/lookup", params={"phone": '"Erik" <sip:030123123@pbx>'})
    assert st == 200 and hit["found"] and hit["customer"]["id"] == c["id"]
    assert hit["attributes"] == {"balance": "42.10"}
    # recent defaults to [cti] recent_interactions (5 in the test config)
    assert [i["summary"] for i in hit["recent_interactions"]] == [f"chat {i}" for i in (6, 5, 4, 3, 2)]
    assert set(hit["recent_interactions"][0]) == {
        "id", "channel", "direction", "status", "started_at", "ended_at", "agent", "subject", "summary",
        "disposition", "queue"}
    st, by_account = await api.call("GET", "/api/v1/lookup", params={"account": "77", "recent": "1"})
    assert by_account["customer"]["id"] == c["id"] and len(by_account["recent_interactions"]) == 1
    empty = {"found": False, "customer": None, "attributes": {}, "recent_interactions": []}
    for params in ({"phone": "+15550009999"}, {"phone": "anonymous"}, {"account": "nope"}):
        st, miss = await api.call("GET", "/api/v1/lookup", params=params)
        assert (st, miss) == (200, empty)
    st, err = await api.call("GET", "/api/v1/lookup")
    assert st == 422 and err["error"]["field"] == "phone"
