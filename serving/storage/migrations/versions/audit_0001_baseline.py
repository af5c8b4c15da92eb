"""audit: the append-only, hash-chained audit trail (the schema of audit.db before
migrations)."""

import sqlalchemy as sa
from alembic import op

from clinassist.serving.storage.ddl import append_only

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        *(sa.Column(name, sa.Text, nullable=False) for name in (
            "recorded", "actor", "role", "action", "resource", "outcome", "patients")),
        sa.Column("detail", sa.Text),
        sa.Column("prev_hash", sa.Text, nullable=False),
        sa.Column("row_hash", sa.Text, nullable=False),
        if_not_exists=True)
    op.create_index("audit_event_recorded", "audit_event", ["recorded"], if_not_exists=True)
    append_only(op.get_bind(), "audit_event", "the audit trail is append-only")


def downgrade() -> None:
    op.drop_table("audit_event")
