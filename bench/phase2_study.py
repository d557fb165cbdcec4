"""The Phase-2 study of issue #19, run as a user runs arena, in pieces that fit device calls.

    python -P bench/phase2_study.py --dir .study --data PATH --budget-s 540 [--device cuda] [--preset phase2]
                                    [--seeds 10] [--trials 30] [--variants a,b,...] [--resume-from DIR]

The study folder (``--dir``) holds the arena store (``phase2.db``), the Optuna journal beside it and
``progress.json``; carry it to the next call (an ignored folder of the checkout) and bring it back from ``$OUT``:
memoized runs are never trained twice, and a call cut by its limit loses only the group it was training.

Stages, each an ``arena`` command, each done once (``progress.json``):
  default   ``arena tournament --variants V --seeds N``: every entry with its defaults on the tournament seeds
  tune/V    ``arena tune V --trials T' --resume``: until V's study has T finished trials on the tuning seed
  adopt/V   ``arena adopt V``: its best trial frozen as ``V@tuned-TxK`` (league tuned-TxK: T trials, K at once)
  tuned     ``arena tournament --variants V@tuned-TxK,... --seeds N``: every tuned entry on the tournament seeds
  export    ``arena leaderboard --format json|markdown|csv`` (every league of the spec) into the folder
A stage that fails (non-zero exit) is retried by the next call; the time left bounds every command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is scripts, not a package
from common import arena

ENTRIES = "gf,cp,hy,ws,rf,gf_mh,gf_rh,gru_arbiter,gpt,mamba2_only,rwkv6_only"


def finished_trials(journal: Path, variant: str, preset: str, seeds: str, data: str) -> int:
    """Finished trials in the study ``arena tune`` keeps for (variant, spec) (0 when there is none yet)."""
    if not journal.exists():
        return 0
    import optuna

    from arena.cli.common import spec_from_flags
    from arena.orchestration.search.storage import open_storage, study_name

    name = study_name(variant, spec_from_flags(preset, seeds=seeds, data=data))
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(str(journal)))
    except KeyError:  # no such study yet
        return 0
    from arena.orchestration.search.study import spent

    return spent(study)


def resume(source: Path, folder: Path, db: str) -> None:
    """A new study folder from a committed one: the store imported from its export (every run memoized again), the
    Optuna journal and the progress copied beside it. Refuses a source without an export: a study started afresh
    would train every memoized run again."""
    export = source / "phase2.json.gz"
    if not export.exists():
        sys.exit(f"--resume-from {source}: no phase2.json.gz there (made by this script at the end of each call)")
    subprocess.run([sys.executable, "-P", "-m", "arena.cli", "db", "import", str(export), "--db", db], check=True,
                   stdout=subprocess.DEVNULL)
    for name in ("optuna.journal", "progress.json"):
        if (source / name).exists():
            shutil.copyfile(source / name, folder / name)


def carry(folder: Path, db: str, env: dict[str, str]) -> None:
    """The store made whole for the next call: its write-ahead log folded in (a command cut by SIGKILL leaves one,
    and only the .db travels back), and a portable export beside it (``arena db import`` reads it anywhere)."""
    import sqlite3

    path = folder / "phase2.db"
    if not path.exists():
        return
    with contextlib.closing(sqlite3.connect(path)) as con:
        con.execute("pragma wal_checkpoint(TRUNCATE)")
    subprocess.run([sys.executable, "-P", "-m", "arena.cli", "db", "export", str(folder / "phase2.json.gz"), "--force",
                    "--db", db], env=env, timeout=120, check=False, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="phase2")
    ap.add_argument("--seeds", default="10")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--variants", default=ENTRIES)
    ap.add_argument("--pack", default="auto")
    # Trials a tuning pack holds: one number for every entry (their executions alike). 10, as the tournament's packs
    # of 10 seeds: 30 trials are 3 packs (the first one Optuna's 10 start-up trials), against 5 packs of 6 — the
    # search is the study's largest part of device time (a warm pack of 10 on the H200: ≈ 65 s).
    ap.add_argument("--tune-pack", default="10", help="a number (the same for every entry)")
    # Across sessions (a fresh checkout has no .study/): the committed export, journal and progress of the last one.
    ap.add_argument("--resume-from", default="", help="a folder with phase2.json.gz, optuna.journal, progress.json")
    args = ap.parse_args()
    end = time.monotonic() + args.budget_s
    folder = Path(args.dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{folder / 'phase2.db'}"
    if args.resume_from and not (folder / "phase2.db").exists():
        resume(Path(args.resume_from), folder, db)
    journal = folder / "optuna.journal"
    log = folder / "study.log"
    state_file = folder / "progress.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {"done": {}, "calls": []}
    env = dict(os.environ, ARENA_DATA=args.data, ARENA_HOME=str(folder / "home"))
    variants = args.variants.split(",")
    spec_flags = ["--preset", args.preset, "--seeds", args.seeds]  # one spec (hash) for both tracks
    common = [*spec_flags, "--device", args.device, "--db", db]
    call: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": []}
    state["calls"].append(call)

    def stage(name: str, cmd: list[str]) -> bool:
        if state["done"].get(name):
            return True
        left = end - time.monotonic()
        if left < 30:
            return False
        done = arena(cmd, log, env, left)
        rc = int(done["rc"])
        call["stages"].append({"stage": name, "rc": rc, "seconds": done["seconds"]})
        if rc == 0:
            state["done"][name] = time.strftime("%Y-%m-%d %H:%M:%S")
        state_file.write_text(json.dumps(state, indent=1))
        return rc == 0

    try:
        stage("default", ["tournament", "--variants", ",".join(variants), "--pack", args.pack, *common])
        for v in variants:
            if not state["done"].get(f"tune/{v}"):
                have = finished_trials(journal, v, args.preset, args.seeds, args.data)
                if have >= args.trials:
                    state["done"][f"tune/{v}"] = f"{have} trials"
                else:
                    flags = ["--resume", "--pack", args.tune_pack] if have else ["--pack", args.tune_pack]
                    if not stage(f"tune/{v}", ["tune", v, "--trials", str(args.trials - have), *flags, *common]):
                        state["done"].pop(f"tune/{v}", None)  # counted again next call
                        continue
            stage(f"adopt/{v}", ["adopt", v, *spec_flags, "--db", db])
        at_once = int(args.tune_pack)  # part of the league: tuned-30x10 is 30 trials, 10 at a time
        league = f"tuned-{args.trials}" if at_once == 1 else f"tuned-{args.trials}x{at_once}"
        tuned = [f"{v}@{league}" for v in variants if state["done"].get(f"adopt/{v}")]
        if len(tuned) == len(variants):
            stage("tuned", ["tournament", "--variants", ",".join(tuned), "--pack", args.pack, *common])
        if state["done"].get("tuned"):
            for fmt, ext in (("json", "json"), ("markdown", "md"), ("csv", "csv")):  # every league of the spec
                with (folder / f"leaderboard.{ext}").open("w") as f:
                    subprocess.run([sys.executable, "-P", "-m", "arena.cli", "leaderboard", "--format", fmt,
                                    "--db", db], stdout=f, env=env, timeout=120, check=False)
    finally:
        carry(folder, db, env)
        call["seconds"] = round(args.budget_s - (end - time.monotonic()), 1)
        state_file.write_text(json.dumps(state, indent=1))
        print(json.dumps(call, indent=1))
        print(f"done: {sorted(state['done'])}")


if __name__ == "__main__":
    main()
