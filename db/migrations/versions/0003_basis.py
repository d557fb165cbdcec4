"""0003_basis: runs keyed on the code and stack that computed them; tournaments; spec labels; leagues.

* ``arena_runs.code_digest`` / ``stack_id``: the ``Basis`` of the run (NULL for runs stored before: they are stale,
  since no code digest proves what computed them).
* ``arena_specs.label``: a user's name for a spec (``arena specs label``).
* ``arena_entries.league`` / ``budget``: the tuned league an entry competes in (the same tuning budget for all).
* ``arena_champion_decisions.league`` / ``code_digest`` / ``stack_id`` / ``tournament_id``.
* ``arena_tournaments``: every tournament command, its basis, entries and outcome (the default board is the last
  completed one; a finished tournament run again appends no decision).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_basis"
down_revision: str | None = "0002_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: SQLite adds them without a table copy.
    op.add_column("arena_runs", sa.Column("code_digest", sa.String(64), nullable=True))
    op.add_column("arena_runs", sa.Column("stack_id", sa.String(64), nullable=True))
    op.create_index("ix_arena_runs_spec_basis", "arena_runs", ["spec_hash", "code_digest", "stack_id"])
    op.add_column("arena_specs", sa.Column("label", sa.String(200), nullable=True))
    op.add_column("arena_entries", sa.Column("league", sa.String(100), nullable=True))
    op.add_column("arena_entries", sa.Column("budget", sa.Integer(), nullable=True))
    for name, kind in (("league", sa.String(100)), ("code_digest", sa.String(64)), ("stack_id", sa.String(64)),
                       ("tournament_id", sa.Integer())):
        op.add_column("arena_champion_decisions", sa.Column(name, kind, nullable=True))
    op.create_table(
        "arena_tournaments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("league", sa.String(100), nullable=False),
        sa.Column("code_digest", sa.String(64), nullable=False),
        sa.Column("stack_id", sa.String(64), nullable=False),
        sa.Column("stack_json", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("entries_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("outcome_json", sa.Text(), nullable=True),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_arena_tournaments"),
    )
    op.create_index("ix_arena_tournaments_fingerprint", "arena_tournaments", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_arena_tournaments_fingerprint", table_name="arena_tournaments")
    op.drop_table("arena_tournaments")
    op.drop_index("ix_arena_runs_spec_basis", table_name="arena_runs")
    with op.batch_alter_table("arena_champion_decisions") as batch:
        for name in ("tournament_id", "stack_id", "code_digest", "league"):
            batch.drop_column(name)
    with op.batch_alter_table("arena_entries") as batch:
        batch.drop_column("budget")
        batch.drop_column("league")
    with op.batch_alter_table("arena_specs") as batch:
        batch.drop_column("label")
    with op.batch_alter_table("arena_runs") as batch:
        batch.drop_column("stack_id")
        batch.drop_column("code_digest")
