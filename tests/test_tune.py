"""The search (arena.orchestration.search, arena.cli.search): real Optuna studies on a tiny corpus with a tiny spec.

Each trial trains the smoke preset cut to 10 steps on a few KB of text (~0.3 s), in the runner's isolated Worker
(~3 s to start a child), so the whole module runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.spec import Spec, preset
from arena.db.store import Store
from arena.orchestration.search import storage as study_storage
from arena.orchestration.search import tune as search
from arena.orchestration.search.space import make_pruner, search_space
from arena.runner.data import spec_for_track
from arena.runner.loader import LoadedVariant, builtin, load_variant

FLAKY = '''"""flaky: a fusion that raises after three training steps (every trial crashes)."""
import torch

from arena.api import Fusion, Variant, gate_init, lr_mult


class Flaky(Fusion):
    def __init__(self, d_model, hp):
        super().__init__(d_model, hp)
        self.proj = torch.nn.Linear(d_model, d_model)
        self.calls = 0

    def forward(self, rwkv, mamba, x):
        if self.training:
            self.calls += 1
            if self.calls > 3:
                raise RuntimeError("flaky fusion gave up")
        return self.proj(rwkv + mamba)


VARIANT = Variant(
    name="flaky", kind="fusion", summary="Raises after three training steps", fusion=Flaky,
    hparams={"gate_init": gate_init(), "lr_mult": lr_mult()},
)
'''


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARENA_DB", raising=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    lines = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
    path.write_text("\n".join(lines * 120) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def spec(corpus: Path) -> Spec:
    return spec_for_track(preset("smoke"), f"text:{corpus}").derive(steps=10, eval_every=5, warmup_steps=2)


@dataclass
class Tuned:
    loaded: LoadedVariant
    spec: Spec
    store: Store
    storage: str
    summary: search.TuneSummary
    events: list[search.TrialEvent]

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.summary.study_name, storage=study_storage.open_storage(self.storage))


@pytest.fixture(scope="module")
def tuned(spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    """One real 4-trial study of gf_mh (in-process optimizer, one runner Worker), shared by the tests below."""
    root = tmp_path_factory.mktemp("tuned")
    store = Store(f"sqlite:///{root / 'arena.db'}")
    loaded = builtin("gf_mh")
    events: list[search.TrialEvent] = []
    summary = search.tune(loaded, spec, trials=4, store=store, seed=0, on_trial=events.append)
    yield Tuned(loaded, spec, store, study_storage.default_storage(store.url), summary, events)
    store.close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- no training ------------------------------------------------------------------------------------------------
def test_names_storage_rules_and_search_space(tmp_path: Path, spec: Spec) -> None:
    assert study_storage.study_name("gf_mh", spec) == f"tune/gf_mh/smoke@{spec.hash[:8]}"
    assert study_storage.default_storage(f"sqlite:///{tmp_path}/x/arena.db") == str(tmp_path / "x" / "optuna.journal")
    pg = "postgresql+psycopg://arena@db:5432/arena"
    assert study_storage.default_storage(pg) == pg
    assert study_storage.default_storage("sqlite://").endswith("home/optuna.journal")
    assert [study_storage.storage_kind(s) for s in ("a/b.journal", "sqlite:///f.db", pg, "redis://h:6379")] == [
        "journal",
        "rdb",
        "rdb",
        "redis",
    ]
    with pytest.raises(ArenaError, match="unknown scheme"):
        study_storage.storage_kind("ftp://x")
    journal = study_storage.open_storage(str(tmp_path / "j" / "optuna.journal"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert isinstance(study_storage.open_storage(f"sqlite:///{tmp_path}/o.db"), optuna.storages.RDBStorage)

    space = search_space(builtin("gf_mh"))
    assert list(space) == ["gate_init", "lr_mult", "lr_scale"] and space["lr_mult"].log and not space["gate_init"].log
    assert list(search_space(builtin("mamba2_only"))) == ["lr_mult", "lr_scale"]  # skips what it does not declare
    assert list(search_space(builtin("gpt"))) == ["lr_scale"]  # every shipped entry has a learning rate to tune
    with pytest.raises(ArenaError, match="did you mean 'gate_init'"):
        search_space(builtin("gf_mh"), ("gate_inti",))
    pruner = make_pruner(spec)
    assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_warmup_steps >= spec.steps // 2
    assert pruner._n_startup_trials >= 5


def test_sqlite_storage_refuses_several_workers(tmp_path: Path, spec: Spec) -> None:
    with pytest.raises(ArenaError, match="SQLite supports one optimizing process"):
        search.tune(builtin("gf_mh"), spec, trials=2, options=RunOptions(workers=2), storage=f"sqlite:///{tmp_path}/o.db",
                    store=None)


def test_sweep_fails_dead_owners_only(tmp_path: Path) -> None:
    study = optuna.create_study(storage=study_storage.open_storage(str(tmp_path / "s.journal")), study_name="s")
    host = socket.gethostname()
    owners = {"dead": f"{host}:{_dead_pid()}", "alive": f"{host}:{os.getppid()}", "remote": "elsewhere:1"}
    numbers = {}
    for label, owner in owners.items():
        trial = study.ask()
        trial.suggest_float("gate_init", 0.05, 0.95)
        trial.set_user_attr("worker", owner)
        numbers[label] = trial.number
    assert study_storage.sweep_stale_trials(study) == [numbers["dead"]]
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[numbers["dead"]].state == TrialState.FAIL
    assert by_number[numbers["alive"]].state == by_number[numbers["remote"]].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs["retry_of"] == numbers["dead"]
    assert retry.system_attrs["fixed_params"] == by_number[numbers["dead"]].params  # enqueued params
    assert study_storage.sweep_stale_trials(study) == []  # idempotent


# -- real studies -----------------------------------------------------------------------------------------------
def test_baseline_first_tuning_seed_and_run_records(tuned: Tuned) -> None:
    s, spec = tuned.summary, tuned.spec
    assert s.study_name == study_storage.study_name("gf_mh", spec) and s.ran == 4 and s.n_trials == {"COMPLETE": 4}
    assert s.storage.endswith("optuna.journal") and "arena dashboard --storage" in s.dashboard_hint
    trials = tuned.study().get_trials()
    assert trials[0].user_attrs.get("baseline") is True
    assert trials[0].params == {"gate_init": 0.3, "lr_mult": 1.0, "lr_scale": 1.0}  # gf_mh's defaults
    assert s.baseline_value == trials[0].value and s.best_value == min(t.value or 0.0 for t in trials)
    lr, gate = trials[1].distributions["lr_mult"], trials[1].distributions["gate_init"]
    assert isinstance(lr, FloatDistribution) and isinstance(gate, FloatDistribution) and lr.log and not gate.log
    assert [e.number for e in tuned.events] == [0, 1, 2, 3] and tuned.events[-1].done == 4
    runs = tuned.store.runs(spec.hash, variant_sha=tuned.loaded.sha256)
    assert len(runs) == 4
    for run in runs:
        assert run.result.seed in spec.tuning_seeds and run.result.seed not in spec.contest_seeds()
        assert run.study_name == s.study_name and run.result.status == "ok"
    assert {r.trial_number for r in runs} == {0, 1, 2, 3}
    assert {t.user_attrs["seed"] for t in trials} == {spec.tuning_seeds[0]}


def test_resume_required_and_dead_worker_trial_requeued(tuned: Tuned) -> None:
    study = tuned.study()
    orphan = study.ask()  # a trial whose worker died mid-run: RUNNING forever, owner gone
    orphan.suggest_float("gate_init", 0.05, 0.95)
    orphan.suggest_float("lr_mult", 0.1, 10.0, log=True)
    orphan.suggest_float("lr_scale", 0.25, 4.0, log=True)
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    with pytest.raises(ArenaError, match="pass --resume"):
        search.tune(tuned.loaded, tuned.spec, trials=1, store=tuned.store)
    summary = search.tune(tuned.loaded, tuned.spec, trials=2, store=tuned.store, resume=True)
    assert summary.ran == 2
    trials = {t.number: t for t in tuned.study().get_trials()}
    assert trials[orphan.number].state == TrialState.FAIL and trials[orphan.number].user_attrs["swept"]
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == orphan.number]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[orphan.number].params
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials.values()) == 1  # not enqueued again
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # The swept trial was an interruption, not a trial the search spent: the tuned entry's budget leaves it out,
    # so variants tuned alike land in one league even when one of them lost a worker.
    spent = len([t for t in trials.values() if t.state.is_finished()]) - 1
    assert search.adopt(tuned.loaded, tuned.spec, tuned.store, tuned.storage) == f"gf_mh@tuned-{spent}"


def test_adopt_freezes_best_trial(tuned: Tuned, spec: Spec) -> None:
    best = tuned.study().best_trial
    name = search.adopt(tuned.loaded, spec, tuned.store, tuned.storage)
    n = len([t for t in tuned.study().get_trials() if t.state.is_finished() and not t.user_attrs.get("swept")])
    assert name == f"gf_mh@tuned-{n}"  # the trials the search spent (a swept interruption is not one of them)
    entry = tuned.store.entry(name)
    assert entry is not None and entry.origin == "tuned" and entry.study_name == tuned.summary.study_name
    assert entry.league == f"tuned-{n}" and entry.budget == n  # it competes only against entries tuned alike
    assert entry.variant_sha == tuned.loaded.sha256 and entry.hparams == best.params
    assert search.adopt(tuned.loaded, spec, tuned.store, tuned.storage) == name  # same content: no-op
    with pytest.raises(ArenaError, match="no study"):
        search.adopt(builtin("gf"), spec, tuned.store, tuned.storage)


def test_failing_trials_are_fail_not_fatal(tmp_path: Path, spec: Spec) -> None:
    path = tmp_path / "flaky.py"
    path.write_text(FLAKY, encoding="utf-8")
    loaded = load_variant(path)
    with Store(f"sqlite:///{tmp_path / 'arena.db'}") as store:
        events: list[search.TrialEvent] = []
        summary = search.tune(loaded, spec, trials=2, store=store, on_trial=events.append)
        assert summary.n_trials == {"FAIL": 2} and summary.best_value is None and summary.ran == 2
        assert all(e.state == "FAIL" and "flaky fusion gave up" in (e.error or "") for e in events)
        runs = store.runs(spec.hash, variant_sha=loaded.sha256)
        assert [r.result.status for r in runs] == ["crashed", "crashed"]
        assert all(r.study_name == summary.study_name for r in runs)
        with pytest.raises(ArenaError, match="no completed trial"):
            search.adopt(loaded, spec, store)


def test_global_budget_with_two_workers(tmp_path: Path, spec: Spec) -> None:
    with Store(f"sqlite:///{tmp_path / 'arena.db'}") as store:
        summary = search.tune(builtin("gf_mh"), spec, trials=5, options=RunOptions(workers=2), store=store, seed=1)
        assert summary.ran == 5 and sum(summary.n_trials.values()) == 5
        study = optuna.load_study(study_name=summary.study_name, storage=study_storage.open_storage(summary.storage))
        trials = study.get_trials()
        assert all(t.state.is_finished() for t in trials)
        assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes took trials
        assert len(store.runs(spec.hash)) == len({t.user_attrs["run_key"] for t in trials})
        assert {t.user_attrs["concurrency"] for t in trials} == {2}  # two optimizers: two trials in flight
        assert search.adopt(builtin("gf_mh"), spec, store) == "gf_mh@tuned-5x2"


def test_a_packed_search_trains_its_trials_together_within_the_budget(tuned: Tuned, tmp_path: Path,
                                                                     spec: Spec) -> None:
    """--pack 2: trials asked two at a time under the budget lock, trained as one model (each its own
    hyperparameters, pruned and told one by one); the baseline trial computes what it computed alone."""
    from arena.core.options import Execution

    with Store(f"sqlite:///{tmp_path / 'arena.db'}") as store:
        events: list[search.TrialEvent] = []
        summary = search.tune(builtin("gf_mh"), spec, trials=5, store=store, seed=0, on_trial=events.append,
                              options=RunOptions(execution=Execution(pack=2)))
        assert summary.ran == 5 and summary.n_trials == {"COMPLETE": 5} and len(events) == 5
        study = optuna.load_study(study_name=summary.study_name, storage=study_storage.open_storage(summary.storage))
        trials = study.get_trials()
        assert len(trials) == 5 and {t.user_attrs["pack"] for t in trials} == {2}
        assert trials[0].user_attrs.get("baseline") and trials[0].params == tuned.study().trials[0].params
        assert trials[0].value == pytest.approx(tuned.study().trials[0].value, abs=2e-5)  # packed = alone
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 5  # the constant liar spreads a pack
        runs = store.runs(spec.hash)
        assert sorted(r.trial_number for r in runs) == [0, 1, 2, 3, 4]
        by_trial = {t.number: t for t in trials}
        for run in runs:
            assert run.result.hparams == by_trial[run.trial_number].params  # each member its trial's values
            assert run.result.env["pack"]["size"] == 2 and run.result.seed == spec.tuning_seeds[0]
        # Two at a time is another search than one at a time (TPE learns from finished trials only): its own league.
        assert {t.user_attrs["concurrency"] for t in trials} == {2}
        name = search.adopt(builtin("gf_mh"), spec, store)
        entry = store.entry(name)
        assert name == "gf_mh@tuned-5x2" and entry is not None and entry.league == "tuned-5x2" and entry.budget == 5


def test_cli_tune_refuses_to_pack_a_search_of_shapes(tmp_path: Path, corpus: Path) -> None:
    from arena.cli.app import app

    db = tmp_path / "arena.db"
    result = CliRunner().invoke(app, ["tune", "gf", "--trials", "2", "--pack", "2", "--params", "gate_init,width",
                                      "--preset", "smoke", "--track", f"text:{corpus}", "--db", f"sqlite:///{db}"])
    assert isinstance(result.exception, ArenaError), result.output
    assert "--pack 2: --params width may change the model's shape" in str(result.exception)
    assert not db.exists()  # refused before the store is opened


def test_cli_tune_adopt_and_help(tmp_path: Path, corpus: Path) -> None:
    from arena.cli.app import app
    runner = CliRunner()
    for command in ("tune", "adopt", "dashboard"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    db = f"sqlite:///{tmp_path / 'arena.db'}"
    args = ["--preset", "smoke", "--steps", "10", "--track", f"text:{corpus}", "--db", db]
    result = runner.invoke(app, ["tune", "gf_mh", "--trials", "2", "--adopt", *args])
    assert result.exit_code == 0, result.output
    assert "arena dashboard --storage" in result.output and "gf_mh@tuned-" in result.output
    again = runner.invoke(app, ["tune", "gf_mh", "--trials", "1", *args])
    assert isinstance(again.exception, ArenaError) and "--resume" in str(again.exception)
    bad = runner.invoke(app, ["tune", "gf_mh", "--trials", "1", "--params", "gate_inti", *args])
    assert isinstance(bad.exception, ArenaError) and "did you mean" in str(bad.exception)


def test_killed_worker_process_trial_is_rerun(tmp_path: Path, spec: Spec) -> None:
    """SIGKILL one of two optimizing processes after the first trial: the budget is still met by the survivor, and
    a trial the dead process left RUNNING is failed and re-run (retry_of) instead of being lost."""
    import multiprocessing as mp
    import os
    import signal

    killed: list[int] = []

    def on_trial(event: search.TrialEvent) -> None:
        if not killed:
            (victim,) = [c for c in mp.active_children() if c.name == "arena-tune-0"]
            os.kill(victim.pid or 0, signal.SIGKILL)
            killed.append(victim.pid or 0)

    longer = spec.derive(steps=30)  # long enough that the victim is most likely mid-trial
    with Store(f"sqlite:///{tmp_path / 'arena.db'}") as store:
        summary = search.tune(builtin("gf_mh"), longer, trials=4, options=RunOptions(workers=2), store=store,
                              on_trial=on_trial)
    assert killed and summary.ran == 4 and summary.n_trials.get("COMPLETE") == 4
    study = optuna.load_study(study_name=summary.study_name, storage=study_storage.open_storage(summary.storage))
    trials = study.get_trials()
    assert all(t.state.is_finished() for t in trials)
    for lost in [t for t in trials if t.user_attrs.get("swept")]:
        assert lost.state == TrialState.FAIL
        assert [t.state for t in trials if t.user_attrs.get("retry_of") == lost.number] == [TrialState.COMPLETE]


def test_cli_tune_all_gives_every_entry_the_same_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`arena tune --all --trials N` tunes every shipped variant with N trials and adopts each (one league)."""
    from arena.cli.app import app
    from arena.runner.loader import shipped_sources

    tuned: list[tuple[str, int]] = []
    adopted: list[str] = []

    def fake_tune(loaded: LoadedVariant, spec: Spec, *, trials: int, **_: object) -> search.TuneSummary:
        tuned.append((loaded.name, trials))
        return search.TuneSummary(study_name=f"tune/{loaded.name}", storage="x.journal", n_trials={"COMPLETE": trials},
                                  ran=trials, best_value=1.0, best_params={}, best_trial=0, baseline_value=1.0,
                                  seconds=0.0, dashboard_hint="")

    def fake_adopt(loaded: LoadedVariant, *_: object, **__: object) -> str:
        adopted.append(loaded.name)
        return f"{loaded.name}@tuned-3"

    monkeypatch.setattr(search, "tune", fake_tune)
    monkeypatch.setattr(search, "adopt", fake_adopt)
    runner = CliRunner()
    result = runner.invoke(app, ["tune", "--all", "--trials", "3", "--preset", "smoke"])
    assert result.exit_code == 0, result.output
    assert sorted(tuned) == [(name, 3) for name in sorted(shipped_sources())]  # baselines included
    assert sorted(adopted) == sorted(shipped_sources())
    for args in (["tune", "--trials", "3"], ["tune", "gf", "--all", "--trials", "3"]):
        bad = runner.invoke(app, args)
        assert bad.exit_code != 0 and "name one VARIANT, or pass --all" in str(bad.exception or bad.output)
