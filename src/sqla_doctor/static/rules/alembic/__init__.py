"""alembic."""
