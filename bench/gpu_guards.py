"""One device call: the untrusted-variant guards on the GPU path, from the commands a user types.

    python bench/gpu_guards.py --data PATH/tinyshakespeare.txt --out DIR [--steps 100]

What it shows (each result and its timing into DIR/guards.json, the commands' output into DIR/guards.log):
1. `arena doctor` (kernels importable);
2. `arena variants check` of shipped and hostile files (the inspection runs in a worker process);
3. `arena tournament --preset phase2 --variants gf,hy,cp --seeds 2 --steps N --device cuda`: every run trained in
   its variant's own worker (kernels, graph mode, gradient checks on eager warm-up steps) and checked in a clean
   process (the final eval recomputed with autograd on every val batch, paired rows at the trained weights);
   the stored results (status, whether verified, the recomputed loss) are read back from the store;
4. `arena autotune export` (carry the tuned configs to the next call).
Run it from outside the checkout (or with ``python -P``) after installing the checkout (bench/gpu_bench.py says how).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is scripts, not a package
from common import arena

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "guards.log"
    home = Path("/tmp/arena-guards-home")
    env = dict(os.environ, ARENA_HOME=str(home), ARENA_DATA=args.data, PYTHONUNBUFFERED="1")
    import torch

    report: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "commit": os.environ.get("ARENA_COMMIT"), "steps": args.steps, "commands": [],
    }
    commands: list[dict[str, object]] = report["commands"]  # type: ignore[assignment]

    def save() -> None:
        (out / "guards.json").write_text(json.dumps(report, indent=2))

    commands.append(arena(["doctor"], log, env))
    for f in ("variants/gf.py", "tests/hostile/leak_mask.py", "tests/hostile/leak_train_mode.py",
              "tests/hostile/patch_cross_entropy.py", "tests/hostile/hidden_param_list.py"):
        commands.append(arena(["variants", "check", str(REPO / f), "--preset", "phase2"], log, env))
    save()
    commands.append(arena(["tournament", "--preset", "phase2", "--variants", "gf,hy,cp", "--seeds", "2",
                           "--steps", str(args.steps), "--device", "cuda"], log, env))
    save()
    db = home / "arena.db"
    if db.exists():
        rows = sqlite3.connect(db).execute(
            "select variant_name, seed, status, final_val_loss, error, metrics_json from arena_runs").fetchall()
        report["runs"] = [
            {"variant": v, "seed": s, "status": st, "final_val_loss": loss, "error": (err or "")[:300],
             "verified": json.loads(m).get("env", {}).get("verified"),
             "tok_s": json.loads(m).get("tokens_per_s"), "wall_s": json.loads(m).get("wall_s")}
            for v, s, st, loss, err, m in rows
        ]
    commands.append(arena(["leaderboard", "--format", "markdown"], log, env))
    commands.append(arena(["autotune", "export", str(out / "autotune.tgz"), "--force"], log, env))
    save()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
