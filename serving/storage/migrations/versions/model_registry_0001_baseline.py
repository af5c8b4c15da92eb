"""model_registry: the ledger of the triage model's versions, gates and stage changes,
append-only (the schema of model_registry.db before migrations)."""

import sqlalchemy as sa
from alembic import op

from clinassist.serving.storage.ddl import append_only

revision = "model_registry_0001"
down_revision = None
branch_labels = ("model_registry",)
depends_on = None
TABLES = ("versions", "gates", "stage_changes")


def upgrade() -> None:
    op.create_table(
        "versions",
        *(sa.Column(name, sa.Text, nullable=False) for name in (
            "model", "version", "sha256", "path", "registered", "registered_by", "source")),
        sa.PrimaryKeyConstraint("model", "version"),
        if_not_exists=True)
    op.create_table(
        "gates",
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Text, nullable=False) for name in ("model", "version", "sha256")),
        sa.Column("passed", sa.Integer, nullable=False),
        *(sa.Column(name, sa.Text, nullable=False) for name in ("recorded", "report")),
        if_not_exists=True)
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Text, nullable=False) for name in (
            "model", "version", "stage", "kind", "changed", "actor", "reason")),
        sa.Column("gate_id", sa.Integer),
        sa.Column("override", sa.Integer, nullable=False, server_default="0"),
        if_not_exists=True)
    for table in TABLES:
        append_only(op.get_bind(), table, "the model registry is append-only")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
