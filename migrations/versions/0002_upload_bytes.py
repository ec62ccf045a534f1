"""adaptations.upload_bytes: bytes of the stored uploads, for quotas counted from the database

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column (rows from before it count 0 upload bytes)."""
    op.add_column("adaptations", sa.Column("upload_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("adaptations", "upload_bytes")
