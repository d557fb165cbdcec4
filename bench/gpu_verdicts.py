"""One device call: a tournament on the GPU under the verdict rules, as a user types it, and what it measured.

    python bench/gpu_verdicts.py --data PATH --out DIR [--variants gf,gf_mh,cp] [--seeds 5] [--steps 500]

What it writes (DIR/verdicts.json, the commands' output in DIR/verdicts.log):
1. ``arena tournament --preset phase2 --variants V --seeds N --steps S --device cuda``: entries matched to the
   reference count, runs keyed on this code and stack, the family-wise decision (selection on the tournament
   seeds, confirmation on fresh ones);
2. ``arena leaderboard --format json`` and the same again as Markdown (the board of that basis);
3. ``arena tournament`` once more: it must train nothing and append no decision (timed);
4. from the store: per run its status, verification, tok/s, parameter count and deviation, the amplitude share and
   gate per layer at the last eval, the movement of each parameter group; and the seed correlation ρ of the final
   losses between entries (what the simulated error rates in docs/champion-policy.md assume);
5. ``arena autotune export`` (carry the tuned configs to the next call).
Run it from outside the checkout (``python -P``) after installing the checkout (bench/gpu_bench.py says how).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is scripts, not a package
from common import arena


def _runs(db: Path) -> list[dict[str, Any]]:
    rows = sqlite3.connect(db).execute(
        "select variant_name, seed, status, final_val_loss, metrics_json from arena_runs order by id").fetchall()
    out = []
    for v, s, st, loss, m in rows:
        metrics = json.loads(m)
        last = (metrics.get("diagnostics") or [{}])[-1]
        out.append({
            "variant": v, "seed": s, "status": st, "final_val_loss": loss,
            "verified": metrics.get("env", {}).get("verified"), "tok_s": metrics.get("tokens_per_s"),
            "wall_s": metrics.get("wall_s"), "params": metrics.get("params_total"),
            "params_target": metrics.get("params_target"),
            "amplitude_share": [a.get("share") for a in last.get("amplitude") or []],
            "gate": [g.get("mean") for g in last.get("gates") or []],
            "moved": {k: (x or {}).get("rel") for k, x in (last.get("moved") or {}).items() if "/" not in k},
            "lr_sum": last.get("lr_sum"),
        })
    return out


def _correlations(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Pearson ρ of the final losses over the seeds two entries share (ok runs only)."""
    by: dict[str, dict[int, float]] = {}
    for r in runs:
        if r["status"] == "ok" and r["final_val_loss"] is not None:
            by.setdefault(r["variant"], {})[r["seed"]] = r["final_val_loss"]
    out = {}
    for a, b in itertools.combinations(sorted(by), 2):
        seeds = sorted(set(by[a]) & set(by[b]))
        if len(seeds) < 3:
            continue
        xs, ys = [by[a][s] for s in seeds], [by[b][s] for s in seeds]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
        sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
        out[f"{a}~{b}"] = round(sxy / (sxx * syy) ** 0.5, 4) if sxx > 0 and syy > 0 else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", default="gf,gf_mh,cp")
    ap.add_argument("--seeds", default="5")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--home", default="/tmp/arena-verdicts-home")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "verdicts.log"
    home = Path(args.home)
    env = dict(os.environ, ARENA_HOME=str(home), ARENA_DATA=args.data, PYTHONUNBUFFERED="1")
    import torch

    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "commit": os.environ.get("ARENA_COMMIT"), "steps": args.steps,
        "variants": args.variants, "seeds": args.seeds, "commands": [],
    }

    def save() -> None:
        (out / "verdicts.json").write_text(json.dumps(report, indent=2))

    flags = ["--preset", "phase2", "--variants", args.variants, "--seeds", args.seeds, "--device", "cuda"]
    if args.steps != 500:
        flags += ["--steps", str(args.steps)]
    report["commands"].append(arena(["tournament", *flags], log, env))
    save()
    db = home / "arena.db"
    if db.exists():
        before = sqlite3.connect(db).execute("select count(*) from arena_runs").fetchone()[0]
        decisions = sqlite3.connect(db).execute("select count(*) from arena_champion_decisions").fetchone()[0]
        report["commands"].append(arena(["tournament", *flags], log, env, timeout=300))
        report["repeat"] = {
            "runs_before": before, "decisions_before": decisions,
            "runs_after": sqlite3.connect(db).execute("select count(*) from arena_runs").fetchone()[0],
            "decisions_after": sqlite3.connect(db).execute("select count(*) from arena_champion_decisions")
            .fetchone()[0],
        }
        report["runs"] = _runs(db)
        report["correlation"] = _correlations(report["runs"])
        report["decisions"] = [
            {"challenger": c, "champion": k, "promoted": bool(p), "by_default": bool(b), "reason": r}
            for c, k, p, b, r in sqlite3.connect(db).execute(
                "select challenger_name, champion_name, promoted, by_default, reason from arena_champion_decisions")
        ]
    save()
    with (out / "leaderboard.json").open("w") as f:
        subprocess.run([sys.executable, "-P", "-m", "arena.cli", "leaderboard", "--format", "json"], stdout=f,
                       env=env, check=False, timeout=120)
    report["commands"].append(arena(["leaderboard", "--format", "markdown"], log, env))
    report["commands"].append(arena(["autotune", "export", str(out / "autotune.tgz"), "--force"], log, env))
    save()
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
