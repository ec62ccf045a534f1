"""adaptations.name and adaptations.metadata (filterable labels), callback_url (issue 11 items 3 and 7)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Placeholder until the issue-11 change that owns this revision fills it in."""


def downgrade() -> None:
    """Placeholder until the issue-11 change that owns this revision fills it in."""
