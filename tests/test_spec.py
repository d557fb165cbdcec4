"""The spec's identity: stable hashes, derive() and its validation, seed sets."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from arena.core.errors import ArenaError
from arena.core.spec import PRESETS, ModelDims, Spec, preset


def test_preset_hash_is_stable_within_and_across_processes() -> None:
    for name, spec in PRESETS.items():
        assert spec.hash == PRESETS[name].hash == Spec.from_dict(spec.to_dict()).hash
        assert len(spec.hash) == 16 and int(spec.hash, 16) >= 0
    code = "from arena.core.spec import PRESETS; print(PRESETS['phase2'].hash, PRESETS['smoke'].hash)"
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [PRESETS["phase2"].hash, PRESETS["smoke"].hash]


def test_presets_differ() -> None:
    assert PRESETS["phase2"].hash != PRESETS["smoke"].hash


@pytest.mark.parametrize(
    "change",
    [{"steps": 7}, {"lr": 1e-3}, {"seeds": (0, 1)}, {"d_model": 64}, {"n_layer": 3}, {"precision": "bf16"},
     {"eval_every": 5}, {"track": "mqar"}],
)
def test_derive_changes_hash(change: dict) -> None:
    base = preset("smoke")
    derived = base.derive(**change)
    assert derived.hash != base.hash
    assert base.derive(**change).hash == derived.hash  # deterministic


def test_derive_dims_by_name_lands_in_dims() -> None:
    d = preset("smoke").derive(d_model=48)
    assert d.dims.d_model == 48 and isinstance(d.dims, ModelDims)


def test_derive_without_changes_is_same_spec() -> None:
    base = preset("smoke")
    assert base.derive().hash == base.hash


def test_name_does_not_change_hash() -> None:
    base = preset("smoke")
    renamed = base.derive(name="my-run")
    assert renamed.name == "my-run" and renamed.hash == base.hash
    assert renamed.label != base.label or renamed.label.endswith(base.hash[:8])


def test_derive_coerces_strings_like_cli_set() -> None:
    assert preset("smoke").derive(steps="12", lr="1e-3").steps == 12
    assert preset("smoke").derive(seeds="3,4").seeds == (3, 4)


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("d_modle", "d_model"), ("step", "steps"), ("learning_rat", "")],
)
def test_unknown_field_suggests(typo: str, meant: str) -> None:
    with pytest.raises(ArenaError) as e:
        preset("smoke").derive(**{typo: 1})
    msg = str(e.value)
    assert f"unknown field '{typo}'" in msg and "\n" not in msg
    if meant:
        assert f"did you mean '{meant}'" in msg


def test_from_dict_rejects_unknown_field_with_suggestion() -> None:
    d = preset("smoke").to_dict()
    d["dims"]["d_modle"] = d["dims"].pop("d_model")
    with pytest.raises(ArenaError, match="did you mean 'd_model'"):
        Spec.from_dict(d)


def test_bad_value_type_is_rejected() -> None:
    with pytest.raises(ArenaError, match="steps"):
        preset("smoke").derive(steps="many")


@pytest.mark.parametrize("steps", [0, -1, -500])
def test_steps_must_be_positive(steps: int) -> None:
    with pytest.raises(ArenaError, match="steps must be positive"):
        preset("smoke").derive(steps=steps)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"seeds": ()}, "at least one seed"),
     ({"seeds": (1, 1)}, "duplicates"), ({"seeds": (-1,)}, "non-negative"),
     ({"lr": 0}, "lr"), ({"eval_every": 0}, "eval_every"), ({"seq_len": 1}, "seq-len"),
     ({"lr_schedule": "linear"}, "lr_schedule"), ({"precision": "fp8"}, "precision"),
     ({"val_fraction": 1.0}, "val_fraction"), ({"rwkv_init": "xavier"}, "rwkv_init"), ({"track": "wiki"}, "track")],
)
def test_nonsense_fields_are_rejected(change: dict, match: str) -> None:
    with pytest.raises(ArenaError, match=match):
        preset("smoke").derive(**change)


def test_seeds_disjoint_from_tuning_seeds() -> None:
    for spec in PRESETS.values():
        assert not set(spec.seeds) & set(spec.tuning_seeds)
        assert not set(spec.contest_seeds()) & set(spec.tuning_seeds)
    tuning = preset("smoke").tuning_seeds[0]
    with pytest.raises(ArenaError, match="disjoint"):
        preset("smoke").derive(seeds=(0, tuning))
    with pytest.raises(ArenaError, match="disjoint"):
        preset("smoke").derive(tuning_seeds=(0,))


def test_contest_seeds_extend_tournament_seeds() -> None:
    smoke = preset("smoke")
    assert smoke.contest_seeds() == (0, 1, 2, 3, 4, 5)  # seeds (0, 1, 2), max_seeds 6
    assert smoke.contest_seeds()[: len(smoke.seeds)] == smoke.seeds
    odd = smoke.derive(seeds=(5, 2), max_seeds=5, tuning_seeds=(0,))
    assert odd.contest_seeds() == (5, 2, 1, 3, 4)  # tournament order first, then the lowest unused, no tuning seed
    assert len(set(odd.contest_seeds())) == len(odd.contest_seeds())


def test_derive_seeds_raises_max_seeds() -> None:
    spec = preset("smoke").derive(seeds=(0, 9))
    assert spec.max_seeds >= 10 and spec.contest_seeds()[:2] == (0, 9)


def test_unknown_preset_suggests() -> None:
    with pytest.raises(ArenaError, match="did you mean 'smoke'"):
        preset("smok")


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset("smoke").steps = 3  # type: ignore[misc]


def test_steps_flag_and_derive_give_one_hash() -> None:
    """The derived rules live in Spec.derive: `--steps N` and `derive(steps=N)` are the same spec."""
    from arena.cli.common import spec_from_flags
    from arena.core.spec import preset

    for name, steps in (("smoke", 40), ("smoke", 6), ("phase2", 40), ("phase2", 1000)):
        flags = spec_from_flags(name, steps=steps)
        derived = preset(name).derive(steps=steps)
        assert flags.hash == derived.hash
        assert derived.warmup_steps == min(preset(name).warmup_steps, steps // 5)
        assert derived.eval_every == min(preset(name).eval_every, steps)
    explicit = spec_from_flags("smoke", steps=40, sets=["warmup_steps=3"])
    assert explicit.hash == preset("smoke").derive(steps=40, warmup_steps=3).hash and explicit.warmup_steps == 3
