"""Agents keep why they are away (`state_reason`: break, lunch, ... from [agents] away_reasons).

Revision ID: softphone_0001_reason
Revises: callbacks_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "softphone_0001_reason"
down_revision = "callbacks_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("state_reason", sa.String(40)))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("state_reason")
