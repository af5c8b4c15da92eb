"""gateway_worklist: study priorities for the reading worklist (the schema of
gateway/worklist.db before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "gateway_worklist_0001"
down_revision = None
branch_labels = ("gateway_worklist",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "study",
        sa.Column("study_instance_uid", sa.Text, primary_key=True),
        sa.Column("patient_id", sa.Text, nullable=False),
        sa.Column("accession_number", sa.Text, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("probability", sa.Double),
        sa.Column("first_received", sa.Double, nullable=False),
        sa.Column("result_id", sa.Text, nullable=False),
        if_not_exists=True)


def downgrade() -> None:
    op.drop_table("study")
