"""Per-user data keys, the erasure record, and a text-feature cache keyed by user.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

``user_keys`` holds each user's data key wrapped by a master key (crypto-shredding, see
storage.encryption); ``erasures`` the audit record of each erasure. The text-feature cache is
recreated with the user in its key: event ids are unique per user only (0005), and an erasure
deletes a user's cached features. It is derived data (re-encoded on demand), so the upgrade
drops its rows rather than guess their users; the downgrade does the same.
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TIMESTAMP

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", TIMESTAMP(timezone=True), server_default=sa.func.now(),
                     nullable=False)


def upgrade() -> None:
    op.create_table(
        "user_keys",
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("key_id", sa.BigInteger(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.Text(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_user_keys_key_id")),
    )
    op.create_index(op.f("ix_user_keys_master_key_id"), "user_keys", ["master_key_id"])
    op.create_table(
        "erasures",
        sa.Column("erasure_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("user_hash", sa.LargeBinary(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("erased_at", sa.Double(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("snapshots", sa.BigInteger(), nullable=False),
        sa.Column("text_features", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("erasure_id", name=op.f("pk_erasures")),
    )
    op.create_index(op.f("ix_erasures_user_hash"), "erasures", ["user_hash"])
    op.drop_table("text_features")
    _text_features(
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("cache_key", sa.Text(), nullable=False),
        pk=("user_id", "cache_key", "model_id"),
    )


def downgrade() -> None:
    op.drop_table("text_features")
    _text_features(sa.Column("event_id", sa.Text(), nullable=False), pk=("event_id", "model_id"))
    op.drop_index(op.f("ix_erasures_user_hash"), table_name="erasures")
    op.drop_table("erasures")
    op.drop_index(op.f("ix_user_keys_master_key_id"), table_name="user_keys")
    op.drop_table("user_keys")


def _text_features(*key_columns: sa.Column, pk: tuple[str, ...]) -> None:
    op.create_table(
        "text_features",
        *key_columns,
        sa.Column("model_id", sa.Text(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("keywords", sa.LargeBinary(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint(*pk, name=op.f("pk_text_features")),
    )
