"""Alembic environment: run by app/accounts/schema.py with a connection it passes in
(``config.attributes["connection"]``); there is no alembic.ini."""
from alembic import context

from app.accounts.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
