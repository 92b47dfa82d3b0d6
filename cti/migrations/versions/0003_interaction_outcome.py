"""Interactions get `outcome`: how a call ended, apart from the agent's disposition.

Until now the call end wrote its cause (caller_hangup, bye, ...) into `disposition`, over the
disposition the agent had saved during the call. Existing voice interactions keep their
disposition; nothing is moved (an old `disposition` may be either).

Revision ID: desk_0003_outcome
Revises: 0002_agents
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "desk_0003_outcome"
down_revision = "0002_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("outcome", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("outcome")
