"""An index on items.updated_at: catalog deltas read what changed, not the catalog.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

The catalog's version is the newest ``updated_at`` and a delta is the rows written after a
version (:meth:`storage.postgres_catalog.PostgresCatalogStore.changed_since`); without the
index both scan every item, which at a million items is what each upsert paid.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_items_updated_at", "items", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_items_updated_at", table_name="items")
