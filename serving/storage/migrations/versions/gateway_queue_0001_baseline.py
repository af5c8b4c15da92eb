"""gateway_queue: the gateway's jobs and their deliveries (the schema of gateway/queue.db
before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "gateway_queue_0001"
down_revision = None
branch_labels = ("gateway_queue",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("sop_instance_uid", sa.Text, nullable=False, unique=True),
        sa.Column("calling_ae_title", sa.Text, nullable=False),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="received"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Double, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("result_id", sa.Text),
        sa.Column("claimed", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("state IN ('received', 'processed', 'done', 'rejected', 'dead')",
                           name="job_state"),
        if_not_exists=True)
    op.create_index("job_due", "job", ["state", "next_attempt_at"], if_not_exists=True)
    op.create_table(
        "delivery",
        sa.Column("job_id", sa.Text, sa.ForeignKey("job.id"), primary_key=True),
        sa.Column("destination", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Double, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("claimed", sa.Integer, nullable=False, server_default="0"),
        sa.CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="delivery_state"),
        if_not_exists=True)
    op.create_index("delivery_due", "delivery", ["state", "next_attempt_at"],
                    if_not_exists=True)


def downgrade() -> None:
    op.drop_table("delivery")
    op.drop_table("job")
