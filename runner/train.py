"""Train one variant under one spec with one seed, in this process, and return a RunResult.

The protocol (data order, optimizer, schedule, evaluation) lives here, in ``optim``, ``evaluate`` and the spec;
variants cannot reach it. The loop is a sequence of named steps (``_Run``): build → (warm-up → capture) → step →
evaluate and diagnostics at each eval point → finish. Two execution modes compute the same function:

* ``eager`` — the plain loop (CPU, or GPU for debugging);
* ``graph`` — on CUDA, after a few eager warm-up steps (which are real training steps), the whole step
  (forward, backward, clipping, AdamW) is captured in one CUDA graph and replayed. Small models like the seeds'
  are launch-bound in eager mode; the graph removes the launch gaps.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import torch

from arena.core.errors import ArenaError
from arena.core.hparams import HParams, UndeclaredHParam, resolve
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant, Variant
from arena.model import autotune
from arena.model.backend import prepare_cuda
from arena.model.lm import build_model, count_params
from arena.runner import causality
from arena.runner.check import Violation, audit_model, reference_params, unmatched_reason
from arena.runner.data import Track, load_track
from arena.runner.env import environment
from arena.runner.evaluate import diagnostics, evaluate, loss_of, snapshot
from arena.runner.feed import BatchFeeder
from arena.runner.optim import lr_at, make_optimizer, set_lr
from arena.runner.provenance import local_basis

EventFn = Callable[[dict[str, Any]], bool | None]
REPORT_EVERY = 10  # steps between host syncs for progress and divergence checks
CHECKED_STEPS = 3  # eager training steps whose forward is checked for causality (chosen from the OS's entropy)


def placement(options: RunOptions) -> tuple[torch.device, str]:
    """The device and mode a run uses: ``auto`` is CUDA with graph capture where there is a GPU, else CPU eager."""
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ArenaError(f"--device {options.device}: this torch has no CUDA device; use --device cpu (or auto)")
    dev = torch.device(device)
    mode = options.mode if options.mode != "auto" else ("graph" if dev.type == "cuda" else "eager")
    if mode == "graph" and dev.type != "cuda":
        raise ArenaError("--mode graph needs a CUDA device")
    return dev, mode


class Rejected(Exception):
    """The variant broke a rule while it ran; the run ends as ``rejected`` with this reason."""


class MachineryError(Exception):
    """arena's own machinery failed (e.g. a checkpoint that a full disk cannot hold): not the variant's failure,
    so not a result: the run is left unstored, to be run again."""


def train(
    spec: Spec,
    loaded: LoadedVariant,
    seed: int,
    hparams: Mapping[str, float] | None = None,
    *,
    options: RunOptions | None = None,
    on_event: EventFn | None = None,
    checkpoint_path: str | None = None,
    track: Track | None = None,
    state_path: str | None = None,
) -> RunResult:
    """Train and evaluate; never raises for a failure of the variant itself (crash, divergence, a broken rule are
    results).

    ``on_event`` receives ``{"type": "step", "step", "loss", "tok_s"}`` every few steps and ``{"type": "eval",
    "step", "val_loss"}`` at each eval; returning True from an eval event stops the run (status ``pruned``).
    ``track``: the data, when the caller loaded it already (a worker loads it before the variant is imported).
    ``state_path``: where an ok run leaves its final weights for the clean-process check (``runner.verify``).
    While it trains, the run checks causality on the real forward of a few unpredictable eager steps and that every
    trained value is a parameter the model had when it was built.
    """
    options = options or RunOptions()
    hp = hparams if isinstance(hparams, HParams) else resolve(loaded.variant.hparams, hparams, loaded.name)
    basis = local_basis(options)  # a worker stamps the basis it checked against the driver's (the same)
    result = RunResult(
        variant=loaded.name, variant_sha=loaded.sha256, spec_hash=spec.hash, seed=seed, hparams=hp.to_dict(),
        code_digest=basis.code, stack_id=basis.stack,
    )
    wall0 = time.perf_counter()
    dev, mode = placement(options)
    result.env = environment(dev) | {"mode": mode, "device_requested": options.device,
                                     "backend_requested": options.backend}
    if dev.type == "cuda":
        result.env["execution"] = asdict(options.execution)
    try:
        run = _Run(spec, loaded, seed, hp, dev, mode, options, on_event, result, track)
        run.loop()
        run.finish(checkpoint_path, state_path)
    except MachineryError:
        raise
    except (Rejected, Violation, UndeclaredHParam) as exc:  # a leak, hidden state, an undeclared hyperparameter
        result.status = "rejected"
        result.error = str(exc)
    except (Exception, SystemExit) as exc:  # the variant (or the hardware) failed: a result, not an exception
        result.status = "crashed"
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
    result.wall_s = time.perf_counter() - wall0
    _record_hardware(result, dev)
    return result


def _record_hardware(result: RunResult, dev: torch.device) -> None:
    if dev.type == "cuda":
        # Which kernel configs this run computed with (another machine's tuning may differ; arena.model.autotune).
        tuned = autotune.choices()
        result.env["autotune"] = {"digest": autotune.digest(tuned), "kernels": len(tuned)}
        result.peak_mem_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result.peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


class _Run:
    """One training run, step by step. Each method is one named phase of the protocol."""

    def __init__(
        self, spec: Spec, loaded: LoadedVariant, seed: int, hp: HParams, dev: torch.device, mode: str,
        options: RunOptions, on_event: EventFn | None, result: RunResult, track: Track | None = None,
    ) -> None:
        self.spec, self.loaded, self.seed, self.hp, self.dev = spec, loaded, seed, hp, dev
        self.graph = mode == "graph"
        self.on_event, self.result = on_event, result
        self.autocast = spec.precision == "bf16"
        self.n_warm = min(max(3, spec.steps // 20), spec.steps)  # excluded from steady-state throughput
        # The gradient check runs on the real forward of a few eager steps the variant cannot predict (a graph
        # replay runs no Python of the variant: its behaviour is the captured one).
        eager = self.n_warm if self.graph else spec.steps
        self.check_steps = causality.random_steps(eager, CHECKED_STEPS)
        self.build(options, track)

    # -- build ------------------------------------------------------------------------------------------------
    def build(self, options: RunOptions, track: Track | None) -> None:
        """The data, the model (seeded per component), the optimizer and the batch feeder."""
        spec, dev = self.spec, self.dev
        self.track = (track if track is not None else load_track(spec, options.data_flag)).for_seed(self.seed)
        if dev.type == "cuda":
            prepare_cuda()
        variant = self.loaded.variant
        assert isinstance(variant, Variant), "train runs the variant: call it in a worker, on a loaded file"
        target = reference_params(spec.dims, spec.reference_variant)
        self.model = build_model(spec.dims, variant, self.hp, seed=self.seed, backend=options.backend,
                                 match_params_to=target).to(dev)
        self.model.train()
        self.result.params_total = count_params(self.model)
        self.result.params_target = target if variant.match_params else None
        self.param_ids = {id(p) for p in self.model.parameters()}
        if self.result.params_total > spec.param_budget:
            raise Rejected(f"{self.result.params_total:,} parameters exceed the spec's budget of {spec.param_budget:,}")
        mismatch = unmatched_reason(variant, self.result.params_total, target)
        if mismatch:
            raise Rejected(mismatch)
        self.result.params_by_part = self.model.params_by_part()
        lr_mult = self.hp.to_dict().get("lr_mult", 1.0)  # a variant without a Mamba pathway declares none
        fused = dev.type == "cuda" and options.execution.fused_adamw
        lr_scale = self.hp.to_dict().get("lr_scale", 1.0)  # declared by every shipped variant; 1 if a file has none
        self.opt = make_optimizer(self.model, spec, lr_mult, capturable=self.graph, fused=fused, lr_scale=lr_scale)
        self.feed = BatchFeeder(self.track, self.seed, dev, pinned=options.execution.pinned_batches)
        self.val_batches = self.track.val_batches(final=False)
        self.params = list(self.model.parameters())
        self.initial = snapshot(self.model)  # θ₀ on the device: how far each group moved, at every eval
        self.losses = torch.zeros(spec.steps, device=dev)  # per-step train loss, read back at sync points only
        self.cuda_graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, y, loss of the graph
        self.synced_upto = 0
        self.t_mark = 0.0
        self.timed_s = 0.0

    # -- one step ---------------------------------------------------------------------------------------------
    def step_eager(self, x: torch.Tensor, y: torch.Tensor, check: bool = False) -> torch.Tensor:
        """Forward, backward, clipping and AdamW on one batch (B, T); the loss, detached. With ``check``, the same
        forward's early logits are differentiated with respect to its later embeddings first (must be zero)."""
        self.opt.zero_grad(set_to_none=not self.graph)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            embeddings, logits = self.model.embed_forward(x)  # (B, T, D), (B, T, V)
        if check:
            leak = causality.gradient_leak(embeddings, logits, causality.random_t0(x.shape[1]))
            if leak.leaks:
                raise Rejected(f"{leak.describe()} (on a training step)")
        loss = loss_of(logits, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip, foreach=True)
        self.opt.step()
        return loss.detach()

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Capture the whole step in one CUDA graph over static input buffers (after the eager warm-up)."""
        static_x, static_y = x.clone(), y.clone()
        self.cuda_graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(self.cuda_graph):
            static_loss = self.step_eager(static_x, static_y)
        self.static = (static_x, static_y, static_loss)

    def step(self, step: int) -> None:
        """Training step ``step``: eager during the warm-up (and in eager mode), a graph replay after it."""
        set_lr(self.opt, lr_at(self.spec, step))
        x, y = self.feed(step)  # (B, T) each on dev, identical for every variant at this seed
        if self.graph and step >= self.n_warm:
            if self.cuda_graph is None:
                self.capture(x, y)
            assert self.cuda_graph is not None and self.static is not None
            static_x, static_y, static_loss = self.static
            static_x.copy_(x)
            static_y.copy_(y)
            self.cuda_graph.replay()
            self.losses[step].copy_(static_loss)
        else:
            self.losses[step].copy_(self.step_eager(x, y, check=step in self.check_steps))
        if step == 0:
            audit_model(self.model, self.param_ids, "after the first training step")

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def check_upto(self, step: int) -> bool:
        """Read the losses up to ``step`` (exclusive) into the train curve; False at a non-finite one (divergence)."""
        result, start = self.result, self.synced_upto
        vals = self.losses[start:step].tolist()
        self.synced_upto = step
        for i, v in enumerate(vals):
            if not math.isfinite(v):
                result.status = "diverged"
                result.error = f"non-finite train loss ({v}) at step {start + i}"
                return False
            result.train_curve.append((start + i, v))
        return True

    def report(self, done: int) -> None:
        if self.on_event:
            elapsed = time.perf_counter() - self.t_mark
            tok_s = (done - (self.n_warm if done > self.n_warm else 0)) * self.spec.tokens_per_step / max(elapsed, 1e-9)
            self.on_event({"type": "step", "step": done, "loss": self.result.train_curve[-1][1], "tok_s": tok_s})

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate_at(self, done: int) -> bool:
        """Diagnostics and the intermediate val loss at an eval point; True when the run must stop."""
        result = self.result
        self.sync()
        pause = time.perf_counter()
        diag = diagnostics(self.model, done, self.val_batches[:1], self.dev, self.autocast, initial=self.initial)
        # Σ lr so far (lr_mult × this for the Mamba group): how far Adam, about lr a step, could have moved anything.
        scale = self.hp.to_dict().get("lr_scale", 1.0)
        diag["lr_sum"] = self.spec.lr * scale * sum(lr_at(self.spec, s) for s in range(done))
        result.diagnostics.append(diag)
        val_loss, _ = evaluate(self.model, self.val_batches, self.dev, self.autocast)
        result.val_curve.append((done, val_loss))
        result.steps_done = done
        stop = False
        if not math.isfinite(val_loss):
            result.status = "diverged"
            result.error = f"non-finite val loss at step {done}"
            stop = True
        elif self.on_event and self.on_event({"type": "eval", "step": done, "val_loss": val_loss}):
            result.status = "pruned"
            stop = True
        self.sync()
        self.t_mark += time.perf_counter() - pause  # evaluation is not training time
        return stop

    # -- the loop ---------------------------------------------------------------------------------------------
    def loop(self) -> None:
        """Every training step, with host syncs every REPORT_EVERY steps and evaluation every eval_every."""
        spec = self.spec
        for step in range(spec.steps):
            if step == self.n_warm:
                self.sync()
                self.result.warmup_s = time.perf_counter() - self.t_mark if self.t_mark else None
                self.t_mark = time.perf_counter()
            if step == 0:
                self.t_mark = time.perf_counter()
            self.step(step)
            done = step + 1
            is_eval = done % spec.eval_every == 0 or done == spec.steps
            if done % REPORT_EVERY == 0 or is_eval:
                self.sync()
                if not self.check_upto(done):
                    self.result.steps_done = done
                    break
                self.report(done)
            if is_eval and self.evaluate_at(done):
                break
            if done > self.n_warm:
                self.timed_s = time.perf_counter() - self.t_mark
        result = self.result
        result.steps_done = max(result.steps_done, self.synced_upto)
        result.backend = self.model.backends_used()
        if result.steps_done > self.n_warm and self.timed_s > 0:
            result.tokens_per_s = (result.steps_done - self.n_warm) * spec.tokens_per_step / self.timed_s

    # -- finish -----------------------------------------------------------------------------------------------
    def finish(self, checkpoint_path: str | None, state_path: str | None = None) -> None:
        """The final evaluation over the whole val split, and the checkpoint (for an ok run only)."""
        result = self.result
        if result.status != "ok":
            return
        audit_model(self.model, self.param_ids, "at the end of training")
        final_loss, acc = evaluate(self.model, self.track.val_batches(final=True), self.dev, self.autocast)
        result.final_val_loss = final_loss
        result.final_val_bpc = final_loss / math.log(2) if math.isfinite(final_loss) else None
        result.final_val_acc = acc if self.track.kind == "mqar" else None
        if not math.isfinite(final_loss):
            result.status = "diverged"
            result.error = "non-finite final val loss"
        if state_path and result.status == "ok":
            _save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, state_path)
        if checkpoint_path:
            state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
            meta = {"variant": self.loaded.name, "variant_sha": self.loaded.sha256, "spec": self.spec.to_dict(),
                    "seed": self.seed, "hparams": self.hp.to_dict()}
            _save({"state_dict": state, "meta": meta}, checkpoint_path)
            result.checkpoint_path = checkpoint_path


def _save(obj: Any, path: str) -> None:
    """Write through a temporary file, so a full disk leaves no half-written file; a failure is arena's own."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError ("file write failed")
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise MachineryError(f"could not write {path}: {exc}") from None
