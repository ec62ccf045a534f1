"""webhook deliveries and per-tenant signing secrets (issue 11 item 3)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Placeholder until the issue-11 change that owns this revision fills it in."""


def downgrade() -> None:
    """Placeholder until the issue-11 change that owns this revision fills it in."""
