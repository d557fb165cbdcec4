"""What competes, as the store keeps it: variant versions (with their declared defaults), entries, specs.
``Store`` offers these methods (``CatalogMixin``); callers never see SQL. The store's contract is ``Store``'s
docstring; this module only holds these statements.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from arena.core.errors import ArenaError
from arena.core.spec import Spec
from arena.db.models import EntryModel, RunModel, SpecModel, VariantModel
from arena.db.records import EntryRow, SpecRow, VariantRow, dumps, entry_row, loads, now, variant_row


class CatalogMixin:
    """The variant, entry and spec methods of ``Store``; they use the Store's one transaction helper."""

    if TYPE_CHECKING:
        _tx: Callable[..., AbstractContextManager[Session]]
        _write: Callable[[str, Callable[[Session], Any]], Any]

    # -- variants ----------------------------------------------------------------------------------------------
    def add_variant(self, name: str, kind: str, summary: str, source: str, sha256: str, path: str,
                    defaults: Mapping[str, float] | None = None) -> bool:
        """Remember a variant version (keyed by the sha256 of its source) and the defaults of the hyperparameters
        it declares. True if it was new; repeating is a no-op (the first path/summary seen is kept; defaults are
        filled in where a version stored before had none). ``first_seen`` strictly increases per name."""
        declared = dumps({k: float(v) for k, v in defaults.items()}) if defaults is not None else None

        def work(s: Session) -> bool:
            known = s.get(VariantModel, sha256)
            if known is not None:
                if known.defaults_json is None and declared is not None:
                    known.defaults_json = declared  # one source, one declaration: never a different value
                return False
            stamp = now()
            last = s.scalar(select(func.max(VariantModel.first_seen)).where(VariantModel.name == name))
            if last is not None and stamp <= last:
                stamp = last + timedelta(microseconds=1)
            s.add(
                VariantModel(
                    sha256=sha256, name=name, kind=kind, summary=summary, source=source, path=path, first_seen=stamp,
                    defaults_json=declared,
                )
            )
            s.flush()
            return True

        return self._write(f"variant {name}", work)

    def variant(self, sha256: str) -> VariantRow | None:
        with self._tx() as s:
            row = s.get(VariantModel, sha256)
            return variant_row(row) if row is not None else None

    def latest_variant(self, name: str) -> VariantRow | None:
        """The most recently first-seen version of ``name``."""
        with self._tx() as s:
            row = s.scalars(
                select(VariantModel).where(VariantModel.name == name).order_by(VariantModel.first_seen.desc())
            ).first()
            return variant_row(row) if row is not None else None

    def variants(self) -> list[VariantRow]:
        """The latest version of every variant name, sorted by name."""
        latest = (
            select(VariantModel.name, func.max(VariantModel.first_seen).label("first_seen"))
            .group_by(VariantModel.name)
            .subquery()
        )
        query = (
            select(VariantModel)
            .join(latest, and_(VariantModel.name == latest.c.name, VariantModel.first_seen == latest.c.first_seen))
            .order_by(VariantModel.name)
        )
        with self._tx() as s:
            return [variant_row(r) for r in s.scalars(query)]

    def variant_versions(self, name: str) -> list[VariantRow]:
        """Every version of ``name``, oldest first."""
        with self._tx() as s:
            rows = s.scalars(select(VariantModel).where(VariantModel.name == name).order_by(VariantModel.first_seen))
            return [variant_row(r) for r in rows]

    # -- entries -----------------------------------------------------------------------------------------------
    def add_entry(
        self,
        name: str,
        variant_sha: str,
        hparams: dict[str, float],
        origin: str = "tuned",
        study_name: str | None = None,
        league: str | None = None,
        budget: int | None = None,
    ) -> bool:
        """Freeze a named (variant version, hyperparameters) entry such as ``gf_mh@tuned``. True if new; the same
        content again is a no-op; the same name with other content raises ArenaError (entries are never replaced).
        The variant version must have been added (ArenaError otherwise)."""

        def work(s: Session) -> bool:
            if s.get(VariantModel, variant_sha) is None:
                raise ArenaError(f"entry '{name}': unknown variant version {variant_sha[:12]}; add the variant first")
            old = s.scalars(select(EntryModel).where(EntryModel.name == name)).first()
            if old is None:
                s.add(
                    EntryModel(
                        name=name,
                        variant_sha=variant_sha,
                        hparams_json=dumps(hparams),
                        origin=origin,
                        study_name=study_name,
                        created=now(),
                        league=league,
                        budget=budget,
                    )
                )
                s.flush()
                return True
            new = (variant_sha, loads(dumps(hparams)), origin, study_name, league, budget)
            if (old.variant_sha, loads(old.hparams_json), old.origin, old.study_name, old.league, old.budget) == new:
                return False
            raise ArenaError(
                f"entry '{name}' already exists with other content (variant {old.variant_sha[:12]}, "
                f"hparams {old.hparams_json}); entries are frozen: pick another name"
            )

        return self._write(f"entry {name}", work)

    def entries(self) -> list[EntryRow]:
        """Every entry, sorted by name."""
        with self._tx() as s:
            return [entry_row(r) for r in s.scalars(select(EntryModel).order_by(EntryModel.name))]

    def entry(self, name: str) -> EntryRow | None:
        with self._tx() as s:
            row = s.scalars(select(EntryModel).where(EntryModel.name == name)).first()
            return entry_row(row) if row is not None else None

    # -- specs -------------------------------------------------------------------------------------------------
    def add_spec(self, spec: Spec) -> bool:
        """Remember a spec by its hash. True if new; repeating is a no-op (the first display name is kept)."""

        def work(s: Session) -> bool:
            if s.get(SpecModel, spec.hash) is not None:
                return False
            s.add(SpecModel(hash=spec.hash, name=spec.name, json=dumps(spec.to_dict()), created=now()))
            s.flush()
            return True

        return self._write(f"spec {spec.label}", work)

    def spec(self, spec_hash: str) -> Spec | None:
        """The spec stored under ``spec_hash`` (its ``hash`` equals ``spec_hash``), or None."""
        with self._tx() as s:
            row = s.get(SpecModel, spec_hash)
            return Spec.from_dict(json.loads(row.json)) if row is not None else None

    def specs(self) -> list[SpecRow]:
        """Every spec with its number of stored runs, oldest first."""
        n_runs = select(RunModel.spec_hash, func.count(RunModel.id).label("n")).group_by(RunModel.spec_hash).subquery()
        query = (
            select(SpecModel, func.coalesce(n_runs.c.n, 0))
            .outerjoin(n_runs, n_runs.c.spec_hash == SpecModel.hash)
            .order_by(SpecModel.created, SpecModel.hash)
        )
        with self._tx() as s:
            return [SpecRow(hash=r.hash, name=r.name, created=r.created, n_runs=int(n), label=r.label)
                    for r, n in s.execute(query)]

    def label_spec(self, spec_hash: str, label: str | None) -> None:
        """Give a stored spec a label (None removes it); ArenaError if the spec is unknown or the label is taken."""

        def work(s: Session) -> None:
            row = s.get(SpecModel, spec_hash)
            if row is None:
                raise ArenaError(f"unknown spec {spec_hash[:8]}; see: arena specs")
            if label is not None:
                query = select(SpecModel).where(SpecModel.label == label, SpecModel.hash != spec_hash)
                taken = s.scalars(query).first()
                if taken is not None:
                    raise ArenaError(f"label '{label}' already names spec {taken.hash[:8]}; pick another label")
            row.label = label

        self._write(f"spec label {label}", work)
