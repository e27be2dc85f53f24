"""push link generations: a person's push links can be revoked

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import shared.db.types

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pushlink",
        sa.Column("person_id", sqlmodel.sql.sqltypes.AutoString(length=63), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("revoked_at", shared.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"], name=op.f("fk_pushlink_person_id_person")),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_pushlink")),
    )


def downgrade() -> None:
    op.drop_table("pushlink")
