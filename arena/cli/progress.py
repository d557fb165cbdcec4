"""Every progress display of the CLI: one bar for a plan of runs (the steps of finished and running runs) and one
line per worker (its run, phase, step, loss, tok/s, ETA); a bar over tuning trials; a spinner for silent phases.

On a terminal they are rich's live displays. Elsewhere (CI logs, ssh without a tty, a device call, a pipe) a live
display prints nothing until it ends, so the same displays print plain lines instead (``live``, ``PlainLines``):
a line every ~10% of a run, one per finished run with the plan's count and ETA, one per trial.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from arena.core.result import RunResult
from arena.orchestration.entries import Job
from arena.orchestration.estimate import rate

STATUS_STYLE = {"ok": "green", "diverged": "yellow", "timeout": "magenta", "crashed": "red", "pruned": "dim"}
ROUTINE_PHASES = ("importing", "training", "evaluating")  # every run has them (evaluating at every eval): no line


def live(console: Console) -> bool:
    """Whether rich's live displays show on ``console``: a terminal that can move its cursor. Otherwise every
    display here prints plain lines."""
    return console.is_terminal and not console.is_dumb_terminal


def clock(seconds: float | None) -> str:
    """An ETA as a clock: 0:12, 1:02:03; ? when not known yet."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class PlainLines:
    """Progress as plain lines: a run's step every ~10% of its steps (with loss, speed and its ETA) and its phases
    other than the routine ones. Not thread-safe by itself (``TournamentProgress`` holds its lock)."""

    def __init__(self, console: Console, steps: int) -> None:
        self.console, self.steps = console, max(1, steps)
        self.tenth: dict[str, int] = {}  # label -> the last tenth of the run printed
        self.first: dict[str, tuple[float, int]] = {}  # label -> (time, step) of its first step event
        self.val: dict[str, float] = {}

    def event(self, label: str, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "phase":
            if event.get("phase") not in ROUTINE_PHASES:
                self.console.print(f"{escape(label)}: {escape(str(event.get('phase')))}", highlight=False)
            return
        if kind == "eval":
            self.val[label] = float(event.get("val_loss", float("nan")))
            return
        step = int(event.get("step", 0))
        now = time.monotonic()
        t0, s0 = self.first.setdefault(label, (now, step))
        tenth = step * 10 // self.steps
        if tenth <= self.tenth.get(label, 0):
            return
        self.tenth[label] = tenth
        eta = (now - t0) / (step - s0) * (self.steps - step) if step > s0 else None
        val = f" val {self.val[label]:.3f}" if label in self.val else ""
        self.console.print(f"{escape(label)}: step {step}/{self.steps} loss {event.get('loss', float('nan')):.2f}"
                           f"{val} {rate(float(event.get('tok_s', 0)))} tok/s ETA {clock(eta)}"
                           + (f" · {event['node']}" + (f" gpu {event['gpu']}" if event.get("gpu") else "")
                              if event.get("node") else ""), highlight=False)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        refresh_per_second=4,
        disable=not live(console),  # off a terminal the callers print plain lines instead
    )


def _info(event: dict[str, Any]) -> str:
    if event.get("node"):  # a Ray slot's event: where it runs (node, GPU)
        gpu = f" gpu {event['gpu']}" if event.get("gpu") else ""
        return f"{_info({k: v for k, v in event.items() if k != 'node'})} · {event['node']}{gpu}"
    if event.get("type") == "phase":
        return str(event["phase"])
    if event.get("type") == "eval":
        return f"val {event['val_loss']:.4f}"
    return f"loss {event.get('loss', float('nan')):.4f} · {event.get('tok_s', 0):,.0f} tok/s"


@contextlib.contextmanager
def single_run_progress(console: Console, label: str, steps: int) -> Iterator[Any]:
    """One run's bar (its phase, step, loss, speed, ETA); plain lines off a terminal. Yields the event callback."""
    plain = None if live(console) else PlainLines(console, steps)
    with _progress(console) as progress:
        task = progress.add_task(label, total=steps, info="starting")
        phase = ["starting"]
        lock = threading.Lock()

        def on_event(event: dict[str, Any]) -> None:
            with lock:
                if plain is not None:
                    plain.event(label, event)
                if event.get("type") == "phase":
                    phase[0] = str(event["phase"])
                    progress.update(task, info=escape(phase[0]))
                    return
                progress.update(task, completed=event.get("step", 0), info=escape(f"{phase[0]} · {_info(event)}"))

        yield on_event


class TournamentProgress:
    """Thread-safe: worker threads report events (a pack's seeds each their own); the display shows the overall
    bar, which counts the steps of finished and running runs (so it moves, with an ETA), and one line per worker:
    the run(s) it trains (a pack: several seeds), their phase as it arrives, step, loss and speed. Off a terminal
    it prints plain lines instead (``PlainLines``; a finished run's line carries the plan's count and ETA)."""

    def __init__(self, console: Console, jobs: Sequence[Job], steps: int, workers: int,
                 title: str = "tournament") -> None:
        self.console, self.title = console, title
        self.steps = max(1, steps)
        self.total = len(jobs)
        self.workers = max(1, min(workers, len(jobs) or 1))
        self.progress = _progress(console)
        self.plain = None if live(console) else PlainLines(console, self.steps)
        self.lock = threading.Lock()
        self.overall: TaskID | None = None
        self.slots: dict[int, TaskID] = {}
        self.reached: dict[str, int] = {}  # run label -> steps reached, while it runs (not yet finished)
        self.in_slot: dict[int, dict[str, Job]] = {}  # slot -> the runs it trains now, by label
        self.phase: dict[int, str] = {}
        self.finished = 0
        self.t0 = time.monotonic()

    def __enter__(self) -> TournamentProgress:
        self.progress.__enter__()
        self.overall = self.progress.add_task(f"[bold]{self.title}", total=self.total * self.steps,
                                              info=f"0/{self.total} runs")
        for slot in range(self.workers):
            self.slots[slot] = self.progress.add_task(f"  worker {slot}", total=self.steps, info="idle")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    @property
    def done_steps(self) -> int:
        """The steps of finished runs (each counts whole) and of running ones, as far as they got."""
        return self.finished * self.steps + sum(self.reached.values())

    def on_event(self, slot: int, job: Job, event: dict[str, Any]) -> None:
        with self.lock:
            if self.plain is not None:
                self.plain.event(job.label, event)
            jobs = self.in_slot.setdefault(slot, {})
            if job.label not in jobs:  # a new run here: runs that trained to the end now wait for their check
                for label in [k for k in jobs if self.reached.get(k, 0) >= self.steps]:
                    del jobs[label]
                jobs[job.label] = job
                self.reached.setdefault(job.label, 0)
            if event.get("type") == "phase":
                self.phase[slot] = str(event["phase"])
            elif event.get("type") == "step":
                self.reached[job.label] = min(self.steps, int(event.get("step", 0)))
            self._show(slot, None if event.get("type") == "phase" else _info(event))

    def _show(self, slot: int, info: str | None) -> None:
        jobs = list(self.in_slot.get(slot, {}).values())
        if jobs:
            seeds = sorted(j.seed for j in jobs)
            label = jobs[0].label if len(jobs) == 1 else f"{jobs[0].entry.name} seeds {','.join(map(str, seeds))}"
            phase = self.phase.get(slot, "starting")
            self.progress.update(self._slot(slot), description=f"  {escape(label)}", total=self.steps,
                                 completed=min(self.reached.get(j.label, 0) for j in jobs),
                                 info=escape(phase if info is None else f"{phase} · {info}"))  # text, not markup
        assert self.overall is not None
        self.progress.update(self.overall, completed=self.done_steps, info=f"{self.finished}/{self.total} runs")

    def eta(self) -> float | None:
        """Seconds left for the whole plan at the pace so far (None before any step)."""
        done = self.done_steps
        return (time.monotonic() - self.t0) / done * (self.total * self.steps - done) if done else None

    def on_done(self, slot: int, job: Job, result: RunResult) -> None:
        with self.lock:
            self.finished += 1
            self.reached.pop(job.label, None)
            self.in_slot.get(slot, {}).pop(job.label, None)
            style = STATUS_STYLE.get(result.status, "white")
            loss = f"{result.final_val_loss:.4f}" if result.final_val_loss is not None else "—"
            count = f"  · {self.finished}/{self.total} runs, ETA {clock(self.eta())}" if self.plain else ""
            self.progress.console.print(
                f"  [{style}]{result.status:>8}[/{style}] {escape(job.label):<28} val {loss}"
                + (f"  ({escape((result.error or '').splitlines()[0][:90])})" if result.status != "ok" else "")
                + count, highlight=False,
            )
            if not self.in_slot.get(slot):
                self.progress.update(self._slot(slot), description=f"  worker {slot}", info="idle")
            self._show(slot, None)

    def _slot(self, slot: int) -> TaskID:
        """The line of worker ``slot`` (an engine may run more slots than --workers said: each gets one)."""
        if slot not in self.slots:
            self.slots[slot] = self.progress.add_task(f"  worker {slot}", total=self.steps, info="idle")
        return self.slots[slot]


@contextlib.contextmanager
def status(console: Console, text: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the elapsed time while a phase with no steps to count works (the champion decision); off a
    terminal, the text as one line, and one more when it is done. Yields a function that replaces the text."""
    t0 = time.monotonic()
    if not live(console):
        console.print(text, highlight=False)
        yield lambda new: console.print(new, highlight=False)
        console.print(f"done in {clock(time.monotonic() - t0)}", highlight=False)
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as spinner:
        task = spinner.add_task(escape(text), total=None)
        yield lambda new: spinner.update(task, description=escape(new))


class TrialProgress:
    """A bar over a search's trials with the best value so far; failed trials are printed above it. Off a terminal:
    one line per finished trial, with the count, the best so far and the ETA."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total = console, total
        self.progress = Progress(
            TextColumn("tuning"), BarColumn(bar_width=30), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
            disable=not live(console),
        )
        self.task = self.progress.add_task("tuning", total=total, info="starting")
        self.started: float | None = None

    def __enter__(self) -> TrialProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started is not None:
            self.progress.stop()

    def start(self, study: str, storage: str) -> None:
        """Called once the study is open: only then is there something to show."""
        self.console.print(f"study [bold]{escape(study)}[/bold] in {escape(storage)}", highlight=False)
        self.progress.update(self.task, info="trial 0 of a new study runs the variant's defaults")
        self.progress.start()
        self.started = time.monotonic()

    def on_trial(self, event: Any) -> None:
        best = "—" if event.best_value is None else f"{event.best_value:.4f} (#{event.best_trial})"
        last = "" if event.value is None else f" {event.value:.4f}"
        info = f"#{event.number} {event.state.lower()}{last} · best {best}"
        self.progress.update(self.task, completed=event.done, info=info)
        if event.state == "FAIL":
            self.progress.console.print(f"[red]trial #{event.number} failed[/red]: {escape(event.error or '?')}")
        if not live(self.console):
            spent = time.monotonic() - (self.started or time.monotonic())
            eta = spent / event.done * (self.total - event.done) if event.done else None
            self.console.print(f"trial {event.done}/{self.total}: {info} · ETA {clock(eta)}", highlight=False)
