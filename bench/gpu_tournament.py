"""The Phase-2 tournament's speed on one GPU, as a user types it, and what packing changes (issue #15).

    python -P bench/gpu_tournament.py --data PATH --out DIR --phase cold|warm [--variants ...] [--seeds 0,1,2]

``cold`` (a fresh machine: no Triton autotune results yet):
  1. ``arena tournament --preset phase2 --variants V --seeds S --device cuda`` (``--pack auto``), timed: wall_s_cold;
  2. ``arena autotune export`` into DIR (carry it to the next machine).
``warm`` (the same machine, right after): the same tournament into a new store (wall_s_warm), the same with
``--workers 2``, then gf and cp again with ``--pack 1`` (solo runs of the same seeds: packed vs solo), the per-trial
table from the stores, and DIR/tournament.json with the keys issue #15 names.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = "hy,gf,cp,ws,rf,gf_mh,gf_rh"
TOKENS_PER_STEP = 64 * 64  # phase2: batch 64 × seq 64


def arena(args: list[str], log: Path, env: dict[str, str], timeout: float = 560) -> dict[str, Any]:
    t0 = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n$ arena {' '.join(args)}\n")
        f.flush()
        try:
            rc = subprocess.run([sys.executable, "-P", "-m", "arena.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=env, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return {"args": args, "rc": rc, "seconds": round(time.monotonic() - t0, 1)}


def runs(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    rows = sqlite3.connect(db).execute(
        "select variant_name, seed, status, final_val_loss, metrics_json from arena_runs order by id").fetchall()
    out = []
    for v, s, st, loss, m in rows:
        metrics = json.loads(m)
        env = metrics.get("env", {})
        out.append({
            "variant": v, "seed": s, "status": st, "final_val_loss": loss, "verified": env.get("verified"),
            "tok_s": metrics.get("tokens_per_s"), "wall_s": metrics.get("wall_s"),
            "warmup_s": metrics.get("warmup_s"), "steps": metrics.get("steps_done"),
            "pack": env.get("pack", {}).get("size", 1), "aggregate_tok_s": env.get("pack", {}).get("aggregate_tok_s"),
            "peak_mem_mb": metrics.get("peak_mem_mb"), "timing": env.get("timing", {}),
        })
    return out


def training_seconds(rows: list[dict[str, Any]]) -> float:
    """Σ over packs of the timed training (steps after warm-up × tokens / the pack's rate): GPU time spent training."""
    seen, total = set(), 0.0
    for r in rows:
        key = (r["variant"], r["wall_s"])  # one pack: its members share the wall time
        if key in seen or not r["tok_s"]:
            continue
        seen.add(key)
        total += (r["steps"] - 3) * TOKENS_PER_STEP / r["tok_s"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", choices=["cold", "warm", "compare", "engines"], required=True)
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="500")
    ap.add_argument("--limit", type=float, default=560, help="seconds the tournament may take (the call's limit)")
    ap.add_argument("--pack", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"tournament-{args.phase}.log"
    env = dict(os.environ, ARENA_DATA=args.data, ARENA_HOME=str(out / f"home-{args.phase}"))
    base = ["tournament", "--preset", "phase2", "--variants", args.variants, "--seeds", args.seeds,
            "--steps", args.steps, "--device", "cuda", "--pack", args.pack]
    report: dict[str, Any] = {"phase": args.phase, "date": dt.date.today().isoformat(), "commands": []}
    if args.phase == "cold":
        db = out / "cold.db"
        report["commands"].append(arena([*base, "--db", f"sqlite:///{db}"], log, env, args.limit))
        report["runs"] = runs(db)
        report["commands"].append(arena(["autotune", "export", str(out / "autotune.tgz"), "--force"], log, env))
    elif args.phase == "warm":
        db = out / "warm.db"
        report["commands"].append(arena([*base, "--db", f"sqlite:///{db}"], log, env, args.limit))
        report["runs_warm"] = runs(db)
    elif args.phase == "engines":  # issue #17: the same tournament through the local engine, then through Ray
        for engine in ("local", "ray"):
            db = out / f"engine_{engine}.db"
            cmd = arena([*base, "--engine", engine, "--db", f"sqlite:///{db}"], log, env, args.limit)
            report["commands"].append(cmd)
            rows = runs(db)
            report[f"runs_{engine}"] = rows
            report[f"wall_s_{engine}"] = cmd["seconds"]
            report[f"ok_{engine}"] = sum(r["status"] == "ok" for r in rows)
        if report["ok_local"] and report["ok_local"] == report["ok_ray"]:
            report["ray_overhead"] = report["wall_s_ray"] / report["wall_s_local"] - 1
            same = {(r["variant"], r["seed"]): r["final_val_loss"] for r in report["runs_local"]}
            report["max_abs_loss_diff"] = max(abs(r["final_val_loss"] - same[(r["variant"], r["seed"])])
                                              for r in report["runs_ray"] if (r["variant"], r["seed"]) in same)
    else:  # compare: after warm, on the same machine, with warm.db brought back into DIR
        db = out / "warm_workers2.db"
        report["commands"].append(arena([*base, "--workers", "2", "--db", f"sqlite:///{db}"], log, env))
        report["runs_warm_workers2"] = runs(db)
        solo_db = out / "warm.db"  # the same store: pack-1 runs are another stack, stored beside the packed ones
        solo_args = ["tournament", "--preset", "phase2", "--variants", "gf,cp", "--seeds", args.seeds, "--steps",
                     args.steps, "--device", "cuda", "--pack", "1", "--db", f"sqlite:///{solo_db}"]
        report["commands"].append(arena(solo_args, log, env))
        every = runs(solo_db)
        ok = [r for r in every if r["final_val_loss"]]
        packed = {(r["variant"], r["seed"]): r["final_val_loss"] for r in ok if r["pack"] > 1}
        solo = {(r["variant"], r["seed"]): r["final_val_loss"] for r in ok if r["pack"] == 1}
        diffs = [packed[k] - solo[k] for k in packed if k in solo]
        report["packed_vs_solo"] = {"pairs": len(diffs), "diffs": diffs,
                                    "max_abs_diff": max((abs(d) for d in diffs), default=None),
                                    "mean_diff": statistics.mean(diffs) if diffs else None}
        report["runs_solo"] = [r for r in every if r["pack"] == 1]
    (out / f"tournament-{args.phase}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if not k.startswith("runs")}, indent=1)[:6000])


if __name__ == "__main__":
    main()
