"""Alembic environment: migrations run on the connection (and in the transaction) that ``JobStore`` passes in.

There is no ``alembic.ini``: opening the store migrates it (``JobStore(url)``; ``longtail serve`` does on start).
"""

from alembic import context

connection = context.config.attributes["connection"]
# SQLite cannot ALTER most things: Alembic's batch mode copies the table instead.
context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
