"""Rich progress displays: one bar for the whole tournament and one line per worker (step, loss, tok/s, ETA)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from arena.core.result import RunResult
from arena.orchestration.entries import Job

STATUS_STYLE = {"ok": "green", "diverged": "yellow", "timeout": "magenta", "crashed": "red", "pruned": "dim"}


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
    )


def _info(event: dict[str, Any]) -> str:
    if event.get("type") == "phase":
        return str(event["phase"])
    if event.get("type") == "eval":
        return f"val {event['val_loss']:.4f}"
    return f"loss {event.get('loss', float('nan')):.4f} · {event.get('tok_s', 0):,.0f} tok/s"


@contextlib.contextmanager
def single_run_progress(console: Console, label: str, steps: int) -> Iterator[Any]:
    with _progress(console) as progress:
        task = progress.add_task(label, total=steps, info="starting")

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "phase":
                progress.update(task, info=_info(event))
                return
            progress.update(task, completed=event.get("step", 0), info=_info(event))

        yield on_event


class TournamentProgress:
    """Thread-safe: worker threads report events; the display shows the overall bar and one line per worker."""

    def __init__(self, console: Console, jobs: Sequence[Job], steps: int, workers: int) -> None:
        self.console = console
        self.steps = steps
        self.total = len(jobs)
        self.workers = max(1, min(workers, len(jobs) or 1))
        self.progress = _progress(console)
        self.lock = threading.Lock()
        self.overall: TaskID | None = None
        self.slots: dict[int, TaskID] = {}
        self.current: dict[int, Job] = {}

    def __enter__(self) -> TournamentProgress:
        self.progress.__enter__()
        self.overall = self.progress.add_task("[bold]tournament", total=self.total * self.steps, info="")
        for slot in range(self.workers):
            self.slots[slot] = self.progress.add_task(f"  worker {slot}", total=self.steps, info="idle")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def on_event(self, slot: int, job: Job, event: dict[str, Any]) -> None:
        with self.lock:
            task = self.slots[slot]
            if self.current.get(slot) != job:
                self.current[slot] = job
                self.progress.reset(task, total=self.steps, description=f"  {job.label}")
            if event.get("type") == "phase":
                self.progress.update(task, info=_info(event))
            else:
                self.progress.update(task, completed=event.get("step", 0), info=_info(event))

    def on_done(self, slot: int, job: Job, result: RunResult) -> None:
        with self.lock:
            assert self.overall is not None
            self.progress.advance(self.overall, self.steps)
            style = STATUS_STYLE.get(result.status, "white")
            loss = f"{result.final_val_loss:.4f}" if result.final_val_loss is not None else "—"
            self.progress.console.print(
                f"  [{style}]{result.status:>8}[/{style}] {job.label:<28} val {loss}"
                + (f"  ({(result.error or '').splitlines()[0][:90]})" if result.status != "ok" else "")
            )
            self.current.pop(slot, None)
            self.progress.update(self.slots[slot], description=f"  worker {slot}", info="idle")
