"""order status, review foreign key (NOT VALID) and index (concurrently)

Revision ID: 2a1b3c4d5e6f
Revises: 1f0a2b3c4d5e
Create Date: 2026-02-03 14:05:00

"""

import sqlalchemy as sa
from alembic import op

revision = "2a1b3c4d5e6f"
down_revision = "1f0a2b3c4d5e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant server default: existing rows get it, PostgreSQL 11+ rewrites nothing.
    op.add_column(
        "orders",
        sa.Column("status", sa.String(length=20), nullable=False, server_default="new"),
    )
    op.create_foreign_key(
        "fk_reviews_book_id",
        "reviews",
        "books",
        ["book_id"],
        ["id"],
        postgresql_not_valid=True,
    )
    with op.get_context().autocommit_block():
        op.create_index("ix_reviews_book_id", "reviews", ["book_id"], postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_reviews_book_id", table_name="reviews", postgresql_concurrently=True)
    op.drop_constraint("fk_reviews_book_id", "reviews", type_="foreignkey")
    op.drop_column("orders", "status")
