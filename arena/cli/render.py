"""Rendering: the leaderboard as a rich table, JSON, CSV or Markdown; loss curves in the terminal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.table import Table

from arena.orchestration.leaderboard import Board, Row

FORMATS = ("table", "json", "csv", "markdown")
SPARK = "▁▂▃▄▅▆▇█"


def fmt(x: float | None, spec: str = ".4f") -> str:
    """A number for a table cell: '—' for a missing or non-finite value."""
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _mark(row: Row) -> str:
    return "👑" if row.is_champion else ("≈" if row.tied else "")


def _status(row: Row) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(row.statuses.items()))


def flat_records(board: Board) -> list[dict[str, Any]]:
    out = []
    for r in board.rows:
        out.append({
            "rank": r.rank, "variant": r.name, "kind": r.kind, "champion": r.is_champion, "tied": r.tied,
            "mean_val_loss": r.mean, "ci95_low": r.ci[0] if r.ci else None, "ci95_high": r.ci[1] if r.ci else None,
            "delta_vs_champion_pct": r.delta_pct, "p_vs_champion": r.p_value, "seeds": r.n_seeds,
            "params": r.params, "tok_s": r.tok_s, "peak_mb": r.peak_mb, "status": _status(r),
        })
    return out


def caption(board: Board) -> str:
    spec = board.spec
    label = spec.label if spec else board.spec_hash
    noise = fmt(board.noise_floor, ".4f")
    champ = board.champion or "none yet"
    if board.champion and board.champion_by_default:
        champ += " (by default)"
    ref = spec.reference_variant if spec else "gf"
    return (f"spec {label} · noise floor σ = {noise} nats ({ref} seed-to-seed std) · champion: {champ}"
            " · p: one-sided, better than the champion · ≈ tied (two-sided p ≥ 0.05)")


def table(board: Board) -> Table:
    t = Table(title="arena leaderboard", caption=caption(board), header_style="bold")
    for col, just in [
        ("#", "right"), ("", "center"), ("variant", "left"), ("kind", "left"), ("val loss (95% CI)", "right"),
        ("Δ vs champ", "right"), ("p", "right"), ("seeds", "right"), ("params", "right"), ("tok/s", "right"),
        ("peak MB", "right"), ("status", "left"),
    ]:
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in board.rows:
        ci = f" [{fmt(r.ci[0], '.4f')}, {fmt(r.ci[1], '.4f')}]" if r.ci else ""
        delta = "—" if r.delta_pct is None else f"{r.delta_pct:+.2f}%"
        style = "bold green" if r.is_champion else None
        t.add_row(
            fmt(r.rank, "d") if r.rank else "—", _mark(r), r.name, r.kind, f"{fmt(r.mean, '.4f')}{ci}", delta,
            fmt(r.p_value, ".3g"), str(r.n_seeds), fmt(r.params, ","), fmt(r.tok_s, ",.0f"),
            fmt(r.peak_mb, ",.0f"), _status(r), style=style,
        )
    return t


def as_json(board: Board) -> str:
    return json.dumps({
        "spec_hash": board.spec_hash, "spec": board.spec.to_dict() if board.spec else None,
        "champion": board.champion, "champion_by_default": board.champion_by_default,
        "noise_floor": board.noise_floor, "rows": [r.to_dict() for r in board.rows], "tuning": board.tuning,
    }, indent=2, default=str)


def as_csv(board: Board) -> str:
    buf = io.StringIO()
    records = flat_records(board)
    fields = list(records[0]) if records else ["rank", "variant"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def as_markdown(board: Board) -> str:
    head = "| # | variant | kind | val loss | 95% CI | Δ vs champ | p | seeds | params | tok/s | status |"
    lines = [head, "|" + "---|" * 11]
    for r in board.rows:
        name = f"**{r.name}** 👑" if r.is_champion else (f"{r.name} ≈" if r.tied else r.name)
        ci = f"[{fmt(r.ci[0], '.4f')}, {fmt(r.ci[1], '.4f')}]" if r.ci else "—"
        delta = "—" if r.delta_pct is None else f"{r.delta_pct:+.2f}%"
        lines.append(
            f"| {r.rank or '—'} | {name} | {r.kind} | {fmt(r.mean, '.4f')} | {ci} | {delta} | "
            f"{fmt(r.p_value, '.3g')} | {r.n_seeds} | {fmt(r.params, ',')} | {fmt(r.tok_s, ',.0f')} | {_status(r)} |"
        )
    return "\n".join(lines) + f"\n\n{caption(board)}\n"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line terminal chart of a curve (resampled to ``width`` points)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return ""
    if len(vals) > width:
        vals = [vals[int(i * len(vals) / width)] for i in range(width)]
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in vals)
