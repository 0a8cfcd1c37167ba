"""money as numeric, an index on orders.user_id

Revision ID: 3b2c4d5e6f70
Revises: 2a1b3c4d5e6f
Create Date: 2026-03-10 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "3b2c4d5e6f70"
down_revision = "2a1b3c4d5e6f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column(
        "orders",
        "total",
        existing_type=sa.Integer(),
        type_=sa.Numeric(precision=12, scale=2),
    )
    op.execute("CREATE INDEX CONCURRENTLY ix_orders_user_id ON orders (user_id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_orders_user_id")
    op.alter_column("orders", "total", existing_type=sa.Numeric(12, 2), type_=sa.Integer())
