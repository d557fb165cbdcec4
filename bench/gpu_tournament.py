"""The Phase-2 tournament's speed on one GPU, as a user types it, and what packing changes (issue #15).

    python -P bench/gpu_tournament.py --data PATH --out DIR --phase PHASE [--variants ...] [--seeds 0,1,2]

Phases, in the order one device call runs them (each writes DIR/tournament-PHASE.{json,log}):
  cold     a fresh machine (no Triton autotune results): the tournament (``--pack auto``), timed; then
           ``arena autotune export`` into DIR (carry it to the next machine as .tc/autotune.tgz)
  warm     the same tournament into a new store (wall_s_warm, the per-run env.timing); the autotune cache exported
           again (shapes the cold call did not reach)
  repeat   the same again in fresh processes: every run's train curve against warm's (the same bits?)
  compare  ``--workers 2``, then gf and cp with ``--pack 1`` beside warm's packed runs (packed vs solo)
  engines  the tournament's runs through ``--engine local`` and ``--engine ray`` (``ray_half``: Ray with
           ``--gpu-share 0.5``, two slots a GPU) (issue #17; a ratio only when all end)
  tune     ``arena tune gf --trials T --pack T`` then ``--pack 1`` (issue #19's lever): seconds per trial each way,
           and the baseline trial (the defaults, trial 0 of both) packed against alone
  summary  DIR/<date>-<gpu>-tournament.json with the keys issue #15 names, from the phases' reports
``--device cpu --preset smoke --steps 20`` checks this script itself on a CPU in a minute. Every phase uses DIR/home
as its arena home (one user on one machine: each file is inspected once); it holds the champions' checkpoints, so
remove it before the call's output goes back.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is scripts, not a package
from common import arena

VARIANTS = "hy,gf,cp,ws,rf,gf_mh,gf_rh"


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


def curves(db: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Each ok run's train curve and final val loss, keyed (variant, seed)."""
    if not db.exists():
        return {}
    out = {}
    rows = sqlite3.connect(db).execute(
        "select variant_name, seed, status, final_val_loss, metrics_json from arena_runs order by id").fetchall()
    for v, seed, status, loss, m in rows:
        if status == "ok":
            out[(v, seed)] = {"final": loss, "train": [x for _, x in json.loads(m)["train_curve"]]}
    return out


def repeats(first: dict[tuple[str, int], dict[str, Any]], second: dict[tuple[str, int], dict[str, Any]]) -> dict:
    """Per run in both: the first step whose train loss differs (None: every step the same bits) and the final
    val losses' difference."""
    runs_ = []
    for key in sorted(set(first) & set(second)):
        a, b = first[key]["train"], second[key]["train"]
        step = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        runs_.append({"variant": key[0], "seed": key[1], "first_differing_step": step,
                      "final_diff": second[key]["final"] - first[key]["final"]})
    return {"pairs": len(runs_), "identical": sum(r["first_differing_step"] is None and r["final_diff"] == 0
                                                  for r in runs_), "runs": runs_}


def gpu_slug() -> str:
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30, check=False).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "cpu"
    return name.split()[-1].lower()


def summary(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The keys issue #15 names, from the phases' reports in ``out`` (a phase not run gives None)."""
    def load(phase: str) -> dict[str, Any]:
        path = out / f"tournament-{phase}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    cold, warm, compare = load("cold"), load("warm"), load("compare")
    rows = warm.get("runs_warm", [])
    done = [r for r in rows if r["status"] == "ok"]
    wall_warm = warm["commands"][0]["seconds"] if warm.get("commands") else None
    wall_cold = cold["commands"][0]["seconds"] if cold.get("commands") else None
    complete = bool(warm.get("commands")) and warm["commands"][0]["rc"] == 0
    train_s = training_seconds(rows)
    return {
        "gpu": gpu_slug(), "commit": os.environ.get("ARENA_COMMIT"), "variants": args.variants.split(","),
        "seeds": [int(s) for s in args.seeds.split(",")], "steps": int(args.steps),
        "wall_s_warm": wall_warm if complete else None, "wall_s_cold": wall_cold if cold.get("commands") and
        cold["commands"][0]["rc"] == 0 else None,
        "runs_ok_warm": len(done), "runs_warm": len(rows),
        "trial_tok_s": statistics.median([r["tok_s"] for r in done]) if done else None,
        "aggregate_tok_s": statistics.median([r["aggregate_tok_s"] or r["tok_s"] for r in done]) if done else None,
        "outside_training_frac": (1 - train_s / wall_warm) if complete and wall_warm else None,
        "packed_vs_solo_max_abs_diff": compare.get("packed_vs_solo", {}).get("max_abs_diff"),
        "packed_vs_solo_mean_diff": compare.get("packed_vs_solo", {}).get("mean_diff"),
        "timing_medians": {k: statistics.median([r["timing"][k] for r in done if r["timing"].get(k) is not None])
                           for k in ("startup_s", "build_s", "capture_s", "train_s", "eval_s", "final_s", "check_s")
                           if any(r["timing"].get(k) is not None for r in done)},
        "build_part_medians": {k: statistics.median([r["timing"]["build_parts"][k] for r in done
                                                     if k in r["timing"].get("build_parts", {})])
                               for k in ("data_s", "models_s", "pack_s", "optimizer_s", "eval_setup_s")
                               if any(k in r["timing"].get("build_parts", {}) for r in done)},
        # The clean check's parts (set-up of its process, then per run: build, recompute over the val split, pairs)
        "check_part_medians": {k: statistics.median([r["timing"]["check_parts"][k] for r in done
                                                     if k in r["timing"].get("check_parts", {})])
                               for k in ("setup_s", "build_s", "recompute_s", "pairs_s")
                               if any(k in r["timing"].get("check_parts", {}) for r in done)},
    }


def entry_check_s(text: str) -> float | None:
    """The entry check's duration a tournament printed ("checking the entries …" then "done in M:SS"); None when
    it found every file in the cache (no line)."""
    found = re.search(r"checking the entries[^\n]*\n(?:[^\n]*\n)*?done in (\d+):(\d+)", text)
    return 60.0 * int(found.group(1)) + int(found.group(2)) if found else None


def training_seconds(rows: list[dict[str, Any]]) -> float:
    """Σ over packs of the timed training (``env.timing.train_s``; the members of a pack share it): GPU time
    spent training."""
    seen, total = set(), 0.0
    for r in rows:
        key = (r["variant"], r["wall_s"])  # one pack: its members share the wall time
        if key in seen or not r["timing"].get("train_s"):
            continue
        seen.add(key)
        total += r["timing"]["train_s"]
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--phase", required=True,
                    choices=["cold", "warm", "compare", "engines", "repeat", "tune", "summary"])
    ap.add_argument("--preset", default="phase2")
    ap.add_argument("--device", default="cuda", help="cpu: a quick check of this script itself (with --preset smoke)")
    ap.add_argument("--variants", default=VARIANTS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", default="500")
    ap.add_argument("--limit", type=float, default=560, help="seconds the tournament may take (the call's limit)")
    ap.add_argument("--pack", default="auto")
    ap.add_argument("--engines", default="local,ray", help="engines phase: which, in order (local, ray, ray_half)")
    ap.add_argument("--warmup", default="", help="engines phase: variants a local command trains first, unmeasured")
    # Fewer steps compile the same kernels (same shapes, same eval and check) in a fraction of the time: the warm-up
    # then ends by itself instead of being cut mid-compile (2026-12-03: a cut ptxas left a kernel to compile again).
    ap.add_argument("--warmup-steps", default="", help="engines phase: the warm-up's steps (default: --steps)")
    ap.add_argument("--warmup-limit", type=float, default=150, help="seconds the warm-up may take (beside --limit)")
    ap.add_argument("--trials", type=int, default=6, help="tune phase: trials each way (one pack of them)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"tournament-{args.phase}.log"
    # One arena home for every phase, as one user on one machine has: its inspection cache checks each file once.
    env = dict(os.environ, ARENA_DATA=args.data, ARENA_HOME=str(out / "home"))
    def tournament(variants: str, steps: str = args.steps) -> list[str]:
        return ["tournament", "--preset", args.preset, "--variants", variants, "--seeds", args.seeds,
                "--steps", steps, "--device", args.device, "--pack", args.pack]

    base = tournament(args.variants)
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
        # Again after a warm tournament: the carried cache may lack shapes only a later phase uses (2026-12-02: the
        # clean check's first recompute autotuned 26 s, its shapes never reached the cold call's export).
        report["commands"].append(arena(["autotune", "export", str(out / "autotune.tgz"), "--force"], log, env))
    elif args.phase == "engines":  # issue #17: the same tournament through the local engine, then through Ray
        # The runs only: no fresh seeds to decide on (max_seeds = the tournament's), and a third of the call each.
        # A slot (local worker or Ray actor) trains its next group while the last is checked, on either engine.
        runs_only = ["--set", f"max_seeds={len(args.seeds.split(','))}"]
        known = {"local": ["--engine", "local"], "ray": ["--engine", "ray"],
                 "ray_half": ["--engine", "ray", "--gpu-share", "0.5"]}
        engines = [(name, known[name]) for name in args.engines.split(",")]
        if args.warmup:  # a fresh machine JIT-compiles what the carried autotune cache lacks: not in either engine
            wcmd = [*tournament(args.warmup, args.warmup_steps or args.steps), *runs_only,
                    "--db", f"sqlite:///{out / 'warmup.db'}"]
            report["warmup"] = arena(wcmd, log, dict(env, ARENA_HOME=str(out / "home_warmup")), args.warmup_limit)
        t_start = time.monotonic()
        for i, (name, flags) in enumerate(engines):
            db = out / f"engine_{name}.db"
            share = (args.limit - (time.monotonic() - t_start)) / (len(engines) - i)  # what the earlier ones left
            start = log.stat().st_size if log.exists() else 0
            # Each engine its own arena home: both commands check the entry files in full, so their whole wall times
            # compare (a local worker, and Ray's start and actors, start during that check).
            own = dict(env, ARENA_HOME=str(out / f"home_{name}"))
            cmd = arena([*base, *runs_only, *flags, "--db", f"sqlite:///{db}"], log, own, share)
            report["commands"].append(cmd)
            rows = runs(db)
            report[f"runs_{name}"] = rows
            # Compared on the whole command (entry check included) and on the wall time after the check.
            check = entry_check_s(log.read_bytes()[start:].decode(errors="replace"))
            report[f"entry_check_s_{name}"] = check
            report[f"wall_s_{name}"] = cmd["seconds"] - (check or 0.0)
            report[f"ok_{name}"] = sum(r["status"] == "ok" for r in rows)
        finished = all(c["rc"] == 0 for c in report["commands"])
        report["measured"] = finished  # a ratio of two commands cut by the same limit says nothing
        same = {(r["variant"], r["seed"]): r["final_val_loss"] for r in report["runs_local"]}
        names = [n for n, _ in engines]
        for name in (n for n in names if n != "local"):  # in either order: the first may autotune what is new
            if finished and report["ok_local"] and report["ok_local"] == report[f"ok_{name}"]:
                report[f"{name}_overhead"] = report[f"wall_s_{name}"] / report["wall_s_local"] - 1
                mine, local = (report["commands"][names.index(n)]["seconds"] for n in (name, "local"))
                report[f"{name}_overhead_whole_command"] = mine / local - 1
                report[f"{name}_max_abs_loss_diff"] = max(
                    abs(r["final_val_loss"] - same[(r["variant"], r["seed"])])
                    for r in report[f"runs_{name}"] if (r["variant"], r["seed"]) in same)
    elif args.phase == "repeat":  # after warm: the same tournament in fresh processes, every run compared
        db = out / "repeat.db"
        report["commands"].append(arena([*base, "--db", f"sqlite:///{db}"], log, env, args.limit))
        report["repeat"] = repeats(curves(out / "warm.db"), curves(db))
    elif args.phase == "tune":  # a packed search against one trial at a time, on the same sampler seed
        for pack in (str(args.trials), "1"):
            (out / f"tune_pack{pack}").mkdir(exist_ok=True)  # each its own store and study journal beside it
            db = out / f"tune_pack{pack}" / "arena.db"
            cmd = arena(["tune", "gf", "--trials", str(args.trials), "--pack", pack, "--preset", args.preset,
                         "--steps", args.steps, "--device", args.device, "--db", f"sqlite:///{db}"], log, env,
                        args.limit / 2)
            rows = runs(db)
            report["commands"].append(cmd)
            report[f"runs_pack{pack}"] = rows
            report[f"s_per_trial_pack{pack}"] = cmd["seconds"] / max(1, len(rows)) if cmd["rc"] == 0 else None
        packed, alone = report[f"runs_pack{args.trials}"], report["runs_pack1"]
        if packed and alone and packed[0]["final_val_loss"] and alone[0]["final_val_loss"]:
            report["baseline_packed_vs_alone"] = packed[0]["final_val_loss"] - alone[0]["final_val_loss"]
        if report["s_per_trial_pack1"] and report[f"s_per_trial_pack{args.trials}"]:
            report["speedup"] = report["s_per_trial_pack1"] / report[f"s_per_trial_pack{args.trials}"]
    elif args.phase == "summary":
        report.update(summary(out, args))
        name = f"{report['date']}-{gpu_slug()}-tournament.json"
        (out / name).write_text(json.dumps(report, indent=1))
    else:  # compare: after warm, on the same machine, with warm.db brought back into DIR
        db = out / "warm_workers2.db"
        report["commands"].append(arena([*base, "--workers", "2", "--db", f"sqlite:///{db}"], log, env))
        report["runs_warm_workers2"] = runs(db)
        solo_db = out / "warm.db"  # the same store: pack-1 runs are another stack, stored beside the packed ones
        solo_args = ["tournament", "--preset", args.preset, "--variants", "gf,cp", "--seeds", args.seeds, "--steps",
                     args.steps, "--device", args.device, "--pack", "1", "--db", f"sqlite:///{solo_db}"]
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
