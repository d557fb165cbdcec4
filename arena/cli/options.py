"""Every option that more than one command takes, defined once (flag name, type and help).

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

from typing import Annotated

import typer

# -- the spec ------------------------------------------------------------------------------------------------------
Preset = Annotated[str, typer.Option("--preset", help="Benchmark preset: phase2 (the seeds' setting) or smoke.")]
Steps = Annotated[int | None, typer.Option("--steps", help="Training steps (derives a new spec).")]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Seeds: a count (5) or a list (0,1,2); new spec.")]
Track = Annotated[str | None, typer.Option("--track", help="shakespeare | mqar | text:PATH (new spec).")]
Data = Annotated[str | None, typer.Option("--data", help="Path to tinyshakespeare.txt (or ARENA_DATA).")]
Set = Annotated[list[str] | None, typer.Option("--set", help="Override a spec field: --set lr=1e-3 (new spec).")]
Hp = Annotated[list[str] | None, typer.Option("--hp", help="Hyperparameter value: --hp gate_init=0.3")]
SpecRef = Annotated[
    str | None,
    typer.Option("--spec", help="Spec hash (prefix), label or preset name; default: the last completed tournament's."),
]

# -- the store -----------------------------------------------------------------------------------------------------
Db = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store (or ARENA_DB).")]
Storage = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage: a journal file path, sqlite:///F, postgresql+psycopg://…, redis://… "
        "(default: optuna.journal next to a SQLite store; the store's URL on PostgreSQL).",
    ),
]

# -- how runs execute (arena.core.options.RunOptions) --------------------------------------------------------------
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
Backend = Annotated[str, typer.Option("--backend", help="auto | kernel | torch_chunk | torch_recurrent")]
Mode = Annotated[str, typer.Option("--mode", help="auto | eager | graph (the whole step in one CUDA graph)")]
Timeout = Annotated[
    float | None,
    typer.Option("--timeout", help="Per-run time limit in seconds; a run past it is a timeout. Default: 3× the "
                 "estimate of the slowest run (at least 600); a limit the estimate says cannot be met is refused."),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", help="Parallel worker processes (default: one per GPU in use, 1 on a CPU; GPUs are "
                 "dealt round-robin)."),
]
Gpus = Annotated[str | None, typer.Option("--gpus", help="GPU indices the workers use, e.g. 0,1 (default: CUDA's).")]
PinnedBatches = Annotated[
    bool, typer.Option("--pinned-batches/--pageable-batches", help="CUDA: copy batches through pinned host memory.")
]
FusedAdamw = Annotated[
    bool, typer.Option("--fused-adamw/--foreach-adamw", help="CUDA: single-kernel AdamW or the multi-tensor one.")
]
Pack = Annotated[
    str,
    typer.Option("--pack", help="Seeds of one entry trained together as one fused model: a number, or auto "
                 "(every seed of the spec at once on a GPU, 1 on a CPU). Part of each run's stack."),
]
TunePack = Annotated[
    str,
    typer.Option("--pack", help="Trials trained together as one fused model (all on the tuning seed, each its own "
                 "hyperparameters): a number, or auto (up to 8 on a GPU, as its free memory allows; 1 on a CPU). "
                 "Part of each trial's stack; every variant of one call gets the same."),
]
Engine = Annotated[
    str, typer.Option("--engine", help="local (worker processes here) | ray (Ray actors on a cluster: arena[ray]).")
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray-address", help="The Ray cluster (host:port of `ray start --head`); default: a local instance."),
]
GpuShare = Annotated[
    float | None, typer.Option("--gpu-share", help="GPUs per Ray slot, e.g. 0.5 (default: 1 on CUDA, 0 on the CPU).")
]
Rerun = Annotated[bool, typer.Option("--rerun", help="Recompute runs that are already stored.")]
RerunFailed = Annotated[
    str | None,
    typer.Option("--rerun-failed", help="Recompute stored runs with these statuses, e.g. crashed,timeout."),
]
