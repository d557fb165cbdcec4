"""One GPU call that checks and times many things (device time is short). Prints a report; commit it.

    python bench/gpu_bench.py --data PATH/tinyshakespeare.txt [--out DIR] [--quick]

Sections:
1. environment: date, GPU, torch/triton/fla/mamba-ssm/causal-conv1d versions, arena commit, kernel imports;
2. GPU equivalence tests (pytest tests/gpu -m gpu): kernels vs the pure-torch reference, pathways vs FLA/mamba-ssm;
3. speed at `phase2`: the plain eager loop (the seeds' way: kernels, one launch per op) and the arena runner
   (the whole step in one CUDA graph) on the same variant, spec and seed: tok/s, the ratio, the loss difference;
4. GPU determinism: the runner twice on the same seed (relative difference of the final val loss);
5. every shipped variant's steady-state speed under the runner.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "python": sys.version.split()[0]}
    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    for pkg in ("triton", "fla-core", "flash-linear-attention", "mamba-ssm", "causal-conv1d"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    try:
        out["arena_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                             check=False).stdout.strip() or os.environ.get("ARENA_COMMIT")
    except OSError:
        out["arena_commit"] = os.environ.get("ARENA_COMMIT")
    from arena.model.backend import deterministic, kernel_status

    out["deterministic"] = deterministic()
    out["env_vars"] = {k: os.environ.get(k) for k in ("ARENA_DETERMINISTIC", "MAMBA_DETERMINISTIC",
                                                      "TRITON_CACHE_AUTOTUNING", "TRITON_CACHE_DIR")}
    out["kernels"] = kernel_status()
    return out


def gpu_tests(out_dir: Path) -> dict[str, Any]:
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-q", "-rA", "--no-header", "-p", "no:cacheprovider",
         "--import-mode=importlib", "-o", "addopts="],
        capture_output=True, text=True, check=False,
    )
    log = proc.stdout + proc.stderr
    (out_dir / "gpu_tests.log").write_text(log)
    lines = [ln for ln in log.splitlines() if ln.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))]
    summary = next((ln for ln in reversed(log.splitlines()) if " passed" in ln or " failed" in ln), log[-300:])
    return {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "summary": summary.strip(), "lines": lines}


def run(spec: Any, name: str, seed: int, mode: str, data: str, backend: str = "auto") -> Any:
    from arena.runner.train import train
    from arena.variants_loader import builtin

    return train(spec, builtin(name), seed, device="cuda", backend=backend, mode=mode, data_flag=data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke-check the script)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no variant run after this many seconds")
    args = ap.parse_args()
    t_start = time.time()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"env": versions()}
    print("## environment")
    print(json.dumps(report["env"], indent=2), flush=True)

    if not args.skip_tests:
        print("\n## GPU equivalence tests (pytest tests/gpu -m gpu)", flush=True)
        report["tests"] = gpu_tests(out_dir)
        for ln in report["tests"]["lines"]:
            print("  " + ln[:160])
        print(f"  => {report['tests']['summary']} in {report['tests']['seconds']} s (rc {report['tests']['rc']})", flush=True)

    from arena.runner.spec import PRESETS

    spec = PRESETS["phase2"]
    if args.quick:
        spec = spec.derive(steps=60, warmup_steps=10, eval_every=30)
    print(f"\n## speed: gf at {spec.label}, fp32, seed 0 ({spec.steps} steps, batch {spec.batch_size}×{spec.seq_len})",
          flush=True)
    # The first run pays Triton's compilation and autotuning (reported as its warm-up); the order does not change
    # the steady-state numbers.
    graph = run(spec, "gf", 0, "graph", args.data)
    eager = run(spec, "gf", 0, "eager", args.data)
    graph2 = run(spec, "gf", 0, "graph", args.data)
    rows = []
    for label, r in (("plain eager loop (seeds' way)", eager), ("arena runner (CUDA graph)", graph),
                     ("arena runner, again", graph2)):
        rows.append({"run": label, "status": r.status, "tok_s": r.tokens_per_s, "warmup_s": r.warmup_s,
                     "wall_s": r.wall_s, "final_val_loss": r.final_val_loss, "peak_mb": r.peak_mem_mb,
                     "backend": r.backend, "error": (r.error or "")[:400]})
        print(f"  {label:32s} {r.status:8s} {r.tokens_per_s or 0:>12,.0f} tok/s  warm-up {r.warmup_s or 0:6.2f} s  "
              f"wall {r.wall_s or 0:6.1f} s  val {r.final_val_loss}  peak {r.peak_mem_mb or 0:,.0f} MB  {r.backend}",
              flush=True)
        if r.error:
            print("    error: " + r.error[:1500])
    speed: dict[str, Any] = {"rows": rows}
    if eager.tokens_per_s and graph.tokens_per_s:
        speed["ratio"] = graph.tokens_per_s / eager.tokens_per_s
        print(f"  speed-up graph/eager: {speed['ratio']:.2f}×")
    if eager.final_val_loss and graph.final_val_loss:
        speed["loss_rel_diff_graph_vs_eager"] = abs(graph.final_val_loss - eager.final_val_loss) / eager.final_val_loss
        print(f"  final val loss, graph vs eager: rel diff {speed['loss_rel_diff_graph_vs_eager']:.2e}")
    if graph.final_val_loss and graph2.final_val_loss:
        speed["loss_rel_diff_repeat"] = abs(graph.final_val_loss - graph2.final_val_loss) / graph.final_val_loss
        print(f"  determinism, graph twice: rel diff {speed['loss_rel_diff_repeat']:.2e}")
    report["speed"] = speed

    print(f"\n## every shipped variant under the runner ({spec.label}, seed 0)", flush=True)
    from arena.variants_loader import builtin_variants

    per_variant = []
    for lv in builtin_variants():
        if lv.name == "gf":
            continue
        if time.time() - t_start > args.budget_s:
            print(f"  {lv.name:12s} not run: the call's time budget ({args.budget_s:.0f} s) is spent", flush=True)
            per_variant.append({"variant": lv.name, "status": "not run (time budget)"})
            continue
        r = run(spec, lv.name, 0, "graph", args.data)
        per_variant.append({"variant": lv.name, "status": r.status, "tok_s": r.tokens_per_s,
                            "final_val_loss": r.final_val_loss, "params": r.params_total, "error": (r.error or "")[:300]})
        print(f"  {lv.name:12s} {r.status:8s} {r.tokens_per_s or 0:>12,.0f} tok/s  val {r.final_val_loss}  "
              f"params {r.params_total:,}" + (f"  ERR {r.error[:200]}" if r.error else ""), flush=True)
    report["variants"] = per_variant
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    print("\nwrote", out_dir / "bench.json")


if __name__ == "__main__":
    main()
