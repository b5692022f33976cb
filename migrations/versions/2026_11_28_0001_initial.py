"""Initial schema: events, snapshots, items.

Revision ID: 0001
Revises:
Create Date: 2026-11-28

Written out table by table (not ``metadata.create_all``) so that this revision stays what it
was when later revisions change :mod:`storage.schema`. Constraint and index names are the
ones the naming convention in :mod:`storage.schema` produces, given final with ``op.f``.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the events, snapshots and items tables."""
    op.create_table(
        "events",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.SmallInteger(), nullable=False),
        sa.Column("occurred_at", sa.Double(), nullable=False),
        sa.Column(
            "recorded_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("payload", postgresql.BYTEA(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "seq", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
        sa.CheckConstraint("seq > 0", name=op.f("ck_events_seq_positive")),
    )
    op.create_index(op.f("ix_events_position"), "events", ["position"], unique=True)
    op.create_index(op.f("ix_events_user_id_occurred_at"), "events", ["user_id", "occurred_at"])

    op.create_table(
        "snapshots",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", postgresql.BYTEA(), nullable=False),
        sa.Column("config_hash", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("user_id", "config_hash", "seq", name=op.f("pk_snapshots")),
    )

    op.create_table(
        "items",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column(
            "attributes",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("embedding", postgresql.BYTEA(), nullable=True),
        sa.Column("model_id", sa.Text(), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
    )


def downgrade() -> None:
    """Drop the three tables (their indexes and constraints go with them)."""
    op.drop_table("items")
    op.drop_table("snapshots")
    op.drop_table("events")
