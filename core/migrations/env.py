"""Alembic environment: runs on the connection core.db hands over (SQLite or PostgreSQL)."""

from alembic import context

from core.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `clawops db upgrade` (core.db.Database.upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
