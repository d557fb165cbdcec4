"""How runs execute — never what they compute (that is the spec). One frozen object from the CLI to the loop.

``RunOptions`` travels unchanged from the flags through the orchestration and the worker to the training loop;
each layer reads the fields it needs. ``validate`` turns a bad value into one line naming the flag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from arena.core.errors import ArenaError

BACKENDS: tuple[str, ...] = ("auto", "kernel", "torch_chunk", "torch_recurrent")
MODES: tuple[str, ...] = ("auto", "eager", "graph")
ENGINES: tuple[str, ...] = ("local", "ray")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Execution:
    """How a CUDA run schedules the same math (recorded in every GPU run's ``env``; ignored on the CPU).

    * ``pinned_batches``: batches reach the GPU through pinned host buffers (``runner.feed``), so the host queues
      the next step while the GPU runs this one;
    * ``fused_adamw``: torch's single-kernel AdamW instead of the multi-tensor (foreach) one: the same update rule,
      a few kernels a step instead of dozens; floating-point results differ in the last bits.
    * ``pack``: how many seeds of one entry train together as one horizontally fused model (``arena.model.pack``).
      Each member computes its solo function, with other floating-point orders in places: every run of a pack of
      K is keyed on K (part of its stack), on the CPU too, and a pack short of seeds is filled with copies.
    """

    pinned_batches: bool = True
    fused_adamw: bool = True
    pack: int = 1

    def __post_init__(self) -> None:
        if self.pack < 1:
            raise ArenaError(f"--pack must be at least 1 (seeds of one entry trained as one model), got {self.pack}")


@dataclass(frozen=True)
class RunOptions:
    """Every runner option: where (device, gpus), how (backend, mode, execution), how long (timeout) and how many
    at once (workers), on which engine (``engine``: local worker processes or Ray tasks, ``ray_address``,
    ``gpu_share``); ``data_flag`` is the ``--data`` path the runner resolves the corpus from."""

    device: str = "auto"
    backend: str = "auto"
    mode: str = "auto"
    execution: Execution = field(default_factory=Execution)
    timeout_s: float | None = 3600.0
    workers: int = 1
    gpus: tuple[int, ...] = ()
    data_flag: str | None = None
    engine: str = "local"  # local: worker processes here; ray: Ray tasks (arena.orchestration.engines)
    ray_address: str | None = None  # the Ray cluster (None: a local Ray instance for the command)
    gpu_share: float | None = None  # GPUs one Ray slot asks for (None: 1 on CUDA, 0 on the CPU)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ArenaError naming the first flag whose value makes no sense."""
        if not _DEVICE.fullmatch(self.device):
            raise ArenaError(f"--device must be auto, cpu, cuda or cuda:N, not '{self.device}'")
        if self.backend not in BACKENDS:
            raise ArenaError(f"--backend must be one of {', '.join(BACKENDS)}, not '{self.backend}'")
        if self.mode not in MODES:
            raise ArenaError(f"--mode must be one of {', '.join(MODES)}, not '{self.mode}'")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ArenaError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}")
        if self.workers < 1:
            raise ArenaError(f"--workers must be at least 1, got {self.workers}")
        if any(g < 0 for g in self.gpus):
            raise ArenaError(f"--gpus must list non-negative GPU indices, got {list(self.gpus)}")
        if self.engine not in ENGINES:
            raise ArenaError(f"--engine must be one of {', '.join(ENGINES)}, not '{self.engine}'")
        if self.engine != "ray" and (self.ray_address is not None or self.gpu_share is not None):
            raise ArenaError(f"--{'ray-address' if self.ray_address is not None else 'gpu-share'} needs --engine ray")
        if self.engine == "ray" and self.gpus:
            raise ArenaError("--gpus is for --engine local; on Ray each slot gets its GPUs from Ray (see --gpu-share)")
        if self.gpu_share is not None and not self.gpu_share >= 0:
            raise ArenaError(f"--gpu-share must be a non-negative number of GPUs, got {self.gpu_share:g}")
        # Combinations that can only fail inside the worker, after a progress bar and with a crashed run stored:
        if self.device == "cpu" and self.backend == "kernel":
            raise ArenaError("--backend kernel needs a CUDA device, not --device cpu; use --backend torch_chunk")
        if self.device == "cpu" and self.mode == "graph":
            raise ArenaError("--mode graph needs a CUDA device, not --device cpu; use --mode auto or eager")

    def cuda_flags(self, env_backend: str = "auto") -> list[str]:
        """The flags that need a CUDA device (``--device cuda``, ``--backend kernel``, ``--mode graph``, ``--gpus``),
        as the user would type them; ``env_backend`` is ``ARENA_BACKEND``, which stands in for ``--backend auto``.
        Pure: whether this machine has CUDA is the caller's question (the CLI asks torch)."""
        backend = env_backend if self.backend == "auto" else self.backend
        flags = [f"--device {self.device}"] if self.device.startswith("cuda") else []
        if backend == "kernel":
            flags.append("--backend kernel" if self.backend == "kernel" else "ARENA_BACKEND=kernel")
        if self.mode == "graph":
            flags.append("--mode graph")
        if self.gpus:
            flags.append(f"--gpus {','.join(map(str, self.gpus))}")
        return flags
