"""What ships in contrib/: the baresip configuration the README's softphone steps use (run as
written, with only the ports moved to free ones), and the systemd unit."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.peers import HOST, free_port, require, wait_for
from tests.peers.service import running_service
from tests.test_service_sip import api

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.peer
def test_readme_baresip_config_calls_the_service(tmp_path: Path) -> None:
    config = tmp_path / "baresip"
    shutil.copytree(REPO / "contrib" / "baresip", config)
    port = free_port()
    text = (config / "config").read_text().replace("127.0.0.1:5070", f"{HOST}:{port}")
    (config / "config").write_text(text.replace("10100-10199", "29100-29199"))
    accounts = (config / "accounts").read_text().replace("127.0.0.1:5070", f"{HOST}:{port}")
    (config / "accounts").write_text(accounts)
    with running_service(tmp_path / "svc", asr={"engine": "none"}) as svc:
        proc = subprocess.run(
            [require("baresip"), "-f", str(config), "-e", f"/dial sip:100@{svc.sip_address}", "-t", "6"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=tmp_path)
        log = proc.stdout + proc.stderr

        def call() -> list[dict[str, object]]:
            return [i for i in api(svc, "GET", "/interactions?channel=voice")["interactions"]
                    if i["status"] == "completed"]

        wait_for(call, 10, f"the baresip call in the history\n{log[-3000:]}")
        [item] = call()
        detail = api(svc, "GET", f"/interactions/{item['id']}")
        assert detail["metadata"]["caller"] == "caller"  # the shipped account
        assert detail["ivr"]["path"][0]["node"] == "welcome"
        # a 403 response, not any "403" (the log holds ports such as 40330: a clean clone drew one)
        assert not re.search(r"\b403 [A-Z]", log) and "No such device" not in log, log[-3000:]


def test_systemd_unit_runs_voice() -> None:
    unit = (REPO / "contrib" / "systemd" / "voice.service").read_text()
    for line in ("[Service]", "ExecStart=/opt/voice/.venv/bin/voice run --config /etc/voice/voice.conf",
                 "WorkingDirectory=/opt/voice", "Restart=on-failure", "[Install]"):
        assert line in unit
    if shutil.which("systemd-analyze"):
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(REPO / "contrib" / "systemd" /
                                                                          "voice.service")],
                             capture_output=True, text=True, timeout=30)
        assert "Unknown" not in out.stderr and "Invalid" not in out.stderr, out.stderr
