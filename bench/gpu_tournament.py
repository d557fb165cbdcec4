"""The Phase-2 tournament's speed on one GPU, as a user types it, and what packing changes (issue #15).

    python -P bench/gpu_tournament.py --data PATH --out DIR --phase cold|warm [--variants ...] [--seeds 0,1,2]

``cold`` (a fresh machine: no Triton autotune results yet):
  1. the multi-graph check: two CUDA graphs in one process (capture A, capture B, replay A), each on its own
     capture stream as ``runner.train`` now does, and on the shared default stream as before (in a child: the
     failure is an illegal memory access that poisons the process);
  2. ``arena tournament --preset phase2 --variants V --seeds S --device cuda`` (``--pack auto``), timed: wall_s_cold;
  3. ``arena autotune export`` into DIR (carry it to the next machine).
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


GRAPHS = r'''
import sys, torch
from arena.core.spec import PRESETS
from arena.model.lm import build_model
from arena.runner.loader import builtin
from arena.runner.evaluate import loss_of
own = sys.argv[1] == "own"
spec = PRESETS["phase2"]
def graph_of(seed):
    m = build_model(spec.dims, builtin("gf").variant, None, seed=seed).cuda()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, capturable=True)
    x = torch.randint(0, spec.dims.vocab_size, (64, 64), device="cuda")
    for _ in range(3):
        opt.zero_grad(set_to_none=False); loss_of(m(x), x).backward(); opt.step()
    g = torch.cuda.CUDAGraph(); stream = torch.cuda.Stream() if own else None
    with torch.cuda.graph(g, stream=stream):
        opt.zero_grad(set_to_none=False); loss = loss_of(m(x), x); loss.backward(); opt.step()
    return g, loss, stream
a = graph_of(0)
b = graph_of(1)
for _ in range(5):
    a[0].replay(); b[0].replay()
torch.cuda.synchronize()
print("ok", float(a[1]), float(b[1]))
'''


def graphs_check(env: dict[str, str]) -> dict[str, str]:
    out = {}
    for mode in ("own", "shared"):
        proc = subprocess.run([sys.executable, "-P", "-c", GRAPHS, mode], capture_output=True, text=True, env=env,
                              timeout=150, check=False)
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        out[mode] = tail[-1][:300] if tail else f"rc {proc.returncode}"
    return out


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
    ap.add_argument("--phase", choices=["cold", "warm", "compare"], required=True)
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="500")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"tournament-{args.phase}.log"
    env = dict(os.environ, ARENA_DATA=args.data, ARENA_HOME=str(out / f"home-{args.phase}"))
    base = ["tournament", "--preset", "phase2", "--variants", args.variants, "--seeds", args.seeds,
            "--steps", args.steps, "--device", "cuda"]
    report: dict[str, Any] = {"phase": args.phase, "date": dt.date.today().isoformat(), "commands": []}
    if args.phase == "cold":
        db = out / "cold.db"
        report["commands"].append(arena([*base, "--db", f"sqlite:///{db}"], log, env))
        report["runs"] = runs(db)
        report["graphs"] = graphs_check(env)  # after the tournament: its kernels are tuned by then
        report["commands"].append(arena(["autotune", "export", str(out / "autotune.tgz"), "--force"], log, env))
    elif args.phase == "warm":
        db = out / "warm.db"
        report["commands"].append(arena([*base, "--db", f"sqlite:///{db}"], log, env))
        report["runs_warm"] = runs(db)
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
