"""The champion registry on a tiny tournament: first champion stored, append-only history, a worse challenger kept
out with a reason, a better one promoted (under lenient settings), and champion artifacts that load back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from arena.champions.policy import PolicySettings
from arena.core.options import RunOptions
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.db.store import DecisionRow, Store
from arena.model.lm import build_model
from arena.orchestration.contest import Contests
from arena.orchestration.entries import Entry
from arena.orchestration.execute import execute, plan, register
from arena.runner.check import reference_params
from arena.runner.data import load_track
from arena.runner.evaluate import evaluate
from arena.runner.loader import builtin, load_variant

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


@dataclasses.dataclass
class Story:
    """What happened, step by step, in one arena home (built once for this module)."""

    spec: Spec
    home: Path
    store: Store
    first_lines: list[str]
    after_first: list[DecisionRow]
    first_dir: Path
    worse_message: str
    worse_outcome: Any
    after_worse: list[DecisionRow]
    better_outcome: Any
    after_better: list[DecisionRow]
    better_dir: Path


def _entries(*lvs: LoadedVariant) -> list[Entry]:
    return [Entry.of(lv) for lv in lvs]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, tiny_spec: Spec) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("registry")
    home = root / "home"
    (root / "worse.py").write_text(WORSE, encoding="utf-8")
    worse = load_variant(root / "worse.py")
    gf, gpt = builtin("gf"), builtin("gpt")
    spec = tiny_spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARENA_HOME", str(home))
        store = Store(f"sqlite:///{home / 'arena.db'}")
        options = RunOptions(workers=2, device="cpu", timeout_s=300)
        # The tournament, as `arena tournament` does it: register, plan, execute (no checkpoints), decide.
        entries = _entries(gf, worse)
        register(store, spec, entries)
        execute(store, spec, plan(store, spec, entries, spec.seeds), options)
        registry = Contests(store, spec, options)
        first_lines = [o.message for o in registry.after_tournament(entries)]
        after_first = store.decisions(spec.hash)
        first_dir = registry.registry.champion_dir(gf.name, gf.sha256)
        # A worse challenger, with the default policy.
        worse_outcome = registry.challenge(Entry.of(worse))
        after_worse = store.decisions(spec.hash)
        # A better one, with lenient settings: one look at the spec's 2 seeds, α = 0.5, no margin beyond σ.
        lenient = PolicySettings(alpha=0.5, margin=0.0, borderline_p=0.6, n_start=2, n_max=2)
        better_outcome = Contests(store, spec, options, settings=lenient).challenge(Entry.of(gpt))
        after_better = store.decisions(spec.hash)
        better_dir = registry.registry.champion_dir(gpt.name, gpt.sha256)
        yield Story(spec, home, store, first_lines, after_first, first_dir, worse_outcome.message, worse_outcome,
                    after_worse, better_outcome, after_better, better_dir)
        store.close()


def test_first_champion_is_decided_and_stored(story: Story) -> None:
    assert len(story.after_first) == 1
    d = story.after_first[0]
    assert d.challenger_name == "gf"  # the reference wins by default, or beats 'worse' outright
    assert d.champion_name is None and d.champion_sha is None  # nobody to dethrone
    assert d.promoted is (not d.by_default)
    assert d.reason and "ranking" in d.evidence and d.evidence["n"] == 2
    assert "env" in d.evidence and d.evidence["env"].get("torch") == torch.__version__
    assert any("first champion" in line and "gf" in line for line in story.first_lines)
    champ = story.store.champion(story.spec.hash)
    assert champ is not None  # (by now the promoted challenger, see below)


def test_worse_challenger_is_not_promoted_with_a_reason(story: Story) -> None:
    v = story.worse_outcome.verdict
    assert v is not None and not v.promoted
    assert v.reason in ("not better", "futile")
    assert v.mean < 0  # the challenger's loss is higher: d = L_champion - L_challenger < 0
    assert "not promoted" in story.worse_message and "worse" in story.worse_message
    d = story.after_worse[-1]
    assert d.challenger_name == "worse" and d.champion_name == "gf"
    assert not d.promoted and not d.by_default and d.reason == v.reason
    assert d.evidence["seeds"] and d.evidence["runs"]  # the paired runs behind the decision


def test_history_is_append_only(story: Story) -> None:
    assert [len(story.after_first), len(story.after_worse), len(story.after_better)] == [1, 2, 3]
    assert story.after_worse[: 1] == story.after_first  # earlier decisions are untouched, field for field
    assert story.after_better[: 2] == story.after_worse
    ids = [d.id for d in story.after_better]
    assert ids == sorted(ids) and len(set(ids)) == 3
    for name in ("update_decision", "delete_decision", "set_champion", "replace_decision"):
        assert not hasattr(story.store, name)


def test_better_challenger_is_promoted_and_becomes_champion(story: Story) -> None:
    v = story.better_outcome.verdict
    assert v is not None and v.promoted, story.better_outcome.message
    assert "PROMOTED" in story.better_outcome.message
    d = story.after_better[-1]
    assert d.challenger_name == "gpt" and d.champion_name == "gf" and d.promoted
    champ = story.store.champion(story.spec.hash)
    assert champ is not None and champ.challenger_name == "gpt" and champ.id == d.id


@pytest.mark.parametrize("which", ["first", "promoted"])
def test_artifacts_hold_source_summary_and_a_loadable_checkpoint(story: Story, which: str) -> None:
    folder, lv = (story.first_dir, builtin("gf")) if which == "first" else (story.better_dir, builtin("gpt"))
    assert folder.is_dir() and str(folder).startswith(str(story.home / "artifacts" / "champions" / story.spec.hash))
    assert (folder / "variant.py").read_text(encoding="utf-8") == lv.source
    summary = json.loads((folder / "champion.json").read_text())
    assert summary["name"] == lv.name and summary["variant_sha"] == lv.sha256
    assert summary["spec_hash"] == story.spec.hash
    best_seed = summary["best_seed"]
    assert best_seed in story.spec.seeds
    ckpts = sorted(folder.glob("seed*.pt"))
    assert [p.name for p in ckpts] == [f"seed{best_seed}.pt"]

    saved = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert saved["meta"]["variant_sha"] == lv.sha256 and saved["meta"]["seed"] == best_seed
    target = reference_params(story.spec.dims, story.spec.reference_variant) if lv.variant.match_params else None
    model = build_model(story.spec.dims, lv.variant, saved["meta"]["hparams"], backend="torch_chunk",
                        match_params_to=target)
    model.load_state_dict(saved["state_dict"], strict=True)
    # The weights are the best seed's: they reproduce its stored final validation loss.
    loss, _ = evaluate(model, load_track(story.spec).val_batches(final=True), torch.device("cpu"), False)
    assert loss == pytest.approx(summary["best_val_loss"], rel=1e-5, abs=1e-6)


def test_champion_is_rerun_when_its_stored_runs_used_another_stack(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both sides of every pair share one software stack: a champion run stored from another GPU is run again."""
    champ = story.store.champion(story.spec.hash)
    assert champ is not None and champ.challenger_name == "gpt"
    calls: list[tuple[str, int, bool]] = []
    real = Contests.ensure_runs

    def spy(self: Contests, entry: Entry, seeds: Any, *, rerun: bool = False) -> dict[int, Any]:
        out = real(self, entry, seeds, rerun=rerun)
        calls.extend((entry.name, s, rerun) for s in seeds)
        if entry.name == "gpt" and not rerun:  # as if stored on another machine
            return {s: dataclasses.replace(r, env=r.env | {"gpu": "some other GPU"}) for s, r in out.items()}
        return out

    monkeypatch.setattr(Contests, "ensure_runs", spy)
    said: list[str] = []
    with monkeypatch.context() as mp:
        mp.setenv("ARENA_HOME", str(story.home))
        options = RunOptions(workers=1, device="cpu", timeout_s=300)
        Contests(story.store, story.spec, options, on_note=said.append).challenge(Entry.of(builtin("gf")))
    seeds_used = [s for name, s, rerun in calls if name == "gf" and not rerun]
    assert seeds_used and all(("gpt", s, True) in calls for s in seeds_used)  # the champion re-run on each pair
    assert not any(name == "gf" and rerun for name, _, rerun in calls)  # the challenger's runs were fine
    assert any("re-running champion gpt" in line for line in said)


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
