"""Rendering: the leaderboard as a rich table, JSON, CSV or Markdown; loss curves in the terminal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from arena.orchestration.leaderboard import Board, League, Row

FORMATS = ("table", "json", "csv", "markdown")
SPARK = "▁▂▃▄▅▆▇█"


def fmt(x: float | None, spec: str = ".4f") -> str:
    """A number for a table cell: '—' for a missing or non-finite value."""
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _mark(row: Row) -> str:
    return "👑" if row.is_champion else ("" if row.matched else "≠")


def _status(row: Row) -> str:
    text = " ".join(f"{k}:{v}" for k, v in sorted(row.statuses.items()))
    return text + (f" missing:{','.join(map(str, row.missing))}" if row.missing else "")


def _interval(ci: tuple[float, float] | None, spec: str) -> str:
    return f"[{format(ci[0], spec)}, {format(ci[1], spec)}]" if ci else ""


def _delta(row: Row) -> str:
    if row.delta is None:
        return "—"
    return f"{row.delta:+.4f} {_interval(row.delta_ci, '+.4f')}".strip()


def _params(row: Row) -> str:
    if row.params is None:
        return "—"
    if not row.matched:
        return f"{row.params:,} unmatched"
    return f"{row.params:,} ({row.deviation:+.2%})" if row.deviation is not None else f"{row.params:,}"


def _extra(row: Row) -> str:
    if not row.extra:
        return ""
    return f"{len(row.extra)}: {fmt(sum(row.extra.values()) / len(row.extra), '.4f')}"


def seeds_text(seeds: Sequence[int]) -> str:
    seeds = sorted(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}–{seeds[-1]}"
    return ",".join(map(str, seeds))


def flat_records(board: Board) -> list[dict[str, Any]]:
    out = []
    for r in board.rows:
        out.append({
            "league": r.league, "rank": r.rank, "variant": r.name, "kind": r.kind, "champion": r.is_champion,
            "mean_val_loss": r.mean, "ci95_low": r.ci[0] if r.ci else None, "ci95_high": r.ci[1] if r.ci else None,
            "delta_vs_champion": r.delta, "delta_ci95_low": r.delta_ci[0] if r.delta_ci else None,
            "delta_ci95_high": r.delta_ci[1] if r.delta_ci else None, "verdict": r.verdict,
            "seeds": len(r.losses), "extra_seeds": len(r.extra), "params": r.params,
            "params_target": r.params_target, "params_deviation": r.deviation, "matched": r.matched,
            "tok_s": r.tok_s, "peak_mb": r.peak_mb, "status": _status(r),
        })
    return out


def caption(board: Board, league: League | None = None) -> str:
    spec = board.spec
    label = spec.label if spec else board.spec_hash
    ref = spec.reference_variant if spec else "gf"
    where = board.stack.get("gpu") or board.stack.get("device") or "?"
    parts = [f"spec {label}", f"code {(board.code_digest or '—')[:8]} · stack {(board.stack_id or '—')[:8]} ({where})",
             f"ranked on tournament seeds {seeds_text(board.ranking_seeds)} (every ranked row has them; extra seeds "
             "apart)", f"σ = {fmt(board.noise_floor, '.4f')} nats ({ref}, the decisions' σ)"]
    if league is not None:
        champ = league.champion or "none yet"
        if league.champion and league.champion_by_default:
            champ += " (by default)"
        parts.append(f"league {league.name}: champion {champ}")
    parts.append("Δ = entry − champion in nats, paired 95% CI; ≠ unmatched parameter count")
    if board.stale_runs or board.other_stacks:
        parts.append(f"not shown: {board.stale_runs} stale run(s) from other code, "
                     f"{sum(board.other_stacks.values())} from other stacks")
    return " · ".join(parts)


def table(board: Board) -> Group:
    tables: list[Table] = []
    for league in board.leagues:
        t = Table(title=f"arena leaderboard · league {league.name}", caption=caption(board, league),
                  header_style="bold")
        for col, just in [
            ("#", "right"), ("", "center"), ("variant", "left"), ("kind", "left"), ("val loss (95% CI)", "right"),
            ("Δ vs champ (95% CI)", "right"), ("verdict", "left"), ("params (vs ref)", "right"), ("extra", "right"),
            ("tok/s", "right"), ("status", "left"),
        ]:
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in league.rows:
            style = "bold green" if r.is_champion else None
            t.add_row(
                fmt(r.rank, "d") if r.rank else "—", _mark(r), Text(r.name), r.kind,
                f"{fmt(r.mean, '.4f')} {_interval(r.ci, '.4f')}".strip(), _delta(r), Text(r.verdict), _params(r),
                _extra(r), fmt(r.tok_s, ",.0f"), _status(r), style=style,
            )
        tables.append(t)
    if not tables:
        tables.append(Table(title="arena leaderboard", caption=caption(board)))
    return Group(*tables)


def as_json(board: Board) -> str:
    return json.dumps({
        "spec_hash": board.spec_hash, "spec": board.spec.to_dict() if board.spec else None,
        "code_digest": board.code_digest, "stack_id": board.stack_id, "stack": board.stack,
        "ranking_seeds": list(board.ranking_seeds), "noise_floor": board.noise_floor,
        "stale_runs": board.stale_runs, "other_stacks": board.other_stacks,
        "leagues": [{"league": lg.name, "champion": lg.champion, "champion_by_default": lg.champion_by_default,
                     "rows": [r.to_dict() for r in lg.rows]} for lg in board.leagues],
        "tuning": board.tuning,
    }, indent=2, default=str)


def as_csv(board: Board) -> str:
    buf = io.StringIO()
    records = flat_records(board)
    fields = list(records[0]) if records else ["league", "rank", "variant"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def as_markdown(board: Board) -> str:
    lines: list[str] = []
    for league in board.leagues:
        lines += [f"### League {league.name}", "",
                  "| # | variant | kind | val loss | 95% CI | Δ vs champ | Δ 95% CI | verdict | params (vs ref) "
                  "| tok/s | status |", "|" + "---|" * 11]
        for r in league.rows:
            name = f"**{r.name}** 👑" if r.is_champion else (r.name if r.matched else f"{r.name} ≠")
            delta = "—" if r.delta is None else f"{r.delta:+.4f}"
            lines.append(
                f"| {r.rank or '—'} | {name} | {r.kind} | {fmt(r.mean, '.4f')} | {_interval(r.ci, '.4f') or '—'} | "
                f"{delta} | {_interval(r.delta_ci, '+.4f') or '—'} | {r.verdict} | {_params(r)} | "
                f"{fmt(r.tok_s, ',.0f')} | {_status(r)} |"
            )
        lines += ["", caption(board, league), ""]
    return "\n".join(lines) + "\n"


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
