"""0001_initial: variants, specs, runs, champion decisions.

Revision files are frozen history: they spell the schema out rather than importing the models, so a later
change to models.py can never rewrite what an old revision did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision: str | None = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """The first schema, one table after another. Longer than usual because a migration is frozen as written."""
    op.create_table(
        "arena_variants",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_arena_variants"),
    )
    op.create_index("ix_arena_variants_name", "arena_variants", ["name"])

    op.create_table(
        "arena_specs",
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("hash", name="pk_arena_specs"),
    )

    op.create_table(
        "arena_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("variant_sha", sa.String(64), nullable=False),
        sa.Column("variant_name", sa.String(200), nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("hparams_json", sa.Text(), nullable=False),
        sa.Column("hparams_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("final_val_loss", sa.Float(), nullable=True),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_arena_runs"),
        sa.UniqueConstraint("key", name="uq_arena_runs_key"),
    )
    op.create_index("ix_arena_runs_spec_variant", "arena_runs", ["spec_hash", "variant_sha"])

    op.create_table(
        "arena_champion_decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("challenger_name", sa.String(200), nullable=False),
        sa.Column("challenger_sha", sa.String(64), nullable=False),
        sa.Column("challenger_hparams_json", sa.Text(), nullable=False),
        sa.Column("champion_name", sa.String(200), nullable=True),
        sa.Column("champion_sha", sa.String(64), nullable=True),
        sa.Column("champion_hparams_json", sa.Text(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=False),
        sa.Column("by_default", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_arena_champion_decisions"),
    )
    op.create_index("ix_arena_champion_decisions_spec_hash", "arena_champion_decisions", ["spec_hash"])


def downgrade() -> None:
    op.drop_table("arena_champion_decisions")
    op.drop_table("arena_runs")
    op.drop_table("arena_specs")
    op.drop_table("arena_variants")
