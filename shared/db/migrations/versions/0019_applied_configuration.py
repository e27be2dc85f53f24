"""applied configuration: the configuration file each tenant's version came from, secrets redacted

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db.types

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "appliedconfiguration",
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("config_version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("yaml", sa.Text(), nullable=False),
        sa.Column("applied_at", shared.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "config_version", name=op.f("pk_appliedconfiguration")),
    )


def downgrade() -> None:
    op.drop_table("appliedconfiguration")
