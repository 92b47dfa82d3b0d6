"""Cluster nodes: one row per `voice` node on this database, with its heartbeat.

Every node bumps `beats` every `[node] heartbeat_interval` seconds; the others watch the counter
(not the clock, so clock skew between machines does not matter) and the first that sees it stand
still for `[node] lost_after` seconds claims the node (state up -> lost, compare-and-set on
`beats`), marks its calls interrupted and releases its agents.

Revision ID: cluster_0001_nodes
Revises: 0005_alternatives
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cti.models import UtcDateTime

revision = "cluster_0001_nodes"
down_revision = "0005_alternatives"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_nodes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),  # up | stopped | lost
        sa.Column("beats", sa.BigInteger, nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("heartbeat_at", UtcDateTime(), nullable=False),
        sa.Column("sip", sa.String(200)),
        sa.Column("http", sa.String(200)),
        sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lost_at", UtcDateTime()),
        sa.Column("taken_over_by", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("cluster_nodes")
