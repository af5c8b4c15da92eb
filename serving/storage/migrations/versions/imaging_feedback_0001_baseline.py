"""imaging_feedback: radiologists' readings of triaged studies, append-only (the schema of
imaging_feedback.db before migrations)."""

import sqlalchemy as sa
from alembic import op

from clinassist.serving.storage.ddl import append_only

revision = "imaging_feedback_0001"
down_revision = None
branch_labels = ("imaging_feedback",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Text, nullable=False) for name in (
            "result_id", "study_instance_uid", "sop_instance_uid", "reading")),
        sa.Column("reason", sa.Text),
        sa.Column("radiologist", sa.Text, nullable=False),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("operating_point", sa.Text),
        sa.Column("probability", sa.Double),
        sa.Column("flag", sa.Text),
        sa.CheckConstraint("reading IN ('pneumonia', 'no_pneumonia', 'not_assessable')",
                           name="feedback_reading"),
        if_not_exists=True)
    op.create_index("feedback_result", "feedback", ["result_id", "id"], if_not_exists=True)
    op.create_index("feedback_study", "feedback", ["study_instance_uid"], if_not_exists=True)
    op.create_index("feedback_time", "feedback", ["received_at"], if_not_exists=True)
    append_only(op.get_bind(), "feedback", "feedback is append-only")


def downgrade() -> None:
    op.drop_table("feedback")
