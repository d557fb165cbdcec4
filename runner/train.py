"""Train one variant under one spec with one seed, in this process, and return a RunResult.

The protocol (data order, optimizer, schedule, evaluation) lives here and in ``spec``; variants cannot reach it.
Two execution modes compute the same function:

* ``eager`` — the plain loop (CPU, or GPU for debugging);
* ``graph`` — on CUDA, after a few eager warm-up steps (which are real training steps), the whole step
  (forward, backward, clipping, AdamW) is captured in one CUDA graph and replayed. Small models like the seeds'
  are launch-bound in eager mode; the graph removes the launch gaps (docs/measurements: 8.8× on an H100).
"""

from __future__ import annotations

import math
import resource
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from arena.config import did_you_mean
from arena.errors import ArenaError
from arena.model import autotune
from arena.model.backend import prepare_cuda
from arena.model.lm import HybridLM, build_model, count_params
from arena.runner.data import load_track
from arena.runner.env import environment
from arena.runner.feed import BatchFeeder
from arena.runner.result import RunResult
from arena.runner.spec import Spec
from arena.variants_loader import LoadedVariant, reference_params

EventFn = Callable[[dict[str, Any]], bool | None]
REPORT_EVERY = 10  # steps between host syncs for progress and divergence checks


@dataclass(frozen=True)
class Execution:
    """How a CUDA run executes the protocol: the same math, scheduled differently (recorded in ``env``).

    * ``pinned_batches``: batches reach the GPU through pinned host buffers (``runner.feed``), so the host queues
      the next step while the GPU runs this one;
    * ``fused_adamw``: torch's single-kernel AdamW instead of the multi-tensor (foreach) one: the same update
      rule, a few kernels a step instead of dozens; floating-point results differ in the last bits.

    Both are ignored on the CPU (whose runs stay bit-for-bit what they were). The bench times them side by side.
    """

    pinned_batches: bool = True
    fused_adamw: bool = True


def resolve_hparams(loaded: LoadedVariant, hparams: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults overlaid with the given values; unknown names fail with a suggestion, values must be in range."""
    declared = loaded.variant.hparams
    hp = loaded.variant.defaults()
    for key, value in (hparams or {}).items():
        if key not in declared:
            raise ArenaError(f"{loaded.name} has no hyperparameter '{key}'{did_you_mean(key, declared)}")
        h = declared[key]
        if not h.low <= float(value) <= h.high:
            raise ArenaError(f"{loaded.name}: {key}={value} lies outside its declared range [{h.low}, {h.high}]")
        hp[key] = float(value)
    return hp


def lr_at(spec: Spec, step: int) -> float:
    """Learning-rate factor at a step: linear warm-up, then cosine to min_lr_ratio (or constant)."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.lr_schedule == "constant":
        return 1.0
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(
    model: HybridLM, spec: Spec, lr_mult: float, capturable: bool, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only and the Mamba pathway's learning rate scaled by lr_mult."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and model.part_of(name) != "embed"
        mamba = model.part_of(name) == "mamba2"
        groups.setdefault((decay, mamba), []).append(p)
    param_groups = []
    for (decay, mamba), params in sorted(groups.items()):
        mult = lr_mult if mamba else 1.0
        lr: float | torch.Tensor = spec.lr * mult
        if capturable:
            lr = torch.tensor(spec.lr * mult, device=params[0].device)  # a tensor: updated in place under a graph
        param_groups.append(
            {"params": params, "weight_decay": spec.weight_decay if decay else 0.0, "lr": lr, "base_lr": spec.lr * mult}
        )
    implementation = {"fused": True} if fused else {"foreach": True}  # one kernel, or multi-tensor launches
    return torch.optim.AdamW(param_groups, betas=(spec.beta1, spec.beta2), capturable=capturable, **implementation)


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        value = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100)


@torch.no_grad()
def evaluate(
    model: HybridLM, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device, autocast: bool
) -> tuple[float, float | None]:
    """Mean loss over every target token of the fixed val batches, and accuracy on targeted positions (mqar)."""
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in batches:
        x, y = x.to(device), y.to(device)  # (B, T) each
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)  # (B, T, V)
        flat_y = y.reshape(-1)  # (B·T,)
        flat_logits = logits.reshape(-1, logits.size(-1)).float()  # (B·T, V)
        loss_sum = F.cross_entropy(flat_logits, flat_y, ignore_index=-100, reduction="sum")
        mask = flat_y != -100
        total += loss_sum.double()
        count += mask.sum()
        correct += ((logits.reshape(-1, logits.size(-1)).argmax(-1) == flat_y) & mask).sum()
    model.train()
    n = float(count)
    return float(total) / max(n, 1.0), float(correct) / max(n, 1.0)


def _grad_norms(model: HybridLM) -> dict[str, float]:
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            part = model.part_of(name)
            sq[part] = sq.get(part, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sq.items()}


def train(
    spec: Spec,
    loaded: LoadedVariant,
    seed: int,
    hparams: Mapping[str, float] | None = None,
    *,
    device: str = "auto",
    backend: str = "auto",
    mode: str = "auto",
    data_flag: str | None = None,
    on_event: EventFn | None = None,
    checkpoint_path: str | None = None,
    execution: Execution | None = None,
) -> RunResult:
    """Train and evaluate; never raises for a failure of the variant itself (crash/divergence are results)."""
    execution = execution or Execution()
    hp = resolve_hparams(loaded, hparams)
    result = RunResult(
        variant=loaded.name, variant_sha=loaded.sha256, spec_hash=spec.hash, seed=seed, hparams=hp
    )
    wall0 = time.perf_counter()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if mode == "auto":
        mode = "graph" if dev.type == "cuda" else "eager"
    if mode not in ("eager", "graph"):
        raise ArenaError(f"--mode must be auto, eager or graph, not '{mode}'")
    if mode == "graph" and dev.type != "cuda":
        raise ArenaError("--mode graph needs a CUDA device")
    result.env = environment(dev) | {"mode": mode, "device_requested": device, "backend_requested": backend}
    if dev.type == "cuda":
        result.env["execution"] = asdict(execution)
    try:
        _train(spec, loaded, seed, hp, dev, backend, mode, data_flag, on_event, checkpoint_path, execution, result)
    except ArenaError:
        raise
    except Exception as exc:  # the variant (or the hardware) failed: that is a result, not an exception
        result.status = "crashed"
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
    result.wall_s = time.perf_counter() - wall0
    if dev.type == "cuda":
        # Which kernel configs this run computed with (another machine's tuning may differ; arena.model.autotune).
        tuned = autotune.choices()
        result.env["autotune"] = {"digest": autotune.digest(tuned), "kernels": len(tuned)}
        result.peak_mem_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result.peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS
    return result


def _train(
    spec: Spec,
    loaded: LoadedVariant,
    seed: int,
    hp: dict[str, float],
    dev: torch.device,
    backend: str,
    mode: str,
    data_flag: str | None,
    on_event: EventFn | None,
    checkpoint_path: str | None,
    execution: Execution,
    result: RunResult,
) -> None:
    track = load_track(spec, data_flag)
    if dev.type == "cuda":
        prepare_cuda()
    target = reference_params(spec.dims, spec.reference_variant) if loaded.variant.match_params else None
    model = build_model(spec.dims, loaded.variant, hp, seed=seed, backend=backend, match_params_to=target).to(dev)
    model.train()
    result.params_total = count_params(model)
    result.params_by_part = model.params_by_part()
    graph = mode == "graph"
    on_gpu = dev.type == "cuda"
    opt = make_optimizer(model, spec, hp.get("lr_mult", 1.0), capturable=graph,
                         fused=on_gpu and execution.fused_adamw)
    feed = BatchFeeder(track, seed, dev, pinned=execution.pinned_batches)
    autocast = spec.precision == "bf16"
    val_batches = track.val_batches(final=False)
    params = [p for p in model.parameters()]

    losses = torch.zeros(spec.steps, device=dev)  # per-step train loss, read back at sync points only
    static_x = static_y = static_loss = None
    cuda_graph: torch.cuda.CUDAGraph | None = None
    n_warm = min(max(3, spec.steps // 20), spec.steps)  # excluded from steady-state throughput
    timed_s = 0.0
    t_mark = 0.0
    synced_upto = 0

    def step_eager(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=not graph)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)  # (B, T, V)
        loss = _loss(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.grad_clip, foreach=True)
        opt.step()
        return loss.detach()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def check_upto(step: int) -> bool:
        """Read losses up to step (exclusive); False when one is non-finite (divergence)."""
        nonlocal synced_upto
        vals = losses[synced_upto:step].tolist()
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                result.train_curve.extend((synced_upto + j, vals[j]) for j in range(i))
                result.status = "diverged"
                result.error = f"non-finite train loss ({v}) at step {synced_upto + i}"
                synced_upto = step
                return False
            result.train_curve.append((synced_upto + i, v))
        synced_upto = step
        return True

    for step in range(spec.steps):
        if step == n_warm:
            sync()
            result.warmup_s = time.perf_counter() - t_mark if t_mark else None
            t_mark = time.perf_counter()
        if step == 0:
            t_mark = time.perf_counter()
        set_lr(opt, lr_at(spec, step))
        x, y = feed(step)  # (B, T) each on dev, identical for every variant at this seed
        if graph and step >= n_warm:
            if cuda_graph is None:
                static_x, static_y = x.clone(), y.clone()
                cuda_graph = torch.cuda.CUDAGraph()
                opt.zero_grad(set_to_none=False)
                with torch.cuda.graph(cuda_graph):
                    static_loss = step_eager(static_x, static_y)
            assert static_x is not None and static_y is not None and static_loss is not None
            static_x.copy_(x)
            static_y.copy_(y)
            cuda_graph.replay()
            losses[step].copy_(static_loss)
        else:
            losses[step].copy_(step_eager(x, y))
        done = step + 1
        is_eval = done % spec.eval_every == 0 or done == spec.steps
        if done % REPORT_EVERY == 0 or is_eval:
            sync()
            if not check_upto(done):
                result.steps_done = done
                break
            if on_event:
                elapsed = time.perf_counter() - t_mark
                tok_s = (done - (n_warm if done > n_warm else 0)) * spec.tokens_per_step / max(elapsed, 1e-9)
                on_event({"type": "step", "step": done, "loss": result.train_curve[-1][1], "tok_s": tok_s})
        if is_eval:
            sync()
            pause = time.perf_counter()
            grad_norms = _grad_norms(model)
            model.set_record(True)
            val_loss, _ = evaluate(model, val_batches[:1], dev, autocast)  # records gates and pathway norms
            model.set_record(False)
            diag: dict[str, Any] = {
                "step": done,
                "gates": model.gate_stats(),
                "pathway_norms": model.pathway_norms(),
                "grad_norms": grad_norms,
            }
            if "rwkv6" in grad_norms and grad_norms.get("mamba2"):
                diag["grad_ratio"] = grad_norms["rwkv6"] / grad_norms["mamba2"]
            result.diagnostics.append(diag)
            val_loss, _ = evaluate(model, val_batches, dev, autocast)
            result.val_curve.append((done, val_loss))
            result.steps_done = done
            stop = False
            if not math.isfinite(val_loss):
                result.status = "diverged"
                result.error = f"non-finite val loss at step {done}"
                stop = True
            elif on_event and on_event({"type": "eval", "step": done, "val_loss": val_loss}):
                result.status = "pruned"
                stop = True
            sync()
            t_mark += time.perf_counter() - pause  # evaluation is not training time
            if stop:
                break
        if done > n_warm:
            timed_s = time.perf_counter() - t_mark
    result.steps_done = max(result.steps_done, synced_upto)
    result.backend = model.backends_used()
    if result.steps_done > n_warm and timed_s > 0:
        result.tokens_per_s = (result.steps_done - n_warm) * spec.tokens_per_step / timed_s
    if result.status != "ok":
        return
    final_loss, acc = evaluate(model, track.val_batches(final=True), dev, autocast)
    result.final_val_loss = final_loss
    result.final_val_bpc = final_loss / math.log(2) if math.isfinite(final_loss) else None
    result.final_val_acc = acc if track.kind == "mqar" else None
    if not math.isfinite(final_loss):
        result.status = "diverged"
        result.error = "non-finite final val loss"
    if checkpoint_path:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        meta = {"variant": loaded.name, "variant_sha": loaded.sha256, "spec": spec.to_dict(), "seed": seed,
                "hparams": hp}
        torch.save({"state_dict": state, "meta": meta}, checkpoint_path)
        result.checkpoint_path = checkpoint_path
