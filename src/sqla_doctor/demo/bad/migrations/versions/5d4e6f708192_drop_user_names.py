"""drop users.name and users.nickname (a branch made in parallel with book tags)

Revision ID: 5d4e6f708192
Revises: 3b2c4d5e6f70
Create Date: 2026-04-02 09:15:00

"""

import sqlalchemy as sa
from alembic import op

revision = "5d4e6f708192"
down_revision = "3b2c4d5e6f70"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("users", "nickname")
    op.drop_column("users", "name")


def downgrade() -> None:
    op.add_column("users", sa.Column("name", sa.String(length=100), nullable=True))
    op.add_column("users", sa.Column("nickname", sa.String(length=50), nullable=True))
