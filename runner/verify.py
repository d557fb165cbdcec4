"""The clean-process check of finished runs: the reported final val loss recomputed from the trained weights in a
fresh process, with causality checked at those weights.

The process that trained a variant ran its code for hundreds of steps; this one imports it anew, builds the model,
loads the trained parameters (nothing else: a variant holds no other state) and evaluates the whole val split
with autograd on, checking on every batch that the early logits do not depend on later tokens (``causality``), and
checks paired rows in both modes. A leak, a patch, or a loss that differs from the reported one (beyond the
rounding of two runs of the same code) makes the run ``rejected``. The recomputed loss is the one recorded.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.nn.functional as F

from arena.core.errors import ArenaError
from arena.core.hparams import resolve
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.runner import processes
from arena.runner.processes import Interrupted, MachineryFailure, interrupted, server_lost
from arena.runner.standby import Standby

REL_TOL = 1e-5  # two evaluations of the same weights by the same code: equal on the CPU, last bits on a GPU
VERIFY_LIMIT_S = 600.0


def _recompute(spec: Spec, model: Any, track: Any, dev: torch.device) -> tuple[float, str | None]:
    """The final val loss over every val batch, each forward in eval mode with autograd on and gradient-checked."""
    from arena.runner import causality

    model.eval()
    total, count, finding = 0.0, 0, None
    for x, y in track.val_batches(final=True):
        x, y = x.to(dev), y.to(dev)  # (B, T) each
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16"):
            embeddings, logits = model.embed_forward(x)  # (B, T, D), (B, T, V)
        leak = causality.gradient_leak(embeddings, logits, causality.random_t0(x.shape[1]))
        if leak.leaks and finding is None:
            finding = f"{leak.describe()} (evaluating the trained weights)"
        flat_y = y.reshape(-1)
        loss = F.cross_entropy(logits.detach().reshape(-1, logits.size(-1)).float(), flat_y, ignore_index=-100,
                               reduction="sum")
        total += float(loss.double())
        count += int((flat_y != -100).sum())
    return total / max(count, 1), finding


def _pairs(model: Any, track: Any, dev: torch.device) -> str | None:
    from arena.runner import causality

    batches = track.val_batches(final=False)
    x, other = batches[0][0].to(dev), batches[-1][0].to(dev)
    for training in (True, False):
        model.train(training)
        for grad_on in (True, False):
            with torch.set_grad_enabled(grad_on):
                leak = causality.perturbation_leak(model, x, other, causality.random_t0(x.shape[1]))
            if leak.leaks:
                return f"{leak.describe()} ({'training' if training else 'evaluation'} mode, trained weights)"
    return None


def _child(conn: Connection, spec_dict: dict[str, Any], source: str, path: str, options: RunOptions,
           runs: list[tuple[dict[str, Any], str]], policy: bool) -> None:
    from arena.model.backend import prepare_cuda
    from arena.model.lm import build_model
    from arena.runner import guard
    from arena.runner.check import reference_params
    from arena.runner.data import load_track
    from arena.runner.loader import load_source
    from arena.runner.train import placement

    t0 = time.perf_counter()
    spec = Spec.from_dict(spec_dict)
    track = load_track(spec, options.data_flag)
    dev, _ = placement(options)
    if dev.type == "cuda":
        prepare_cuda()
    states = [torch.load(state_path, map_location="cpu", weights_only=True) for _, state_path in runs]
    target = reference_params(spec.dims, spec.reference_variant)
    guard.private_environment()
    guard.prime()
    before = guard.snapshot()
    try:
        loaded = load_source(source, path, policy=policy)
        guard.check_untampered(before, "while importing in the clean process")
    except ArenaError as exc:
        conn.send(("refused", str(exc)))
        return
    # Where the check's time goes (issue #15 measures it on the GPU): set-up once, then each run's parts.
    conn.send(("timing", (-1, {"setup_s": time.perf_counter() - t0})))
    for i, ((result_dict, _), state) in enumerate(zip(runs, states, strict=True)):
        try:
            t1 = time.perf_counter()
            v = loaded.variant
            hp = resolve(v.hparams, result_dict["hparams"], v.name)
            model = build_model(spec.dims, v, hp, seed=int(result_dict["seed"]), backend=options.backend,
                                match_params_to=target).to(dev)
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                conn.send(("one", (None, f"the trained state does not fit the model ({len(missing)} missing, "
                                         f"{len(unexpected)} unexpected tensors)")))
                continue
            seen = track.for_seed(int(result_dict["seed"]))  # a tuning seed's run scored on the tuning split
            t2 = time.perf_counter()
            loss, finding = _recompute(spec, model, seen, dev)
            t3 = time.perf_counter()
            finding = finding or _pairs(model, seen, dev)
            guard.check_untampered(before, "while the trained weights were evaluated")
            parts = {"build_s": t2 - t1, "recompute_s": t3 - t2, "pairs_s": time.perf_counter() - t3}
            conn.send(("timing", (i, parts)))
            conn.send(("one", (loss, finding)))
        except ArenaError as exc:
            conn.send(("one", (None, str(exc))))
        except BaseException as exc:  # the variant's code failed on its own trained weights
            conn.send(("one", (None, f"{type(exc).__name__} while the trained weights were evaluated: {exc}")))
    conn.close()


def verify(
    spec: Spec, source: str, path: str, results: Sequence[RunResult], state_paths: Sequence[str],
    options: RunOptions, *, policy: bool = True, standby: Standby | None = None,
) -> list[RunResult]:
    """Each ok result recomputed and checked in one fresh process (``standby``: one started ahead, which has run
    no variant code yet); a result that fails comes back ``rejected``. Results of other statuses pass through
    unchanged."""
    todo = [(r, s) for r, s in zip(results, state_paths, strict=True) if r.status == "ok"]
    if not todo:
        return list(results)  # a standby not handed its target is its owner's to end
    runs = [(r.to_dict(), s) for r, s in todo]
    args = (spec.to_dict(), source, path, options, runs, policy)
    handed = standby.hand(_child, args) if standby is not None else None
    if handed is not None:
        proc, parent = handed
    else:
        parent, child = processes.pipe()
        proc = processes.start(_child, (child, *args))
        child.close()
    verdicts: list[tuple[float | None, str | None]] = []
    timings: dict[int, dict[str, float]] = {}  # -1: the set-up's; i: the i-th run's
    deadline = time.monotonic() + VERIFY_LIMIT_S
    try:
        while len(verdicts) < len(todo):
            if time.monotonic() > deadline:
                verdicts += [(None, "the clean-process check timed out")] * (len(todo) - len(verdicts))
                break
            if not parent.poll(0.5):
                if not proc.is_alive() and not parent.poll():
                    proc.join(timeout=5)
                    if interrupted(proc.exitcode):
                        raise Interrupted("the clean-process check was interrupted")
                    if server_lost(proc):  # arena's failure, not the variant's: no verdict, nothing stored
                        raise MachineryFailure("arena's process server died during the clean-process check; "
                                               "run the command again")
                    verdicts += [(None, f"the clean-process check died (exit code {proc.exitcode})")] * (
                        len(todo) - len(verdicts))
                continue
            try:
                kind, payload = parent.recv()
            except (EOFError, OSError):
                continue
            if kind == "refused":
                verdicts += [(None, str(payload))] * (len(todo) - len(verdicts))
            elif kind == "timing":  # only bookkeeping: a malformed one (the child runs variant code) is dropped
                with contextlib.suppress(TypeError, ValueError):
                    index, parts = payload
                    timings[int(index)] = {str(k): float(v) for k, v in dict(parts).items()}
            else:
                verdicts.append(payload)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
    checked = {id(r): _judge(r, loss, finding) for (r, _), (loss, finding) in zip(todo, verdicts, strict=True)}
    for i, (r, _) in enumerate(todo):
        if i in timings:
            r.env.setdefault("timing", {})["check_parts"] = timings.get(-1, {}) | timings[i]
    return [checked.get(id(r), r) for r in results]


def _judge(r: RunResult, loss: float | None, finding: str | None) -> RunResult:
    reported = r.final_val_loss
    if finding is None and loss is not None and reported is not None and math.isfinite(loss) \
            and abs(loss - reported) > REL_TOL * max(abs(reported), 1.0):
        finding = (f"the reported final val loss {reported:.6f} is not what a clean process computes from the trained "
                   f"weights ({loss:.6f})")
    if finding is None and loss is None:
        finding = "the clean-process check computed no loss"
    r.env["verified"] = finding is None
    if finding is not None:
        r.status = "rejected"
        r.error = finding
    return r
