"""Run trials in child processes with a time limit, so that a crash, an OOM or a hang is a result.

A ``Worker`` owns one child process (spawned, so no CUDA or thread state is inherited) and runs trials in it
one after another, saving the ~2 s a fresh torch import costs. When a trial times out or the child dies, the child
is killed and replaced on the next trial. Events (progress, evals) flow back through a pipe; for eval events the
child waits for the parent's answer, which is how a search prunes a trial.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant

EventFn = Callable[[dict[str, Any]], bool | None]


@dataclass
class Task:
    """Everything a child needs to run one trial; plain data so it pickles across the spawn boundary."""

    spec: dict[str, Any]
    variant_source: str
    variant_path: str
    variant_name: str
    variant_sha: str
    seed: int
    hparams: dict[str, float] = field(default_factory=dict)
    options: RunOptions = field(default_factory=RunOptions)
    checkpoint_path: str | None = None


def _child_main(conn: Connection, threads: int | None, env: dict[str, str]) -> None:
    os.environ.update(env)
    import torch

    from arena.runner.loader import load_source
    from arena.runner.train import train

    if threads:
        torch.set_num_threads(threads)
    while True:
        try:
            task: Task | None = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return

        def on_event(event: dict[str, Any]) -> bool:
            conn.send(("event", event))
            if event.get("type") == "eval":
                kind, stop = conn.recv()  # the parent answers every eval event
                return bool(stop) if kind == "ack" else False
            return False

        try:
            loaded = load_source(task.variant_source, task.variant_path)
            result = train(
                Spec.from_dict(task.spec), loaded, task.seed, task.hparams, options=task.options, on_event=on_event,
                checkpoint_path=task.checkpoint_path,
            )
            conn.send(("result", result.to_dict()))
        except ArenaError as exc:
            conn.send(("error", str(exc)))
        except BaseException as exc:  # pragma: no cover - train() already turns failures into results
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Worker:
    """One reusable child process. ``run`` never raises for a failing variant; it returns the failure."""

    def __init__(self, threads: int | None = None, env: dict[str, str] | None = None) -> None:
        self.threads = threads
        self.env = dict(env or {})
        self._proc: Any = None
        self._conn: Connection | None = None

    def _ensure(self) -> Connection:
        if self._proc is None or not self._proc.is_alive():
            ctx = mp.get_context("spawn")
            parent, child = ctx.Pipe()
            self._proc = ctx.Process(target=_child_main, args=(child, self.threads, self.env), daemon=True)
            self._proc.start()
            child.close()
            self._conn = parent
        assert self._conn is not None
        return self._conn

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=10)
        self._proc = None
        self._conn = None

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, task: Task, on_event: EventFn | None = None) -> RunResult:
        """Run one task within ``task.options.timeout_s``; a timeout or a dead child is a result, not an error."""
        timeout_s = task.options.timeout_s
        spec_hash = Spec.from_dict(task.spec).hash
        partial = RunResult(
            variant=task.variant_name, variant_sha=task.variant_sha, spec_hash=spec_hash, seed=task.seed,
            hparams=dict(task.hparams),
        )
        conn = self._ensure()
        conn.send(task)
        t0 = time.monotonic()
        deadline = t0 + timeout_s if timeout_s else None
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                partial.status = "timeout"
                partial.error = f"timed out after {timeout_s:.0f} s (at step {partial.steps_done})"
                partial.wall_s = time.monotonic() - t0
                return partial
            try:
                ready = conn.poll(wait)
                msg = conn.recv() if ready else None
            except (EOFError, OSError):
                msg = ("died", None)
            if msg is None:
                if self._proc is not None and not self._proc.is_alive():
                    msg = ("died", None)
                else:
                    continue
            kind, payload = msg
            if kind == "event" and isinstance(payload, dict):
                _track(partial, payload)
                stop = on_event(payload) if on_event else None
                if payload.get("type") == "eval":
                    conn.send(("ack", bool(stop)))
            elif kind == "result" and isinstance(payload, dict):
                return RunResult.from_dict(payload)
            elif kind == "error":
                raise ArenaError(str(payload))
            else:  # the child died without a word: segfault, os._exit, the OOM killer
                if self._proc is not None:
                    # The pipe closes a moment before the OS reaps the child; its exit code is None until then.
                    self._proc.join(timeout=10)
                code = self._proc.exitcode if self._proc is not None else None
                self.kill()
                partial.status = "crashed"
                partial.error = _describe_exit(code)
                partial.wall_s = time.monotonic() - t0
                return partial


def _track(partial: RunResult, event: dict[str, Any]) -> None:
    """Keep what the events tell, so a timeout or a crash still reports its curve."""
    step = int(event.get("step", 0))
    partial.steps_done = max(partial.steps_done, step)
    if event.get("type") == "eval":
        partial.val_curve.append((step, float(event["val_loss"])))
    elif event.get("type") == "step":
        partial.train_curve.append((step, float(event["loss"])))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the worker process died"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code}"


def make_task(
    spec: Spec, loaded: LoadedVariant, seed: int, hparams: Mapping[str, float] | None = None,
    options: RunOptions | None = None, checkpoint_path: str | None = None,
) -> Task:
    return Task(
        spec=spec.to_dict(), variant_source=loaded.source, variant_path=loaded.path, variant_name=loaded.name,
        variant_sha=loaded.sha256, seed=seed, hparams=dict(hparams or {}), options=options or RunOptions(),
        checkpoint_path=checkpoint_path,
    )


def run_trial(
    spec: Spec,
    loaded: LoadedVariant,
    seed: int,
    hparams: Mapping[str, float] | None = None,
    *,
    options: RunOptions | None = None,
    on_event: EventFn | None = None,
    checkpoint_path: str | None = None,
    isolate: bool = True,
) -> RunResult:
    """Run one trial (in a fresh child process unless ``isolate=False``) and return its result."""
    if not isolate:
        from arena.runner.train import train  # the child imports torch's training stack; the parent need not

        return train(spec, loaded, seed, hparams, options=options, on_event=on_event, checkpoint_path=checkpoint_path)
    with Worker() as worker:
        return worker.run(make_task(spec, loaded, seed, hparams, options, checkpoint_path), on_event)
