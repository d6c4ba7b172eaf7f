"""Alembic revisions of the store's schema, oldest first: 0001 is the schema before Alembic (schema_version 1)."""
