"""drop users.nickname, which no model maps any more (a branch made in parallel)

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


def downgrade() -> None:
    op.add_column("users", sa.Column("nickname", sa.String(length=50), nullable=True))
