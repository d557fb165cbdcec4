"""0005_defaults: each variant version records the defaults of the hyperparameters it declares.

``arena_variants.defaults_json``: ``{name: default}`` as the file declares them (NULL for versions stored before;
filled in the next time the version is registered). The leaderboard's default league is the runs of a version
with exactly these values: a tuned entry whose best trial is the defaults shares those runs, and no other tuned
group is ever mistaken for a default one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_defaults"
down_revision: str | None = "0004_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("arena_variants", sa.Column("defaults_json", sa.Text(), nullable=True))  # no table copy in SQLite


def downgrade() -> None:
    with op.batch_alter_table("arena_variants") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("defaults_json")
