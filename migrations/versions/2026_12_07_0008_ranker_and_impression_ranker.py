"""The learned ranker stored with its item space; impressions record which ranker served.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

The background retrain that builds the collaborative item space now also trains a learned
ranker on the same data; it is saved in the same ``item_spaces`` row (``ranker``, opaque
bytes, null when the retrain trained none) so one version names both and a reader never pairs
vectors with a ranker from another retrain. ``impressions.ranker`` says which ranker ordered a
served list (``'blend'`` or ``'learned:<item space version>'``), so experiments can split by
it; rows written before this revision were all served by the blend.

The previous release keeps running on the migrated schema: ``item_spaces.ranker`` is nullable
and ``impressions.ranker`` has a server default, so its inserts, which name neither column,
still succeed, and its reads select the columns they know.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("item_spaces", sa.Column("ranker", sa.LargeBinary(), nullable=True))
    op.add_column("impressions", sa.Column("ranker", sa.Text(), nullable=False,
                                           server_default=sa.text("'blend'")))


def downgrade() -> None:
    op.drop_column("impressions", "ranker")
    op.drop_column("item_spaces", "ranker")
