"""adaptations.name and adaptations.metadata: the owner's label and small JSON object, filterable
in GET /adaptations (issue 11 item 7)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Two nullable columns (rows from before have neither) and an index for ``?name=``."""
    with op.batch_alter_table("adaptations") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
        batch.create_index("ix_adaptations_tenant_name", ["tenant_id", "name"])


def downgrade() -> None:
    """Drop the index and the columns."""
    with op.batch_alter_table("adaptations") as batch:
        batch.drop_index("ix_adaptations_tenant_name")
        batch.drop_column("metadata")
        batch.drop_column("name")
