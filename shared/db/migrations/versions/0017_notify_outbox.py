"""notify outbox: alert events committed with the delivery state, published after the commit

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db.types

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifyoutbox",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("messages", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifyoutbox")),
    )
    with op.batch_alter_table("notifyoutbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notifyoutbox_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifyoutbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notifyoutbox_created_at"))
    op.drop_table("notifyoutbox")
