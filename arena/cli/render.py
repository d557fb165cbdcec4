"""Rendering: the leaderboard as a rich table, JSON, CSV or Markdown; loss curves in the terminal."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Group
from rich.table import Table
from rich.text import Text

from arena.orchestration.estimate import rate
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


@dataclass(frozen=True)
class Col:
    """A column of a width-fitted table: its header, cells and how it may give way to a narrow terminal.
    ``keep``: 0 always shown; higher ones are dropped first. ``wrap``: the flexible column (wrapped at spaces,
    at least ``min_width`` wide); every other column keeps its full text (a number or a name is never cut)."""

    header: str
    justify: str
    cells: Sequence[str | Text]
    keep: int = 0
    wrap: bool = False
    min_width: int = 20

    @property
    def width(self) -> int:
        if self.wrap:
            return self.min_width
        words = [cell_len(w) for w in self.header.split()] or [0]
        return max([*words, *(cell_len(c.plain if isinstance(c, Text) else c) for c in self.cells)])


def fitted(cols: Sequence[Col], width: int | None, *, compact: bool = False, **kwargs: Any) -> Table | None:
    """A table of ``cols`` within ``width`` (None: any): columns are dropped, highest ``keep`` first, until the
    full-text columns and the wrapping one's minimum fit; None when even the ``keep`` 0 ones do not. ``compact``:
    no outer edge and one space of padding between columns (two characters of chrome a column, not three)."""
    chosen = list(cols)
    chrome = (lambda n: 2 * (n - 1)) if compact else (lambda n: 3 * n + 1)
    while width is not None and sum(c.width for c in chosen) + chrome(len(chosen)) > width:
        droppable = [c for c in chosen if c.keep > 0]
        if not droppable:
            return None
        chosen.remove(max(droppable, key=lambda c: (c.keep, chosen.index(c))))
    if compact:
        kwargs |= {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "collapse_padding": True,
                   "show_lines": True}
    t = Table(**kwargs)
    for c in chosen:
        t.add_column(c.header, justify=c.justify, no_wrap=not c.wrap, overflow="fold",  # type: ignore[arg-type]
                     min_width=None if c.wrap else c.width)
    for i in range(len(cols[0].cells) if cols else 0):
        t.add_row(*[c.cells[i] for c in chosen])
    return t


def _pm(x: float | None, ci: tuple[float, float] | None, spec: str) -> str:
    """The compact form of a value and its 95% CI: ``3.1796 ±0.0576`` (the larger side, if it is not even)."""
    if x is None or not math.isfinite(x):
        return "—"
    return format(x, spec) + (f" ±{max(ci[1] - x, x - ci[0]):.4f}" if ci else "")


def _league_cols(league: League, narrow: bool) -> list[Col]:
    rows = league.rows
    ranks = [fmt(r.rank, "d") if r.rank else "—" for r in rows]
    if not narrow:
        return [
            Col("#", "right", ranks), Col("", "center", [_mark(r) for r in rows]),
            Col("variant", "left", [Text(r.name) for r in rows]), Col("kind", "left", [r.kind for r in rows]),
            Col("val loss (95% CI)", "right", [f"{fmt(r.mean, '.4f')} {_interval(r.ci, '.4f')}".strip() for r in rows]),
            Col("Δ vs champ (95% CI)", "right", [_delta(r) for r in rows]),
            Col("verdict", "left", [Text(r.verdict) for r in rows], wrap=True),
            Col("params (vs ref)", "right", [_params(r) for r in rows]),
            Col("extra", "right", [_extra(r) for r in rows]),
            Col("tok/s", "right", [fmt(r.tok_s, ",.0f") for r in rows]),
            Col("status", "left", [_status(r) for r in rows]),
        ]
    deviation = ["≠ unmatched" if not r.matched else fmt(r.deviation, "+.2%") for r in rows]
    speed = ["—" if r.tok_s is None else rate(r.tok_s) for r in rows]
    return [
        Col("#", "right", ranks), Col("variant", "left", [Text(f"{r.name} {_mark(r)}".strip()) for r in rows]),
        Col("val loss ±CI", "right", [_pm(r.mean, r.ci, ".4f") for r in rows]),
        Col("Δ vs champ ±CI", "right", [_pm(r.delta, r.delta_ci, "+.4f") for r in rows]),
        Col("verdict", "left", [Text(r.verdict) for r in rows], wrap=True),
        Col("status", "left", [_status(r) for r in rows], keep=1),
        Col("params vs ref", "right", deviation, keep=2), Col("tok/s", "right", speed, keep=3),
        Col("kind", "left", [r.kind for r in rows], keep=4),
        *([Col("extra", "right", [_extra(r) for r in rows], keep=5)] if any(r.extra for r in rows) else []),
    ]


def table(board: Board, width: int | None = None) -> Group:
    """The leaderboard, one table per league, within ``width`` columns (None: as wide as it needs). When the full
    table does not fit, the compact one: Δ and the CIs as ±half-widths, the champion's and the unmatched marks
    beside the name, the verdict wrapped, and the other columns added while they fit (status, parameters, speed,
    kind, extra). No number or name is ever cut to '…'."""
    tables: list[Table] = []
    for league in board.leagues:
        kwargs: dict[str, Any] = {"title": f"arena leaderboard · league {league.name}",
                                  "caption": caption(board, league), "header_style": "bold"}
        t = fitted(_league_cols(league, narrow=False), width, **kwargs)
        if t is None:
            t = fitted(_league_cols(league, narrow=True), width, compact=True, **kwargs)
        if t is None:  # narrower than the essential columns: rich wraps what it must
            t = fitted(_league_cols(league, narrow=True), None, compact=True, **kwargs)
        assert t is not None
        for i, r in enumerate(league.rows):
            if r.is_champion:
                t.rows[i].style = "bold green"
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
