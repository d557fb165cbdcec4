"""Run claims (``db.claims`` through ``Store``): a free run is claimed once, a live owner's claim holds, a dead owner's
claim (its pid gone on this host, its pid reused, or its heartbeat older than the TTL) is taken over by exactly one
taker, heartbeats keep a claim alive, and a release only drops the caller's own claims. SQLite and PostgreSQL."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgdb import fresh_pg_database, pg_admin_url, pg_required, pg_unavailable

from arena.core.liveness import process_start
from arena.db.claims import owner_alive, owner_id
from arena.db.store import Store

HOST = socket.gethostname()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arena.db'}"
        return
    reason = pg_unavailable(pg_admin_url())
    if reason:
        if pg_required():
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_pg_database() as pg_url:
        yield pg_url


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as s:
        yield s


@pytest.fixture
def live_owner() -> Iterator[str]:
    """The owner id of another live process on this host (a ``sleep``, stopped by its pid afterwards)."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        for _ in range(100):
            start = process_start(proc.pid)
            if start is not None:
                break
            time.sleep(0.01)
        yield f"{HOST}:{proc.pid}:{start}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def dead_owner() -> str:
    """The owner id of a process of this host that has exited."""
    proc = subprocess.Popen(["sleep", "0.2"])
    start = process_start(proc.pid)
    proc.wait(timeout=10)
    return f"{HOST}:{proc.pid}:{start}"


def test_owner_ids_tell_live_dead_reused_and_foreign_owners(live_owner: str) -> None:
    me = owner_id()
    host, pid, start = me.rsplit(":", 2)
    assert host == HOST and pid.isdigit() and start.isdigit()
    assert owner_alive(me) is True and owner_alive(live_owner) is True
    assert owner_alive(dead_owner()) is False
    assert owner_alive(f"{HOST}:{pid}:{int(start) + 1}") is False  # our pid, another start: a reused pid
    assert owner_alive("elsewhere:1:1") is None  # another host: only its heartbeat can tell
    assert owner_alive("garbage") is None


def test_a_free_run_is_claimed_and_a_live_owner_s_claim_holds(store: Store, live_owner: str) -> None:
    got = store.claim_runs(["k1", "k2"], live_owner, ttl_s=60)
    assert got.mine == ["k1", "k2"] and got.held == {}
    mine = store.claim_runs(["k2", "k3"])
    assert mine.mine == ["k3"] and mine.held == {"k2": live_owner}
    again = store.claim_runs(["k3"])  # ours already: refreshed, still ours
    assert again.mine == ["k3"]
    assert {c.key: c.owner for c in store.claims()} == {"k1": live_owner, "k2": live_owner, "k3": owner_id()}


def test_a_dead_owner_s_claim_is_taken_over(store: Store) -> None:
    gone = dead_owner()
    store.claim_runs(["k1"], gone, ttl_s=3600)  # a long TTL: only the dead pid frees it
    got = store.claim_runs(["k1"])
    assert got.mine == ["k1"]
    assert [c.owner for c in store.claims(["k1"])] == [owner_id()]


def test_a_reused_pid_does_not_keep_a_claim(store: Store) -> None:
    host, pid, start = owner_id().rsplit(":", 2)
    store.claim_runs(["k1"], f"{host}:{pid}:{int(start) + 7}", ttl_s=3600)
    assert store.claim_runs(["k1"]).mine == ["k1"]


def test_another_host_s_claim_lives_by_its_heartbeat(store: Store) -> None:
    far = "elsewhere:4242:99"
    store.claim_runs(["k1"], far, ttl_s=1.0)
    time.sleep(0.6)
    assert store.heartbeat_claims(far, ttl_s=1.0) == 1  # beats: alive for another second
    time.sleep(0.6)
    assert store.claim_runs(["k1"]).held == {"k1": far}  # 1.2 s after claiming, kept alive by the beat
    time.sleep(1.1)  # no beat for longer than the TTL: expired
    assert store.claim_runs(["k1"]).mine == ["k1"]
    assert store.heartbeat_claims(far) == 0  # the old owner holds nothing any more


def test_release_drops_only_the_caller_s_claims(store: Store, live_owner: str) -> None:
    store.claim_runs(["a", "b"])
    store.claim_runs(["c"], live_owner, ttl_s=60)
    assert store.release_claims(["a", "c"]) == 1  # c is not ours
    assert [c.key for c in store.claims()] == ["b", "c"]
    assert store.release_claims() == 1
    assert [c.key for c in store.claims()] == ["c"]
    assert store.release_claims([]) == 0


def test_reaping_drops_only_dead_claims(store: Store, live_owner: str) -> None:
    """A driver killed between recording a run and releasing its claim leaves a claim nobody asks for again; the
    reaper drops it (dead pid, reused pid, expired heartbeat) and keeps every live owner's claim."""
    host, pid, start = owner_id().rsplit(":", 2)
    store.claim_runs(["dead"], dead_owner(), ttl_s=3600)
    store.claim_runs(["reused"], f"{host}:{pid}:{int(start) + 7}", ttl_s=3600)
    store.claim_runs(["expired"], "elsewhere:1:1", ttl_s=0.2)
    store.claim_runs(["far"], "elsewhere:2:1", ttl_s=60)
    store.claim_runs(["live"], live_owner, ttl_s=60)
    store.claim_runs(["mine"])
    time.sleep(0.3)
    assert store.reap_claims() == 3
    assert [c.key for c in store.claims()] == ["far", "live", "mine"]
    assert store.reap_claims() == 0


def _race(url: str, keys: list[str], n: int) -> list[list[str]]:
    """``n`` stores (their own connections) claim ``keys`` at one moment, each as its own owner."""
    stores = [Store(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    got: list[list[str]] = [[] for _ in range(n)]

    def claim(i: int) -> None:
        barrier.wait()
        got[i] = stores[i].claim_runs(keys, f"elsewhere:{1000 + i}:1", ttl_s=60).mine

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for s in stores:
        s.close()
    return got


def test_racing_claims_and_takeovers_have_one_winner(store: Store, url: str) -> None:
    for round_ in range(3):
        fresh = _race(url, [f"new{round_}"], 4)
        assert sorted(len(m) for m in fresh) == [0, 0, 0, 1], fresh
        store.claim_runs([f"old{round_}"], dead_owner(), ttl_s=3600)
        taken = _race(url, [f"old{round_}"], 4)
        assert sorted(len(m) for m in taken) == [0, 0, 0, 1], taken
    assert len(store.claims()) == 6


def test_a_schedule_waits_for_a_live_owner_and_uses_its_stored_run(store: Store, live_owner: str,
                                                                   tiny_spec: Any) -> None:
    """A driver hands out only what it claimed; a run another live driver holds is waited for (polling) and, once
    that driver recorded it and let go, read from the store instead of trained."""
    from arena.core.result import RunResult
    from arena.core.stack import Basis
    from arena.orchestration.entries import Entry, Job
    from arena.orchestration.execute import register
    from arena.orchestration.schedule import Schedule
    from arena.runner.loader import builtin

    basis = Basis("code", "stack")
    gf, gpt = Entry.of(builtin("gf")), Entry.of(builtin("gpt"))
    register(store, tiny_spec, [gf, gpt])
    groups = [[Job(gf, 0), Job(gf, 1)], [Job(gpt, 0)]]
    other = gf.key(tiny_spec, 1, basis)
    store.claim_runs([other], live_owner, ttl_s=60)
    stop = threading.Event()
    with Schedule(store, tiny_spec, basis, groups, poll_s=0.1) as schedule:
        first = schedule.next(stop)
        assert first is not None and [j.label for j in first.train] == ["gf seed 0"] and first.stored == []
        second = schedule.next(stop)
        assert second is not None and [j.label for j in second.train] == ["gpt seed 0"]
        assert {c.key for c in store.claims() if c.owner == owner_id()} == {
            gf.key(tiny_spec, 0, basis), gpt.key(tiny_spec, 0, basis)}
        schedule.release_jobs(first.train + second.train)

        def other_driver_finishes() -> None:
            time.sleep(0.5)
            store.record_run(RunResult(variant="gf", variant_sha=gf.loaded.sha256, spec_hash=tiny_spec.hash, seed=1,
                                       hparams=gf.hparams.to_dict(), status="ok", code_digest="code",
                                       stack_id="stack"))
            store.release_claims([other], live_owner)

        finisher = threading.Thread(target=other_driver_finishes)
        finisher.start()
        t0 = time.monotonic()
        third = schedule.next(stop)  # waits until the other driver let go
        finisher.join()
        assert third is not None and third.train == [] and [j.label for j, _ in third.stored] == ["gf seed 1"]
        assert time.monotonic() - t0 >= 0.4
        assert schedule.next(stop) is None
    assert store.claims() == []


def test_opening_a_schedule_sweeps_a_killed_driver_s_claim_on_a_stored_run(store: Store, tiny_spec: Any) -> None:
    """The driver killed after ``record_run`` and before ``release_claims``: the next schedule (which memoizes that
    run and so never claims it) leaves no claim behind."""
    from arena.core.stack import Basis
    from arena.orchestration.entries import Entry, Job
    from arena.orchestration.execute import register
    from arena.orchestration.schedule import Schedule
    from arena.runner.loader import builtin

    basis = Basis("code", "stack")
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    store.claim_runs([gf.key(tiny_spec, 0, basis)], dead_owner(), ttl_s=3600)
    with Schedule(store, tiny_spec, basis, [[Job(gf, 1)]]) as schedule:
        assert store.claims() == []
        got = schedule.next(threading.Event())
        assert got is not None and [j.label for j in got.train] == ["gf seed 1"]
    assert store.claims() == []
