"""cds_feedback: CDS Hooks cards issued and the feedback on them (the schema of
cds_feedback.db before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "cds_feedback_0001"
down_revision = None
branch_labels = ("cds_feedback",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("uuid", sa.Text, primary_key=True),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("issued_at", sa.Text, nullable=False),
        sa.Column("alert", sa.Text, nullable=False),
        sa.Column("kb_version", sa.Text, nullable=False),
        if_not_exists=True)
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("card", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("override_reason", sa.Text),
        sa.Column("accepted_suggestions", sa.Text),
        sa.Column("outcome_at", sa.Text),
        sa.Column("received_at", sa.Text, nullable=False),
        if_not_exists=True)


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("cards")
