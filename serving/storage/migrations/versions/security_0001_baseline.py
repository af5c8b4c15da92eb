"""security: users with API key digests, trusted JWT issuers and the JWT IDs seen (the
schema of security.db before migrations)."""

import sqlalchemy as sa
from alembic import op

revision = "security_0001"
down_revision = None
branch_labels = ("security",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("key_sha256", sa.Text, nullable=False, unique=True),
        sa.Column("created", sa.Text, nullable=False),
        sa.Column("revoked", sa.Text),
        if_not_exists=True)
    op.create_table(
        "trusted_issuers",
        sa.Column("issuer", sa.Text, primary_key=True),
        sa.Column("public_key_pem", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("audience", sa.Text),
        if_not_exists=True)
    op.create_table(
        "seen_jti",
        sa.Column("issuer", sa.Text, primary_key=True),
        sa.Column("jti", sa.Text, primary_key=True),
        sa.Column("expires", sa.Integer, nullable=False),
        if_not_exists=True)


def downgrade() -> None:
    for table in ("seen_jti", "trusted_issuers", "users"):
        op.drop_table(table)
