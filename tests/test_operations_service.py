"""Operations of the running service after a real call (sipp on loopback): JSON log lines parsed,
the SIP trace, /metrics parsed with the Prometheus text parser, /readyz, the call found by its
Call-ID through the search API and listed in the CDR."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cti.metrics import sample_value
from tests.peers import wait_for
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import run_sipp
from tests.test_service_sip import api

pytestmark = pytest.mark.peer


def get(svc: RunningService, path: str, key: bool = False) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {svc.api_key}"} if key else {}
    req = urllib.request.Request(f"{svc.http_url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def json_lines(svc: RunningService) -> list[dict[str, Any]]:
    return [json.loads(line) for line in svc.log.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("ops")
    with running_service(
        workdir, sip={"t1_ms": 50}, asr={"engine": "none"}, log={"format": "json", "sip_trace": "headers"}
    ) as service:
        yield service


def test_a_real_call_in_logs_metrics_search_and_cdr(svc: RunningService, tmp_path: Path) -> None:
    result = run_sipp("uac_pcap", svc.sip_address, workdir=tmp_path, calls=1, timeout=40)
    assert result.ok, result.describe()

    def ended() -> list[dict[str, Any]]:
        return [r for r in json_lines(svc) if r.get("event") == "call_end"]

    wait_for(ended, 15, "the call's end line")
    [end] = ended()
    [start] = [r for r in json_lines(svc) if r.get("event") == "call_start"]
    # every line is JSON with the common keys; the call lines carry ids and the node
    for line in json_lines(svc):
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    assert start["call_id"] == end["call_id"] and start["interaction_id"] == end["interaction_id"]
    assert start["node"] == "welcome" and end["node"] == end["path"][-1]
    assert end["path"][:4] == ["welcome", "identify", "route_caller", "main_menu"]
    assert end["inputs"][0]["value"] == "1"
    # no personal data: not the caller's number, no prompt texts, no variables
    assert "sipp" not in json.dumps(start) + json.dumps(end)
    assert "prompts" not in end and "variables" not in end and "caller" not in end
    # the SIP trace, like sngrep: direction, addresses, start line, headers
    traces = [r["msg"] for r in json_lines(svc) if r["logger"] == "voice.sip.trace"]
    assert any("-> voice" in t and "\nINVITE sip:" in t and "[body:" in t for t in traces)
    assert any("voice ->" in t and "\nSIP/2.0 200 OK" in t for t in traces)

    status, text = get(svc, "/metrics")
    assert status == 200
    families = list(text_string_to_metric_families(text))
    invites = sample_value(families, "voice_sip_requests_total", {"direction": "in", "method": "INVITE"})
    assert invites is not None and invites >= 1
    ok = sample_value(families, "voice_sip_responses_total", {"direction": "out", "code": "200"})
    assert ok is not None and ok >= 1
    steps = [s.value for f in families for s in f.samples if s.name == "voice_flow_steps_total"]
    assert sample_value(families, "voice_flow_steps_total", {"flow": "main"}) and sum(steps) >= len(
        end["path"]
    )
    # call control's figures: the call counted once as ended, the media it sent and received
    assert sample_value(families, "voice_calls_active") == 0
    ended = [s.value for f in families for s in f.samples if s.name == "voice_calls_total"]
    assert sum(ended) >= 1
    sent = sample_value(families, "voice_rtp_packets_sent_total")
    assert sent is not None and sent > 50  # the greeting, 20 ms a packet
    received = sample_value(families, "voice_rtp_packets_received_total")
    assert received is not None and received > 0
    lateness = [s for f in families for s in f.samples if s.name == "voice_rtp_send_lateness_seconds_count"]
    assert lateness and lateness[0].value >= sent * 0.9  # every wake's packets observed
    assert get(svc, "/healthz")[0] == 200
    status, ready = get(svc, "/readyz")
    checks = json.loads(ready)["checks"]
    assert status == 200 and checks["database"] == "ok" and checks["sip"] == "ok" and "speech" in checks

    # the call, found by its Call-ID, and in the CDR
    def found() -> list[dict[str, Any]]:
        items = api(svc, "GET", f"/interactions?call_id={end['call_id']}")["interactions"]
        return [i for i in items if i["status"] == "completed"]

    wait_for(found, 10, "the completed interaction")
    [item] = found()
    assert item["id"] == end["interaction_id"] and item["channel"] == "voice"
    status, text = get(svc, "/api/v1/reports/calls.csv", key=True)
    assert status == 200
    [row] = [r for r in csv.DictReader(io.StringIO(text)) if r["call_id"] == end["call_id"]]
    assert row["caller"] == "sipp" and row["flow"] == "main" and row["last_node"] == end["node"]
    assert row["outcome"] == "contained" and float(row["duration_seconds"]) > 5
