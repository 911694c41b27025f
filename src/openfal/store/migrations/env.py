"""Alembic environment: migrations run on a connection openfal hands in (see db.py)."""

from alembic import context

from openfal.store.schema import metadata

connection = context.config.attributes["connection"]
if connection.dialect.name == "postgresql":
    # several processes may start at once; one migrates, the others wait here
    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7242001)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
