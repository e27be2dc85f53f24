"""replies from the inbox: the reply table (recorded before it is posted), refreshed reply
tokens, reply credentials per account, and what answering an interaction needs

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01 22:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from shared.db.types import UtcDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_credentials", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_context", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column("sent_by", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True))
    op.create_table(
        "reply",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reply_to", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("thread_id", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("platform_id", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("requested_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply")),
    )
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.create_index("ix_reply_conversation", ["conversation_id", "requested_at"], unique=False)
        batch_op.create_index("ix_reply_state", ["state", "updated_at"], unique=False)
        batch_op.create_index("ix_reply_platform_id", ["account_id", "platform_id"], unique=False)
    op.create_table(
        "replytoken",
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("source_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("failing", sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_replytoken")),
    )


def downgrade() -> None:
    op.drop_table("replytoken")
    with op.batch_alter_table("reply", schema=None) as batch_op:
        batch_op.drop_index("ix_reply_platform_id")
        batch_op.drop_index("ix_reply_state")
        batch_op.drop_index("ix_reply_conversation")
    op.drop_table("reply")
    with op.batch_alter_table("interaction", schema=None) as batch_op:
        batch_op.drop_column("sent_by")
        batch_op.drop_column("reply_context")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("reply_credentials")
