"""book tags, backfilled

Revision ID: 4c3d5e6f7081
Revises: 3b2c4d5e6f70
Create Date: 2026-04-01 16:45:00

"""

import sqlalchemy as sa
from alembic import op

revision = "4c3d5e6f7081"
down_revision = "3b2c4d5e6f70"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("books", sa.Column("tags", sa.JSON(), nullable=True))
    op.execute("UPDATE books SET tags = '[]'")


def downgrade() -> None:
    op.drop_column("books", "tags")
