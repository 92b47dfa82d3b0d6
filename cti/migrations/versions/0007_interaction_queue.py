"""Interactions get `queue`: the queue that handled them (a call's agent queue, a chat's queue).

A caller who comes back to continue a conversation is routed to that queue. Calls write it when
they enter an agent queue; the ingest API takes it from the channel. Existing rows stay NULL
(the flow then falls back to its default queue).

Revision ID: continuity_0001_queue
Revises: cluster_0001_nodes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "continuity_0001_queue"
down_revision = "cluster_0001_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("queue", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("queue")
