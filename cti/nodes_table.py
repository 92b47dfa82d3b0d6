"""The `cluster_nodes` table (migration cluster_0001_nodes), for cti.nodes and cti.takeover."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from cti.models import Base, UtcDateTime

NODES = Table(
    "cluster_nodes", Base.metadata,
    Column("id", String(64), primary_key=True),
    Column("state", String(16), nullable=False),  # up | stopped | lost
    Column("beats", BigInteger, nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("heartbeat_at", UtcDateTime(), nullable=False),
    Column("sip", String(200)),
    Column("http", String(200)),
    Column("calls", Integer, nullable=False, server_default="0"),
    Column("lost_at", UtcDateTime()),
    Column("taken_over_by", String(64)),
)
