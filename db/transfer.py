"""A whole store as one portable file and back (``arena db export`` / ``arena db import``).

Why: a study spans machines that do not share a disk (a GPU lease that goes back after each call, the next session's
fresh checkout): what carries it is a file. The export holds the results and what they refer to (every run with its
curves, diagnostics and provenance, the variants' sources, entries, specs, tournaments and champion decisions), at
one schema revision; it never holds claims, which are leases of runs in flight on the machine that wrote them.
An import copies all of it, ids included, into a store that holds nothing yet, so the copy is the original: its
memoized runs are found again, its champions and decisions read the same. Merging two stores is not offered: their
ids would collide, and which champion history wins is not a question a copy can answer.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session

from arena.core.errors import ArenaError
from arena.db.models import Base, ClaimModel, UTCDateTime
from arena.db.schema import head_revision

FORMAT = "arena-store-export"
TABLES: tuple[Table, ...] = tuple(t for t in Base.metadata.sorted_tables if t.name != ClaimModel.__tablename__)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


class TransferMixin:
    """``export_to`` and ``import_from`` of ``Store``; they use the Store's one transaction helper."""

    if TYPE_CHECKING:
        _tx: Callable[..., AbstractContextManager[Session]]
        display_url: str
        url: str

    def export_to(self, dest: Path) -> dict[str, int]:
        """Write every exported table to ``dest`` (gzipped JSON), whole or not at all; rows per table."""
        with self._tx() as s:  # one snapshot: a tournament writing meanwhile lands wholly before or after it
            tables = {t.name: [{k: _plain(v) for k, v in row.items()}
                               for row in s.execute(select(t).order_by(*t.primary_key.columns)).mappings()]
                      for t in TABLES}
        payload = {"format": FORMAT, "schema": head_revision(), "tables": tables}
        part = dest.with_name(dest.name + ".part")
        with gzip.open(part, "wt", encoding="utf-8") as f:
            json.dump(payload, f, allow_nan=True)  # a diverged run's curve holds NaN/inf: kept as they are
        part.replace(dest)
        return {name: len(rows) for name, rows in tables.items()}

    def import_tables(self, tables: dict[str, list[dict[str, Any]]], src: Path) -> dict[str, int]:
        """Copy the tables of an export file (``read_export(src)``) into this store, which must hold nothing yet;
        rows per table. One transaction: a refusal or a failure changes nothing."""
        with self._tx(write=True) as s:
            held = {t.name: s.scalar(select(func.count()).select_from(t)) or 0 for t in TABLES}
            if any(held.values()):
                name, n = next((k, v) for k, v in held.items() if v)
                raise ArenaError(f"{src}: the store {self.display_url} already holds data ({n} row(s) in {name}); "
                                 "import into a new database, e.g. --db sqlite:///copy.db")
            for t in TABLES:
                rows = [_typed(t, row) for row in tables.get(t.name, [])]
                if rows:
                    s.execute(insert(t), rows)
            if s.get_bind().dialect.name == "postgresql":  # ids were given: move each sequence past them
                for t in TABLES:
                    for col in t.primary_key.columns:
                        if col.autoincrement is True:
                            s.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', '{col.name}'), "
                                           f"COALESCE((SELECT MAX({col.name}) FROM {t.name}), 0) + 1, false)"))
        return {t.name: len(tables.get(t.name, [])) for t in TABLES}


def read_export(src: Path) -> dict[str, list[dict[str, Any]]]:
    """The tables of an export file, checked: its format, its schema revision, its tables' columns."""
    if not src.is_file():
        raise ArenaError(f"{src}: no such file; make one with `arena db export FILE` where the results are")
    try:
        with gzip.open(src, "rt", encoding="utf-8") as f:
            payload = json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArenaError(f"{src}: not an arena store export ({type(exc).__name__}); make one with "
                         "`arena db export FILE`") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("tables"), dict):
        raise ArenaError(f"{src}: not an arena store export; make one with `arena db export FILE`")
    if payload.get("schema") != head_revision():
        raise ArenaError(f"{src}: exported at schema {payload.get('schema')}, this arena's is {head_revision()}; "
                         "export it again with this arena's version (`arena db upgrade` the source store first)")
    known = {t.name: {c.name for c in t.columns} for t in TABLES}
    for name, rows in payload["tables"].items():
        if name not in known or not isinstance(rows, list):
            raise ArenaError(f"{src}: table '{name}' is not one of the store's; export it again with this arena")
        for row in rows:
            if not isinstance(row, dict) or set(row) != known[name]:
                raise ArenaError(f"{src}: a row of {name} does not have the store's columns; export it again")
    tables: dict[str, list[dict[str, Any]]] = payload["tables"]
    return tables


def _typed(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for col in table.columns:
        if isinstance(col.type, UTCDateTime) and isinstance(out[col.name], str):
            out[col.name] = dt.datetime.fromisoformat(out[col.name])
    return out
