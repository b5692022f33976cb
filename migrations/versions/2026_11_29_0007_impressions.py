"""Impressions: what each recommendation response served, for online experiments.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

One row per served list (storage.impression_store), written in batches by the ingress; read by
experiment reports, deleted with the user by an erasure. A new table only: the previous
release neither reads nor writes it, so it keeps running on the migrated schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "impressions",
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("experiment", sa.Text(), nullable=False),
        sa.Column("variant", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.Text(), nullable=False),
        sa.Column("item_space", sa.BigInteger(), nullable=False),
        sa.Column("items", ARRAY(sa.Text()), nullable=False),
        sa.Column("served_at", sa.Double(), nullable=False),
        sa.Column("teams", ARRAY(sa.Text()), nullable=True),
        sa.Column("shown", ARRAY(sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_impressions")),
    )
    op.create_index(op.f("ix_impressions_experiment_served_at"), "impressions",
                    ["experiment", "served_at"])
    op.create_index(op.f("ix_impressions_user_id_served_at"), "impressions",
                    ["user_id", "served_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_impressions_user_id_served_at"), table_name="impressions")
    op.drop_index(op.f("ix_impressions_experiment_served_at"), table_name="impressions")
    op.drop_table("impressions")
