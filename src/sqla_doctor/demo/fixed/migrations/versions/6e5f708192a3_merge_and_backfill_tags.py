"""merge the two branches; backfill book tags in batches that commit

Revision ID: 6e5f708192a3
Revises: 4c3d5e6f7081, 5d4e6f708192
Create Date: 2026-04-03 11:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "6e5f708192a3"
down_revision = ("4c3d5e6f7081", "5d4e6f708192")
branch_labels = None
depends_on = None

BATCH = sa.text(
    "UPDATE books SET tags = '[]' WHERE id IN (SELECT id FROM books WHERE tags IS NULL LIMIT 5000)"
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        while op.get_bind().execute(BATCH).rowcount:
            pass


def downgrade() -> None:
    pass
