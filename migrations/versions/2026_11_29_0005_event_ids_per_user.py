"""events: event ids are unique per user, not across all users.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

A global unique event_id let one client squat on another user's ids (its event would be
refused as a conflict) and probe them (a duplicate answer says the id exists). Every log that
satisfies the old constraint satisfies the new one, so the upgrade only swaps the index; the
downgrade fails if two users now share an id.
"""

from __future__ import annotations

from typing import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_unique_constraint(
        op.f("uq_events_user_id_event_id"), "events", ["user_id", "event_id"]
    )
    op.drop_constraint(op.f("uq_events_event_id"), "events", type_="unique")


def downgrade() -> None:
    op.create_unique_constraint(op.f("uq_events_event_id"), "events", ["event_id"])
    op.drop_constraint(op.f("uq_events_user_id_event_id"), "events", type_="unique")
