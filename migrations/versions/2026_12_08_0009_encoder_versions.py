"""encoder_versions, encoder_active, item_vectors: switching the text encoder as a migration.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08

A new text encoder changes the text space. ``encoder_versions`` records the encoders
registered for a switch (the shipped one has no row: it is version 0, "the base"),
``encoder_active`` names the active one (no row: the base) and the one a rollback goes back
to, and ``item_vectors`` holds the item vectors of each encoder a switch re-encoded into;
``items.embedding`` stays the active encoder's copy, so readers are unchanged. The cached text
features were already keyed by model (``text_features.model_id``).

The previous release keeps running on the migrated schema: it never reads the new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "encoder_versions",
        sa.Column("version", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("base_model", sa.Text(), nullable=False),
        sa.Column("base_name", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("record", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("activated_at", sa.Double(), nullable=True),
        sa.CheckConstraint(
            "state IN ('registered', 'migrating', 'ready', 'active', 'retired')",
            name=op.f("ck_encoder_versions_state_known"),
        ),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_encoder_versions")),
        sa.UniqueConstraint("name", name=op.f("uq_encoder_versions_name")),
        sa.UniqueConstraint("model_id", name=op.f("uq_encoder_versions_model_id")),
    )
    op.create_table(
        "encoder_active",
        sa.Column("singleton", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("previous", sa.BigInteger(), nullable=True),
        sa.Column("switched_at", sa.Double(), nullable=False),
        sa.CheckConstraint("singleton = 1", name=op.f("ck_encoder_active_one_row")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_encoder_active")),
    )
    op.create_table(
        "item_vectors",
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("text_digest", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("model_id", "item_id", name=op.f("pk_item_vectors")),
    )


def downgrade() -> None:
    op.drop_table("item_vectors")
    op.drop_table("encoder_active")
    op.drop_table("encoder_versions")
