"""Does a run repeat bit for bit in a fresh process? Packed against solo, graph against eager (issue #15's finding).

    python -P bench/pack_repeat.py --data PATH --out DIR [--variant cp] [--steps 60]

On 2026-12-01 (H200) a packed cp run repeated in another process first differed at step 11 (7th digit) and ended
3e-3 apart, while the in-process repeat test passes. This trains the same run twice, each time in a fresh process,
for each of: a pack of 3 in graph mode, the solo run in graph mode, a pack of 3 in eager mode; it reports the first
step whose train loss differs (None: every step the same bits) and the final losses. Then one eager packed step
runs under ``torch.use_deterministic_algorithms(True, warn_only=True)``: every op torch knows to be
nondeterministic on CUDA warns, and the warnings are listed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

CASES = {"pack3-graph": (3, "graph"), "solo-graph": (1, "graph"), "pack3-eager": (3, "eager")}


def child(variant: str, steps: int, pack: int, mode: str, preset: str, device: str) -> dict[str, Any]:
    from arena.core.options import Execution, RunOptions
    from arena.core.spec import PRESETS
    from arena.runner.loader import builtin
    from arena.runner.train import train_pack

    spec = PRESETS[preset].derive(steps=steps, eval_every=steps)
    options = RunOptions(device=device, mode=mode if device == "cuda" else "eager", execution=Execution(pack=pack))
    results = train_pack(spec, builtin(variant), [0, 1, 2][:pack], options=options)
    return {"curves": [[v.hex() for _, v in r.train_curve] for r in results],
            "finals": [r.final_val_loss for r in results], "status": [r.status for r in results]}


def first_difference(a: list[str], b: list[str]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)


def nondeterministic_ops(variant: str, preset: str, device: str) -> list[str]:
    """One eager packed step with torch's deterministic-algorithms check in warn mode: the ops that warn."""
    import torch

    from arena.core.spec import PRESETS
    from arena.model.backend import prepare_cuda
    from arena.model.lm import build_model
    from arena.model.pack import PackedLM
    from arena.runner.evaluate import member_losses
    from arena.runner.loader import builtin

    spec = PRESETS[preset]
    if device == "cuda":
        prepare_cuda()
    v = builtin(variant).variant
    members = [build_model(spec.dims, v, None, seed=s).to(device) for s in range(3)]
    model = PackedLM(members)
    x = torch.randint(0, spec.dims.vocab_size, (3, spec.batch_size, spec.seq_len), device=device)
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        member_losses(model(x), x).sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
    return sorted({str(w.message).split("\n")[0][:300] for w in caught})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", default="cp")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--child", choices=sorted(CASES))
    ap.add_argument("--ops", action="store_true", help="list the ops torch flags as nondeterministic, then exit")
    ap.add_argument("--preset", default="phase2")
    ap.add_argument("--device", default="cuda", help="cpu (with --preset smoke): a check of this script itself")
    args = ap.parse_args()
    os.environ["ARENA_DATA"] = args.data
    if args.child:
        pack, mode = CASES[args.child]
        print(json.dumps(child(args.variant, args.steps, pack, mode, args.preset, args.device)))
        return
    if args.ops:
        print(json.dumps(nondeterministic_ops(args.variant, args.preset, args.device)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"variant": args.variant, "steps": args.steps, "cases": {}}
    base = [sys.executable, "-P", __file__, "--data", args.data, "--out", args.out, "--variant", args.variant,
            "--steps", str(args.steps), "--preset", args.preset, "--device", args.device]
    for case in CASES:
        runs = []
        for _ in range(2):  # each in a fresh process
            proc = subprocess.run([*base, "--child", case], capture_output=True, text=True, timeout=400, check=False)
            lines = proc.stdout.strip().splitlines()
            runs.append(json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.stderr[-2000:]})
        if all("curves" in r for r in runs):
            report["cases"][case] = {
                "first_differing_step": [first_difference(a, b) for a, b in
                                         zip(runs[0]["curves"], runs[1]["curves"], strict=True)],
                "finals": [runs[0]["finals"], runs[1]["finals"]]}
        else:
            report["cases"][case] = {"error": [r.get("error") for r in runs]}
        print(case, json.dumps(report["cases"][case])[:500], flush=True)
    proc = subprocess.run([*base, "--ops"], capture_output=True, text=True, timeout=300, check=False)
    report["nondeterministic_ops"] = proc.stdout.strip().splitlines()[-1:] or [proc.stderr[-2000:]]
    print("nondeterministic ops:", report["nondeterministic_ops"])
    (out / "pack-repeat.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
