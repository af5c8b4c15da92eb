"""site_calibration: a site's fitted overlays of a model's operating points, and which one is
in force, both append-only (before this store they were JSON files in the home, taken over
when the store is first opened)."""

import sqlalchemy as sa
from alembic import op

from clinassist.serving.storage.ddl import append_only

revision = "site_calibration_0001"
down_revision = None
branch_labels = ("site_calibration",)
depends_on = None
TABLES = ("overlays", "activations")


def upgrade() -> None:
    op.create_table(
        "overlays",
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("saved", sa.Text, nullable=False),
        sa.Column("overlay", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("model", "version"),
        if_not_exists=True)
    op.create_table(
        "activations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("version", sa.Integer),  # NULL: none in force (removed)
        sa.Column("changed", sa.Text, nullable=False),
        if_not_exists=True)
    op.create_index("activations_model", "activations", ["model", "id"], if_not_exists=True)
    for table in TABLES:
        append_only(op.get_bind(), table, "site calibration is append-only")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
