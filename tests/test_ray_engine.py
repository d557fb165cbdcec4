"""``--engine ray`` on a real two-node Ray cluster (``ray start --head`` and ``ray start --address=…`` on this host,
each with its own temp dir and ports and one CPU): no run lost or duplicated when a Ray worker process is SIGKILLed
mid-run or the driver is SIGKILLed and run again; two drivers on one PostgreSQL store never train a run twice; a
search keeps its exact budget and reports its evals. Every process a test starts is stopped by its pid (the
cluster by SIGTERM to its own ``ray start --block`` processes, then SIGKILL to their process groups)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pgdb import fresh_pg_database, pg_admin_url, pg_required, pg_unavailable

from arena.core.errors import ArenaError
from arena.core.options import RunOptions

ray = pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))  # the venv's ray: its workers run this Python and this arena
TEN = ("gf", "gpt", "hy", "cp", "ws", "rf", "gf_mh", "gf_rh", "rwkv6_only", "mamba2_only")  # x 2 seeds = 20 runs
PORTS = 120


# -- the cluster ---------------------------------------------------------------------------------------------------
def _free_block(n: int) -> int:
    """The first of ``n`` consecutive TCP ports that are free on this host right now."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - n)
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


def _node_args(base: int) -> list[str]:
    return ["--node-manager-port", str(base + 1), "--object-manager-port", str(base + 2),
            "--dashboard-agent-listen-port", str(base + 3), "--dashboard-agent-grpc-port", str(base + 4),
            "--runtime-env-agent-port", str(base + 5), "--metrics-export-port", str(base + 6),
            "--min-worker-port", str(base + 10), "--max-worker-port", str(base + 39),
            "--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--disable-usage-stats", "--block"]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen([RAY, "start", *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # its own group: everything it starts dies with it
    deadline = time.monotonic() + 120
    while b"block forever" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"ray start failed: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``ray start --block`` (it stops what it started), then SIGKILL to whatever is left of its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for _ in range(50):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _leftovers(temp: str) -> list[int]:
    """Pids of processes whose command line names this cluster's temp dir (none should outlive the cluster)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass(frozen=True)
class Cluster:
    address: str
    temp: str  # its temp dir: an extra node of a test puts its own below it
    env: dict[str, str]
    spare_ports: int  # the first of PORTS - 80 ports nobody uses yet


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and one worker node on this host (one CPU each)."""
    temp = tempfile.mkdtemp(prefix="arena-ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    base = _free_block(PORTS)
    address = f"127.0.0.1:{base}"
    # A loopback cluster of this test alone: no token (Ray enables token auth whenever ~/.ray/auth_token exists, and
    # the drivers, this process included, inherit RAY_AUTH_MODE from here).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k == "RAY_AUTH_MODE"}
    head = _start(["--head", "--port", str(base), "--node-ip-address", "127.0.0.1", "--temp-dir", f"{temp}/head",
                   "--include-dashboard", "false", "--dashboard-port", str(base + 50),
                   "--ray-client-server-port", str(base + 51), *_node_args(base)], Path(temp) / "head.log", env)
    worker: subprocess.Popen[bytes] | None = None
    try:
        worker = _start(["--address", address, "--node-ip-address", "127.0.0.1", "--temp-dir", f"{temp}/w1",
                         *_node_args(base + 40)], Path(temp) / "w1.log", env)
        _wait_for_nodes(address, 2)
        yield Cluster(address, temp, env, base + 80)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        left = _leftovers(temp)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"processes of the cluster outlived it: {left}"
        shutil.rmtree(temp, ignore_errors=True)  # its sessions and logs (kept when something outlived it)


def _wait_for_nodes(address: str, n: int) -> None:
    code = (f"import ray, time\nray.init(address={address!r}, logging_level='ERROR')\n"
            f"t = time.monotonic()\nwhile sum(x['Alive'] for x in ray.nodes()) < {n} and time.monotonic() - t < 60:\n"
            "    time.sleep(0.5)\nprint(sum(x['Alive'] for x in ray.nodes()))\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith(str(n)), out.stdout + out.stderr


def _node_id(address: str, port: int) -> str:
    """The id of the cluster's node whose node manager listens on ``port``."""
    code = (f"import ray\nray.init(address={address!r}, logging_level='ERROR')\n"
            f"print([n['NodeID'] for n in ray.nodes() if n['NodeManagerPort'] == {port}][0])\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


# -- helpers -------------------------------------------------------------------------------------------------------
def _pg_url() -> Iterator[str]:
    reason = pg_unavailable(pg_admin_url())
    if reason:
        if pg_required():
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_pg_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_url()


def _ray(address: str, **kw: Any) -> RunOptions:
    return RunOptions(device="cpu", timeout_s=300, engine="ray", ray_address=address, **kw)


def _runs(url: str) -> list[tuple[str, str, int, str]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("select key, variant_name, seed, status from arena_runs order by id"))
            return [(str(k), str(v), int(s), str(st)) for k, v, s, st in rows]
    finally:
        engine.dispose()


# -- no cluster needed ---------------------------------------------------------------------------------------------
def test_engine_flags_are_checked_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from arena.orchestration.engines import check_engine

    with pytest.raises(ArenaError, match="--engine must be one of local, ray, not 'dask'"):
        RunOptions(engine="dask")
    with pytest.raises(ArenaError, match="--ray-address needs --engine ray"):
        RunOptions(ray_address="h:6379")
    with pytest.raises(ArenaError, match="--gpu-share must be a non-negative"):
        RunOptions(engine="ray", gpu_share=-1)
    with pytest.raises(ArenaError, match="--gpus is for --engine local"):
        RunOptions(engine="ray", gpus=(0,))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ArenaError, match=r'^--engine ray needs Ray, which is not installed: pip install "arena\[ray'):
        check_engine(RunOptions(engine="ray"))
    check_engine(RunOptions())  # the local engine needs nothing
    monkeypatch.undo()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ArenaError, match=rf"--ray-address 127.0.0.1:{port}: nothing answers there"):
        check_engine(RunOptions(engine="ray", ray_address=f"127.0.0.1:{port}"))


# -- (a) a Ray worker process SIGKILLed mid-run --------------------------------------------------------------------
@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_loses_and_doubles_nothing(cluster: Cluster, tiny_spec: Any,
                                                                 tmp_path: Path) -> None:
    from arena.db.store import Store
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import execute, plan, register
    from arena.runner.loader import builtin
    from arena.runner.provenance import basis_for

    options = _ray(cluster.address)
    store = Store(f"sqlite:///{tmp_path / 'arena.db'}")  # the driver is the one writer: SQLite is enough
    basis = basis_for(options)
    entries = [Entry.of(builtin(name)) for name in TEN]
    register(store, tiny_spec, entries)
    jobs = plan(store, tiny_spec, entries, tiny_spec.seeds, basis)
    assert len(jobs) == 20
    killed: list[tuple[str, int]] = []
    seen: dict[str, set[Any]] = {"node": set(), "pid": set()}
    pids_of: dict[str, set[int]] = {}
    lock = threading.Lock()

    def on_progress(slot: int, job: Any, event: dict[str, Any]) -> None:
        with lock:
            seen["node"].add(event.get("node"))
            pids_of.setdefault(job.entry.name, set()).add(event["pid"])
            if not killed and event.get("type") == "step" and job.entry.name == "hy":  # mid-run: training
                os.kill(event["pid"], signal.SIGKILL)
                killed.append((job.label, event["pid"]))

    done: list[str] = []
    t0 = time.monotonic()
    results = execute(store, tiny_spec, jobs, options, basis, on_progress=on_progress,
                      on_done=lambda slot, job, r: done.append(job.label))
    elapsed = time.monotonic() - t0
    rows = _runs(store.url)
    store.close()
    assert len(killed) == 1, killed
    assert len(pids_of["hy"]) == 2, pids_of["hy"]  # the killed group ran again, in another Ray worker process
    assert len(rows) == 20 and len({r[0] for r in rows}) == 20, rows  # every run, each once
    assert sorted((r[1], r[2]) for r in rows) == sorted((name, s) for name in TEN for s in (0, 1))
    assert {r[3] for r in rows} == {"ok"}, rows  # the kill is arena's fault, never the variant's crash
    assert len(results) == 20 and sorted(done) == sorted(j.label for j in jobs)
    assert len(seen["node"]) == 2, seen["node"]  # events name the node; both nodes trained
    print(f"\n(a) 20 runs, 1 Ray worker SIGKILLed ({killed[0][0]}), 0 duplicates, {elapsed:.0f} s")


@pytest.mark.slow
def test_a_slot_checks_a_group_while_the_next_one_trains(cluster: Cluster, tiny_spec: Any, tmp_path: Path) -> None:
    """The GPU's default on the CPU cluster: each slot's actor keeps the group's check (a call made later) and runs
    it beside the next group; every run is recorded once, checked, with the same losses as the serial way."""
    from arena.db.store import Store
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import execute, plan, register
    from arena.runner.loader import builtin
    from arena.runner.provenance import basis_for

    options = _ray(cluster.address)
    names = ("gf", "ws", "gpt", "hy")
    finals = []
    for overlap in (True, False):
        store = Store(f"sqlite:///{tmp_path / f'overlap{overlap}.db'}")
        basis = basis_for(options)
        entries = [Entry.of(builtin(name)) for name in names]
        register(store, tiny_spec, entries)
        execute(store, tiny_spec, plan(store, tiny_spec, entries, tiny_spec.seeds, basis), options, basis,
                overlap_checks=overlap)
        runs = store.runs(tiny_spec.hash)
        assert sorted((r.result.variant, r.result.seed) for r in runs) == sorted(
            (n, s) for n in names for s in tiny_spec.seeds)
        assert all(r.result.status == "ok" and r.result.env.get("verified") for r in runs)
        finals.append({(r.result.variant, r.result.seed): r.result.final_val_loss for r in runs})
        assert store.claims() == []
        store.close()
    assert finals[0] == finals[1]


# -- (b) the driver SIGKILLed and run again ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_driver_killed_and_run_again_duplicates_nothing(cluster: Cluster, tmp_path: Path,
                                                          tiny_flags: list[str]) -> None:
    home = tmp_path / "home"
    db = home / "arena.db"
    env = os.environ | {"ARENA_HOME": str(home)}
    env.pop("ARENA_DB", None)
    variants = TEN[:5]
    cmd = [sys.executable, "-P", "-m", "arena.cli", "tournament", *tiny_flags, "--seeds", "2", "--variants",
           ",".join(variants), "--device", "cpu", "--engine", "ray", "--ray-address", cluster.address]

    def stored() -> list[tuple[str, int, str]]:
        if not db.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return con.execute("select variant_name, seed, status from arena_runs order by id").fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            return []

    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None and not 1 <= len(stored()) < 10:
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started here, at once
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    after_kill = stored()
    assert 1 <= len(after_kill) < 10, after_kill
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{10 - len(after_kill)} to run, {len(after_kill)} memoized" in second.stdout, second.stdout
    assert "engine ray: 2 node(s), 2 slot(s) at once" in second.stdout
    assert f" · {socket.gethostname()}/" in second.stdout  # the progress lines name the node of each run
    final = stored()
    pairs = [(v, s) for v, s, _ in final]
    assert len(pairs) == len(set(pairs)), f"duplicate runs: {pairs}"
    assert {(v, s) for v in variants for s in (0, 1)} <= set(pairs)
    assert set(after_kill) <= set(final) and {st for _, _, st in final} == {"ok"}
    con = sqlite3.connect(db)
    try:
        assert con.execute("select count(*) from arena_claims").fetchone() == (0,)  # the dead driver's taken over
    finally:
        con.close()
    print(f"\n(b) driver SIGKILLed after {len(after_kill)} of 10 runs; rerun stored {len(final)} runs, 0 duplicates")


# -- (c) two drivers on one PostgreSQL store -----------------------------------------------------------------------
DRIVER = r"""
import json, sys, time
from pathlib import Path
from arena.core.options import RunOptions
from arena.core.spec import Spec
from arena.db.store import Store
from arena.orchestration.entries import Entry
from arena.orchestration.execute import execute, plan, register
from arena.runner.loader import builtin
from arena.runner.provenance import basis_for

url, spec_file, engine, address, go, out, names = sys.argv[1:8]
spec = Spec.from_dict(json.loads(Path(spec_file).read_text()))
options = RunOptions(device="cpu", timeout_s=300, engine=engine, ray_address=address or None, workers=2)
store = Store(url)
basis = basis_for(options)
entries = [Entry.of(builtin(n)) for n in names.split(",")]
register(store, spec, entries)
jobs = plan(store, spec, entries, spec.seeds, basis)
Path(out + ".ready").write_text(str(len(jobs)))
while not Path(go).exists():
    time.sleep(0.05)
trained, done = set(), []
results = execute(store, spec, jobs, options, basis,
                  on_progress=lambda s, j, e: trained.add(j.label) if e.get("type") == "step" else None,
                  on_done=lambda s, j, r: done.append(j.label))
Path(out).write_text(json.dumps({"planned": len(jobs), "trained": sorted(trained), "done": sorted(done)}))
"""


def _two_drivers(url: str, spec: Any, tmp_path: Path, engines: tuple[tuple[str, str], tuple[str, str]],
                 names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Two driver processes that plan the same runs, then execute them at one moment on one store."""
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec.to_dict()))
    go = tmp_path / "go"
    outs = [tmp_path / f"driver{i}.json" for i in range(2)]
    procs = []
    try:
        for (engine, address), out in zip(engines, outs, strict=True):
            log = (tmp_path / f"{out.name}.log").open("w")
            procs.append(subprocess.Popen(
                [sys.executable, "-P", "-c", DRIVER, url, str(spec_file), engine, address, str(go), str(out),
                 ",".join(names)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        while not all(Path(f"{o}.ready").exists() for o in outs):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), _logs(tmp_path)
            time.sleep(0.1)
        go.touch()
        for p in procs:
            p.wait(timeout=600)
        assert [p.returncode for p in procs] == [0, 0], _logs(tmp_path)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)
    return [json.loads(o.read_text()) for o in outs]


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("*.log")))


def _assert_shared(reports: list[dict[str, Any]], url: str, labels: set[str]) -> tuple[int, int]:
    a, b = (set(r["trained"]) for r in reports)
    assert not a & b, f"trained twice: {sorted(a & b)}"  # the claims
    assert a | b == labels  # every run trained by one of them
    assert all(r["planned"] == len(labels) and set(r["done"]) == labels for r in reports)  # each got every result
    rows = _runs(url)
    assert len(rows) == len(labels) == len({r[0] for r in rows}), rows  # each stored once
    from arena.db.store import Store

    with Store(url) as store:
        assert store.claims() == []
    return len(a), len(b)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_drivers_on_one_postgres_store_share_the_runs(cluster: Cluster, pg_url: str, tiny_spec: Any,
                                                            tmp_path: Path) -> None:
    names = TEN
    labels = {f"{n} seed {s}" for n in names for s in (0, 1)}
    t0 = time.monotonic()
    reports = _two_drivers(pg_url, tiny_spec, tmp_path, (("ray", cluster.address), ("ray", cluster.address)), names)
    a, b = _assert_shared(reports, pg_url, labels)
    print(f"\n(c) 2 Ray drivers, 20 runs: trained {a} + {b}, 0 twice, 0 lost, {time.monotonic() - t0:.0f} s")


@pytest.mark.slow
def test_two_local_drivers_on_one_sqlite_store_share_the_runs(tiny_spec: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    names = TEN[:4]
    labels = {f"{n} seed {s}" for n in names for s in (0, 1)}
    reports = _two_drivers(url, tiny_spec, tmp_path, (("local", ""), ("local", "")), names)
    a, b = _assert_shared(reports, url, labels)
    print(f"\n(c') 2 local drivers on SQLite, 8 runs: trained {a} + {b}, 0 twice")


# -- a search on Ray -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("pack", [1, 2])
def test_a_search_on_ray_keeps_its_budget_and_reports_its_evals(cluster: Cluster, tiny_spec: Any,
                                                                 tmp_path: Path, pack: int) -> None:
    """Trials in Ray slots, one at a time or two as one packed model (each member's evals reach its own trial)."""
    from arena.core.options import Execution
    from arena.db.store import Store
    from arena.orchestration.search import tune as search
    from arena.orchestration.search.storage import open_storage, worker_owner
    from arena.runner.loader import builtin

    store = Store(f"sqlite:///{tmp_path / 'arena.db'}")
    events: list[Any] = []
    summary = search.tune(builtin("gf"), tiny_spec, trials=5, store=store,
                          options=_ray(cluster.address, execution=Execution(pack=pack)),
                          storage=str(tmp_path / "optuna.journal"), on_trial=events.append)
    import optuna

    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(summary.storage))
    finished = [t for t in study.trials if t.state.is_finished()]
    assert summary.ran == 5 and len(study.trials) == 5 and len(finished) == 5  # the exact budget
    assert all(t.intermediate_values for t in finished)  # every eval went through the driver (prunes there)
    assert {t.user_attrs["worker"] for t in study.trials} == {worker_owner()["worker"]}  # one driver
    assert len(store.runs(tiny_spec.hash)) == 5
    assert {t.user_attrs["pack"] for t in study.trials} == {pack}
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 5  # each its own hyperparameters
    store.close()


# -- a node lost mid-run (last: the cluster keeps the dead node's entry) ---------------------------------------------
@pytest.mark.slow
def test_a_node_lost_mid_run_loses_and_doubles_nothing(cluster: Cluster, tiny_spec: Any, tmp_path: Path) -> None:
    """A third node joins; while it trains a group it dies whole (SIGKILL to its process group: raylet, agents, Ray
    workers, runner children): that group runs again on the nodes left, and every run is stored exactly once."""
    from arena.db.store import Store
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import execute, plan, register
    from arena.runner.loader import builtin
    from arena.runner.provenance import basis_for

    node = _start(["--address", cluster.address, "--node-ip-address", "127.0.0.1", "--temp-dir",
                   f"{cluster.temp}/w2", *_node_args(cluster.spare_ports)], Path(cluster.temp) / "w2.log", cluster.env)
    try:
        _wait_for_nodes(cluster.address, 3)
        doomed = _node_id(cluster.address, cluster.spare_ports + 1)[:6]
        options = _ray(cluster.address)
        store = Store(f"sqlite:///{tmp_path / 'arena.db'}")
        basis = basis_for(options)
        entries = [Entry.of(builtin(name)) for name in TEN]
        register(store, tiny_spec, entries)
        jobs = plan(store, tiny_spec, entries, tiny_spec.seeds, basis)
        lost: list[str] = []
        lock = threading.Lock()

        def on_progress(slot: int, job: Any, event: dict[str, Any]) -> None:
            with lock:
                if not lost and str(event.get("node")).endswith(doomed) and event.get("type") == "step":
                    os.killpg(node.pid, signal.SIGKILL)  # the whole node at once: raylet, agents, ...
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(event["pid"], signal.SIGKILL)  # ... and its Ray worker, whatever its group
                    lost.append(job.label)

        t0 = time.monotonic()
        execute(store, tiny_spec, jobs, options, basis, on_progress=on_progress)
        elapsed = time.monotonic() - t0
        rows = _runs(store.url)
        store.close()
    finally:
        _stop(node)
    assert len(lost) == 1, "no task ran on the third node"
    assert len(rows) == 20 and len({r[0] for r in rows}) == 20 and {r[3] for r in rows} == {"ok"}, rows
    print(f"\n(a') 20 runs, 1 node lost mid-run ({lost[0]}), 0 lost, 0 duplicates, {elapsed:.0f} s")
