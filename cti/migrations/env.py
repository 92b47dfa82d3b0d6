"""Alembic environment: run on the connection handed in by cti.db.migrate."""

from __future__ import annotations

from alembic import context

from cti.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `voice db upgrade`, which passes the connection in")

# render_as_batch: SQLite cannot ALTER most things, batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
