"""Why two processes compute different bits: run the same work in two fresh processes and say where they part.

Each child records, for gf at a spec's dims with seed 0:
* the config every Triton autotuner picked, per tuning key (FLA's and mamba-ssm's kernels);
* a digest of every module's forward output and every parameter's gradient for one forward+backward (eager);
* a digest of every weight after a short run under the runner (CUDA graph).
The parent compares the two records: the first module (in forward order) whose output differs, the gradients that
differ, the autotuners that chose differently, and the weights after the short run.

    python bench/cross_process.py --data PATH   (prints a JSON report; gpu_bench.py calls ``cross_process``)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def _digest(t: Any) -> str:
    import torch

    if not isinstance(t, torch.Tensor):
        return "-"
    return hashlib.sha1(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def child(spec_json: str, data: str, out: str) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from common import gf_and_first_batch, run  # bench/ is not a package

    from arena.core.spec import Spec
    from arena.model import autotune

    spec = Spec.from_dict(json.loads(spec_json))
    model, x, y = gf_and_first_batch(spec, data)  # (B, T) each
    outputs: list[tuple[str, str]] = []
    hooks = [m.register_forward_hook(lambda mod, args, o, name=name: outputs.append(
        (name, _digest(o[0] if isinstance(o, tuple) else o)))) for name, m in model.named_modules() if name]
    logits = model(x)  # (B, T, V)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    for h in hooks:
        h.remove()
    grads = {n: _digest(p.grad) for n, p in model.named_parameters()}
    ckpt = Path(out).with_suffix(".pt")
    short = run(spec.derive(steps=40, warmup_steps=10, eval_every=40), "gf", 0, "graph", data, ckpt=str(ckpt))
    weights = {k: _digest(v) for k, v in torch.load(ckpt)["state_dict"].items()} if ckpt.exists() else {}
    record = {"outputs": outputs, "grads": grads, "weights": weights, "short_run": short.final_val_loss,
              "short_status": short.status, "autotune": autotune.choices()}
    Path(out).write_text(json.dumps(record))


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    first_out = next((na for (na, da), (_, db) in zip(a["outputs"], b["outputs"], strict=False) if da != db), None)
    n_out = sum(1 for (_, da), (_, db) in zip(a["outputs"], b["outputs"], strict=False) if da != db)
    grads = [n for n in a["grads"] if a["grads"][n] != b["grads"].get(n)]
    weights = [n for n in a["weights"] if a["weights"][n] != b["weights"].get(n)]
    tuned = {}
    for kernel in sorted(set(a["autotune"]) | set(b["autotune"])):
        ca, cb = a["autotune"].get(kernel, {}), b["autotune"].get(kernel, {})
        if ca != cb:
            tuned[kernel] = {"a": ca, "b": cb}
    return {"forward_outputs_differing": n_out, "of": len(a["outputs"]), "first_differing_output": first_out,
            "grads_differing": len(grads), "grads_differing_names": grads[:12], "short_run_val": [a["short_run"],
            b["short_run"]], "short_run_weights_differing": len(weights), "weights_names": weights[:8],
            "autotuners": len(a["autotune"]), "autotuners_choosing_differently": tuned}


def cross_process(spec: Any, data: str, tmp: Path) -> dict[str, Any]:
    """Run ``child`` in two fresh processes and compare (see the module docstring)."""
    records = []
    for tag in ("a", "b"):
        out = tmp / f"xp-{tag}.json"
        out.unlink(missing_ok=True)
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec.to_dict()), "--data", data,
                               "--out", str(out)], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out.exists():
            return {"error": (proc.stderr or proc.stdout)[-1500:]}
        records.append(json.loads(out.read_text()))
    return compare(records[0], records[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--child", help="(internal) the spec as JSON: record this process")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data, args.out)
        return
    from arena.core.spec import PRESETS

    print(json.dumps(cross_process(PRESETS["phase2"], args.data, Path("/tmp")), indent=2))


if __name__ == "__main__":
    main()
