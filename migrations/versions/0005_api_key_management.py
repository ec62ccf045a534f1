"""per-key management: last use, names, overlap on rotation (issue 11 item 7)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``api_keys.name``, ``last_used_at`` and ``expires_at`` (all nullable: existing keys
    keep working, unnamed, never used as far as the table knows, with no expiry)."""
    op.add_column("api_keys", sa.Column("name", sa.String(200), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop the three columns (batch mode: SQLite rebuilds the table)."""
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("last_used_at")
        batch.drop_column("name")
