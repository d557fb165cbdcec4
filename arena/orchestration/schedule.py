"""Which group trains next, so that drivers sharing a store never train one run twice.

``Schedule`` hands out an execution's groups one at a time, each only after its runs are claimed in the store
(``Store.claim_runs``). A run that another live driver holds is set aside; once that claim is gone (released after
its run was recorded, or expired because its owner died) the run is either found stored (another driver's result:
it is used, not trained) or claimed and trained here. A heartbeat thread keeps this driver's claims alive; every
claim it still holds is released when the schedule closes, and a driver killed outright leaves claims that the
next one takes over (its pid is gone on this host, or its heartbeat is older than the TTL). Opening a schedule
also sweeps every dead claim (``Store.reap_claims``): a driver killed after recording a run but before releasing
its claim leaves one on a memoized run, which no later driver would otherwise ask for.

A group handed out is *in flight* until its claims are released (recorded, or not stored); one whose machine was
lost comes back (``requeue``) for another slot, so a slot with nothing to hand out waits while groups are in flight
instead of ending before one of them returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from arena.core.errors import ArenaError
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.claims import claim_ttl_s, owner_id
from arena.db.store import Store
from arena.orchestration.entries import Job

POLL_S = 1.0  # how often a driver waiting for another driver's runs looks at the store
REQUEUES = 3  # how often one group may come back (its machine lost) before it is left for the next command


@dataclass
class Handout:
    """What a slot gets: ``train`` (one entry's claimed jobs) and ``stored`` (runs other drivers recorded)."""

    train: list[Job] = field(default_factory=list)
    stored: list[tuple[Job, RunResult]] = field(default_factory=list)


def by_entry(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs of each entry together (first-come order of entries, seeds in the given order)."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault((job.entry.name, job.entry.loaded.sha256), []).append(job)
    return list(groups.values())


class Schedule:
    """The groups of one execution, handed out claimed (see the module docstring). Thread-safe."""

    def __init__(self, store: Store, spec: Spec, basis: Basis, groups: Sequence[list[Job]],
                 poll_s: float = POLL_S) -> None:
        self.store, self.spec, self.basis, self.poll_s = store, spec, basis, poll_s
        self.owner, self.ttl_s = owner_id(), claim_ttl_s()
        with contextlib.suppress(ArenaError):  # a store gone bad here fails at the first claim, with its message
            store.reap_claims()
        self.todo: deque[list[Job]] = deque(groups)
        self.waiting: list[Job] = []
        self.polling = 0  # slots looking at the waiting runs right now
        self.in_flight: set[str] = set()  # the keys of runs handed out whose claims are not yet released
        self.requeued: dict[str, int] = {}  # a group's first key -> how often it came back
        self.lock = threading.Lock()
        # The stored run each job was planned over (None: none): another id later is another driver's result.
        self.seen: dict[str, int | None] = {}
        for job in (j for g in groups for j in g):
            run = store.get_run(self.key(job))
            self.seen[self.key(job)] = run.id if run is not None else None
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="arena-claims", daemon=True)

    def key(self, job: Job) -> str:
        return job.entry.key(self.spec, job.seed, self.basis)

    def __enter__(self) -> Schedule:
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._beat.join(timeout=10)
        with contextlib.suppress(ArenaError):  # a store gone bad: the claims expire on their own
            self.store.release_claims(owner=self.owner)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            with contextlib.suppress(ArenaError):  # a blip: the next beat tries again, well within the TTL
                self.store.heartbeat_claims(self.owner, self.ttl_s)

    def next(self, stop: threading.Event) -> Handout | None:
        """The next handout, waiting (polling) while other drivers hold the only runs left; None when nothing is
        left or ``stop`` is set."""
        while not stop.is_set():
            with self.lock:
                if self.todo:
                    jobs, polling = self.todo.popleft(), False
                elif self.waiting:
                    jobs, self.waiting, polling = self.waiting, [], True
                    self.polling += 1
                elif self.polling or self.in_flight:  # what another slot frees or gives back is for all
                    jobs, polling = [], True
                else:
                    return None
            try:
                got = self._claim(jobs) if jobs else Handout()
            finally:
                if jobs and polling:
                    with self.lock:
                        self.polling -= 1
            if got.train:
                with self.lock:
                    self.in_flight.update(self.key(j) for j in got.train)
            if got.train or got.stored:
                return got
            if polling:
                stop.wait(self.poll_s)
        return None

    def _claim(self, jobs: list[Job]) -> Handout:
        keys = {self.key(j): j for j in jobs}
        claimed = self.store.claim_runs(list(keys), self.owner, self.ttl_s)
        got, done = Handout(), []
        for key in claimed.mine:
            run = self.store.get_run(key)
            if run is not None and run.id != self.seen.get(key):  # recorded by another driver meanwhile
                got.stored.append((keys[key], run.result))
                done.append(key)
            else:
                got.train.append(keys[key])
        if done:
            self.release(done)
        groups = by_entry(got.train)
        got.train = groups[0] if groups else []
        with self.lock:
            self.waiting += [keys[k] for k in claimed.held]
            self.todo.extendleft(reversed(groups[1:]))  # claimed already: trained next
        return got

    def release(self, keys: Sequence[str]) -> None:
        """Give up this driver's claims on ``keys`` (their runs are recorded, or were not stored)."""
        with contextlib.suppress(ArenaError):
            self.store.release_claims(keys, self.owner)

    def release_jobs(self, jobs: Sequence[Job]) -> None:
        """Handed-out runs are over (recorded, or not stored): their claims go."""
        keys = [self.key(j) for j in jobs]
        self.release(keys)
        with self.lock:
            self.in_flight.difference_update(keys)

    def requeue(self, jobs: list[Job]) -> bool:
        """Hand ``jobs`` (a group in flight whose machine was lost) out again, before its claims are released;
        False when it came back ``REQUEUES`` times already (then it is left for the next command)."""
        with self.lock:
            key = self.key(jobs[0])
            self.requeued[key] = self.requeued.get(key, 0) + 1
            if self.requeued[key] > REQUEUES:
                return False
            self.todo.appendleft(list(jobs))
            return True
