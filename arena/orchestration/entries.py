"""Who competes: entries (a variant file version with frozen hyperparameters), jobs, and the one variant lookup.

``resolve_variant`` is the only way a command turns what a user typed (a file path, a shipped name or a registered
name) into a loaded variant; ``tournament_entries`` picks a tournament's entries from the shipped files, the store's
registrations and its tuned entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arena.core.config import did_you_mean
from arena.core.errors import ArenaError
from arena.core.hparams import HParams, resolve
from arena.core.result import run_key
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.db.store import Store
from arena.runner.check import check_variant
from arena.runner.loader import builtin_variants, load_source, load_variant


@dataclass(frozen=True)
class Entry:
    """A competitor: a variant file version with frozen hyperparameters (defaults, or a tuned set)."""

    name: str
    loaded: LoadedVariant
    hparams: HParams
    origin: str = "file"  # file | tuned

    @classmethod
    def of(cls, loaded: LoadedVariant, hparams: Mapping[str, float] | None = None, name: str | None = None,
           origin: str = "file") -> Entry:
        return cls(name or loaded.name, loaded, resolve(loaded.variant.hparams, hparams, loaded.name), origin)

    def key(self, spec: Spec, seed: int) -> str:
        return run_key(self.loaded.sha256, spec.hash, seed, self.hparams.to_dict())


@dataclass(frozen=True)
class Job:
    entry: Entry
    seed: int

    @property
    def label(self) -> str:
        return f"{self.entry.name} seed {self.seed}"


def known_names(store: Store | None) -> set[str]:
    """Every variant name a lookup can find: the shipped files and, with a store, the registered ones."""
    names = {lv.name for lv in builtin_variants()}
    if store is not None:
        names |= {v.name for v in store.variants()}
    return names


def resolve_variant(ref: str, store: Store | None = None) -> LoadedVariant:
    """A variant by file path, shipped name, or registered name (latest version); an unknown name fails with a
    suggestion. The one lookup every command uses."""
    if ref.endswith(".py") or Path(ref).exists():
        return load_variant(ref)
    shipped = {lv.name: lv for lv in builtin_variants()}
    if ref in shipped:
        return shipped[ref]
    if store is not None:
        row = store.latest_variant(ref)
        if row is not None:
            return load_source(row.source, row.path)
    names = known_names(store)
    raise ArenaError(f"unknown variant '{ref}'{did_you_mean(ref, names)}; see: arena variants list")


def tournament_entries(store: Store | None, spec: Spec, names: Sequence[str] | None = None) -> list[Entry]:
    """Every shipped variant, every registered variant (latest version), and every tuned entry; or the named ones.

    A registered file that shares a shipped variant's name replaces it (it is the newer version the user
    submitted). Every file is validated against the spec first; one bad file stops the tournament before any run.
    ``store`` None (no database yet): the shipped variants only.
    """
    by_name: dict[str, Entry] = {lv.name: Entry.of(lv) for lv in builtin_variants()}
    if store is not None:
        for row in store.variants():
            if row.name in by_name and by_name[row.name].loaded.sha256 == row.sha256:
                continue
            if row.name in by_name and row.path == by_name[row.name].loaded.path:
                continue  # an older registration of a shipped file: the shipped version is current
            by_name[row.name] = Entry.of(load_source(row.source, row.path))
        for e in store.entries():
            base = store.variant(e.variant_sha)
            if base is not None:
                loaded = load_source(base.source, base.path)
                by_name[e.name] = Entry.of(loaded, e.hparams, name=e.name, origin="tuned")
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ArenaError(
                f"--variants: unknown variant '{unknown[0]}'{did_you_mean(unknown[0], by_name)}; "
                "see: arena variants list"
            )
        by_name = {n: by_name[n] for n in names}
    checked: set[str] = set()
    for e in by_name.values():
        if e.loaded.sha256 not in checked:
            check_variant(e.loaded, spec)
            checked.add(e.loaded.sha256)
    return [by_name[k] for k in sorted(by_name)]
