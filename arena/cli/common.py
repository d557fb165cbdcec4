"""What the commands share: parsing flag values into the library's types, and opening the store."""

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
    workers: int = 1, gpus: str | None = None, data: str | None = None, pinned_batches: bool = True,
    fused_adamw: bool = True,
) -> "RunOptions":
    """The one execution-options object the flags describe; validated (one line per bad flag)."""
    from arena.core.options import Execution, RunOptions

    try:
        gpu_list = tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else ()
    except ValueError:
        raise ArenaError(f"--gpus wants a comma list of GPU indices (0,1), got '{gpus}'") from None
    options = RunOptions(
        device=device, backend=backend, mode=mode, timeout_s=timeout, workers=workers, gpus=gpu_list,
        data_flag=data, execution=Execution(pinned_batches=pinned_batches, fused_adamw=fused_adamw),
    )
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ArenaError(f"--device {device}: this torch build sees no CUDA device; use --device cpu (or auto)")
    return options


def open_store(db: str | None) -> "Store":
    """The store, created (and migrated) if it does not exist yet: for commands that write."""
    from arena.db.store import Store

    return Store(db or Store.default_url())


def existing_store(db: str | None) -> "Store | None":
    """The store, or None while its SQLite file does not exist: looking (or failing early) creates nothing."""
    from arena.db.engine import sqlite_file
    from arena.db.store import Store

    url = db or Store.default_url()
    path = sqlite_file(url)
    return None if path is not None and not path.exists() else Store(url)


def reading_store(db: str | None) -> "Store":
    """The store for a command that only reads; a one-line error (and no new file) when there is none yet."""
    from arena.db.engine import display
    from arena.db.store import Store

    store = existing_store(db)
    if store is None:
        raise ArenaError(f"no arena store at {display(db or Store.default_url())} yet; "
                         "start with: arena tournament --preset smoke (or point --db / ARENA_DB at yours)")
    return store
