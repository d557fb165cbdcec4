"""Run-time guards around variant code in a worker process: a private environment, an audit hook that refuses I/O
and processes while the variant's module executes, and a tamper check that notices any patched function.

The static policy (``runner.policy``) already refuses the source of a file that patches, does I/O or starts a
process; these guards are the second line, for what a static reading can miss. docs/security.md has the threat
model. Everything here is set up by the worker before the variant is imported, in the worker's own process.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from arena.core.errors import ArenaError

# Environment the worker keeps (the GPU stack reads these); every other variable is dropped before a variant runs.
KEEP_ENV = ("PATH", "LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "LD_LIBRARY_PATH", "TRITON_CACHE_DIR",
            "TRITON_CACHE_AUTOTUNING", "MAMBA_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG", "ARENA_DETERMINISTIC",
            "ARENA_BACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED", "PYTHONPATH",
            "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES")
# Audit events refused while a variant's module executes (import time and its classes' construction).
DENIED_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                 "socket.connect", "socket.bind", "socket.getaddrinfo", "os.remove", "os.unlink", "os.rename",
                 "os.rmdir", "os.replace", "os.truncate", "os.chmod", "os.chown", "os.kill", "os.killpg",
                 "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.putenv", "os.unsetenv", "os.mkdir",
                 "os.symlink", "os.link", "os.utime", "ctypes.dlopen", "ctypes.dlsym", "sys.addaudithook",
                 "sys.settrace", "sys.setprofile", "builtins.input", "webbrowser.open", "os.listdir", "os.scandir",
                 "glob.glob", "os.getxattr", "os.chdir")
# What the tamper check compares: these modules and classes, and every arena module loaded in the process.
WATCHED = ("torch", "torch.nn", "torch.nn.functional", "torch.nn.init", "torch.nn.modules.module", "torch.autograd",
           "torch.random", "torch.optim", "torch.optim.adamw", "math", "builtins", "numpy")
WATCHED_CLASSES = (("torch", "Tensor"), ("torch.nn", "Module"), ("torch.nn", "Linear"), ("torch.nn", "Embedding"),
                   ("torch.optim", "AdamW"), ("torch", "Generator"))


class _Hook:
    """One audit hook per process (they cannot be removed); ``armed`` says whether variant code is executing."""

    armed = False
    installed = False

    @classmethod
    def install(cls) -> None:
        if not cls.installed:
            sys.addaudithook(cls._hook)
            cls.installed = True

    @staticmethod
    def _hook(event: str, args: tuple[Any, ...]) -> None:
        if not _Hook.armed:
            return
        if event in DENIED_EVENTS or event.startswith(("os.exec", "os.spawn")):
            raise PermissionError(f"arena: a variant may not call {event}")
        if event == "open":
            path, mode = str(args[0]), args[1] if len(args) > 1 else "r"
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            if isinstance(mode, int):  # os.open flags
                writing = bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
            if writing or not _python_file(path):
                raise PermissionError(f"arena: a variant may not open {path!r}")


def _python_file(path: str) -> bool:
    """Reads the import machinery itself needs: Python's own installation, and modules (.py, .pyc, .so) anywhere."""
    real = os.path.realpath(path)
    if real.endswith((".py", ".pyc", ".so")):
        return True
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    return any(real.startswith(os.path.realpath(r) + os.sep) for r in roots if r)


@contextmanager
def variant_code() -> Iterator[None]:
    """Refuse I/O, processes and environment changes while the block runs (the variant's module and __init__)."""
    _Hook.install()
    _Hook.armed = True
    try:
        yield
    finally:
        _Hook.armed = False


def private_environment() -> Path:
    """Drop every environment variable but the GPU stack's, and move the process into its own empty temp folder
    (cwd, HOME, TMPDIR): a variant sees neither the arena home nor the store, nor the user's files."""
    os.environ.setdefault("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))  # before HOME moves
    folder = Path(tempfile.mkdtemp(prefix="arena-worker-"))
    for key in list(os.environ):
        if key not in KEEP_ENV:
            del os.environ[key]
    os.environ.update({"HOME": str(folder), "TMPDIR": str(folder)})
    tempfile.tempdir = str(folder)
    os.chdir(folder)
    return folder


def snapshot() -> dict[str, int]:
    """The identity of every watched attribute (``module.name`` → id): a patched function has another id."""
    out: dict[str, int] = {}
    # Private names of torch's own modules and classes are left out: torch rebinds some lazily on first use (a CUDA
    # AdamW wraps ``_init_group``), and a variant cannot reach them (the static policy refuses private names).
    for name in WATCHED:
        module = sys.modules.get(name)
        if isinstance(module, ModuleType):
            out.update({f"{name}.{k}": id(v) for k, v in list(vars(module).items()) if not k.startswith("_")})
    for module_name, cls_name in WATCHED_CLASSES:
        cls = getattr(sys.modules.get(module_name), cls_name, None)
        if cls is not None:
            out.update({f"{module_name}.{cls_name}.{k}": id(v) for k, v in list(vars(cls).items())
                        if not k.startswith("_") or k.startswith("__")})
    for name, module in list(sys.modules.items()):
        if name.startswith("arena.") and isinstance(module, ModuleType) and not name.startswith("arena_variant"):
            out.update({f"{name}.{k}": id(v) for k, v in list(vars(module).items()) if not k.startswith("__")})
    return out


def tampered(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The watched names whose object changed, or that were added to a watched class (sorted)."""
    changed = [k for k, v in before.items() if k in after and after[k] != v]
    added_to_classes = [k for k in after.keys() - before.keys()
                        if any(k.startswith(f"{m}.{c}.") for m, c in WATCHED_CLASSES)
                        and not k.rsplit(".", 1)[1].startswith("__")]  # pickling caches __slotnames__ on classes
    return sorted(changed + added_to_classes)


def check_untampered(before: dict[str, int], where: str) -> None:
    """ArenaError naming what changed since ``before`` (a patch made by the variant)."""
    changed = tampered(before, snapshot())
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise ArenaError(f"the variant patched {', '.join(changed[:3])}{more} ({where})")


def prime() -> None:
    """Let torch install its own lazy wrappers before the snapshot (the first AdamW wraps ``AdamW.step`` for the
    profiler; the first seeding rebinds ``torch.manual_seed``), so that only a variant's patch shows as a change."""
    import torch

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in devices:
        for kwargs in ({"foreach": True}, {"fused": True, "capturable": True}) if device == "cuda" else ({},):
            p = torch.nn.Parameter(torch.zeros(1, device=device))
            opt = torch.optim.AdamW([p], **kwargs)  # type: ignore[arg-type]
            p.grad = torch.zeros(1, device=device)
            opt.step()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
