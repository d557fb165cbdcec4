"""What the commands share: parsing flag values into the library's types, and opening the store."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arena.core.errors import ArenaError

if TYPE_CHECKING:  # imported per command, to start fast
    from arena.core.options import RunOptions
    from arena.core.spec import Spec
    from arena.db.store import Store


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count (``5`` → 0..4) or a comma list (``0,1,2``)."""
    try:
        if "," not in text and "-" not in text:
            n = int(text)
            if n <= 0:
                raise ArenaError(f"--seeds must be positive, got {n}")
            return tuple(range(n))
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ArenaError(f"--seeds wants a count (5) or a comma list (0,1,2), got '{text}'") from None
    if not seeds:
        raise ArenaError(f"--seeds wants a count (5) or a comma list (0,1,2), got '{text}'")
    return seeds


def parse_assignments(items: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ArenaError(f"{flag} wants field=value, got '{item}'")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def parse_hparams(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in parse_assignments(items, "--hp").items():  # "--hp wants field=value" names the flag
        try:
            out[key] = float(value)
        except ValueError:
            raise ArenaError(f"--hp {key}: '{value}' is not a number") from None
    return out


def spec_from_flags(
    preset: str, steps: int | None = None, seeds: str | None = None, track: str | None = None,
    data: str | None = None, sets: list[str] | None = None,
) -> "Spec":
    """The spec the flags describe (``arena.orchestration.specs.build_spec`` applies the rules)."""
    from arena.orchestration.specs import build_spec

    if steps is not None and steps <= 0:
        raise ArenaError(f"--steps must be a positive number of training steps, got {steps}")
    changes: dict[str, Any] = parse_assignments(sets, "--set")
    if steps is not None:
        changes["steps"] = steps
    return build_spec(preset, track=track, data=data, seeds=parse_seeds(seeds) if seeds is not None else None,
                      changes=changes)


def run_options(
    device: str = "auto", backend: str = "auto", mode: str = "auto", timeout: float | None = 3600.0,
    workers: int | None = 1, gpus: str | None = None, data: str | None = None, pinned_batches: bool = True,
    fused_adamw: bool = True, pack: str = "1", n_seeds: int = 1,
) -> "RunOptions":
    """The one execution-options object the flags describe; validated (one line per bad flag). ``pack``: the
    ``--pack`` flag (``auto``: ``n_seeds``, the seeds a command trains per entry, on a GPU; 1 on a CPU).
    ``timeout`` None: the flag was left out; 3600 s stands in until the command's plan derives the limit from its
    estimate (``arena.cli.plans.fit``)."""
    from arena.core.options import BACKENDS, Execution, RunOptions

    try:
        gpu_list = tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else ()
    except ValueError:
        raise ArenaError(f"--gpus wants a comma list of GPU indices (0,1), got '{gpus}'") from None
    gpu_list, workers = gpus_and_workers(device, gpu_list, workers)
    options = RunOptions(
        device=device, backend=backend, mode=mode, timeout_s=3600.0 if timeout is None else timeout,
        workers=workers, gpus=gpu_list,
        data_flag=data, execution=Execution(pinned_batches=pinned_batches, fused_adamw=fused_adamw,
                                            pack=_pack_size(pack, n_seeds, device,
                                                            -(-workers // max(1, len(gpu_list))),
                                                            gpu_list[0] if gpu_list else None)),
    )
    env_backend = os.environ.get("ARENA_BACKEND", "auto")
    if backend == "auto" and env_backend not in BACKENDS:  # else only the worker's model would find out
        raise ArenaError(f"ARENA_BACKEND={env_backend!r} is not one of {', '.join(BACKENDS)}; unset it or pick one")
    needs = options.cuda_flags(env_backend)
    if needs:
        _check_cuda(options, needs[0])
    return options


def gpus_and_workers(device: str, gpus: tuple[int, ...], workers: int | None) -> tuple[tuple[int, ...], int]:
    """Where runs go when the flags leave it open: on a machine with several GPUs and neither ``--gpus`` nor a
    ``--device cuda:N``, every visible GPU; ``--workers`` left out, one worker per GPU in use (1 on a CPU).
    ``--gpus 0`` restricts a multi-GPU machine to one GPU."""
    from arena.core.options import RunOptions
    from arena.runner.provenance import resolved_device, visible_gpus

    if device in ("auto", "cuda") and not gpus and resolved_device(RunOptions(device=device)) == "cuda":
        n = visible_gpus()
        if n > 1:
            gpus = tuple(range(n))
    return gpus, workers if workers is not None else max(1, len(gpus))


MAX_AUTO_PACK = 16  # seeds per pack that --pack auto chooses at most (the GPU saturates before; bench/results)
# GPU memory a pack member takes at phase2 (peak 3,581 MiB for a pack of 3 with its CUDA graphs, on an H200:
# bench/results/2026-12-01-h200-engines-b759f25.json), rounded up; the smaller presets take less.
MEMBER_MB = 1300.0
MEMORY_SHARE = 0.8  # of the free memory, what the packs of one GPU's workers may take together


def auto_pack(n_seeds: int, free_mb: float | None, workers_per_gpu: int = 1) -> int:
    """``--pack auto`` on a GPU: every seed at once, capped at MAX_AUTO_PACK and by what the free memory holds for
    each of the GPU's workers (``free_mb`` None: not known, no memory cap)."""
    n = max(1, min(n_seeds, MAX_AUTO_PACK))
    if free_mb is None:
        return n
    fits = int(free_mb * MEMORY_SHARE / max(1, workers_per_gpu) // MEMBER_MB)
    return max(1, min(n, fits))


def _pack_size(flag: str, n_seeds: int, device: str, workers_per_gpu: int = 1, gpu: int | None = None) -> int:
    """``--pack``: a positive number, or auto (on a GPU ``auto_pack``: every seed at once as far as the GPU's free
    memory holds them; 1 on a CPU, where a pack is no faster than its seeds one after another)."""
    from arena.core.options import RunOptions
    from arena.runner.provenance import free_gpu_memory_mb, resolved_device

    if flag.strip().lower() == "auto":
        if resolved_device(RunOptions(device=device)) != "cuda":
            return 1
        index = gpu if gpu is not None else int(device.split(":")[1]) if ":" in device else 0
        return auto_pack(n_seeds, free_gpu_memory_mb(index), workers_per_gpu)
    try:
        value = int(flag)
    except ValueError:
        raise ArenaError(f"--pack wants a number of seeds (e.g. 5) or auto, got '{flag}'") from None
    if value < 1:
        raise ArenaError(f"--pack must be at least 1 (seeds trained together), got {value}")
    return value


# What to do instead when a flag needs CUDA that this machine does not have (keyed by the flag's name).
_NO_CUDA_FIX = {"--device": "use --device cpu (or auto)", "--backend": "use --backend auto or torch_chunk",
                "ARENA_BACKEND": "unset ARENA_BACKEND (or set it to auto)", "--mode": "use --mode auto or eager",
                "--gpus": "leave out --gpus"}


def _check_cuda(options: "RunOptions", flag: str) -> None:
    """``flag`` needs CUDA: refuse it here, in one line, when torch sees no such device (not in the worker)."""
    import torch

    if not torch.cuda.is_available():
        fix = _NO_CUDA_FIX[flag.replace("=", " ").split()[0]]
        raise ArenaError(f"{flag}: this torch build sees no CUDA device; {fix}")
    count = torch.cuda.device_count()
    wanted = list(options.gpus) or ([int(options.device.split(":")[1])] if ":" in options.device else [])
    bad = [g for g in wanted if g >= count]
    if bad:  # with --gpus each worker sees only its GPU, so there --device names cuda (or cuda:0)
        name = "--gpus" if options.gpus else "--device"
        raise ArenaError(f"{name}: GPU {bad[0]} does not exist, this machine has {count} (0..{count - 1}); "
                         f"see: arena doctor")


def check_output_path(path: str | Path, flag: str, suffixes: Sequence[str] = ()) -> Path:
    """Refuse ``path`` before any work (one line naming ``flag`` and the fix) when it cannot be written as a file:
    an existing folder, a folder that does not exist or cannot be written, a name without one of ``suffixes``
    (when given: ``--plot DIR`` would otherwise write ``DIR.png``). Creates nothing; returns the path."""
    p = Path(path).expanduser()
    example = p / f"out{suffixes[0] if suffixes else ''}"
    if p.is_dir():
        raise ArenaError(f"{flag} {p}: is a folder; give a file name inside it, e.g. {example}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise ArenaError(f"{flag} {p}: give a file name ending in {' or '.join(suffixes)}")
    folder = p.parent
    if not folder.is_dir():
        raise ArenaError(f"{flag} {p}: its folder {folder} does not exist; create it (mkdir -p {folder}) or give "
                         "another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArenaError(f"{flag} {p}: its folder {folder} is not writable; give another path")
    return p


def check_paired_seeds(spec: "Spec", what: str) -> None:
    """A champion decision is a paired t-test over seeds: refuse a spec with fewer than 2 before anything trains."""
    if len(spec.seeds) < 2:
        raise ArenaError(f"--seeds {len(spec.seeds)}: {what} needs at least 2 seeds for its paired test; "
                         "use --seeds 2 or more (or leave --seeds out)")


def check_tune_flags(trials: int, timeout: float | None, storage: str | None) -> None:
    """``arena tune``'s own flags, checked before the store is opened (nothing is written for a bad one)."""
    from arena.orchestration.search.storage import check_storage

    if trials < 1:
        raise ArenaError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise ArenaError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if storage is not None:
        check_storage(storage)


def open_store(db: str | None) -> "Store":
    """The store, created (and migrated) if it does not exist yet, and found writable: for commands that write
    (a locked or read-only store fails here, before anything trains)."""
    from arena.db.store import Store

    return writable(_noted(Store(db or Store.default_url())))


def writable(store: "Store") -> "Store":
    """``store``, once its write probe passed (``Store.check_writable``); closed and refused (one line) otherwise."""
    try:
        store.check_writable()
    except BaseException:
        store.close()
        raise
    return store


def _noted(store: "Store") -> "Store":
    """Say (on stderr: stdout may be JSON) when opening the store recorded runs an earlier failed write spooled."""
    if store.recovered:
        from arena.cli.console import err_console
        from arena.db.spool import spool_dir

        err_console.print(f"[dim]recorded {len(store.recovered)} finished run(s) kept in {spool_dir()} by an earlier "
                          "failed write[/dim]", highlight=False)
    return store


def existing_store(db: str | None) -> "Store | None":
    """The store, or None while its SQLite file does not exist: looking (or failing early) creates nothing."""
    from arena.db.engine import sqlite_file
    from arena.db.store import Store

    url = db or Store.default_url()
    path = sqlite_file(url)
    return None if path is not None and not path.exists() else _noted(Store(url))


def reading_store(db: str | None) -> "Store":
    """The store for a command that only reads; a one-line error (and no new file) when there is none yet."""
    from arena.db.engine import display
    from arena.db.store import Store

    store = existing_store(db)
    if store is None:
        raise ArenaError(f"no arena store at {display(db or Store.default_url())} yet; "
                         "start with: arena tournament --preset smoke (or point --db / ARENA_DB at yours)")
    return store


def on_engine(options: "RunOptions", engine: str, ray_address: str | None, gpu_share: float | None) -> "RunOptions":
    """``options`` on the engine the flags name (``--engine``, ``--ray-address``, ``--gpu-share``), validated;
    ``--engine ray`` without Ray installed is one line naming the extra."""
    from dataclasses import replace

    from arena.orchestration.engines import check_engine

    options = replace(options, engine=engine, ray_address=ray_address, gpu_share=gpu_share)
    check_engine(options)
    return options
