"""Who competes: entries (a variant file version with frozen hyperparameters), jobs, and the one variant lookup.

``resolve_variant`` is the only way a command turns what a user typed (a file path, a shipped name or a registered
name) into a variant; ``tournament_entries`` picks a tournament's entries from the shipped files, the store's
registrations and its tuned entries. Both inspect files in worker processes (``runner.inspection``): the variant's
code never runs in this process, which writes the store.
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
from arena.core.stack import Basis
from arena.core.variant import LoadedVariant
from arena.db.store import Store
from arena.runner.inspection import inspect_one, inspect_sources
from arena.runner.loader import builtin_dir, read_file, shipped_sources

DEFAULT_LEAGUE = "default"


@dataclass(frozen=True)
class Entry:
    """A competitor: a variant file version with frozen hyperparameters (defaults, or a tuned set).

    ``league``: who it competes against. Files with their default hyperparameters play in ``default``; a tuned
    entry plays only in the league of its tuning budget (``tuned-30``: 30 trials), against entries tuned alike."""

    name: str
    loaded: LoadedVariant
    hparams: HParams
    origin: str = "file"  # file | tuned
    league: str = DEFAULT_LEAGUE

    @classmethod
    def of(cls, loaded: LoadedVariant, hparams: Mapping[str, float] | None = None, name: str | None = None,
           origin: str = "file", league: str = DEFAULT_LEAGUE) -> Entry:
        return cls(name or loaded.name, loaded, resolve(loaded.variant.hparams, hparams, loaded.name), origin, league)

    @property
    def matched(self) -> bool:
        """Matched to the reference's parameter count (every entry is, unless its file declares otherwise)."""
        return bool(self.loaded.variant.match_params)

    def key(self, spec: Spec, seed: int, basis: Basis) -> str:
        return run_key(self.loaded.sha256, spec.hash, seed, self.hparams.to_dict(), basis.code, basis.stack)


@dataclass(frozen=True)
class Job:
    entry: Entry
    seed: int

    @property
    def label(self) -> str:
        return f"{self.entry.name} seed {self.seed}"


def known_names(store: Store | None) -> set[str]:
    """Every variant name a lookup can find: the shipped files and, with a store, the registered ones."""
    names = set(shipped_sources())
    if store is not None:
        names |= {v.name for v in store.variants()}
    return names


def resolve_variant(ref: str, store: Store | None, spec: Spec, data_flag: str | None = None) -> LoadedVariant:
    """A variant by file path, shipped name, or registered name (latest version), inspected against ``spec`` in a
    worker process (its code never runs here); an unknown name fails with a suggestion. The one lookup every
    command uses."""
    if ref.endswith(".py") or Path(ref).exists():
        return inspect_one(read_file(ref), ref, spec, data_flag=data_flag).loaded
    shipped = shipped_sources()
    if ref in shipped:
        return inspect_one(shipped[ref], str(builtin_dir() / f"{ref}.py"), spec, data_flag=data_flag).loaded
    if store is not None:
        row = store.latest_variant(ref)
        if row is not None:
            return inspect_one(row.source, row.path, spec, data_flag=data_flag).loaded
    names = known_names(store)
    raise ArenaError(f"unknown variant '{ref}'{did_you_mean(ref, names)}; see: arena variants list")


@dataclass(frozen=True)
class Candidate:
    """A possible entry before its file is inspected: where its source comes from and how it was registered."""

    source: str
    path: str
    hparams: dict[str, float] | None = None  # tuned values; None: the file's defaults
    origin: str = "file"
    league: str = DEFAULT_LEAGUE


def candidates(store: Store | None) -> dict[str, Candidate]:
    """name → candidate: every shipped file, every registered file (latest version; a shipped name is never
    replaced: it is reserved) and every tuned entry (in its league). Nothing is run."""
    found = {name: Candidate(source, str(builtin_dir() / f"{name}.py")) for name, source in shipped_sources().items()}
    if store is None:
        return found
    for row in store.variants():
        if row.name not in found:
            found[row.name] = Candidate(row.source, row.path)
    for e in store.entries():
        base = store.variant(e.variant_sha)
        if base is not None:
            found[e.name] = Candidate(base.source, base.path, dict(e.hparams), "tuned", e.league)
    return found


def tournament_entries(
    store: Store | None, spec: Spec, names: Sequence[str] | None = None, data_flag: str | None = None,
) -> tuple[list[Entry], list[str]]:
    """The entries of a tournament and the refusals: every shipped variant, every registered variant (latest
    version) and every tuned entry, or the named ones. Only those entries are inspected (in worker processes, each
    untrusted file in its own); a file that fails its check is left out with its one-line reason, and the others
    compete. ``store`` None (no database yet): the shipped variants only."""
    found = candidates(store)
    if names:
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ArenaError(
                f"--variants: unknown variant '{unknown[0]}'{did_you_mean(unknown[0], found)}; "
                "see: arena variants list"
            )
        found = {n: found[n] for n in names}
    chosen = sorted(found)
    sources = list(dict.fromkeys((found[n].source, found[n].path) for n in chosen))
    inspected = dict(zip(sources, inspect_sources(sources, spec, data_flag=data_flag), strict=True))
    entries, refused = [], []
    for name in chosen:
        c = found[name]
        result = inspected[(c.source, c.path)]
        if isinstance(result, ArenaError):
            refused.append(f"{name}: {result}")
            continue
        try:
            entries.append(Entry.of(result.loaded, c.hparams, name=name, origin=c.origin, league=c.league))
        except ArenaError as exc:
            refused.append(f"{name}: {exc}")
    return entries, refused
