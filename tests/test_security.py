"""Hostile variant files: a variant file is code from someone who wants to win (docs/writing-a-variant.md).

Each file in ``tests/hostile/`` is one realistic attack — a causality leak the old probe missed (it compared logits
at initial weights, batch 2, length 24, eval mode, no grad, first half of the positions), a patch at import, a side
effect at import, hidden parameters, a hole around the declaration check, a denial of service — and each test
states what must hold whatever the defence looks like:

* ``arena variants check FILE`` refuses every file with one line naming it, no traceback, nothing stored, and within
  a time limit even when the import never returns;
* ``arena run FILE`` refuses it, or stores a failure (``rejected``/``crashed``), never an ``ok`` run;
* side effects never take effect (the store survives, the working directory is untouched, no subprocess ran, no
  secret from the environment leaks out);
* a patcher or a saboteur in a tournament changes no other entry's result (bit-for-bit, on the CPU) and the
  tournament goes on;
* the files themselves really attack (``test_hostile_*``): they leak, hide trained capacity, patch what they say.

The hostile files are loaded by path (the folder has no ``__init__.py``). Every test runs with its working directory
in tmp_path, and an autouse fixture restores the torch/arena attributes the patchers target, so that a weak
defence that imports a patcher in this process cannot corrupt the tests that follow. Files whose import or forward
ends or hangs the process that runs them go through a real ``python -m arena.cli`` subprocess with a time limit.
"""

from __future__ import annotations

import ast
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

import arena.runner.data as data_module
import arena.runner.tracks as tracks_module
from arena.cli.app import main
from arena.core.hparams import resolve
from arena.core.spec import PRESETS
from arena.db.store import Store
from arena.model.lm import build_model, count_params
from arena.runner.loader import builtin_dir

HOSTILE = Path(__file__).parent / "hostile"
SMOKE = PRESETS["smoke"]
SECRET = "tok-8c1f5e0b9d"  # planted in the environment; must never come out (side_read_env)
MARKER = "pwned-by-subprocess"  # what side_subprocess touches next to $ARENA_HOME and in the working directory
CHECK_LIMIT_S = 90.0  # a check of a file whose import never returns must give up within this
TOURNAMENT = ["--seeds", "2", "--workers", "1", "--device", "cpu"]  # one worker: the bad entry shares gf's process

# -- the hostile files, by class (file stem → test id) ----------------------------------------------------------------
LEAKS = {  # class 1: each leak condition the old probe missed
    "seq-len-over-24": "leak_seq_len",
    "batch-over-2": "leak_batch_size",
    "training-mode-only": "leak_train_mode",
    "eval-mode-only": "leak_eval_mode",
    "inputs-require-grad": "leak_requires_grad",
    "grad-disabled-only": "leak_no_grad",
    "after-3rd-call": "leak_call_count",
    "zero-init-weight": "leak_zero_init",
    "non-differentiable-mask": "leak_mask",
    "detached-future-shift": "leak_detach",
    "second-half-positions": "leak_late_positions",
}
PATCHERS = {  # class 2: file → (object, attribute) it replaces at import
    "patch_cross_entropy": (F, "cross_entropy"),
    "patch_data": (tracks_module.TokenData, "train_batch"),
    "patch_seed": (torch, "manual_seed"),
    "patch_tensor_mean": (torch.Tensor, "mean"),
}
SIDE_EFFECTS = ["side_delete_db", "side_write_cwd", "side_read_env", "side_subprocess", "side_dunder_import",
                "side_torch_os"]  # class 3 (the last two evade an import allow-list)
HIDDEN = ["hidden_hook_buffer", "hidden_lazy_param", "hidden_param_list"]  # class 4
HOLES = ["hole_shipped_name", "hole_name_newline", "hole_name_non_ascii", "hole_summary_escape", "hole_summary_markup",
         "hole_gate_init_range", "hole_lr_mult_low", "hole_import_exit", "hole_malformed_hparams"]  # class 5
LETHAL = ["hole_import_hangs", "hole_forward_os_exit"]  # class 5 files that end or hang the process running them
LETHAL_PARAMS = [pytest.param("hole_import_hangs", marks=pytest.mark.slow), "hole_forward_os_exit"]  # waits ~60 s
IN_PROCESS = [*LEAKS.values(), *PATCHERS, *SIDE_EFFECTS, *HIDDEN, *HOLES]  # with LETHAL: classes 1–5, all refused


def hostile(stem: str) -> Path:
    return HOSTILE / f"{stem}.py"


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_text(encoding="utf-8").encode("utf-8")).hexdigest()


def declared(path: Path) -> dict[str, Any]:
    """The literal keywords of the file's ``VARIANT = Variant(...)`` (name, kind, summary), read without running it."""
    last = ast.parse(path.read_text(encoding="utf-8")).body[-1]
    assert isinstance(last, ast.Assign) and isinstance(last.value, ast.Call), path
    out: dict[str, Any] = {}
    for kw in last.value.keywords:
        try:
            out[str(kw.arg)] = ast.literal_eval(kw.value)
        except ValueError:
            continue
    return out


# -- running arena ---------------------------------------------------------------------------------------------------
@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def arena(*args: str) -> Result:
    """Run ``arena ARGS`` in-process through main(); never raises."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", ["arena", *args]):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


def arena_subprocess(*args: str, timeout: float) -> tuple[Result, float]:
    """Run ``python -P -m arena.cli ARGS`` in its own session; on timeout kill that session and fail the test."""
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, "-P", "-m", "arena.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"arena {' '.join(args)} did not return within {timeout:.0f} s")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    return Result(p.returncode, out, err), time.monotonic() - t0


def assert_one_line_error(r: Result, *fragments: str) -> None:
    assert r.code == 1, (r.code, r.out, r.err)
    assert len(r.error_lines) == 1, r.err
    line = r.error_lines[0]
    assert line.startswith("error:"), line
    assert "Traceback" not in r.err + r.out
    for f in fragments:
        assert f in line, line


# -- reading the store -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    name: str
    sha: str
    seed: int
    status: str
    loss: float | None


def rows(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


def stored_runs(home: Path) -> list[Run]:
    got = rows(home / "arena.db", "select variant_name, variant_sha, seed, status, final_val_loss from arena_runs")
    return [Run(*r) for r in got]


def runs_of(home: Path, path: Path) -> list[Run]:
    """The stored runs of a hostile file: its source's sha, or its declared name unless that is a shipped one."""
    name, sha = declared(path).get("name"), sha_of(path)
    return [r for r in stored_runs(home) if r.sha == sha or (r.name == name and name != "gf")]


def gf_losses(home: Path) -> dict[int, float | None]:
    gf_sha = sha_of(builtin_dir() / "gf.py")
    return {r.seed: r.loss for r in stored_runs(home) if r.name == "gf" and r.sha == gf_sha and r.status == "ok"}


def register_unchecked(path: Path) -> str:
    """Put a file into the store without its check — as a store from before the defences, or one edited by hand,
    would hold it — and return its declared name."""
    name = declared(path)["name"]
    with Store(Store.default_url()) as store:
        store.add_variant(name, "fusion", declared(path).get("summary", "x"), path.read_text(encoding="utf-8"),
                          sha_of(path), str(path))
    return str(name)


def assert_refused_or_failed(r: Result, home: Path, path: Path) -> None:
    """Refused before training (one line naming the file), or every stored run of it a failure; never ``ok``."""
    assert "Traceback" not in r.out + r.err, r.out + r.err
    runs = runs_of(home, path)
    assert not [x for x in runs if x.status == "ok"], f"a hostile run is stored as ok: {runs}"
    if r.code == 1:
        assert_one_line_error(r, str(path))
    else:
        assert r.code != 0, (r.code, r.out, r.err)
        assert runs and all(x.status in ("rejected", "crashed") for x in runs), runs


# -- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture
def home(_isolated_arena: Path) -> Path:
    return _isolated_arena


@pytest.fixture(autouse=True)
def _in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty working directory of its own (side_write_cwd writes into the cwd)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


_MISSING = object()
_GUARDED: list[Any] = [torch, torch.random, F, torch.Tensor, torch.nn.Module, data_module,
                       tracks_module, tracks_module.TokenData]


@pytest.fixture(autouse=True)
def _restore_patched_attributes() -> Iterator[None]:
    """Undo any patch a hostile file made in this process (only a weak defence lets one run here): changed
    attributes get their old value back; attributes added to a class (``torch.Tensor.mean`` shadowing the C base's)
    are removed. Attributes added to a module stay (importing a submodule adds one)."""
    saved = [(obj, dict(vars(obj))) for obj in _GUARDED]
    yield
    for obj, attrs in saved:
        now = dict(vars(obj))
        for key, value in attrs.items():
            if now.get(key, _MISSING) is not value:
                setattr(obj, key, value)
        if isinstance(obj, type):
            for key in now.keys() - attrs.keys():
                delattr(obj, key)


@pytest.fixture(scope="module")
def gf_alone(tmp_path_factory: pytest.TempPathFactory, tiny_flags: list[str]) -> dict[int, float | None]:
    """gf's final val loss per seed from a tournament of gf alone, in a home of its own."""
    home = tmp_path_factory.mktemp("gf-alone") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARENA_HOME", str(home))
        mp.delenv("ARENA_DB", raising=False)
        r = arena("tournament", *tiny_flags, *TOURNAMENT, "--variants", "gf")
    assert r.code == 0, r.err + r.out
    losses = gf_losses(home)
    assert sorted(losses) == [0, 1] and all(v is not None for v in losses.values()), stored_runs(home)
    return losses


# -- the hostile files really attack ------------------------------------------------------------------------------
def _exec_declaration(path: Path) -> Any:
    """Run a hostile file directly (no loader, no check) and return its VARIANT: for files safe to run here."""
    namespace: dict[str, Any] = {"__name__": f"hostile_{path.stem}", "__file__": str(path)}
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace["VARIANT"]


def _build(path: Path) -> torch.nn.Module:
    v = _exec_declaration(path)
    return build_model(SMOKE.dims, v, resolve(v.hparams, None, v.name), seed=0, backend="torch_chunk")


@pytest.mark.parametrize("stem", list(LEAKS.values()), ids=list(LEAKS))
def test_hostile_leak_really_reads_later_tokens(stem: str) -> None:
    """At the spec's batch shape, with trained (non-zero) weights, after a few calls, in some mode the old probe
    did not look at, the logits at positions ≤ t0 change when only tokens after t0 change."""
    model = _build(hostile(stem))
    with torch.no_grad():
        for p in model.parameters():  # weights after some training: nothing sits at its zero initialisation
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    B, T, t0 = SMOKE.batch_size, SMOKE.seq_len, SMOKE.seq_len - 8  # (8, 32), t0 = 24 lies in the second half
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, SMOKE.dims.vocab_size, (B, T), generator=g)  # (B, T)
    changed = idx.clone()
    changed[:, t0 + 1:] = torch.randint(0, SMOKE.dims.vocab_size, (B, T - t0 - 1), generator=g)
    leaks: dict[str, float] = {}
    for training, grad in ((True, True), (False, False), (True, False), (False, True)):
        model.train(training)
        with torch.set_grad_enabled(grad):
            for _ in range(3):  # past the call counter: the probe's forwards are calls 4 and 5
                model(idx)
            diff = (model(idx)[:, : t0 + 1] - model(changed)[:, : t0 + 1]).abs().max().item()
        leaks[f"train={training} grad={grad}"] = diff
        if diff > 1e-3:
            break
    assert max(leaks.values()) > 1e-3, leaks


@pytest.mark.parametrize("stem", HIDDEN)
def test_hostile_hidden_capacity_is_uncounted_and_trained(stem: str) -> None:
    """Counted at build the model fits the budget, yet the numbers that training changes — counted parameters plus
    uncounted tensors that change from one step to the next — exceed the budget."""
    model = _build(hostile(stem))
    counted = count_params(model)
    assert counted <= SMOKE.param_budget
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, SMOKE.dims.vocab_size, (SMOKE.batch_size, SMOKE.seq_len + 1), generator=g)  # (B, T+1)
    model.train()

    def step() -> None:
        opt.zero_grad()
        logits = model(x[:, :-1])  # (B, T, V)
        F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1)).backward()
        opt.step()

    def reachable() -> dict[int, torch.Tensor]:
        found: dict[int, torch.Tensor] = {}
        for m in model.modules():
            tensors = [*m._parameters.values(), *m._buffers.values()]
            tensors += [t for v in vars(m).values() if isinstance(v, list | tuple) for t in v]
            found.update({id(t): t for t in tensors if isinstance(t, torch.Tensor)})
        return found

    counted_ids = {id(p) for p in model.parameters()}
    step()
    before = {k: t.detach().clone() for k, t in reachable().items()}
    step()
    after = reachable()
    trained_hidden = [t for k, t in after.items()
                      if k not in counted_ids and k in before and not torch.equal(before[k], t.detach())]
    assert counted + sum(t.numel() for t in trained_hidden) > SMOKE.param_budget, (counted, len(trained_hidden))


@pytest.mark.parametrize("stem", list(PATCHERS))
def test_hostile_patcher_really_patches(stem: str) -> None:
    obj, attr = PATCHERS[stem]
    original = getattr(obj, attr)
    _exec_declaration(hostile(stem))
    assert getattr(obj, attr) is not original  # the autouse fixture puts it back


# -- classes 1–5: `arena variants check` refuses every file -------------------------------------------------------
@pytest.mark.parametrize("stem", IN_PROCESS)
def test_variants_check_refuses(stem: str, home: Path) -> None:
    path = hostile(stem)
    r = arena("variants", "check", str(path), "--preset", "smoke")
    assert_one_line_error(r, str(path))
    assert not (home / "arena.db").exists()
    assert "\x1b[" not in r.out + r.err  # a terminal escape from a summary never reaches the terminal


@pytest.mark.parametrize("stem", LETHAL_PARAMS)
def test_variants_check_refuses_a_file_that_ends_or_hangs_its_process(stem: str, home: Path) -> None:
    path = hostile(stem)
    r, elapsed = arena_subprocess("variants", "check", str(path), "--preset", "smoke", timeout=CHECK_LIMIT_S + 60)
    assert elapsed < CHECK_LIMIT_S, f"the check took {elapsed:.0f} s"
    assert_one_line_error(r, str(path))
    assert not (home / "arena.db").exists()


@pytest.mark.parametrize("stem", list(PATCHERS))
def test_checking_a_patcher_leaves_this_process_unpatched(stem: str) -> None:
    """The process that checks a file (and later writes the store) must not run it: nothing it patches sticks."""
    obj, attr = PATCHERS[stem]
    original = getattr(obj, attr)
    arena("variants", "check", str(hostile(stem)), "--preset", "smoke")
    assert getattr(obj, attr) is original


# -- classes 1–5: `arena run FILE` refuses it or stores a failure, never an ok run -------------------------------
@pytest.mark.parametrize("stem", IN_PROCESS)
def test_run_refuses_or_fails(stem: str, home: Path, tiny_flags: list[str]) -> None:
    path = hostile(stem)
    r = arena("run", str(path), "--seed", "0", *tiny_flags, "--device", "cpu")
    assert_refused_or_failed(r, home, path)


@pytest.mark.parametrize("stem", LETHAL_PARAMS)
def test_run_refuses_or_fails_a_file_that_ends_or_hangs_its_process(stem: str, home: Path,
                                                                     tiny_flags: list[str]) -> None:
    path = hostile(stem)
    r, elapsed = arena_subprocess("run", str(path), "--seed", "0", *tiny_flags, "--device", "cpu", timeout=300)
    assert_refused_or_failed(r, home, path)
    assert elapsed < CHECK_LIMIT_S + 60, f"run took {elapsed:.0f} s"


# -- class 3: side effects never take effect -----------------------------------------------------------------------
@pytest.mark.parametrize("stem", SIDE_EFFECTS)
def test_side_effects_never_take_effect(stem: str, home: Path, tmp_path: Path, _in_tmp_cwd: Path,
                                        tiny_flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever check, submit and run say about the file (that they refuse it is tested above), what it tries to
    do at import never happens: the store survives, the working directory stays as it was, no subprocess runs,
    and a secret in the environment appears neither on the terminal nor in the store."""
    monkeypatch.setenv("ARENA_TEST_SECRET_TOKEN", SECRET)
    Store(Store.default_url()).close()  # the store the file tries to delete
    db = home / "arena.db"
    listing = sorted(os.listdir(_in_tmp_cwd))
    path = hostile(stem)
    results = [
        arena("variants", "check", str(path), "--preset", "smoke"),
        arena("submit", str(path), "--no-run", *tiny_flags),
        arena("run", str(path), "--seed", "0", *tiny_flags, "--device", "cpu"),
    ]
    assert db.exists(), "the store was deleted"
    assert sorted(os.listdir(_in_tmp_cwd)) == listing, "a file appeared in the working directory"
    assert not (tmp_path / MARKER).exists(), "a subprocess ran"
    for r in results:
        assert SECRET not in r.out + r.err, "the secret reached the terminal"
    for f in home.glob("arena.db*"):
        assert SECRET.encode() not in f.read_bytes(), f"the secret reached {f.name}"


# -- class 5: names and hyperparameter ranges ------------------------------------------------------------------------
@pytest.mark.parametrize("stem", ["hole_shipped_name", "hole_name_newline", "hole_name_non_ascii"],
                         ids=["shipped-name-gf", "trailing-newline", "non-ascii-letters"])
def test_submit_refuses_the_name(stem: str, home: Path, tiny_flags: list[str]) -> None:
    path = hostile(stem)
    r = arena("submit", str(path), "--no-run", *tiny_flags)
    assert_one_line_error(r, str(path))
    assert rows(home / "arena.db", "select name from arena_variants where sha256 = ?", (sha_of(path),)) == []


@pytest.mark.parametrize("hp", ["gate_init=1.5", "gate_init=0", "lr_mult=0", "lr_mult=-1"])
def test_run_gf_refuses_an_out_of_range_hparam(hp: str, home: Path, tiny_flags: list[str]) -> None:
    r = arena("run", "gf", "--seed", "0", *tiny_flags, "--device", "cpu", "--hp", hp)
    assert_one_line_error(r, hp.split("=")[0])
    assert stored_runs(home) == []


@pytest.mark.slow
def test_an_honest_user_file_still_passes(home: Path, tmp_path: Path, tiny_flags: list[str]) -> None:
    """The control: a user's copy of gf under its own name is valid and trains to an ok run."""
    mine = tmp_path / "honest_gate.py"
    mine.write_text((builtin_dir() / "gf.py").read_text(encoding="utf-8").replace('name="gf"', 'name="honest_gate"'),
                    encoding="utf-8")
    r = arena("variants", "check", str(mine), "--preset", "smoke")
    assert r.code == 0, r.err + r.out
    r = arena("run", str(mine), "--seed", "0", *tiny_flags, "--device", "cpu")
    assert r.code == 0, r.err + r.out
    assert [x.status for x in stored_runs(home)] == ["ok"]


# -- a bad entry in a tournament changes nobody else's result, and the tournament goes on ------------------------
def _tournament_with(path: Path, tiny_flags: list[str]) -> Result:
    name = register_unchecked(path)
    return arena("tournament", *tiny_flags, *TOURNAMENT, "--variants", f"gf,{name}")


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(PATCHERS))
def test_patcher_in_a_tournament_changes_no_other_result(stem: str, home: Path, tiny_flags: list[str],
                                                         gf_alone: dict[int, float | None]) -> None:
    """Its name sorts before gf, so on one worker it would be imported before gf trains in the same process."""
    path = hostile(stem)
    r = _tournament_with(path, tiny_flags)
    assert r.code == 0, r.err + r.out
    assert "Traceback" not in r.out + r.err
    assert gf_losses(home) == gf_alone
    assert not [x for x in runs_of(home, path) if x.status == "ok"]


@pytest.mark.slow
def test_shipped_name_in_the_store_does_not_replace_gf(home: Path, tiny_flags: list[str],
                                                       gf_alone: dict[int, float | None]) -> None:
    """An impostor "gf" registered in the store (bypassing submit): the tournament's gf is still the shipped one."""
    path = hostile("hole_shipped_name")
    register_unchecked(path)
    r = arena("tournament", *tiny_flags, *TOURNAMENT, "--variants", "gf")
    assert r.code == 0, r.err + r.out
    assert gf_losses(home) == gf_alone
    assert [x for x in stored_runs(home) if x.sha == sha_of(path)] == []


@pytest.mark.slow
def test_systemexit_in_training_is_a_failure_and_the_tournament_goes_on(home: Path, tiny_flags: list[str],
                                                                        gf_alone: dict[int, float | None]) -> None:
    path = hostile("dos_exit_in_training")
    submitted = arena("submit", str(path), "--no-run", *tiny_flags, *TOURNAMENT[:2])
    assert "Traceback" not in submitted.out + submitted.err
    name = declared(path)["name"]
    if submitted.code != 0:  # refused at its check already: the strongest outcome; the tournament must still cope
        assert_one_line_error(submitted, str(path))
        register_unchecked(path)
    r = arena("tournament", *tiny_flags, *TOURNAMENT, "--variants", f"gf,{name}")
    assert r.code == 0, r.err + r.out
    assert "Traceback" not in r.out + r.err
    assert gf_losses(home) == gf_alone
    bad = runs_of(home, path)
    assert not [x for x in bad if x.status == "ok"], bad
    if submitted.code == 0:  # it got past the check, so it trained and raised: a stored failure per seed
        assert sorted(x.seed for x in bad) == [0, 1], bad
        assert all(x.status in ("crashed", "rejected") for x in bad), bad


@pytest.mark.slow
def test_tournament_survives_a_registered_file_whose_import_hangs(home: Path, tiny_flags: list[str],
                                                                  gf_alone: dict[int, float | None]) -> None:
    path = hostile("hole_import_hangs")
    name = register_unchecked(path)
    r, elapsed = arena_subprocess("tournament", *tiny_flags, *TOURNAMENT, "--variants", f"gf,{name}", timeout=400)
    assert r.code == 0, r.err + r.out
    assert elapsed < 300, f"the tournament took {elapsed:.0f} s"
    assert "Traceback" not in r.out + r.err
    assert gf_losses(home) == gf_alone
    assert not [x for x in runs_of(home, path) if x.status == "ok"]
