"""alembic environment: migrations run on the connection the request store passes."""

from alembic import context

from core.database import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
