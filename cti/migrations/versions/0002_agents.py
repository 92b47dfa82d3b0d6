"""Agents, their sessions and states, call notes, and the event table for large pops.

Revision ID: 0002_agents
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from cti.models import UtcDateTime

revision = "0002_agents"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("sip_uri", sa.String(500), nullable=False),
        sa.Column("skills", Json, nullable=False),
        sa.Column("password_hash", sa.String(200)),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("state_since", UtcDateTime(), nullable=False),
        sa.Column("call_id", sa.String(300)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "agent_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("agent_id", sa.String(64), sa.ForeignKey("agents.id", ondelete="CASCADE"), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_agent_sessions_agent_id", "agent_sessions", ["agent_id"])
    op.create_table(
        "interaction_notes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("interaction_id", sa.String(36), sa.ForeignKey("interactions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("disposition", sa.String(100)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_interaction_notes_interaction_id", "interaction_notes", ["interaction_id"])
    # Events too large for a NOTIFY payload (8000 bytes): nodes fetch them from here by id.
    op.create_table(
        "agent_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("agent_id", sa.String(64)),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_agent_events_created_at", "agent_events", ["created_at"])


def downgrade() -> None:
    op.drop_table("agent_events")
    op.drop_table("interaction_notes")
    op.drop_table("agent_sessions")
    op.drop_table("agents")
