"""Train one variant under one spec with one seed, in this process, and return a RunResult.

The protocol (data order, optimizer, schedule, evaluation) lives in ``runner.loop`` (``Run``, a sequence of named
steps), ``optim``, ``evaluate`` and the spec; variants cannot reach it. This module places a run, stamps its results
and turns the variant's failures into results. Two execution modes compute the same function:

* ``eager`` — the plain loop (CPU, or GPU for debugging);
* ``graph`` — on CUDA, after a few eager warm-up steps (which are real training steps), the whole step
  (forward, backward, clipping, AdamW) is captured in one CUDA graph and replayed. Small models like the seeds'
  are launch-bound in eager mode; the graph removes the launch gaps.
"""

from __future__ import annotations

import resource
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from arena.core.errors import ArenaError
from arena.core.hparams import HParams, UndeclaredHParam, resolve
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.model import autotune
from arena.runner.check import Violation
from arena.runner.data import Track
from arena.runner.env import environment
from arena.runner.loop import MachineryError, Rejected, Run
from arena.runner.provenance import local_basis

EventFn = Callable[[dict[str, Any]], bool | None]


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

    ``on_event`` receives ``{"type": "step", "step", "loss", "tok_s", "seed"}`` every few steps, ``{"type":
    "eval", "step", "val_loss", "seed"}`` at each eval and ``{"type": "phase", "phase"}`` when the run moves on
    (compiling, training, evaluating); returning True from an eval event stops the run (status ``pruned``).
    ``track``: the data, when the caller loaded it already (a worker loads it before the variant is imported).
    ``state_path``: where an ok run leaves its final weights for the clean-process check (``runner.verify``).
    While it trains, the run checks causality on the real forward of a few unpredictable eager steps and that every
    trained value is a parameter the model had when it was built.
    With ``options.execution.pack`` K > 1 this is one member of a pack of K (the others are copies of this seed,
    whose results are dropped): what a run of this seed under that execution computes.
    """
    return train_pack(spec, loaded, [seed], hparams, options=options, on_event=on_event,
                      checkpoint_paths=[checkpoint_path], track=track, state_paths=[state_path])[0]


def train_pack(
    spec: Spec,
    loaded: LoadedVariant,
    seeds: Sequence[int],
    hparams: Mapping[str, float] | None = None,
    *,
    options: RunOptions | None = None,
    on_event: EventFn | None = None,
    checkpoint_paths: Sequence[str | None] | None = None,
    track: Track | None = None,
    state_paths: Sequence[str | None] | None = None,
    member_hparams: Sequence[Mapping[str, float] | None] | None = None,
) -> list[RunResult]:
    """Train ``seeds`` of one variant (at most ``options.execution.pack``) as one packed model
    (``arena.model.pack``) of exactly that size, or as the plain model at pack size 1; one result per seed
    (``train`` describes them). A pack short of seeds is filled with copies of its first seed (ballast: trained,
    never reported), so that every run of an execution is trained in a pack of exactly its size.

    ``member_hparams`` (one per seed; a packed search: K trials, often of one seed) gives each member its own
    hyperparameters in place of ``hparams``; they may change values only (``arena.core.hparams.VALUE_PARAMS``)."""
    options = options or RunOptions()
    report, size = len(seeds), options.execution.pack
    if report > size:
        raise ValueError(f"{report} seeds do not fit a pack of {size}")
    fill: list[str | None] = [None] * (size - report)
    if member_hparams is not None and len(member_hparams) != report:
        raise ValueError(f"{len(member_hparams)} hyperparameter sets for {report} seeds")
    chosen = list(member_hparams) if member_hparams is not None else [hparams] * report
    seeds = [*seeds, *[seeds[0]] * (size - report)]
    chosen = [*chosen, *[chosen[0]] * (size - report)]
    checkpoint_paths = [*(checkpoint_paths or [None] * report), *fill]
    state_paths = [*(state_paths or [None] * report), *fill]
    hps = [h if isinstance(h, HParams) else resolve(loaded.variant.hparams, h, loaded.name) for h in chosen]
    basis = local_basis(options)  # a worker stamps the basis it checked against the driver's (the same)
    results = [RunResult(
        variant=loaded.name, variant_sha=loaded.sha256, spec_hash=spec.hash, seed=seed, hparams=hp.to_dict(),
        code_digest=basis.code, stack_id=basis.stack,
    ) for seed, hp in zip(seeds, hps, strict=True)]
    wall0 = time.perf_counter()
    dev, mode = placement(options)
    for i, result in enumerate(results):
        result.env = environment(dev) | {"mode": mode, "device_requested": options.device,
                                         "backend_requested": options.backend}
        if dev.type == "cuda":
            result.env["execution"] = asdict(options.execution)
        if len(seeds) > 1:
            result.env["pack"] = {"size": len(seeds), "index": i}
    try:
        run = Run(spec, loaded, seeds, hps, dev, mode, options, on_event, results, track, report)
        run.loop()
        run.finish(checkpoint_paths, state_paths)
    except MachineryError:
        raise
    except (Rejected, Violation, UndeclaredHParam) as exc:  # a leak, hidden state, an undeclared hyperparameter
        for result in results:
            result.status = "rejected"
            result.error = str(exc)
    except (Exception, SystemExit) as exc:  # the variant (or the hardware) failed: a result, not an exception
        for result in results:
            result.status = "crashed"
            result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
    wall = time.perf_counter() - wall0
    for result in results:
        result.wall_s = wall
        _record_hardware(result, dev)
    return results[:report]


def _record_hardware(result: RunResult, dev: torch.device) -> None:
    if dev.type == "cuda":
        # Which kernel configs this run computed with (another machine's tuning may differ; arena.model.autotune).
        tuned = autotune.choices()
        result.env["autotune"] = {"digest": autotune.digest(tuned), "kernels": len(tuned)}
        result.peak_mem_mb = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        result.peak_mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS


