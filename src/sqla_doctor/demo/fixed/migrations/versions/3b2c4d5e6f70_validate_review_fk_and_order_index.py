"""validate the review foreign key; an index on orders.user_id, concurrently

Revision ID: 3b2c4d5e6f70
Revises: 2a1b3c4d5e6f
Create Date: 2026-03-10 10:00:00

"""

from alembic import op

revision = "3b2c4d5e6f70"
down_revision = "2a1b3c4d5e6f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Its own revision (transaction_per_migration=True): SHARE UPDATE EXCLUSIVE only.
    op.execute("ALTER TABLE reviews VALIDATE CONSTRAINT fk_reviews_book_id")
    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_orders_user_id ON orders (user_id)")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_orders_user_id")
