"""0002_search: tuned entries (``arena_entries``) and the Optuna study/trial a run came from."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_search"
down_revision: str | None = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite can ALTER TABLE ADD COLUMN for nullable columns, so no batch (table copy) is needed.
    op.add_column("arena_runs", sa.Column("study_name", sa.String(200), nullable=True))
    op.add_column("arena_runs", sa.Column("trial_number", sa.Integer(), nullable=True))
    op.create_table(
        "arena_entries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("variant_sha", sa.String(64), nullable=False),
        sa.Column("hparams_json", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(50), nullable=False),
        sa.Column("study_name", sa.String(200), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["variant_sha"], ["arena_variants.sha256"], name="fk_arena_entries_variant_sha_arena_variants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_arena_entries"),
        sa.UniqueConstraint("name", name="uq_arena_entries_name"),
    )


def downgrade() -> None:
    op.drop_table("arena_entries")
    with op.batch_alter_table("arena_runs") as batch:
        batch.drop_column("trial_number")
        batch.drop_column("study_name")
