"""events.item_id for popularity queries; the text_features cache.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

``item_id`` is not back-filled (payloads are msgpack, opaque to SQL), so
rows written before this revision keep NULL; popularity counts only events written after it.
Portrait had no deployments before this revision, so nothing is lost in practice.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("item_id", sa.Text(), nullable=True))
    op.create_index(op.f("ix_events_item_id_occurred_at"), "events", ["item_id", "occurred_at"])
    op.create_table(
        "text_features",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("keywords", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("event_id", "model_id", name=op.f("pk_text_features")),
    )


def downgrade() -> None:
    op.drop_table("text_features")
    op.drop_index(op.f("ix_events_item_id_occurred_at"), table_name="events")
    op.drop_column("events", "item_id")
