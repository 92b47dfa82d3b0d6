"""Issue 10 item 6 against the running service: a legacy PBX's INVITE whose From display name is
ISO-8859-1 ("J\\xfcrgen M\\xfcller"), sent by a real sipp. The call is answered, the API and the
admin page answer 200 while it is up, and its interaction is written with a readable name."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.peers import wait_for
from tests.peers.pcap import RtpStreamBuilder
from tests.peers.service import RunningService, running_service
from tests.peers.sipp import SCENARIOS, sipp_background

pytestmark = pytest.mark.peer

DISPLAY = "J\xfcrgen M\xfcller"


def get(svc: RunningService, path: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"{svc.http_url}{path}", headers={"Authorization": f"Bearer {svc.api_key}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def latin1_scenario(workdir: Path) -> Path:
    """dtmf_call.xml with the From display name in ISO-8859-1 bytes (the XML says ISO-8859-1)."""
    text = (SCENARIOS / "dtmf_call.xml").read_text()
    old = "From: sipp <sip:sipp@[local_ip]"
    assert old in text
    text = text.replace(old, f'From: "{DISPLAY}" <sip:+15550199@[local_ip]')
    # the flow ends in a voicemail: hang up 8 s into the call instead of waiting 30 s for its BYE
    text = text.replace('<recv request="BYE" timeout="30000"', '<recv request="BYE" timeout="8000"')
    path = workdir / "latin1_call.xml"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("latin-1"))
    assert b'"J\xfcrgen M\xfcller"' in path.read_bytes()
    return path


def test_latin1_display_name_call_is_answered_and_recorded(tmp_path: Path) -> None:
    with running_service(tmp_path / "svc", asr={"engine": "none"}) as svc:
        req = urllib.request.Request(
            f"{svc.http_url}/api/v1/customers", method="POST",
            data=json.dumps({"name": "Legacy Caller", "phone": "+15550199"}).encode(),
            headers={"Authorization": f"Bearer {svc.api_key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            customer = json.loads(resp.read())
        pcap = RtpStreamBuilder().silence(4000).digits("1").silence(300).write(tmp_path / "call.pcap")
        scenario = latin1_scenario(tmp_path / "sipp")
        with sipp_background(scenario, svc.sip_address, workdir=tmp_path / "sipp", calls=1, timeout=60,
                             pcaps={"call.pcap": pcap}) as sipp:

            def call_is_up() -> bool:
                return bool(get(svc, "/api/v1/queues")[1]["calls"])

            wait_for(call_is_up, 15, "the call in the live view")
            status, queues = get(svc, "/api/v1/queues")
            assert status == 200
            assert [c["caller_name"] for c in queues["calls"]] == [DISPLAY]  # decoded as Latin-1
            status, overview = get(svc, "/admin/api/overview")
            assert status == 200 and [c["caller_name"] for c in overview["calls"]] == [DISPLAY]
            result = sipp.wait(60)
        assert result.ok, result.describe()
        assert result.successful == 1

        def completed() -> bool:
            items = get(svc, f"/api/v1/customers/{customer['id']}/interactions")[1]["interactions"]
            return bool(items) and items[0]["status"] == "completed"

        wait_for(completed, 15, "the call's interaction to be completed")
        newest = get(svc, f"/api/v1/customers/{customer['id']}/interactions")[1]["interactions"][0]
        _, interaction = get(svc, f"/api/v1/interactions/{newest['id']}")
        assert "\\ud" not in json.dumps(interaction)  # no lone surrogate escaped into JSON
        assert "surrogates not allowed" not in svc.log
        assert "Traceback" not in svc.log
