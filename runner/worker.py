"""Run trials in child processes with a time limit, so that a crash, an OOM or a hang is a result.

A ``Worker`` owns one child process (spawned, so no CUDA or thread state is inherited) and runs trials in it
one after another, saving the ~2 s a fresh torch import costs. When a trial times out or the child dies, the child
is killed and replaced on the next trial. Events (progress, evals) flow back through a pipe; for eval events the
child waits for the parent's answer, which is how a search prunes a trial.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.result import RunResult, Status
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.core.variant import LoadedVariant
from arena.runner import processes
from arena.runner.processes import INTERRUPTED_EXIT, Interrupted, MachineryFailure, interrupted, server_lost
from arena.runner.provenance import resolved_device
from arena.runner.standby import Standby, gpu_warm, take_ahead

T = TypeVar("T")

EventFn = Callable[[dict[str, Any]], bool | None]
def import_limit_s() -> float:
    """How long importing one variant file may take: ``ARENA_IMPORT_LIMIT_S``, default 60 s (training has the run's
    own ``--timeout``)."""
    raw = os.environ.get("ARENA_IMPORT_LIMIT_S", "60")
    try:
        value = float(raw)
    except ValueError:
        raise ArenaError(f"ARENA_IMPORT_LIMIT_S={raw!r}: give a number of seconds") from None
    if not value > 0:
        raise ArenaError(f"ARENA_IMPORT_LIMIT_S={raw!r}: give a positive number of seconds")
    return value


@dataclass
class Task:
    """Everything a child needs to run one trial; plain data so it pickles across the spawn boundary."""

    spec: dict[str, Any]
    variant_source: str
    variant_path: str
    variant_name: str
    variant_sha: str
    seeds: tuple[int, ...]  # one seed, or the seeds of one pack (at most options.execution.pack of them)
    hparams: dict[str, float] = field(default_factory=dict)
    options: RunOptions = field(default_factory=RunOptions)
    # Per member, in place of ``hparams`` (empty: every member has ``hparams``): a packed search's K trials.
    member_hparams: tuple[dict[str, float], ...] = ()
    checkpoint_paths: tuple[str | None, ...] = ()  # per seed (empty: none)
    state_paths: tuple[str | None, ...] = ()  # per seed: where an ok run leaves its weights for the clean check
    policy: bool = True  # the static policy; False only in tests of the run-time guards
    basis: Basis | None = None  # the code and stack the driver keyed the run on (None: whatever this worker has)

    @property
    def seed(self) -> int:
        return self.seeds[0]

    def hparams_of(self, member: int) -> dict[str, float]:
        return dict(self.member_hparams[member]) if self.member_hparams else dict(self.hparams)

    def __post_init__(self) -> None:
        if len(self.seeds) > self.options.execution.pack:
            raise ValueError(f"{len(self.seeds)} seeds do not fit a pack of {self.options.execution.pack}")
        if self.member_hparams and len(self.member_hparams) != len(self.seeds):
            raise ValueError(f"{len(self.member_hparams)} hyperparameter sets for {len(self.seeds)} members")


def _child_main(conn: Connection, threads: int | None, env: dict[str, str]) -> None:
    """A worker process: it runs the trials of one variant. The data is loaded before the variant is imported, the
    environment is made private, and the variant runs under the guards (``runner.guard``)."""
    os.environ.update(env)
    import torch

    from arena.runner import guard
    from arena.runner.data import load_track
    from arena.runner.loader import load_source
    from arena.runner.provenance import local_basis

    if threads:
        torch.set_num_threads(threads)
    original_env = dict(os.environ)
    tracks: dict[str, Any] = {}
    bases: dict[RunOptions, Basis] = {}
    private = False
    before: dict[str, int] = {}
    while True:
        try:
            task: Task | None = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if task is None:
            return
        spec = Spec.from_dict(task.spec)
        try:
            with _environment(original_env):  # arena's data and basis, with the user's environment, before variant code
                if spec.hash not in tracks:
                    tracks[spec.hash] = load_track(spec, task.options.data_flag)
                if task.options not in bases:
                    bases[task.options] = local_basis(task.options)
            basis = bases[task.options]
            _check_basis(task, basis)
            if not private:
                guard.private_environment()
                guard.prime()
                before = guard.snapshot()
                private = True
        except ArenaError as exc:
            conn.send(("error", str(exc)))
            continue
        conn.send(("event", {"type": "phase", "phase": "importing"}))
        try:
            loaded = load_source(task.variant_source, task.variant_path, policy=task.policy)
            guard.check_untampered(before, "while importing")
        except ArenaError as exc:
            conn.send(("results", [_refused(task, spec, i, str(exc)).to_dict() for i in range(len(task.seeds))]))
            continue
        conn.send(("event", {"type": "phase", "phase": "training"}))
        _train_and_send(conn, task, spec, loaded, tracks[spec.hash], basis, before)


def _train_and_send(conn: Connection, task: Task, spec: Spec, loaded: LoadedVariant, track: Any, basis: Basis,
                    before: dict[str, int]) -> None:
    """Train one task in this worker and send its result: rejected if the variant patched anything meanwhile, keyed
    on this worker's basis; nothing for an interruption or a failure of arena's own machinery."""
    from arena.runner import guard
    from arena.runner.loop import MachineryError
    from arena.runner.train import train_pack

    try:  # a pack short of seeds is filled by train_pack (ballast it never reports)
        results = train_pack(spec, loaded, task.seeds, task.hparams, options=task.options, on_event=_events(conn),
                             checkpoint_paths=task.checkpoint_paths or None, track=track,
                             state_paths=task.state_paths or None, member_hparams=task.member_hparams or None)
    except KeyboardInterrupt:
        os._exit(INTERRUPTED_EXIT)  # the parent stores nothing for an interrupted run
    except MachineryError as exc:  # arena's failure, not the variant's: no result
        conn.send(("machinery", str(exc)))
        return
    changed = guard.tampered(before, guard.snapshot())
    for result in results:
        if changed:
            result.status, result.error = "rejected", f"the variant patched {', '.join(changed[:3])} while training"
        result.code_digest, result.stack_id = basis.code, basis.stack
    conn.send(("results", [r.to_dict() for r in results]))


def _events(conn: Connection) -> Callable[[dict[str, Any]], bool]:
    """The training loop's event callback: every event goes to the parent, which answers each eval (stop or not)."""

    def on_event(event: dict[str, Any]) -> bool:
        conn.send(("event", event))
        if event.get("type") == "eval":
            kind, stop = conn.recv()
            return bool(stop) if kind == "ack" else False
        return False

    return on_event


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _check_basis(task: Task, here: Basis) -> None:
    """A run is keyed on the basis the driver planned it on: a worker with other code or another stack refuses."""
    sent = task.basis
    if sent is None or sent == here:
        return
    if sent.code != here.code:
        raise ArenaError(f"arena's code changed since this command started (code {sent.code[:8]} planned, "
                         f"{here.code[:8]} installed now): run the command again")
    raise ArenaError(f"the worker's stack differs from the one the runs were planned for ({sent.info} vs "
                     f"{here.info}); run the command again")


def _refused(task: Task, spec: Spec, member: int, reason: str) -> RunResult:
    code, stack = (task.basis.code, task.basis.stack) if task.basis else ("", "")
    return RunResult(variant=task.variant_name, variant_sha=task.variant_sha, spec_hash=spec.hash,
                     seed=task.seeds[member], hparams=task.hparams_of(member), status="rejected", error=reason,
                     code_digest=code, stack_id=stack)


class Worker:
    """One reusable child process. ``run`` never raises for a failing variant; it returns the failure.

    On a GPU (``standby`` None: when a task asks for CUDA; True/False forces it) the worker keeps the next variant's
    process started ahead, in standby (``runner.standby``): when the variant changes, the child that takes over has
    already imported the kernels and made its CUDA context while the previous variant trained."""

    def __init__(self, threads: int | None = None, env: dict[str, str] | None = None,
                 standby: bool | None = None) -> None:
        self.threads = threads
        self.env = dict(env or {})
        self.standby = standby
        self._proc: Any = None
        self._conn: Connection | None = None
        self._sha: str | None = None
        self._spare: Standby | None = None

    def _ensure(self, variant_sha: str, gpu: bool = False) -> Connection:
        if self._proc is not None and self._sha != variant_sha:
            self.close(spare=False)  # one process per variant: nothing one variant did can reach the next one's runs
        self._sha = variant_sha
        if self._proc is None or not self._proc.is_alive():
            if self._spare is None and gpu:  # the command's first worker: a standby it started before its check
                self._spare = take_ahead(self.env)
            handed = self._spare.hand(_child_main, (self.threads, self.env)) if self._spare else None
            self._spare = None
            if handed is not None:
                self._proc, self._conn = handed
            else:
                parent, child = processes.pipe()
                self._proc = processes.start(_child_main, (child, self.threads, self.env))
                child.close()
                self._conn = parent
        if self._spare is None and (self.standby if self.standby is not None else gpu):
            self._spare = Standby(gpu_warm(self.env) if gpu else None)
        assert self._conn is not None
        return self._conn

    def compute(self, fn: Callable[..., T], args: tuple[Any, ...], on_event: Any) -> T:
        """``fn(self, *args, on_event)``: an engine's work here; arena's own failure ends the child, then is raised."""
        try:
            return fn(self, *args, on_event)
        except MachineryFailure:
            self.kill()
            raise

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout=10)
        self._proc = None
        self._conn = None

    def close(self, spare: bool = True) -> None:
        """End the child (and, unless ``spare`` is False, the standby kept for the next variant)."""
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._proc.join(timeout=5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()
        if spare and self._spare is not None:
            self._spare.kill()
            self._spare = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, task: Task, on_event: EventFn | None = None) -> RunResult:
        """Run a one-seed task (``run_pack`` for a pack); a timeout or a dead child is a result, not an error."""
        return self.run_pack(task, on_event)[0]

    def run_pack(self, task: Task, on_event: EventFn | None = None) -> list[RunResult]:
        """Run one task (one seed, or a pack of seeds trained together) within ``task.options.timeout_s``; one
        result per member. A timeout or a dead child is every member's result, not an error. Events carry
        ``seed`` and ``member`` (the index in the pack)."""
        timeout_s = task.options.timeout_s
        spec_hash = Spec.from_dict(task.spec).hash
        code, stack = (task.basis.code, task.basis.stack) if task.basis else ("", "")
        partials = {i: RunResult(
            variant=task.variant_name, variant_sha=task.variant_sha, spec_hash=spec_hash, seed=seed,
            hparams=task.hparams_of(i), code_digest=code, stack_id=stack,
        ) for i, seed in enumerate(task.seeds)}
        conn = self._ensure(task.variant_sha, gpu=resolved_device(task.options) != "cpu")
        conn.send(task)
        t0 = time.monotonic()
        deadline = t0 + timeout_s if timeout_s else None
        importing_until: float | None = None  # the import of the variant has its own limit
        startup: float | None = None  # until training began: a new process, the data, the variant's import
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            if importing_until is not None and time.monotonic() >= importing_until:
                self.kill()
                return self._all(partials, t0, "rejected",
                                 f"{task.variant_path}: timed out after {import_limit_s():.0f} s while importing")
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                return self._all(partials, t0, "timeout", f"timed out after {timeout_s:.0f} s (at step {{step}})")
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
            if kind == "event" and isinstance(payload, dict) and payload.get("type") == "phase":
                importing_until = time.monotonic() + import_limit_s() if payload["phase"] == "importing" else None
                if payload["phase"] == "training" and startup is None:
                    startup = time.monotonic() - t0
                if on_event:
                    on_event(payload)
            elif kind == "event" and isinstance(payload, dict):
                partial = partials.get(int(payload.get("member", 0)))
                if partial is not None:
                    _track(partial, payload)
                stop = on_event(payload) if on_event else None
                if payload.get("type") == "eval":
                    conn.send(("ack", bool(stop)))
            elif kind == "results" and isinstance(payload, list):
                results = [RunResult.from_dict(r) for r in payload]
                for r in results:
                    r.env.setdefault("timing", {})["startup_s"] = startup
                return results
            elif kind == "error":
                raise ArenaError(str(payload))
            elif kind == "machinery":
                raise MachineryFailure(f"{task.variant_name} seed {', '.join(map(str, task.seeds))}: {payload}")
            else:  # the child died without a word: segfault, os._exit, the OOM killer
                if self._proc is not None:
                    # The pipe closes a moment before the OS reaps the child; its exit code is None until then.
                    self._proc.join(timeout=10)
                return self._died(partials, t0)

    @staticmethod
    def _all(partials: dict[int, RunResult], t0: float, status: Status, error: str) -> list[RunResult]:
        """Every seed of the task ends with ``status``; ``{step}`` in ``error`` becomes the seed's last step."""
        out = []
        for partial in partials.values():
            partial.status = status
            partial.error = error.replace("{step}", str(partial.steps_done))
            partial.wall_s = time.monotonic() - t0
            out.append(partial)
        return out

    def _died(self, partials: dict[int, RunResult], t0: float) -> list[RunResult]:
        """The results of a child that died without a word (segfault, os._exit, the OOM killer)."""
        code = self._proc.exitcode if self._proc is not None else None
        lost = self._proc is not None and server_lost(self._proc)
        self.kill()
        if lost:
            raise MachineryFailure("arena's process server died while the run trained; run the command again")
        if interrupted(code):  # Ctrl-C or a kill of the run: not the variant's failure, and not a result
            raise Interrupted(f"the run was interrupted ({_describe_exit(code)})")
        return self._all(partials, t0, "crashed", _describe_exit(code))


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
    spec: Spec, loaded: LoadedVariant, seed: int | Sequence[int], hparams: Mapping[str, float] | None = None,
    options: RunOptions | None = None, checkpoint_path: str | None = None, basis: Basis | None = None,
) -> Task:
    """A task for one seed (or, with a sequence, for the seeds of one pack)."""
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    return Task(
        spec=spec.to_dict(), variant_source=loaded.source, variant_path=loaded.path, variant_name=loaded.name,
        variant_sha=loaded.sha256, seeds=seeds, hparams=dict(hparams or {}), options=options or RunOptions(),
        checkpoint_paths=(checkpoint_path,) if checkpoint_path else (), basis=basis,
    )
