"""gateway_changes: how far the gateway has followed each Orthanc's change log (the schema of
gateway/changes.db before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "gateway_changes_0001"
down_revision = None
branch_labels = ("gateway_changes",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_position",
        sa.Column("feed", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),  # Orthanc's Seq is 64-bit
        if_not_exists=True)


def downgrade() -> None:
    op.drop_table("feed_position")
