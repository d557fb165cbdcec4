"""Summarize an Optuna study of `arena tune` as JSON and Markdown (for bench/results/; the storage itself is data).

    python bench/study_report.py --storage PATH/optuna.journal [--study NAME] --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna

from arena.orchestration.search.storage import open_storage
from arena.orchestration.search.tune import summarize


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        last = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "params": dict(t.params),
            "baseline": bool(t.user_attrs.get("baseline")),
            "last_step": last,
            "seconds": t.duration.total_seconds() if t.duration else None,
            "status": t.user_attrs.get("status"),
        })
    return rows


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"# Study {summary['study_name']}", ""]
    lines += [f"- trials by state: {summary['n_trials']}",
              f"- best: {summary['best_value']} (trial #{summary['best_trial']}: {summary['best_params']})",
              f"- baseline (the variant's defaults): {summary['baseline_value']}", ""]
    names = sorted({k for r in rows for k in r["params"]})
    lines.append("| # | state | " + " | ".join(names) + " | val loss | last step | s |")
    lines.append("|---|---|" + "---|" * len(names) + "---|---|---|")
    for r in rows:
        vals = " | ".join(f"{r['params'][n]:.4g}" if n in r["params"] else "" for n in names)
        value = f"{r['value']:.4f}" if r["value"] is not None else ""
        secs = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        tag = " (defaults)" if r["baseline"] else ""
        lines.append(f"| {r['number']}{tag} | {r['state']} | {vals} | {value} | {r['last_step']} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", default=None, help="the study's name (default: the only one in the storage)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    storage = open_storage(args.storage)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    name = args.study or (names[0] if len(names) == 1 else None)
    if name is None:
        raise SystemExit(f"--study: the storage holds {len(names)} studies ({', '.join(names)}); name one")
    study = optuna.load_study(study_name=name, storage=storage)
    summary = summarize(study, args.storage).__dict__
    rows = trial_rows(study)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps({"summary": summary, "trials": rows}, indent=2, default=str))
    text = markdown(summary, rows)
    (out / "study.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
