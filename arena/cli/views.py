"""What the CLI prints for results, leaderboards and ``arena show``; no business logic here."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from arena.cli.render import fmt
from arena.core.diagnosis import shares, warnings
from arena.core.errors import ArenaError
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.orchestration.specs import find_spec_hash


def print_result(console: Console, r: RunResult, spec: Spec | None = None) -> None:
    from arena.cli.render import sparkline

    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("variant", f"{r.variant} (sha {r.variant_sha[:12]})")
    t.add_row("spec · seed", f"{spec.label if spec else r.spec_hash} · seed {r.seed}")
    t.add_row("hparams", ", ".join(f"{k}={v:g}" for k, v in sorted(r.hparams.items())) or "—")
    style = "green" if r.status == "ok" else "red"
    t.add_row("status", f"[{style}]{r.status}[/{style}]" + (f": {r.error.splitlines()[0]}" if r.error else ""))
    t.add_row("final val loss", f"{fmt(r.final_val_loss)} nats · {fmt(r.final_val_bpc)} bits/char"
              + (f" · acc {fmt(r.final_val_acc, '.3f')}" if r.final_val_acc is not None else ""))
    t.add_row("val curve", sparkline([v for _, v in r.val_curve]) + f"  {fmt(r.val_curve[0][1]) if r.val_curve else ''}"
              f" → {fmt(r.val_curve[-1][1]) if r.val_curve else ''}")
    t.add_row("train curve", sparkline([v for _, v in r.train_curve]))
    t.add_row("speed", f"{fmt(r.tokens_per_s, ',.0f')} tok/s steady · warm-up {fmt(r.warmup_s, '.2f')} s · "
              f"wall {fmt(r.wall_s, '.1f')} s · peak {fmt(r.peak_mem_mb, ',.0f')} MB")
    parts = ", ".join(f"{k} {v:,}" for k, v in r.params_by_part.items())
    t.add_row("params", f"{fmt(r.params_total, ',')} ({parts})" if r.params_total else "—")
    t.add_row("backend", ", ".join(f"{k}: {v}" for k, v in r.backend.items()) or "—")
    env = r.env
    t.add_row("env", f"torch {env.get('torch')} · cuda {env.get('cuda')} · {env.get('gpu') or env.get('device')} · "
              f"mode {env.get('mode')} · commit {(env.get('git_commit') or '—')[:10]}")
    if r.diagnostics:
        _diagnostic_rows(t, r.diagnostics)
    console.print(t)
    for line in warnings(r.diagnostics, r.hparams):
        console.print(Text("warning: ", style="bold yellow") + Text(line))


def _diagnostic_rows(t: Table, diags: list[dict[str, Any]]) -> None:
    """The last eval's RWKV share per layer as the gate says and as the amplitudes say (arena.core.diagnosis), the
    amplitude share over training, how far each parameter group moved, and the gradient ratio."""
    from arena.cli.render import sparkline

    last = diags[-1]
    gates = [g.get("mean") for g in last.get("gates", [])]
    amps = shares(last)
    if any(v is not None for v in gates + amps):
        t.add_row("RWKV share/layer", f"gate {' '.join(fmt(g, '.2f') for g in gates)} · amplitude "
                  f"{' '.join(fmt(a, '.3f') for a in amps) or '—'} (step {last.get('step')})")
        over = [shares(d) for d in diags]
        series = [[v for v in (s[i] if i < len(s) else None for s in over) if v is not None] for i in range(len(amps))]
        t.add_row("amplitude/train", "  ".join(f"L{i} {sparkline(v, 12)} {fmt(v[0], '.3f')}→{fmt(v[-1], '.3f')}"
                                               for i, v in enumerate(series) if v))
    else:
        t.add_row("RWKV share/layer", "—")
    moved = last.get("moved") or {}
    if moved:
        def rel(m: dict[str, Any]) -> str:
            return fmt(m["rel"], ".2%") if m.get("rel") is not None else f"from 0 (rms {fmt(m.get('rms'), '.3g')})"

        lr_sum = f" (Σlr {fmt(last.get('lr_sum'), '.3g')})" if last.get("lr_sum") is not None else ""
        t.add_row("moved ‖Δθ‖/‖θ₀‖", " · ".join(f"{k} {rel(m)}" for k, m in moved.items() if "/" not in k) + lr_sum)
        fusion = [f"{k.split('/', 1)[1]} {rel(m)}" for k, m in moved.items() if k.startswith("fusion/")]
        if fusion:  # as plain text: the names come from the variant's module tree
            t.add_row("moved (fusion)", Text(" · ".join(fusion)))
    ratio = last.get("grad_ratio")
    health = "" if ratio is None else (" (healthy)" if 0.33 <= ratio <= 3 else " (outside [0.33, 3])")
    t.add_row("grad RWKV/Mamba", fmt(ratio, ".3f") + health)


def print_leaderboard(console: Console, store: Any, spec_hash: str, form: str) -> None:
    import sys

    from arena.cli import render
    from arena.orchestration.leaderboard import build

    board = build(store, spec_hash)
    if form == "table":
        console.print(render.table(board, console.width))  # columns chosen for the width (issue #16)
        if board.tuning:
            t = Table(title="search runs (tuning seeds, not ranked)")
            for col in ("study", "runs", "ok", "best loss (tuning seed)", "best hparams"):
                t.add_column(col)
            for s in board.tuning:
                hp = ", ".join(f"{k}={v:.3g}" for k, v in (s["best_hparams"] or {}).items())
                t.add_row(s["study"], str(s["runs"]), str(s["ok"]), fmt(s["best_tuning_loss"]), hp)
            console.print(t)
    else:
        text = {"json": render.as_json, "csv": render.as_csv, "markdown": render.as_markdown}[form](board)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def show_target(
    console: Console, store: Any, what: Sequence[str], spec_ref: str | None, plot: Path | None, *,
    plot_kind: str = "curves", vs: str | None = None, as_json: bool = False, curves: Path | None = None,
    note: Console | None = None,
) -> None:
    """``arena show``: run ids (#12) or variant/entry names. Prints their tables (with ``as_json``: JSON only, on
    stdout), writes ``curves`` (.csv or .json) and ``plot``: for run ids their curves; for names their comparison
    on the leaderboard's basis and the tournament seeds (``arena.cli.compare``). Notes go to ``note``."""
    from arena.cli import compare as cmp
    from arena.orchestration.leaderboard import build

    note = note or console
    idents = [w.lstrip("#") for w in what]
    by_id = all(i.isdigit() for i in idents)
    if not by_id and any(i.isdigit() for i in idents):
        raise ArenaError("arena show: give variant names or run ids (#12), not both")
    if by_id:
        shown = {f"#{i}": [_run_by_id(store, i)] for i in dict.fromkeys(idents)}
        spec_hash = next(iter(shown.values()))[0].result.spec_hash
    else:
        spec_hash = find_spec_hash(store, spec_ref)
        shown = {name: _runs_of(store, spec_hash, name) for name in dict.fromkeys(what)}
    spec = store.spec(spec_hash)
    if as_json:
        board = build(store, spec_hash)
        basis = (board.code_digest, board.stack_id)
        seeds = spec.seeds if spec else ()
        runs = [cmp.run_record(s, basis=basis, seeds=seeds) for found in shown.values() for s in found]
        sys.stdout.write(cmp.as_json({"spec_hash": spec_hash, "spec": spec.label if spec else None,
                                      "basis": {"code_digest": basis[0], "stack_id": basis[1]}, "runs": runs}))
    else:
        for name, found in shown.items():  # a run id is shown under its own spec
            own = store.spec(found[0].result.spec_hash) if by_id else spec
            _print_runs(console, name, spec_hash, own, found, detail=by_id or len(shown) == 1)
    if curves is not None:
        n = cmp.write_curves(curves, [s for found in shown.values() for s in found])
        note.print(f"wrote {n} curve points to {curves}", highlight=False)
    if plot is not None:
        out = _plot(store, spec_hash, shown, plot, by_id=by_id, kind=plot_kind, vs=vs)
        note.print(f"wrote {out}", highlight=False)


def _run_by_id(store: Any, ident: str) -> Any:
    stored = store.run(int(ident))
    if stored is None:
        raise ArenaError(f"no run #{ident}; see the run ids with: arena show VARIANT")
    return stored


def _runs_of(store: Any, spec_hash: str, name: str) -> list[Any]:
    """The runs of a variant name, or of an entry name (``gf_mh@tuned-30``: its variant version and hparams)."""
    from arena.core.result import hparams_key

    runs = store.runs(spec_hash)
    found = [r for r in runs if r.result.variant == name]
    entry = None if found else store.entry(name)
    if entry is not None:
        found = [r for r in runs if r.result.variant_sha == entry.variant_sha
                 and hparams_key(r.result.hparams) == hparams_key(entry.hparams)]
    if not found:
        from arena.core.config import did_you_mean

        names = {r.result.variant for r in runs} | {e.name for e in store.entries()}
        raise ArenaError(f"no runs of '{name}' under spec {spec_hash[:8]}{did_you_mean(name, names)}")
    return found


def _print_runs(console: Console, name: str, spec_hash: str, spec: Spec | None, found: list[Any], *,
                detail: bool) -> None:
    """A run id: the whole result. A name: a table of its runs, and with ``detail`` its best non-search run."""
    from arena.cli.render import sparkline

    if name.startswith("#"):
        print_result(console, found[0].result, spec)
        return
    t = Table(title=f"{name} · spec {spec_hash[:8]}")
    for col in ("run", "seed", "status", "val loss", "bits/char", "tok/s", "curve", "study/trial"):
        t.add_column(col)
    for s in sorted(found, key=lambda r: (r.study_name or "", r.result.seed)):
        r = s.result
        t.add_row(f"#{s.id}", str(r.seed), r.status, fmt(r.final_val_loss), fmt(r.final_val_bpc),
                  fmt(r.tokens_per_s, ",.0f"), sparkline([v for _, v in r.val_curve], 24),
                  f"{s.study_name}/{s.trial_number}" if s.study_name else "")
    console.print(t)
    runs = [s.result for s in found if s.study_name is None]
    if runs and detail:
        print_result(console, min(runs, key=lambda r: r.final_val_loss or math.inf), spec)


def _plot(store: Any, spec_hash: str, shown: dict[str, list[Any]], path: Path, *, by_id: bool, kind: str,
          vs: str | None) -> Path:
    from arena.cli import plots
    from arena.cli.compare import compare

    if by_id:
        return plots.plot_curves([s.result for found in shown.values() for s in found], path, title=" ".join(shown))
    return plots.save(plots.comparison_figure(compare(store, spec_hash, list(shown), vs), kind), path)


OUTCOME_STYLE = {"default": "bold", "promoted": "bold green", "kept": "yellow", "holds": "", "none": "", "current": "",
                 "decided": "dim"}


def print_outcome(console: Console, outcome: Any) -> None:
    """A champion decision: its line, styled by kind, and where the champion's artifacts are."""
    style = OUTCOME_STYLE.get(outcome.kind, "")
    console.print(outcome.message, style=style or None, highlight=False)
    if outcome.artifacts is not None:
        console.print(f"  champion artifacts: {outcome.artifacts}", highlight=False)
