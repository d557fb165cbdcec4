"""The spec that a command's flags describe: a preset, then the track (which may set the vocabulary from the corpus),
then every other change through ``Spec.derive`` (where the derived rules live). The CLI only parses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arena.core.errors import ArenaError
from arena.core.spec import PRESETS, Spec, preset
from arena.db.store import Store
from arena.runner.data import spec_for_track


def build_spec(
    preset_name: str, *, track: str | None = None, data: str | None = None, seeds: Sequence[int] | None = None,
    changes: Mapping[str, Any] | None = None,
) -> Spec:
    """The preset with ``track`` applied (with the corpus at ``data``), then ``seeds`` and ``changes`` derived."""
    spec = preset(preset_name)
    if track is not None and track != spec.track:
        spec = spec_for_track(spec, track, data)
    all_changes = dict(changes or {})
    if seeds is not None:
        all_changes["seeds"] = tuple(seeds)
    return spec.derive(**all_changes) if all_changes else spec


def find_spec_hash(store: Store, ref: str | None) -> str:
    """A spec hash from a label, a hash prefix or a preset name. Default: the spec of the last completed tournament
    (a throwaway ``arena run --seeds 1`` never replaces the main board), else the most recently created spec."""
    specs = store.specs()
    if not specs:
        raise ArenaError("the store has no runs yet; start with: arena tournament --preset smoke")
    if ref is None:
        done = store.tournaments(completed=True)
        return done[-1].spec_hash if done else max(specs, key=lambda s: s.created).hash
    labelled = [s.hash for s in specs if s.label == ref]
    if labelled:
        return labelled[0]
    if ref in PRESETS:
        return PRESETS[ref].hash
    matches = [s.hash for s in specs if s.hash.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{s.hash[:8]} ({s.label or s.name})" for s in specs[:8])
    raise ArenaError(f"--spec '{ref}' matches {len(matches)} specs; known: {known} (all: arena specs)")
