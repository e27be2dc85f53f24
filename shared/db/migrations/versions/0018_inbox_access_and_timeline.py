"""inbox access and timeline: roles, sign-in, sessions, set-password links, token roles,
the conversation timeline and command outcomes (owned by the api service)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01 14:55:46.149505
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db.types

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "commandoutcome",
        sa.Column("command_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column("command_type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("issued_by", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("command_id", name=op.f("pk_commandoutcome")),
    )
    with op.batch_alter_table("commandoutcome", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commandoutcome_at"), ["at"], unique=False)

    op.create_table(
        "login",
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("password_set_at", shared.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", shared.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_login")),
    )
    op.create_table(
        "loginthrottle",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("window_started_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_loginthrottle")),
    )
    op.create_table(
        "passwordlink",
        sa.Column("token_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("created_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("used_at", shared.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_passwordlink")),
    )
    with op.batch_alter_table("passwordlink", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_passwordlink_person_id"), ["person_id"], unique=False)

    op.create_table(
        "rolegrant",
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.PrimaryKeyConstraint("person_id", "role", "tenant_id", name=op.f("pk_rolegrant")),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("conversation_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=True),
        sa.Column("at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("summary", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline")),
    )
    with op.batch_alter_table("timeline", schema=None) as batch_op:
        batch_op.create_index("ix_timeline_conversation_at", ["conversation_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_timeline_seq"), ["seq"], unique=False)
        batch_op.create_index("ix_timeline_tenant_at", ["tenant_id", "at"], unique=False)

    op.create_table(
        "websession",
        sa.Column("id_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("csrf_token", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_websession")),
    )
    with op.batch_alter_table("websession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_websession_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_websession_person_id"), ["person_id"], unique=False)

    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "role",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="tenant_admin",
            )
        )
        batch_op.add_column(
            sa.Column(
                "source", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False, server_default="config"
            )
        )
        batch_op.add_column(
            sa.Column(
                "created_by", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False, server_default=""
            )
        )
        batch_op.add_column(
            sa.Column("revoked_at", shared.db.types.UtcDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("last_used_at", shared.db.types.UtcDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("apitoken", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("created_by")
        batch_op.drop_column("source")
        batch_op.drop_column("role")

    with op.batch_alter_table("websession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_websession_person_id"))
        batch_op.drop_index(batch_op.f("ix_websession_expires_at"))

    op.drop_table("websession")
    with op.batch_alter_table("timeline", schema=None) as batch_op:
        batch_op.drop_index("ix_timeline_tenant_at")
        batch_op.drop_index(batch_op.f("ix_timeline_seq"))
        batch_op.drop_index("ix_timeline_conversation_at")

    op.drop_table("timeline")
    op.drop_table("rolegrant")
    with op.batch_alter_table("passwordlink", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_passwordlink_person_id"))

    op.drop_table("passwordlink")
    op.drop_table("loginthrottle")
    op.drop_table("login")
    with op.batch_alter_table("commandoutcome", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commandoutcome_at"))

    op.drop_table("commandoutcome")
