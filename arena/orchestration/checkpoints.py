"""Checkpoint retention: after a spec's champion decisions only the champions' runs keep their final weights."""

from __future__ import annotations

import contextlib
from pathlib import Path

from arena.core.spec import Spec
from arena.db.spool import pid_alive
from arena.db.store import Store


def prune_checkpoints(store: Store, spec: Spec, checkpoint_dir: str | Path) -> int:
    """After a spec's champion decisions: delete the checkpoints (``<checkpoint_dir>/<run key>.pt``) of the spec's
    stored runs that belong to no current champion (of any league), and the temporary files of writers that died.
    Nothing a decision or ``arena champions show`` reads is lost: a champion's artifact folder holds its own copy of
    its best seed (``Registry.keep_artifacts``), and the champions' runs keep theirs. Runs not stored yet and other
    specs' runs are left alone (a submit of the same spec deciding at this moment in another process may find its
    checkpoint gone: its champion folder then says it kept none). Returns how many files were deleted."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return 0
    keep: set[str] = set()
    for league in {d.league for d in store.decisions(spec.hash)}:
        champ = store.champion(spec.hash, league)
        if champ is not None:
            keep |= {r.key for r in store.runs(spec.hash, variant_sha=champ.challenger_sha,
                                                hparams=champ.challenger_hparams)}
    removed = 0
    for run in store.runs(spec.hash):
        if run.key not in keep:
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{run.key}.pt").unlink()
                removed += 1
    for tmp in folder.glob("*.pt.tmp-*"):  # runner.loop._save names them <file>.tmp-<pid>
        if not pid_alive(tmp.name.rsplit("-", 1)[1]):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
