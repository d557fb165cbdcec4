"""One GPU call that checks and times many things (device time is short). Prints a report; commit it.

    python bench/gpu_bench.py --data PATH/tinyshakespeare.txt [--out DIR] [--quick]

Sections:
1. environment: date, GPU, torch/triton/fla/mamba-ssm/causal-conv1d versions, arena commit, kernel imports;
2. GPU equivalence tests (pytest tests/gpu -m gpu, spread over pytest-xdist workers): kernels vs the pure-torch
   reference, pathways vs FLA/mamba-ssm;
3. warm-up (Triton compile + autotune; its results are saved to OUT/autotune.tgz for the next machine);
4. bitwise repeat of one forward+backward: which gradients differ between identical calls;
5. speed at `phase2`: the plain eager loop (the seeds' way: kernels, one launch per op) and the arena runner
   (the whole step in one CUDA graph) on the same variant, spec and seed: tok/s, the ratio, the loss difference;
6. GPU determinism: the runner twice in one process (final weights bit for bit, val loss) and once in a fresh
   process (as tournaments run it, loading the saved autotune configs);
7. where two fresh processes part, if they do (``bench/cross_process.py``);
8. execution options (pinned batches, fused AdamW) timed side by side;
9. every shipped variant's steady-state speed under the runner;
10. with --profile: the ops that take the most device time in a few training steps (where to look for speed).

On the device machine, install the checkout first (its folders map under ``arena`` only when installed), e.g.
``pip install -q --no-deps --no-build-isolation --target /tmp/site . && export PYTHONPATH=/tmp/site`` beside the
carried wheels, and run from a folder other than the checkout root or with ``python -P``.
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

sys.path.insert(0, str(Path(__file__).parent))  # bench/ is scripts, not a package
from common import bench_device, gf_and_first_batch, run


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    out: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "python": sys.version.split()[0]}
    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    from arena.runner.env import KERNEL_ENV, PACKAGES  # what every run records, so the report matches runs

    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    # The device's copy of the tree may carry a stale .git: the caller's ARENA_COMMIT wins.
    out["arena_commit"] = os.environ.get("ARENA_COMMIT")
    if not out["arena_commit"]:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        out["arena_commit"] = git.stdout.strip() or None
    from arena.model.backend import deterministic, kernel_status

    out["deterministic"] = deterministic()
    out["env_vars"] = {k: os.environ.get(k) for k in (*KERNEL_ENV, "TRITON_CACHE_DIR")}
    out["kernels"] = kernel_status()
    return out


def gpu_tests(out_dir: Path, workers: int, timeout_s: int) -> dict[str, Any]:
    """pytest tests/gpu, its log streamed to OUT/gpu_tests.log (so a call cut short still returns what ran).

    With pytest-xdist, ``workers`` processes share the GPU: the tests are small, and most of their time is Triton
    compiling kernels on the CPU. pytest-timeout stops a test that hangs after ``timeout_s``."""
    import importlib.util

    t0 = time.time()
    log_path = out_dir / "gpu_tests.log"
    cmd = [sys.executable, "-m", "pytest", "tests/gpu", "-m", "gpu", "-v", "-rA", "--no-header", "-p",
           "no:cacheprovider", "--import-mode=importlib", "-o", "addopts="]
    if workers > 1 and importlib.util.find_spec("xdist"):
        cmd += ["-n", str(workers)]
    if importlib.util.find_spec("pytest_timeout"):
        cmd += ["--timeout", str(timeout_s)]
    with log_path.open("w") as log_file:
        log_file.write(" ".join(cmd[1:]) + "\n")
        log_file.flush()
        proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT, text=True, check=False)
    log = log_path.read_text()
    lines = [ln for ln in log.splitlines() if ln.startswith(("PASSED", "FAILED", "SKIPPED", "ERROR"))]
    summary = next((ln for ln in reversed(log.splitlines()) if " passed" in ln or " failed" in ln), log[-300:])
    return {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "summary": summary.strip(), "lines": lines}


def save_autotune_cache(out_dir: Path) -> None:
    """The autotune results into OUT/autotune.tgz (small), so a later call can start from them
    (``arena autotune import``)."""
    from arena.core.errors import ArenaError
    from arena.model.autotune import export_cache

    try:
        n = export_cache(out_dir / "autotune.tgz", force=True)
    except ArenaError as exc:
        print(f"  no autotune results saved: {exc}", flush=True)
        return
    print(f"  saved {n} autotune results to autotune.tgz", flush=True)


def bitwise_repeat(spec: Any, data: str) -> dict[str, Any]:
    """Which parameter gradients differ bit for bit between identical forward+backward calls (none: repeatable)."""
    from arena.runner.repeat import differing_grads

    model, x, y = gf_and_first_batch(spec, data)
    differ, worst = differing_grads(model, x, y)
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    return {"params": n_params, "differing": len(differ), "names": differ[:12], "max_abs": worst}


def profile_steps(spec: Any, data: str, steps: int = 5) -> dict[str, Any]:
    """Where a step's time goes: torch.profiler's ops with the most device time over a few eager training steps
    (a CUDA graph replays the same kernels, without the launch gaps), the kernels a step launches, and the captured
    step replayed back to back with no host work between replays (the GPU's floor for this step)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from arena.runner.optim import make_optimizer

    on_gpu = bench_device() == "cuda"
    model, x0, y0 = gf_and_first_batch(spec, data)
    opt = make_optimizer(model, spec, 1.0, capturable=on_gpu, fused=on_gpu)
    params = list(model.parameters())

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        logits = model(x)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.grad_clip, foreach=True)
        opt.step()
        return loss.detach()

    for _ in range(3):
        step(x0, y0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step(x0, y0)
        if on_gpu:
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    out: dict[str, Any] = {"table": str(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))}
    if not on_gpu:
        return out
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    out["kernels_per_step"] = len(kernels) / steps
    out["kernel_ms_per_step"] = sum(e.device_time for e in kernels) / 1e3 / steps
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(x0, y0)
    for _ in range(5):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    n = 50
    start.record()
    for _ in range(n):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    out["replay_ms_per_step"] = start.elapsed_time(end) / n
    out["replay_tok_s"] = spec.tokens_per_step / (out["replay_ms_per_step"] / 1e3)
    return out


def compare_checkpoints(a: Path, b: Path) -> dict[str, Any]:
    import torch

    sa, sb = torch.load(a)["state_dict"], torch.load(b)["state_dict"]
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    return {"tensors": len(sa), "differing": len(differ), "names": differ[:8],
            "max_abs": max((float((sa[k] - sb[k]).abs().max()) for k in differ), default=0.0)}


def fresh_process_run(spec: Any, data: str, out: Path) -> dict[str, Any]:
    """The same run in a new Python process (as a tournament runs it): loads the autotune cache, same bits?"""
    code = (
        "import json, sys; sys.path.insert(0, 'bench'); from common import run; from arena.core.spec import Spec\n"
        f"r = run(Spec.from_dict(json.loads({json.dumps(json.dumps(spec.to_dict()))})), 'gf', 0, 'graph', {data!r})\n"
        f"open({str(out)!r}, 'w').write(json.dumps({{'status': r.status, 'tok_s': r.tokens_per_s, "
        "'warmup_s': r.warmup_s, 'wall_s': r.wall_s, 'final_val_loss': r.final_val_loss, 'error': r.error}))\n"
    )
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        return {"status": "crashed", "error": (proc.stderr or proc.stdout)[-600:]}
    return json.loads(out.read_text()) | {"process_s": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke-check the script)")
    ap.add_argument("--preset", default="phase2", help="the spec preset (smoke: a CPU check, BENCH_DEVICE=cpu)")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--only-tests", action="store_true", help="the environment and the GPU tests, nothing else")
    ap.add_argument("--test-workers", type=int, default=4, help="pytest-xdist processes for the GPU tests")
    ap.add_argument("--test-timeout-s", type=int, default=240, help="pytest-timeout for one GPU test")
    ap.add_argument("--no-determinism", action="store_true",
                    help="skip the fresh-process run and the cross-process comparison")
    ap.add_argument("--no-eager", action="store_true", help="skip the (slow) plain eager loop")
    ap.add_argument("--no-ab", action="store_true", help="skip timing the execution options side by side")
    ap.add_argument("--profile", action="store_true", help="top ops by device time over a few training steps")
    ap.add_argument("--budget-s", type=float, default=480.0, help="start no variant run after this many seconds")
    args = ap.parse_args()
    t_start = time.time()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"env": versions()}

    def save() -> None:
        """bench.json after each section, so a call cut short still returns what it measured."""
        (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=str))

    print("## environment")
    print(json.dumps(report["env"], indent=2), flush=True)

    if not args.skip_tests:
        print("\n## GPU equivalence tests (pytest tests/gpu -m gpu)", flush=True)
        report["tests"] = gpu_tests(out_dir, args.test_workers, args.test_timeout_s)
        for ln in report["tests"]["lines"]:
            print("  " + ln[:160])
        t = report["tests"]
        print(f"  => {t['summary']} in {t['seconds']} s (rc {t['rc']})", flush=True)
        save()
    if args.only_tests:
        return

    from arena.core.spec import PRESETS

    spec = PRESETS[args.preset]
    if args.quick:
        spec = spec.derive(steps=60, warmup_steps=10, eval_every=30)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "arena-bench"
    tmp.mkdir(parents=True, exist_ok=True)

    print(f"\n## warm-up: gf at {spec.label}, 30 steps (Triton compile + autotune, once per machine)", flush=True)
    t0 = time.time()
    warm = run(spec.derive(steps=30, warmup_steps=5, eval_every=15), "gf", 0, "graph", args.data)
    report["warmup"] = {"seconds": round(time.time() - t0, 1), "status": warm.status, "error": warm.error}
    print(f"  {warm.status} in {report['warmup']['seconds']} s" + (f"  ERR {warm.error[:300]}" if warm.error else ""))
    save_autotune_cache(out_dir)
    save()

    print(f"\n## bitwise repeat of one forward+backward (gf, {spec.label} dims, one training batch, 3 times)",
          flush=True)
    report["bitwise"] = bitwise_repeat(spec, args.data)
    print("  " + json.dumps(report["bitwise"]), flush=True)

    print(f"\n## speed and determinism: gf at {spec.label}, fp32, seed 0 ({spec.steps} steps, "
          f"batch {spec.batch_size}×{spec.seq_len})", flush=True)
    graph = run(spec, "gf", 0, "graph", args.data, ckpt=str(tmp / "a.pt"))
    graph2 = run(spec, "gf", 0, "graph", args.data, ckpt=str(tmp / "b.pt"))
    eager = run(spec, "gf", 0, "eager", args.data) if not args.no_eager else None
    fresh = {"status": "not run (--no-determinism)"} if args.no_determinism else fresh_process_run(
        spec, args.data, tmp / "c.json")
    rows = []
    runs = (("plain eager loop (seeds' way)", eager), ("arena runner (CUDA graph)", graph),
            ("arena runner, again", graph2))
    for label, r in [(label, r) for label, r in runs if r is not None]:
        rows.append({"run": label, "status": r.status, "tok_s": r.tokens_per_s, "warmup_s": r.warmup_s,
                     "wall_s": r.wall_s, "final_val_loss": r.final_val_loss, "peak_mb": r.peak_mem_mb,
                     "backend": r.backend, "error": (r.error or "")[:400]})
        print(f"  {label:32s} {r.status:8s} {r.tokens_per_s or 0:>12,.0f} tok/s  warm-up {r.warmup_s or 0:6.2f} s  "
              f"wall {r.wall_s or 0:6.1f} s  val {r.final_val_loss}  peak {r.peak_mem_mb or 0:,.0f} MB  {r.backend}",
              flush=True)
        if r.error:
            print("    error: " + r.error[:1500])
    rows.append({"run": "arena runner, fresh process", **fresh})
    print(f"  {'arena runner, fresh process':32s} {json.dumps(fresh)}", flush=True)
    speed: dict[str, Any] = {"rows": rows}
    if eager and eager.tokens_per_s and graph.tokens_per_s:
        speed["ratio"] = graph.tokens_per_s / eager.tokens_per_s
        print(f"  speed-up graph/eager: {speed['ratio']:.2f}×")
    if eager and eager.final_val_loss and graph.final_val_loss:
        speed["loss_rel_diff_graph_vs_eager"] = abs(graph.final_val_loss - eager.final_val_loss) / eager.final_val_loss
        print(f"  final val loss, graph vs eager: rel diff {speed['loss_rel_diff_graph_vs_eager']:.2e}")
    if graph.final_val_loss and graph2.final_val_loss:
        speed["loss_rel_diff_repeat"] = abs(graph.final_val_loss - graph2.final_val_loss) / graph.final_val_loss
        speed["weights_repeat"] = compare_checkpoints(tmp / "a.pt", tmp / "b.pt")
        print(f"  determinism, graph twice in one process: val rel diff {speed['loss_rel_diff_repeat']:.2e}; "
              f"final weights {json.dumps(speed['weights_repeat'])}")
    if graph.final_val_loss and fresh.get("final_val_loss"):
        fresh_diff = abs(graph.final_val_loss - fresh["final_val_loss"]) / graph.final_val_loss
        speed["loss_rel_diff_fresh_process"] = fresh_diff
        print(f"  determinism, fresh process vs first: val rel diff {speed['loss_rel_diff_fresh_process']:.2e}")
    report["speed"] = speed
    save()

    print(f"\n## where two fresh processes part (gf, {spec.label}: one fwd+bwd, autotune choices, a 40-step run)",
          flush=True)
    from cross_process import cross_process

    report["cross_process"] = {"status": "not run (--no-determinism)"} if args.no_determinism else cross_process(
        spec, args.data, tmp)
    print("  " + json.dumps(report["cross_process"])[:3000], flush=True)
    save()

    print(f"\n## execution options side by side: gf at {spec.label}, seed 0, graph mode (runner.train.Execution)",
          flush=True)
    from arena.core.options import Execution

    ab = []
    options = (Execution(pinned_batches=False, fused_adamw=False), Execution(pinned_batches=True, fused_adamw=False),
               Execution(pinned_batches=False, fused_adamw=True))
    for ex in () if args.no_ab else options:
        r = run(spec, "gf", 0, "graph", args.data, execution=ex)
        rel = abs(r.final_val_loss - graph.final_val_loss) / graph.final_val_loss if (
            r.final_val_loss and graph.final_val_loss) else None
        ab.append({"execution": ex.__dict__, "status": r.status, "tok_s": r.tokens_per_s,
                   "final_val_loss": r.final_val_loss, "rel_diff_vs_default": rel})
        print(f"  {json.dumps(ex.__dict__):50s} {r.status:8s} {r.tokens_per_s or 0:>12,.0f} tok/s  "
              f"val {r.final_val_loss}  vs default {rel if rel is None else f'{rel:.2e}'}", flush=True)
    print(f"  (default {json.dumps(Execution().__dict__)}: {graph.tokens_per_s or 0:,.0f} tok/s above)")
    report["execution_ab"] = ab
    save()

    print(f"\n## every shipped variant under the runner ({spec.label}, seed 0)", flush=True)
    from arena.runner.loader import builtin_variants

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
                            "final_val_loss": r.final_val_loss, "params": r.params_total,
                            "error": (r.error or "")[:300]})
        print(f"  {lv.name:12s} {r.status:8s} {r.tokens_per_s or 0:>12,.0f} tok/s  val {r.final_val_loss}  "
              f"params {r.params_total:,}" + (f"  ERR {r.error[:200]}" if r.error else ""), flush=True)
        report["variants"] = per_variant
        save()
    report["variants"] = per_variant
    if args.profile:
        print(f"\n## profile: gf at {spec.label}, 5 training steps after 3 warm-up steps (eager, so ops are visible)",
              flush=True)
        report["profile"] = prof = profile_steps(spec, args.data)
        print(prof["table"], flush=True)
        if "replay_ms_per_step" in prof:
            print(f"  kernels per step {prof['kernels_per_step']:.0f}, their device time "
                  f"{prof['kernel_ms_per_step']:.2f} ms/step; "
                  f"the captured step replayed back to back: {prof['replay_ms_per_step']:.2f} ms/step "
                  f"({prof['replay_tok_s']:,.0f} tok/s)", flush=True)
    save_autotune_cache(out_dir)  # again: the runs above may have tuned more shapes
    save()
    print("\nwrote", out_dir / "bench.json")


if __name__ == "__main__":
    main()
