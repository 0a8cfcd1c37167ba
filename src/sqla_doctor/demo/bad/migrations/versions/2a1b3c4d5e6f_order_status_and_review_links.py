"""order status, review foreign key and index

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
    # Order.status has default="new" in the model: that is applied on INSERT, not here.
    op.add_column("orders", sa.Column("status", sa.String(length=20), nullable=False))
    op.create_foreign_key("fk_reviews_book_id", "reviews", "books", ["book_id"], ["id"])
    op.create_index("ix_reviews_book_id", "reviews", ["book_id"])


def downgrade() -> None:
    op.drop_index("ix_reviews_book_id", table_name="reviews")
    op.drop_constraint("fk_reviews_book_id", "reviews", type_="foreignkey")
    op.drop_column("orders", "status")
