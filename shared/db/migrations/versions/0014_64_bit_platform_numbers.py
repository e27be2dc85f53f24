"""64-bit platform numbers: edit versions and follower counts as platforms send them

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01 08:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.alter_column(
            "edit_version", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
        )
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.alter_column(
            "author_followers", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.alter_column(
            "author_followers", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=True
        )
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.alter_column(
            "edit_version", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
        )
