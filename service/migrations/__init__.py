"""The store's schema migrations (Alembic). ``service.store.JobStore`` runs them on open; no ini file needed."""
