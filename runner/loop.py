"""The training loop of one run of K members (K = 1: the plain model; K > 1: a pack), as named phases.

build → (warm-up → capture) → step → evaluate and diagnostics at each eval point → finish. ``runner.train`` sets a
run up and turns its failures into results; this module is the protocol's loop itself (data order, optimizer,
schedule, evaluation come from ``optim``, ``evaluate`` and the spec; variants cannot reach them).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

from arena.core.hparams import HParams
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.model.backend import prepare_cuda
from arena.model.lm import HybridLM
from arena.model.pack import PackedLM
from arena.runner import causality
from arena.runner.check import Violation, audit_model, built_members
from arena.runner.data import Track, load_track
from arena.runner.eval_graph import Evaluator
from arena.runner.evaluate import diagnostics, grad_norms, loss_of, member_losses, movement, snapshot
from arena.runner.feed import BatchFeeder
from arena.runner.optim import clip_per_member, lr_at, make_optimizer, set_lr

EventFn = Callable[[dict[str, Any]], bool | None]
REPORT_EVERY = 10  # steps between host syncs for progress and divergence checks
WARM_STEPS = 3
CHECKED_STEPS = 3  # eager training steps whose forward is checked for causality (chosen from the OS's entropy)



class Rejected(Exception):
    """The variant broke a rule while it ran; the run ends as ``rejected`` with this reason."""


class MachineryError(Exception):
    """arena's own machinery failed (e.g. a checkpoint that a full disk cannot hold): not the variant's failure,
    so not a result: the run is left unstored, to be run again."""


class Run:
    """One training run of K members (K = 1: the plain model; K > 1: a pack), step by step. Each method is one
    named phase of the protocol. Tensors of a pack carry a leading K; a plain run's do not."""

    def __init__(
        self, spec: Spec, loaded: LoadedVariant, seeds: list[int], hps: list[HParams], dev: torch.device, mode: str,
        options: RunOptions, on_event: EventFn | None, results: list[RunResult], track: Track | None = None,
        report: int | None = None,
    ) -> None:
        # Member k: seeds[k] with hyperparameters hps[k] (a tournament's pack: one entry's seeds, equal hps; a packed
        # search: K trials of the tuning seed, each its own hps — values only, never the model's shape).
        self.spec, self.loaded, self.seeds, self.hps, self.dev = spec, loaded, seeds, hps, dev
        self.k = len(seeds)
        self.report_k = self.k if report is None else report
        self.graph = mode == "graph"
        self.on_event, self.results = on_event, results
        self.active = [True] * self.k  # False once a member diverged or was pruned: its results are final
        self.autocast = spec.precision == "bf16"
        # Eager steps before the graph is captured (cuBLAS, autotuning and the allocator settle in them); excluded
        # from the steady-state throughput. Three suffice: the step's shapes never change.
        self.n_warm = min(WARM_STEPS, spec.steps)
        # The gradient check runs on the real forward of a few eager steps the variant cannot predict (a graph
        # replay runs no Python of the variant: its behaviour is the captured one).
        eager = self.n_warm if self.graph else spec.steps
        self.check_steps = causality.random_steps(eager, CHECKED_STEPS)
        t0 = time.perf_counter()
        self.build(options, track)
        # Where a run's wall time goes besides training (issue #15 measures it): recorded in every result's env.
        self.timing: dict[str, Any] = {"build_s": time.perf_counter() - t0, "build_parts": self.build_parts,
                                       "capture_s": 0.0, "eval_s": 0.0, "final_s": 0.0}

    # -- build ------------------------------------------------------------------------------------------------
    def build(self, options: RunOptions, track: Track | None) -> None:
        """The data, the model (each member seeded per component), the optimizer and the batch feeders."""
        spec, dev = self.spec, self.dev
        self.build_parts: dict[str, float] = {}  # where the build's time goes (recorded in env.timing)
        lap = time.perf_counter()

        def mark(part: str) -> None:
            nonlocal lap
            now = time.perf_counter()
            self.build_parts[part] = now - lap
            lap = now

        base = track if track is not None else load_track(spec, options.data_flag)
        self.tracks = [base.for_seed(seed) for seed in self.seeds]
        if dev.type == "cuda":
            prepare_cuda()
        mark("data_s")
        members, n_params, target, refusal = built_members(spec, self.loaded, self.seeds, self.hps, options.backend,
                                                           dev)
        for result in self.results:
            result.params_total = n_params
            result.params_target = target if self.loaded.variant.match_params else None
        if refusal:
            raise Rejected(refusal)
        for result in self.results:
            result.params_by_part = members[0].params_by_part()
        mark("models_s")
        solo = members[0]
        self.model: HybridLM | PackedLM = PackedLM(members) if self.k > 1 else solo
        self.model.train()
        mark("pack_s")
        self.solo = solo  # the plain model (a pack's template): the one the audits and diagnostics see
        self.param_ids = {id(p) for p in solo.parameters()}
        self.params = list(self.model.parameters())
        self.trained_ids = {id(p) for p in self.params}
        # lr_mult: a variant without a Mamba pathway declares none; lr_scale: declared by every shipped variant.
        lr_mult = [hp.to_dict().get("lr_mult", 1.0) for hp in self.hps]
        lr_scale = [hp.to_dict().get("lr_scale", 1.0) for hp in self.hps]
        fused = dev.type == "cuda" and options.execution.fused_adamw
        self.opt = make_optimizer(self.model, spec, lr_mult, capturable=self.graph, fused=fused, lr_scale=lr_scale)
        mark("optimizer_s")
        self.feeds = [BatchFeeder(t, seed, dev, pinned=options.execution.pinned_batches)
                      for t, seed in zip(self.tracks, self.seeds, strict=True)]
        self.val_batches = [t.val_batches(final=False) for t in self.tracks]
        # Evaluation replays a captured forward in graph mode (an eager pass of a pack costs more than the training
        # between two eval points); the val batches stay on the device.
        self.evaluator = Evaluator(self.model, dev, self.autocast, graphs=self.graph)
        self.evaluator.stage("val", self.val_batches)
        self.initial = snapshot(self.model)  # θ₀ on the device: how far each group moved, at every eval
        mark("eval_setup_s")
        self.losses = torch.zeros(self.k, spec.steps, device=dev)  # per-step train losses, read at sync points only
        self.cuda_graph: torch.cuda.CUDAGraph | None = None
        self.graph_stream: torch.cuda.Stream | None = None
        self.static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, y, losses of the graph
        self.synced_upto = 0
        self.t_mark = 0.0
        self.timed_s = 0.0

    # -- one step ---------------------------------------------------------------------------------------------
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's batch: (B, T) each for a plain run, (K, B, T) — every member its own seed's — for a pack."""
        if self.k == 1:
            return self.feeds[0](step)
        xs, ys = zip(*(feed(step) for feed in self.feeds), strict=True)
        return torch.stack(xs), torch.stack(ys)  # (K, B, T) each

    def step_eager(self, x: torch.Tensor, y: torch.Tensor, check: bool = False) -> torch.Tensor:
        """Forward, backward, clipping and AdamW on one batch; the members' losses (K,), detached. With ``check``,
        the same forward's early logits are differentiated with respect to its later embeddings first (must be
        zero)."""
        self.opt.zero_grad(set_to_none=not self.graph)
        with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.autocast):
            embeddings, logits = self.model.embed_forward(x)  # (B, T, D), (B, T, V); a pack: (K, B, T, ·)
        if check:
            leak = causality.gradient_leak(embeddings, logits, causality.random_t0(x.shape[-1]))
            if leak.leaks:
                raise Rejected(f"{leak.describe()} (on a training step)")
        if self.k == 1:
            losses = loss_of(logits, y).unsqueeze(0)  # (1,)
            losses.sum().backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip, foreach=True)
        else:
            losses = member_losses(logits, y)  # (K,): each member's mean over its own targets
            losses.sum().backward()  # members share no parameter: each gets its own loss's gradient
            clip_per_member(self.params, self.spec.grad_clip)
        self.opt.step()
        return losses.detach()

    def capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Capture the whole step in one CUDA graph over static input buffers (after the eager warm-up).

        On a stream of its own: PyTorch keys cuBLAS workspaces by the capture stream and frees a stream's
        workspaces when a graph captured on it is made or destroyed, so two graphs on the shared default capture
        stream break each other (replaying the first after capturing the second reads freed memory:
        ``illegal memory access``; pytorch/pytorch#193402). Each graph keeps its stream alive with it."""
        static_x, static_y = x.clone(), y.clone()
        self.cuda_graph = torch.cuda.CUDAGraph()
        self.graph_stream = torch.cuda.Stream(self.dev)
        self.opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(self.cuda_graph, stream=self.graph_stream):
            static_losses = self.step_eager(static_x, static_y)
        self.static = (static_x, static_y, static_losses)

    def step(self, step: int) -> None:
        """Training step ``step``: eager during the warm-up (and in eager mode), a graph replay after it."""
        set_lr(self.opt, lr_at(self.spec, step))
        x, y = self.batch(step)  # identical for every variant at this seed
        if self.graph and step >= self.n_warm:
            if self.cuda_graph is None:
                self.phase("compiling")
                self.sync()
                t0 = time.perf_counter()
                self.capture(x, y)
                self.sync()
                took = time.perf_counter() - t0
                self.timing["capture_s"] = took
                self.t_mark += took  # capturing is not training time
                self.phase("training")
            assert self.cuda_graph is not None and self.static is not None
            static_x, static_y, static_losses = self.static
            static_x.copy_(x)
            static_y.copy_(y)
            self.cuda_graph.replay()
            self.losses[:, step].copy_(static_losses)
        else:
            self.losses[:, step].copy_(self.step_eager(x, y, check=step in self.check_steps))
        if step == 0:
            self.audit("after the first training step")

    # -- bookkeeping ------------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def phase(self, name: str) -> None:
        if self.on_event:
            self.on_event({"type": "phase", "phase": name})

    def audit(self, where: str) -> None:
        """The plain model's parameters are those it was built with, and a pack trains exactly its stacked ones."""
        audit_model(self.solo, self.param_ids, where)
        if {id(p) for p in self.model.parameters()} != self.trained_ids:
            raise Violation(f"the trained parameters changed {where}")

    def check_upto(self, step: int) -> bool:
        """Read the losses up to ``step`` (exclusive) into the train curves; a member whose loss is not finite has
        diverged there. False when no member is left training."""
        start = self.synced_upto
        vals = self.losses[:, start:step].tolist()  # one host sync for every member
        self.synced_upto = step
        for k, result in enumerate(self.results):
            if not self.active[k]:
                continue
            for i, v in enumerate(vals[k]):
                if not math.isfinite(v):
                    result.status = "diverged"
                    result.error = f"non-finite train loss ({v}) at step {start + i}"
                    result.steps_done = step
                    self.active[k] = False
                    break
                result.train_curve.append((start + i, v))
        return any(self.active)

    def report(self, done: int) -> None:
        if not self.on_event:
            return
        elapsed = time.perf_counter() - self.t_mark
        tok_s = (done - (self.n_warm if done > self.n_warm else 0)) * self.spec.tokens_per_step / max(elapsed, 1e-9)
        for k in range(self.report_k):
            if self.active[k] and self.results[k].train_curve:
                self.on_event({"type": "step", "step": done, "loss": self.results[k].train_curve[-1][1],
                               "tok_s": tok_s, "seed": self.seeds[k], "member": k})

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate_at(self, done: int) -> bool:
        """Diagnostics and the intermediate val loss at an eval point; True when no member is left training."""
        self.sync()
        pause = time.perf_counter()
        self.phase("evaluating")
        # Σ lr so far (lr_mult × this for the Mamba group): how far Adam, about lr a step, could have moved anything.
        schedule_sum = sum(lr_at(self.spec, s) for s in range(done))
        # Gradient norms and movement of every member at once (one sync each); then the recorded forward per member.
        norms, moved = grad_norms(self.model), movement(self.model, self.initial)
        for k, result in enumerate(self.results):
            if not self.active[k]:
                continue
            lr_sum = self.spec.lr * self.hps[k].to_dict().get("lr_scale", 1.0) * schedule_sum
            # The recorded forward reads one plain model: a pack's member k, its weights loaded into the template.
            model = self.model.load_member(k, grads=False) if isinstance(self.model, PackedLM) else self.model
            diag = diagnostics(model, done, self.val_batches[k][:1], self.dev, self.autocast, norms=norms[k],
                               moved=moved[k])
            diag["lr_sum"] = lr_sum
            result.diagnostics.append(diag)
        val = self.evaluator("val")
        for k, result in enumerate(self.results):
            if not self.active[k]:
                continue
            val_loss = val[k][0]
            result.val_curve.append((done, val_loss))
            result.steps_done = done
            if not math.isfinite(val_loss):
                result.status = "diverged"
                result.error = f"non-finite val loss at step {done}"
                self.active[k] = False
            elif (k < self.report_k and self.on_event
                  and self.on_event({"type": "eval", "step": done, "val_loss": val_loss, "seed": self.seeds[k],
                                                "member": k})):
                result.status = "pruned"
                self.active[k] = False
        self.phase("training")
        self.sync()
        self.t_mark += time.perf_counter() - pause  # evaluation is not training time
        self.timing["eval_s"] += time.perf_counter() - pause
        return not any(self.active)

    # -- the loop ---------------------------------------------------------------------------------------------
    def loop(self) -> None:
        """Every training step, with host syncs every REPORT_EVERY steps and evaluation every eval_every."""
        spec = self.spec
        self.phase("training")
        for step in range(spec.steps):
            if step == self.n_warm:
                self.sync()
                warm = time.perf_counter() - self.t_mark if self.t_mark else None
                for result in self.results:
                    result.warmup_s = warm
                self.t_mark = time.perf_counter()
            if step == 0:
                self.t_mark = time.perf_counter()
            self.step(step)
            done = step + 1
            is_eval = done % spec.eval_every == 0 or done == spec.steps
            if done % REPORT_EVERY == 0 or is_eval:
                self.sync()
                if not self.check_upto(done):
                    break
                self.report(done)
            if is_eval and self.evaluate_at(done):
                break
            if done > self.n_warm:
                self.timed_s = time.perf_counter() - self.t_mark
        backends = self.model.backends_used()
        for result in self.results:
            result.steps_done = max(result.steps_done, min(self.synced_upto, len(result.train_curve)))
            result.backend = backends
            if result.steps_done > self.n_warm and self.timed_s > 0:
                # Each member saw its own tokens in this time: a member's throughput is the pack's wall rate.
                result.tokens_per_s = (result.steps_done - self.n_warm) * spec.tokens_per_step / self.timed_s
                if self.k > 1:
                    result.env["pack"]["aggregate_tok_s"] = result.tokens_per_s * self.k

    # -- finish -----------------------------------------------------------------------------------------------
    def finish(self, checkpoint_paths: list[str | None], state_paths: list[str | None]) -> None:
        """The final evaluation over the whole val split, and the checkpoints (for ok members only)."""
        t0 = time.perf_counter()
        try:
            self._finish(checkpoint_paths, state_paths)
        finally:
            self.timing["final_s"] = time.perf_counter() - t0
            self.timing["train_s"] = self.timed_s
            for result in self.results:
                result.env["timing"] = dict(self.timing)

    def _finish(self, checkpoint_paths: list[str | None], state_paths: list[str | None]) -> None:
        if not any(r.status == "ok" for r in self.results):
            return
        self.audit("at the end of training")
        self.phase("evaluating")
        self.evaluator.stage("final", [t.val_batches(final=True) for t in self.tracks])
        finals = self.evaluator("final")
        for k, result in enumerate(self.results[: self.report_k]):
            if result.status != "ok":
                continue
            final_loss, acc = finals[k]
            result.final_val_loss = final_loss
            result.final_val_bpc = final_loss / math.log(2) if math.isfinite(final_loss) else None
            result.final_val_acc = acc if self.tracks[k].kind == "mqar" else None
            if not math.isfinite(final_loss):
                result.status = "diverged"
                result.error = "non-finite final val loss"
            state_path, checkpoint_path = state_paths[k], checkpoint_paths[k]
            if not (state_path and result.status == "ok") and not checkpoint_path:
                continue
            weights = self._member_state(k)
            if state_path and result.status == "ok":
                _save(weights, state_path)
            if checkpoint_path:
                meta = {"variant": self.loaded.name, "variant_sha": self.loaded.sha256, "spec": self.spec.to_dict(),
                        "seed": self.seeds[k], "hparams": self.hps[k].to_dict()}
                _save({"state_dict": weights, "meta": meta}, checkpoint_path)
                result.checkpoint_path = checkpoint_path

    def _member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights on the CPU, as the plain model's state dict (a pack's member is a plain model)."""
        state = self.model.member_state(k) if isinstance(self.model, PackedLM) else self.model.state_dict()
        return {n: v.detach().cpu() for n, v in state.items()}


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
