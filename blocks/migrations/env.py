"""alembic environment: migrations run on the connection the Database block passes."""

from alembic import context

from blocks.database import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
