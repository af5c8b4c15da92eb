"""monitoring: one row per completed triage, for drift and agreement reports (the schema of
monitoring.db before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "monitoring_0001"
down_revision = None
branch_labels = ("monitoring",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triage_event",
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Text, nullable=False) for name in (
            "recorded_at", "result_id", "population", "model_version")),
        sa.Column("qc_passed", sa.Integer, nullable=False),
        sa.Column("blocking_reasons", sa.Text, nullable=False),
        sa.Column("probability", sa.Double),
        sa.Column("flag", sa.Text),
        *(sa.Column(name, sa.Double) for name in (
            "mean_intensity", "std_intensity", "dark_fraction")),
        if_not_exists=True)
    op.create_index("triage_event_time", "triage_event", ["recorded_at"], if_not_exists=True)


def downgrade() -> None:
    op.drop_table("triage_event")
