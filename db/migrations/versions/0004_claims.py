"""0004_claims: a run is claimed in the store before it is trained, so two drivers never train it twice.

``arena_claims``: one row per run key being trained, with its owner (``host:pid:start-time``), the owner's last
heartbeat and when the claim expires (heartbeat + the owner's TTL). ``db.claims`` holds the rules; a row is deleted
when its run is recorded (or given up), and a claim whose owner died is taken over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_claims"
down_revision: str | None = "0003_basis"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "arena_claims",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(300), nullable=False),
        sa.Column("claimed", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_arena_claims"),
    )
    op.create_index("ix_arena_claims_owner", "arena_claims", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_arena_claims_owner", table_name="arena_claims")
    op.drop_table("arena_claims")
