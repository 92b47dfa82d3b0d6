"""Callbacks (virtual hold): one row per customer waiting to be called back.

A row is `queued` until a node claims it (compare-and-set on `state`, so two nodes or a restarted
one never place it twice): `offering` while an agent's phone rings, `dialing` from the moment the
customer's INVITE is about to leave, then `done`, `queued` again for a retry (attempts counted,
`earliest` moved on) or `failed`. `entered_at` (when the caller joined the queue) orders callbacks
among waiting callers, so a caller who chose a callback keeps their place.

Revision ID: callbacks_0001
Revises: continuity_0001_queue
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cti.models import JsonType, UtcDateTime

revision = "callbacks_0001"
down_revision = "continuity_0001_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(36), sa.ForeignKey("customers.id", ondelete="SET NULL")),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(500)),
        sa.Column("channel", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("earliest", UtcDateTime(), nullable=False),
        sa.Column("entered_at", UtcDateTime(), nullable=False),
        sa.Column("give_up_at", UtcDateTime(), nullable=False),
        sa.Column("original_interaction_id", sa.String(36)),
        sa.Column("interaction_id", sa.String(36)),
        sa.Column("node", sa.String(64)),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("last_result", sa.String(200)),
        sa.Column("history", JsonType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("placed_at", UtcDateTime()),
        sa.Column("finished_at", UtcDateTime()),
        sa.Column("idempotency_key", sa.String(300), unique=True),
    )
    op.create_index("ix_callbacks_state", "callbacks", ["state", "earliest"])


def downgrade() -> None:
    op.drop_index("ix_callbacks_state", "callbacks")
    op.drop_table("callbacks")
