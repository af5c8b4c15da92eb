"""gateway_queue: leases instead of claim flags, so several gateways can share one queue and
a gateway that dies leaves nothing claimed for longer than its lease. A row claimed under the
old flag is free again (lease_expires 0): the gateway that held it has stopped to upgrade.

Revision ID: gateway_queue_0002
Revises: gateway_queue_0001
"""

import sqlalchemy as sa
from alembic import op

revision = "gateway_queue_0002"
down_revision = "gateway_queue_0001"
branch_labels = None
depends_on = None
TABLES = ("job", "delivery")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:  # SQLite: the table is rebuilt
            batch.add_column(sa.Column("lease_owner", sa.Text))
            batch.add_column(sa.Column("lease_expires", sa.Double, nullable=False,
                                       server_default="0"))
            batch.drop_column("claimed")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed", sa.Integer, nullable=False,
                                       server_default="0"))
            batch.drop_column("lease_expires")
            batch.drop_column("lease_owner")
