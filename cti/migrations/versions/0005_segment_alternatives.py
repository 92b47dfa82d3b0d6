"""Transcript segments keep the recognizer's n-best (`alternatives`: [[text, confidence], ...]).

Revision ID: 0005_alternatives
Revises: ops_0003_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_alternatives"
down_revision = "ops_0003_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transcript_segments") as batch:
        batch.add_column(sa.Column("alternatives", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))


def downgrade() -> None:
    with op.batch_alter_table("transcript_segments") as batch:
        batch.drop_column("alternatives")
