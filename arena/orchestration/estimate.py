"""Know before you wait: how long a plan of runs takes on this device, and the time limit one run needs.

Pure functions over plain data (a spec, recorded results, a device name), except ``evidence``, the one store read.
The model of one run is rough on purpose, and says where each number comes from:

    run_s = steps · tokens_per_step / tok_s          training
          + eval_tokens / (3 · tok_s)               evaluations: forward only, about a third of a step's work
          + warm-up + overhead                      compilation and first steps; process start, import, clean check

``tok_s`` is the median ``tokens_per_s`` that earlier ok runs of the same model shape recorded on the same device
(the variant's own runs when it has some, else all of them); without any, a built-in default per preset and
device kind (``DEFAULTS``), scaled by the model's size. On a CPU either is scaled down by the threads a run gets
now (``cpu_count // workers``), never up.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arena.core.errors import ArenaError
from arena.core.result import RunResult
from arena.core.spec import PRESETS, Spec
from arena.db.store import Store

LONG_S = 600.0  # a plan longer than this on a CPU gets a warning that points at --preset smoke
MIN_LIMIT_S = 600.0  # the derived per-run time limit is max(MIN_LIMIT_S, LIMIT_FACTOR × the slowest run)
LIMIT_FACTOR = 3.0
SHAKESPEARE_CHARS = 1_115_394  # the size of tinyshakespeare: its val split sizes a full final evaluation


@dataclass(frozen=True)
class Speed:
    """How fast runs go: steady tokens per second, the warm-up, and the fixed cost of a run around its training.
    ``recorded``: how many stored runs it comes from (0: a built-in default); ``threads``: the CPU threads it was
    measured with (None: not known, or a GPU)."""

    tok_s: float
    warmup_s: float
    overhead_s: float
    recorded: int = 0
    threads: int | None = None


# Built-in defaults (recorded runs replace them). Measured with arena's own runs, CPU figures on 2 cores:
# * smoke, cpu: 12K–84K tok/s (gru_arbiter … gpt; median 19K), warm-up ≈ 0.05 s; the whole smoke tournament (33
#   runs and the decision) took 73 s on 1 worker, so ≈ 1.5 s a run besides training.
# * phase2, cpu: 132–6,800 tok/s (hy 439 with a 44 s warm-up, gf 2,950 with 6 s, gpt 6,800); 800 is a middle.
# * phase2, cuda: 290–317K tok/s on an H200/H100 (bench/results); a worker start, CUDA graph capture and the clean
#   check cost tens of seconds a run. smoke, cuda: not measured (a tiny model: launch-bound), a guess.
DEFAULTS: dict[tuple[str, str], Speed] = {
    ("smoke", "cpu"): Speed(19_000.0, 0.05, 1.5, threads=2),
    ("phase2", "cpu"): Speed(800.0, 10.0, 5.0, threads=2),
    ("smoke", "cuda"): Speed(100_000.0, 15.0, 15.0),
    ("phase2", "cuda"): Speed(300_000.0, 20.0, 15.0),
}


def device_of(info: Mapping[str, Any]) -> str:
    """The device a basis's ``info`` or a run's ``env`` names: its GPU model, ``cpu``, or ``cuda`` (model unknown)."""
    if info.get("gpu"):
        return str(info["gpu"])
    return "cpu" if str(info.get("device", "cpu")).startswith("cpu") else "cuda"


def kind_of(device: str) -> str:
    """``cpu`` or ``cuda``: the kind of a ``device_of`` name."""
    return "cpu" if device == "cpu" else "cuda"


def same_device(env: Mapping[str, Any], device: str) -> bool:
    """Whether a run that recorded ``env`` ran on ``device`` (``cuda`` matches any GPU)."""
    theirs = device_of(env)
    return theirs == device or (device == "cuda" and kind_of(theirs) == "cuda")


def _cost(spec: Spec) -> float:
    """Work per token, up to a constant: layers × width² (what the mixers and the FFN scale with)."""
    return float(spec.dims.n_layer * spec.dims.d_model**2)


def default_speed(spec: Spec, device: str) -> Speed:
    """The built-in speed for ``spec`` on ``device``: its preset's (phase2's for another name), scaled by size."""
    kind = kind_of(device)
    name = spec.name if (spec.name, kind) in DEFAULTS else "phase2"
    base = DEFAULTS[(name, kind)]
    scale = _cost(PRESETS[name]) / _cost(spec) if name in PRESETS else 1.0
    return Speed(base.tok_s * scale, base.warmup_s, base.overhead_s, 0, base.threads)


def recorded_speed(runs: Sequence[RunResult], device: str, overhead_s: float) -> Speed | None:
    """The median speed and warm-up of the ok runs among ``runs`` that ran on ``device`` and recorded a speed; None
    if none did. A run does not record what it cost around its training: ``overhead_s`` stands in for that."""
    mine = [r for r in runs if r.status == "ok" and r.tokens_per_s and same_device(r.env, device)]
    if not mine:
        return None
    threads = [int(r.env["threads"]) for r in mine if r.env.get("threads")]
    return Speed(statistics.median(float(r.tokens_per_s or 0) for r in mine),
                 statistics.median(float(r.warmup_s or 0.0) for r in mine), overhead_s, len(mine),
                 int(statistics.median(threads)) if threads and kind_of(device) == "cpu" else None)


def eval_tokens(spec: Spec) -> int:
    """Tokens a run evaluates: the intermediate evals, and the final one twice (the run's and the clean check's)."""
    batch = spec.tokens_per_step
    final = spec.final_eval_batches or max(1, int(SHAKESPEARE_CHARS * spec.val_fraction) // spec.seq_len
                                           // spec.batch_size)
    return (spec.steps // spec.eval_every) * spec.eval_batches * batch + 2 * final * batch


def run_seconds(spec: Spec, speed: Speed, threads: int | None = None) -> float:
    """One run of ``spec`` at ``speed``; on a CPU run with ``threads`` threads (fewer than measured: slower)."""
    tok_s = speed.tok_s
    if threads is not None and speed.threads is not None and threads < speed.threads:
        tok_s *= threads / speed.threads
    work = spec.steps * spec.tokens_per_step + eval_tokens(spec) / 3
    return work / max(tok_s, 1e-9) + speed.warmup_s + speed.overhead_s


@dataclass(frozen=True)
class Estimate:
    """A plan of ``runs`` runs of ``steps`` steps on ``device`` with ``workers`` workers. ``run_s`` is its slowest
    run, ``total_s`` all of them spread over the workers, ``tok_s`` the median speed; ``recorded`` counts the
    stored runs behind the speeds (0: built-in defaults only), ``sure`` whether the slowest run's speed is one."""

    runs: int
    steps: int
    device: str
    workers: int
    tok_s: float
    recorded: int
    run_s: float
    total_s: float
    sure: bool

    @property
    def long(self) -> bool:
        """Long enough on a CPU to say so before it starts."""
        return kind_of(self.device) == "cpu" and self.total_s > LONG_S

    @property
    def limit_s(self) -> float:
        """The per-run time limit when the user gave none: room for a slow run, not for a hung one."""
        return max(MIN_LIMIT_S, LIMIT_FACTOR * self.run_s)

    @property
    def shortest_s(self) -> float:
        """The least the slowest run can plausibly take: a recorded speed is trusted, a default only within 4×."""
        return self.run_s * (0.9 if self.sure else 0.25)


def pack_of(run: RunResult) -> int:
    """The pack size a stored run trained in (1: alone)."""
    return int((run.env.get("pack") or {}).get("size", 1))


def estimate(
    spec: Spec, variants: Sequence[str], runs: Sequence[RunResult], device: str, *, workers: int = 1,
    threads: int | None = None, parallel: int | None = None, pack: int = 1,
) -> Estimate:
    """The estimate of a plan: one run of ``spec`` per item of ``variants`` (each a variant's sha256), with the
    speeds that ``runs`` (stored results, any device) recorded on ``device``, on ``workers`` workers whose runs get
    ``threads`` CPU threads each. A variant's runs train one after another in one worker, so at most ``parallel``
    runs go at once (default: one per distinct variant, up to ``workers``).

    ``pack`` > 1 (``--pack``): a variant's runs train ``pack`` at a time as one model. A run records its member's
    speed, so runs recorded at this pack size give both the time of a pack (one run's) and ``pack`` runs per pack;
    without such records nothing is assumed of the gain: a pack is taken to cost ``pack`` runs (for its limit too)."""
    same = [r for r in runs if pack_of(r) == pack]  # a packed member's speed is not a run's alone, nor the reverse
    if pack > 1 and any(r.status == "ok" and r.tokens_per_s for r in same):
        est = _estimate(spec, variants, same, device, workers, threads, parallel)
        return dataclasses.replace(est, total_s=est.total_s / pack)
    est = _estimate(spec, variants, [r for r in runs if pack_of(r) == 1], device, workers, threads, parallel)
    return dataclasses.replace(est, run_s=est.run_s * pack)


def _estimate(spec: Spec, variants: Sequence[str], runs: Sequence[RunResult], device: str, workers: int,
              threads: int | None, parallel: int | None) -> Estimate:
    default = default_speed(spec, device)
    overall = recorded_speed(runs, device, default.overhead_s)
    fallback = overall or default
    speeds = []
    for sha in variants:
        own = recorded_speed([r for r in runs if r.variant_sha == sha], device, default.overhead_s)
        speeds.append(own or fallback)
    times = [run_seconds(spec, s, threads) for s in speeds]
    parallel = max(1, min(workers, parallel or len(set(variants)) or 1))
    slowest = max(range(len(times)), key=times.__getitem__) if times else None
    return Estimate(
        runs=len(variants), steps=spec.steps, device=device, workers=workers,
        tok_s=statistics.median(s.tok_s for s in speeds) if speeds else fallback.tok_s,
        recorded=overall.recorded if overall else 0,
        run_s=times[slowest] if slowest is not None else 0.0, total_s=sum(times) / parallel,
        sure=slowest is not None and speeds[slowest].recorded > 0,
    )


def check_timeout(est: Estimate, timeout_s: float, flag: str = "--timeout", preset: str = "") -> None:
    """Refuse (ArenaError, one line naming ``flag`` and the fix) a per-run limit the plan cannot meet; ``preset``
    (the spec's name) decides whether ``--preset smoke`` is a fix worth naming."""
    if est.runs == 0 or timeout_s >= est.shortest_s:
        return
    source = "at the speed recorded here" if est.sure else "at a rough default speed"
    smoke = ", or use --preset smoke" if kind_of(est.device) == "cpu" and preset != "smoke" else ""
    raise ArenaError(f"{flag} {timeout_s:g}: the slowest run of this plan needs about {duration(est.run_s)} on "
                     f"{est.device} ({source}), so it would time out; give {flag} {math.ceil(est.limit_s)} or leave "
                     f"{flag} out (arena then allows {duration(est.limit_s)} a run){smoke}")


def evidence(store: Store, spec: Spec) -> list[RunResult]:
    """The ok runs that measured the speed of ``spec``'s model: the spec's own and those of every stored spec with
    the same model shape (dims, batch, sequence length, precision: other steps, seeds or data train as fast)."""
    shape = (spec.dims, spec.batch_size, spec.seq_len, spec.precision)
    out: list[RunResult] = []
    for row in store.specs():
        other = spec if row.hash == spec.hash else store.spec(row.hash) if row.n_runs else None
        if other is not None and (other.dims, other.batch_size, other.seq_len, other.precision) == shape:
            out += [r.result for r in store.runs(row.hash, status="ok")]
    return out


def duration(seconds: float) -> str:
    """A duration as people say it: 40 s, 12 min, 3 h 05 min."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def rate(tok_s: float) -> str:
    """A speed in few digits: 800, 19K, 310K, 1.2M."""
    if tok_s >= 1e6:
        return f"{tok_s / 1e6:.1f}M"
    if tok_s >= 1e4:
        return f"{tok_s / 1e3:.0f}K"
    if tok_s >= 1e3:
        return f"{tok_s / 1e3:.1f}K"
    return f"{tok_s:.0f}"
