"""inbox indexes: a person's conversations by due time (My work), an author's by opening time
(the author card and author history)

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01 19:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.create_index("ix_conversation_owner_due", ["owner_id", "due_at", "id"], unique=False)
        batch_op.create_index("ix_conversation_author", ["tenant_id", "author_id", "opened_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("conversation", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_author")
        batch_op.drop_index("ix_conversation_owner_due")
