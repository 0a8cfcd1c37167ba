"""Alembic environment of the fixed bookstore: Alembic owns the transactions."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool, text

from sqla_doctor.demo.fixed import audit  # noqa: F401 - registers AuditLog on Base.metadata
from sqla_doctor.demo.fixed.models import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        # One migration run at a time; the session-level lock survives the commit.
        connection.execute(text("SELECT pg_advisory_lock(20260101)"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
