"""`voice cluster` splits one base config into per-node configs (no processes started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice.cluster import kamailio_argv, plan_cluster
from voice.config import ConfigError, load_config

BASE = """\
[node]
id = edge
lost_after = 6
[sip]
listen = 127.0.0.1:5060
[rtp]
ports = 10000-10999
[http]
listen = 127.0.0.1:8080
api_keys = 0123456789abcdef0123
[database]
url = postgresql+asyncpg://voice@db:5432/voice
"""


def test_each_node_gets_its_id_ports_and_rtp_block_and_shares_the_rest(tmp_path: Path) -> None:
    base = tmp_path / "base.conf"
    base.write_text(BASE)
    plan = plan_cluster(base, 3, tmp_path / "run")
    assert [(n.id, n.sip_port, n.http_port) for n in plan.nodes] == [
        ("edge-1", 5061, 8080), ("edge-2", 5062, 8081), ("edge-3", 5063, 8082)]
    blocks = [n.rtp_ports for n in plan.nodes]
    assert blocks == [(10000, 10331), (10332, 10663), (10664, 10995)]
    for node in plan.nodes:
        cfg = load_config(node.config)
        assert cfg.node.id == node.id and cfg.node.lost_after == 6
        assert cfg.sip.listen.port == node.sip_port and (cfg.rtp.port_min, cfg.rtp.port_max) == node.rtp_ports
        assert cfg.database.url == "postgresql+asyncpg://voice@db:5432/voice"
        assert cfg.http.api_keys == ("0123456789abcdef0123",)
        assert cfg.rtp.send_ahead_ms == 40  # the service's default: each node has its transmitter
    # the base config's [rtp] settings reach every node
    base.write_text(BASE.replace("ports = 10000-10999", "ports = 10000-10999\nsend_ahead_ms = 0"))
    again = plan_cluster(base, 2, tmp_path / "run2")
    assert all(load_config(n.config).rtp.send_ahead_ms == 0 for n in again.nodes)
    argv = kamailio_argv(plan, binary="kamailio", pike_density=100, children=2)
    assert "LISTEN=udp:127.0.0.1:5060" in argv and "PIKE_DENSITY=100" in argv
    assert any(a.startswith("DISPATCHER_LIST=") and a.endswith('dispatcher.list"') for a in argv)


@pytest.mark.parametrize(("change", "message"), [
    (("postgresql+asyncpg://voice@db:5432/voice", "sqlite+aiosqlite:///data/voice.db"), "one PostgreSQL"),
    (("listen = 127.0.0.1:5060", "listen = 0.0.0.0:5060"), "not 0.0.0.0"),
    (("ports = 10000-10999", "ports = 10000-10004"), "too small"),
    (("lost_after = 6", "lost_after = 1"), "at least twice heartbeat_interval"),
])
def test_a_base_config_that_cannot_be_split_is_refused_with_the_reason(
        tmp_path: Path, change: tuple[str, str], message: str) -> None:
    base = tmp_path / "base.conf"
    base.write_text(BASE.replace(*change))
    with pytest.raises(ConfigError, match=message):
        plan_cluster(base, 3, tmp_path / "run")
