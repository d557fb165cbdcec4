"""The champion registry on a tiny tournament under the default policy: the reference crowned by default, a clearly
better challenger confirmed on fresh seeds and promoted, a worse one screened out, a repeated tournament that trains
and decides nothing, append-only history, and champion artifacts that load back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch

from arena.champions.registry import Registry
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.store import DecisionRow, Store
from arena.model.lm import build_model
from arena.orchestration.contest import Contests, Outcome
from arena.orchestration.entries import Entry, Job
from arena.orchestration.execute import execute, plan, register
from arena.orchestration.tournament import Plan, decide
from arena.runner.check import reference_params
from arena.runner.data import load_track
from arena.runner.evaluate import evaluate
from arena.runner.loader import builtin, load_variant
from arena.runner.provenance import basis_for

WORSE = '''"""worse: drowns every block in a fixed, position-dependent noise (causal, deterministic, clearly worse)."""

from collections.abc import Mapping

import torch

from arena.api import Fusion, HParams, Variant, lr_mult


class Drown(Fusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.arange(x.shape[1], dtype=x.dtype, device=x.device)[:, None]  # (T, 1)
        d = torch.arange(x.shape[2], dtype=x.dtype, device=x.device)[None, :]  # (1, D)
        return rwkv + mamba + 30 * torch.sin(1.7 * t * d + d)  # (B, T, D): loud fixed noise


VARIANT = Variant(name="worse", kind="fusion", summary="noise on purpose", fusion=Drown,
                  hparams={"lr_mult": lr_mult()})
'''


FAST = '''"""fast: gated fusion trained at four times the learning rate (clearly better in a 6-step run)."""

from arena.api import GatedFusion, Variant, gate_init, lr_mult, lr_scale

VARIANT = Variant(name="fast", kind="fusion", summary="gf at 4x the learning rate", fusion=GatedFusion,
                  hparams={"lr_scale": lr_scale(default=4.0), "gate_init": gate_init(0.5), "lr_mult": lr_mult()})
'''


@dataclasses.dataclass
class Story:
    """What happened, step by step, in one arena home (built once for this module)."""

    spec: Spec
    home: Path
    store: Store
    basis: Basis
    first: list[Outcome]
    after_first: list[DecisionRow]
    runs_after_first: int
    again: list[Outcome]
    after_again: list[DecisionRow]
    runs_after_again: int
    worse: list[Outcome]
    after_worse: list[DecisionRow]
    decision_trainings: list[tuple[str, list[tuple[str, int]]]]  # what the first decision trained: (title, runs)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, tiny_spec: Spec) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("registry")
    home = root / "home"
    for name, text in (("worse", WORSE), ("fast", FAST)):
        (root / f"{name}.py").write_text(text, encoding="utf-8")
    worse, fast, gf = load_variant(root / "worse.py"), load_variant(root / "fast.py"), builtin("gf")
    spec = tiny_spec  # seeds (0, 1) select; fresh seeds 2-5 confirm (max_seeds 6)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARENA_HOME", str(home))
        store = Store(f"sqlite:///{home / 'arena.db'}")
        options = RunOptions(workers=2, device="cpu", timeout_s=300)
        basis = basis_for(options)
        # The tournament, as `arena tournament` does it: register, plan, execute, decide (default settings).
        entries = [Entry.of(lv) for lv in (gf, worse, fast)]
        register(store, spec, entries)
        jobs = plan(store, spec, entries, spec.seeds, basis)
        the_plan = Plan(spec, basis, tuple(entries), (), tuple(jobs))
        execute(store, spec, jobs, options, basis, checkpoint_dir=str(home / "ckpt"))
        trainings: list[tuple[str, list[tuple[str, int]]]] = []

        def trainer(todo: Sequence[Job], title: str) -> list[RunResult]:  # the CLI's hook: records, then trains
            trainings.append((title, sorted((j.entry.name, j.seed) for j in todo)))
            return execute(store, spec, todo, options, basis, checkpoint_dir=str(home / "ckpt"))

        first = decide(store, the_plan, options, checkpoint_dir=str(home / "ckpt"), trainer=trainer)
        after_first, runs_after_first = store.decisions(spec.hash), len(store.runs(spec.hash))
        # The same tournament command again: nothing is trained, nothing is decided.
        again_plan = Plan(spec, basis, tuple(entries), (), tuple(plan(store, spec, entries, spec.seeds, basis)))
        assert again_plan.jobs == ()
        again = decide(store, again_plan, options, checkpoint_dir=str(home / "ckpt"))
        after_again, runs_after_again = store.decisions(spec.hash), len(store.runs(spec.hash))
        # `arena submit` of a worse file: a family of one against the new champion.
        worse_outcomes = Contests(store, spec, options, basis).challenge(Entry.of(worse, name="worse2"))
        yield Story(spec, home, store, basis, first, after_first, runs_after_first, again, after_again,
                    runs_after_again, worse_outcomes, store.decisions(spec.hash), trainings)
        store.close()


def test_the_first_champion_is_the_reference_by_default(story: Story) -> None:
    d = story.after_first[0]
    assert (d.challenger_name, d.by_default, d.promoted, d.champion_name) == ("gf", True, False, None)
    assert d.league == "default" and d.code_digest == story.basis.code and d.stack_id == story.basis.stack
    assert d.evidence["env"].get("torch") == torch.__version__
    assert story.first[0].kind == "default" and "gf by default" in story.first[0].message


def test_a_clearly_better_challenger_is_confirmed_on_fresh_seeds_and_promoted(story: Story) -> None:
    """fast is ≈ 0.5 nats better on every seed: selected on seeds 0-1, confirmed on fresh seeds 2-5 at α = 0.01."""
    promoted = [o for o in story.first if o.kind == "promoted"]
    assert [o.entry for o in promoted] == ["fast"], [o.message for o in story.first]
    d = story.after_first[-1]
    assert (d.challenger_name, d.champion_name, d.promoted, d.by_default) == ("fast", "gf", True, False)
    assert d.evidence["selection_seeds"] == [0, 1] and d.evidence["fresh_seeds"] == [2, 3, 4, 5]
    assert set(d.evidence["runs"]) == {"0", "1", "2", "3", "4", "5"}  # the paired runs behind the decision
    family = d.evidence["family"]
    assert family["winner"] == "fast" and family["alpha"] == 0.01 and family["procedure"] == "sequence"
    champ = story.store.champion(story.spec.hash)
    assert champ is not None and champ.challenger_name == "fast" and champ.id == d.id


def test_the_champion_and_its_candidate_train_their_fresh_seeds_as_one_execution(story: Story) -> None:
    # One execution for both sides (their groups share the slots, standbys and overlapped checks), through the
    # caller's trainer (the CLI shows it under its progress display), named for its title.
    fresh = [2, 3, 4, 5]
    assert story.decision_trainings == [("decision: gf, fast on seeds 2, 3, 4, 5",
                                         sorted([("fast", s) for s in fresh] + [("gf", s) for s in fresh]))]


def test_a_worse_challenger_is_not_a_candidate_and_gets_no_fresh_runs(story: Story) -> None:
    line = next(o for o in story.first if o.entry == "worse")
    assert line.kind == "kept" and "not a candidate" in line.message and "not better" in line.message
    trained = {(r.result.variant, r.result.seed) for r in story.store.runs(story.spec.hash)}
    assert ("worse", 2) not in trained and ("fast", 5) in trained  # only candidates train the fresh seeds
    assert len(story.after_first) == 2  # the default crown and fast's confirmation; 'worse' needs no row


def test_running_a_finished_tournament_again_trains_nothing_and_appends_no_decision(story: Story) -> None:
    assert story.runs_after_again == story.runs_after_first
    assert story.after_again == story.after_first
    assert story.again[0].kind == "decided" and "nothing new to decide" in story.again[0].message


def test_a_submitted_worse_file_is_kept_out_with_its_reason(story: Story) -> None:
    (outcome,) = [o for o in story.worse if o.entry == "worse2"]
    assert outcome.kind == "kept" and "not a candidate" in outcome.message
    assert story.after_worse == story.after_again  # screened out: no confirmation, no decision row
    assert any(o.kind == "holds" and "fast" in o.message for o in story.worse)


def test_history_is_append_only(story: Story) -> None:
    ids = [d.id for d in story.after_worse]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for name in ("update_decision", "delete_decision", "set_champion", "replace_decision"):
        assert not hasattr(story.store, name)


@pytest.mark.parametrize("which", ["gf", "fast"])
def test_artifacts_hold_source_summary_and_the_run_s_own_checkpoint(
    story: Story, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crowning keeps what the run produced (its checkpoint), and retrains nothing."""
    monkeypatch.setenv("ARENA_HOME", str(story.home))
    d = next(d for d in story.after_first if d.challenger_name == which)
    folder = Registry(story.store, story.spec).champion_dir(which, d.challenger_sha)
    assert folder.is_dir() and str(folder).startswith(str(story.home / "artifacts" / "champions" / story.spec.hash))
    summary = json.loads((folder / "champion.json").read_text())
    assert summary["name"] == which and summary["variant_sha"] == d.challenger_sha
    assert (folder / "variant.py").read_text(encoding="utf-8") == story.store.variant(d.challenger_sha).source
    best_seed = summary["best_seed"]
    assert summary["checkpoint"] == f"seed{best_seed}.pt"
    saved = torch.load(folder / f"seed{best_seed}.pt", map_location="cpu", weights_only=True)
    assert saved["meta"]["variant_sha"] == d.challenger_sha and saved["meta"]["seed"] == best_seed
    lv = builtin("gf") if which == "gf" else load_variant(Path(story.store.variant(d.challenger_sha).path))
    target = reference_params(story.spec.dims, story.spec.reference_variant)
    model = build_model(story.spec.dims, lv.variant, saved["meta"]["hparams"], backend="torch_chunk",
                        match_params_to=target)
    model.load_state_dict(saved["state_dict"], strict=True)
    # The weights are the best seed's: they reproduce its stored final validation loss.
    loss, _ = evaluate(model, load_track(story.spec).val_batches(final=True), torch.device("cpu"), False)
    assert loss == pytest.approx(summary["best_val_loss"], rel=1e-5, abs=1e-6)


def test_same_stack_compares_only_the_mixers_both_runs_use() -> None:
    from arena.core.stack import same_stack

    cpu = {"torch": "2.13.0", "cuda": None, "gpu": None, "deterministic": True}
    hybrid = {"rwkv6": "torch_chunk", "mamba2": "torch_chunk+conv:torch"}
    assert same_stack(cpu, hybrid, cpu, {"attention": "sdpa"})  # GPT vs hybrid: nothing to disagree on
    assert same_stack(cpu, hybrid, cpu, {"rwkv6": "torch_chunk"})
    assert not same_stack(cpu, hybrid, cpu, {"rwkv6": "kernel"})
    assert not same_stack(cpu, hybrid, cpu | {"gpu": "NVIDIA H100"}, hybrid)
    assert not same_stack(cpu, hybrid, cpu | {"deterministic": False}, hybrid)
    gpu = cpu | {"gpu": "NVIDIA H100", "cuda": "13.0"}
    fused = gpu | {"execution": {"pinned_batches": True, "fused_adamw": True}}
    assert same_stack(fused, hybrid, dict(fused), hybrid)
    assert not same_stack(fused, hybrid, gpu, hybrid)  # recorded before execution options: foreach AdamW
