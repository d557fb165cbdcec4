"""The variant plugin contract: every shipped file passes it, and each kind of bad file is rejected at load time
with one line naming the file (house style 5 and 13)."""

from __future__ import annotations

import ast
import math
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.spec import PRESETS, Spec
from arena.core.variant import LoadedVariant
from arena.model.lm import build_model, count_params
from arena.runner.check import check_variant, reference_params
from arena.runner.loader import builtin_dir, builtin_variants, discover, load_variant
from arena.runner.train import train

SMOKE = PRESETS["smoke"]
PHASE2 = PRESETS["phase2"]
BUILTIN = builtin_variants()
IDS = [lv.name for lv in BUILTIN]


def test_every_shipped_file_is_discovered() -> None:
    files = sorted(p.stem for p in builtin_dir().glob("*.py") if not p.name.startswith("_"))
    assert len(files) >= 11
    assert sorted(lv.name for lv in BUILTIN) == files  # each file declares the variant named like the file
    assert {"gf", "gf_mh", "gf_rh", "gpt", "rwkv6_only", "mamba2_only"} <= set(IDS)


# -- the contract, parametrized over every shipped file ------------------------------------------------------------
@pytest.mark.parametrize("lv", BUILTIN, ids=IDS)
def test_contract_build_forward_backward(lv: LoadedVariant) -> None:
    dims = SMOKE.dims
    target = reference_params(dims, SMOKE.reference_variant) if lv.variant.match_params else None
    model = build_model(dims, lv.variant, seed=0, backend="torch_chunk", match_params_to=target)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, dims.vocab_size, (2, 24), generator=g)  # (B, T)
    logits = model(idx)  # (B, T, V)
    assert logits.shape == (2, 24, dims.vocab_size)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, dims.vocab_size), idx[:, 1:].reshape(-1))
    assert math.isfinite(loss.item())
    assert abs(loss.item() - math.log(dims.vocab_size)) < 1.5  # near-uniform at init, not wildly off
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())
    assert set(model.params_by_part()) <= {"rwkv6", "mamba2", "attention", "fusion", "ffn", "embed", "norm"}
    assert sum(model.params_by_part().values()) == count_params(model)



def param_count(lv: LoadedVariant, spec: Spec) -> int:
    """The model's parameter count at the spec size (baselines matched to the reference, as the runner builds them)."""
    target = reference_params(spec.dims, spec.reference_variant) if lv.variant.match_params else None
    return count_params(build_model(spec.dims, lv.variant, match_params_to=target))  # type: ignore[arg-type]

@pytest.mark.parametrize("lv", BUILTIN, ids=IDS)
def test_contract_check_variant_causal_and_under_budget(lv: LoadedVariant) -> None:
    # The check runs at the spec's real batch shape; phase2's (64 × 64, 3.1M parameters) costs seconds per variant on
    # 2 CPU cores, so phase2 is covered by the parameter count and the GPU bench's check (bench/gpu_guards.py).
    n = check_variant(lv, SMOKE)  # shape, finite, budget, causality: raises ArenaError otherwise
    assert 0 < n <= SMOKE.param_budget
    assert n == param_count(lv, SMOKE)
    assert param_count(lv, PHASE2) <= PHASE2.param_budget


@pytest.mark.parametrize("lv", BUILTIN, ids=IDS)
def test_contract_same_seed_same_result(lv: LoadedVariant, tiny_spec: Spec) -> None:
    torch.manual_seed(123)  # global RNG state must not matter
    a = train(tiny_spec, lv, 0, options=RunOptions(device="cpu"))
    torch.manual_seed(456)
    b = train(tiny_spec, lv, 0, options=RunOptions(device="cpu"))
    assert a.status == b.status == "ok", (a.error, b.error)
    assert a.final_val_loss is not None and math.isfinite(a.final_val_loss)
    assert a.final_val_loss == b.final_val_loss  # bitwise
    assert a.val_curve == b.val_curve and a.train_curve == b.train_curve


def test_baselines_are_parameter_matched_to_gf_at_phase2() -> None:
    by_name = {lv.name: lv for lv in BUILTIN}
    gf = param_count(by_name["gf"], PHASE2)
    assert gf == 3_089_760
    for name in ("gpt", "rwkv6_only", "mamba2_only"):
        n = param_count(by_name[name], PHASE2)
        assert abs(n - gf) / gf < 0.05, f"{name}: {n:,} vs gf {gf:,}"


def _imports(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            mods.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mods.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
            "__import__", "import_module"
        ):
            mods.add("<dynamic import>")
    return mods


def test_variants_never_import_the_runner() -> None:
    files = [p for p in builtin_dir().glob("*.py") if p.name != "__init__.py"]
    assert files
    for path in files:
        for mod in _imports(path):
            assert not (mod.startswith(("arena.runner", "runner", "arena.db", "arena.champions"))), f"{path}: {mod}"
            assert mod != "<dynamic import>", f"{path}: dynamic import"


def test_variants_import_only_the_api_stdlib_and_torch() -> None:
    for path in (p for p in builtin_dir().glob("*.py") if p.name != "__init__.py"):
        for mod in _imports(path):
            root = mod.split(".")[0]
            ok = mod == "arena.api" or root == "torch" or root == "__future__" or root in sys.stdlib_module_names
            assert ok, f"{path.name} imports {mod}: a variant may import arena.api, the standard library and torch"


def test_the_import_check_catches_a_runner_import(tmp_path: Path) -> None:
    bad = tmp_path / "sneaky.py"
    bad.write_text("from arena.core.spec import PRESETS\nimport arena.runner.train as t\n")
    assert {"arena.core.spec", "arena.runner.train"} <= _imports(bad)


# -- load-time rejections --------------------------------------------------------------------------------------
HEADER = """\
from collections.abc import Mapping

import torch
from torch import nn

from arena.api import Fusion, GatedFusion, HParam, HParams, Variant, gate_init, lr_mult
"""


def fusion_file(forward: str, *, init: str = "", extra: str = "", name: str = "bad") -> str:
    """A hybrid variant file whose fusion's forward body is ``forward`` (uses rwkv, mamba, x)."""
    body = textwrap.indent(textwrap.dedent(forward).strip(), " " * 8)
    init_body = textwrap.indent(textwrap.dedent(init).strip(), " " * 8) if init else ""
    return HEADER + f"""

class F(Fusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.w = nn.Linear(d_model, d_model)
{init_body}

    def forward(self, rwkv, mamba, x):
{body}

{extra}
VARIANT = Variant(name="{name}", kind="fusion", summary="test file", fusion=F, hparams={{"lr_mult": lr_mult()}})
"""


def decl_file(decl: str, before: str = "", after: str = "") -> str:
    return HEADER + before + "\n" + decl + "\n" + after


CASES: dict[str, tuple[str, str]] = {
    # name: (file text, a fragment the one-line message must contain)
    "does_not_import": (HEADER + "import arena_no_such_module\n" + 'VARIANT = Variant(name="x", kind="fusion", '
                        'summary="s", fusion=GatedFusion, hparams={"lr_mult": lr_mult()})\n',
                        "imports 'arena_no_such_module'"),
    "syntax_error": ("def broken(:\n", "does not parse"),
    "raises_at_import": (HEADER + "raise RuntimeError('boom')\n", "boom"),
    "missing_declaration": (HEADER + "\nX = 1\n", "no declaration"),
    "declaration_wrong_type": (HEADER + "\nVARIANT = {'name': 'x'}\n", "not arena.api.Variant"),
    "wrong_kind": (decl_file('VARIANT = Variant(name="x", kind="fuson", summary="s", fusion=GatedFusion, '
                             'hparams={"lr_mult": lr_mult()})'), "did you mean 'fusion'"),
    "bad_name": (decl_file('VARIANT = Variant(name="Bad-Name", kind="fusion", summary="s", fusion=GatedFusion, '
                           'hparams={"lr_mult": lr_mult()})'), "name 'Bad-Name'"),
    "empty_summary": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary=" ", fusion=GatedFusion, '
                                'hparams={"lr_mult": lr_mult()})'), "summary"),
    "unknown_mixer": (decl_file('VARIANT = Variant(name="x", kind="baseline", summary="s", mixers=("mamba",), '
                                'hparams={"lr_mult": lr_mult()})'), "did you mean 'mamba2'"),
    "hybrid_without_fusion": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", '
                                        'hparams={"lr_mult": lr_mult()})'), "needs a fusion"),
    "fusion_not_a_fusion": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=nn.Linear, '
                                      'hparams={"lr_mult": lr_mult()})'), "subclass of arena.api.Fusion"),
    "mamba_without_lr_mult": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion)'),
                              "lr_mult"),
    "declaration_not_last": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                                       'hparams={"lr_mult": lr_mult()})', after="EXTRA = 1\n"), "last statement"),
    "declared_twice": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                                 'hparams={"lr_mult": lr_mult()})',
                                 before='VARIANT = None\n'), "assigned 2 times"),
    "hparam_low_above_high": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                                        'hparams={"lr_mult": lr_mult(), "g": HParam(low=1.0, high=0.0, default=0.5)})'),
                              "not below high"),
    "hparam_default_outside": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                                         'hparams={"lr_mult": lr_mult(), "g": HParam(0.0, 1.0, default=2.0)})'),
                               "outside [0.0, 1.0]"),
    "hparam_log_nonpositive": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                                         'hparams={"lr_mult": HParam(0.0, 10.0, 1.0, log=True)})'), "log-scaled"),
    "hparam_nan": (decl_file('VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                             'hparams={"lr_mult": lr_mult(), "g": HParam(0.0, float("nan"), 0.5)})'), "non-finite"),
    "wrong_output_shape": (fusion_file("return rwkv[..., : self.d_model // 2]"), "shape"),
    "fusion_raises": (fusion_file("raise ValueError('fusion says no')"), "fusion says no"),
    "non_finite_output": (fusion_file("return rwkv + mamba + float('nan')"), "not finite"),
    "over_budget": (fusion_file("return self.w(rwkv) + mamba + 0 * self.big.sum()",
                                init="self.big = nn.Parameter(torch.zeros(200_000))"), "exceed the spec's budget"),
    # 2 × 10,000 extra parameters: more than narrowing the smoke FFN to one unit can absorb (2 × 127 × 64).
    "unmatchable": (fusion_file("return self.w(rwkv) + mamba + 0 * self.big.sum()",
                                init="self.big = nn.Parameter(torch.zeros(10_000))"),
                    "cannot be matched to the reference's 51,864 parameters within ±0.5%"),
    # lr_mult (like gate_init, lr_scale) may set values only: a search trains its trials as one model.
    "shape_from_lr_mult": (fusion_file("return self.w(rwkv) + mamba + 0 * self.extra.sum()",
                                       init="self.extra = nn.Parameter(torch.zeros(1 + int(hp['lr_mult'] > 1)))"),
                           "lr_mult=10.0 changes the model's parameters or their shapes"),
    "not_causal_flip": (fusion_file("return rwkv + torch.flip(mamba, dims=[1])  # (B, T, D): peeks at the future"),
                        "not causal"),
    "not_causal_reverse_cumsum": (fusion_file("return rwkv + mamba.flip(1).cumsum(1).flip(1)"), "not causal"),
    "not_causal_mean_over_t": (fusion_file("return rwkv + mamba.mean(dim=1, keepdim=True)"), "not causal"),
    "not_causal_shift_left": (fusion_file("return rwkv + torch.roll(mamba, shifts=-1, dims=1)"), "not causal"),
}


def _validate(path: Path) -> None:
    check_variant(load_variant(path), SMOKE)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_file_is_rejected_with_one_line_naming_it(case: str, tmp_path: Path) -> None:
    text, fragment = CASES[case]
    path = tmp_path / f"{case}.py"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArenaError) as e:
        _validate(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    assert "\n" not in msg, msg
    assert fragment in msg, msg


def test_a_causal_fusion_passes_the_same_checks(tmp_path: Path) -> None:
    """Control for the rejections above: the harness itself accepts a well-formed file (same template)."""
    path = tmp_path / "good.py"
    path.write_text(fusion_file("return self.w(rwkv) + torch.cumsum(mamba, dim=1) / 10", name="good"))
    lv = load_variant(path)
    assert lv.name == "good" and len(lv.sha256) == 64 and lv.source == path.read_text()
    assert check_variant(lv, SMOKE) > 0


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ArenaError, match="no such file"):
        load_variant(tmp_path / "nope.py")


def test_loading_has_no_global_side_effects(tmp_path: Path) -> None:
    before = set(sys.modules)
    path = tmp_path / "good.py"
    path.write_text(fusion_file("return rwkv + mamba", name="good"))
    load_variant(path)
    assert not {m for m in set(sys.modules) - before if m.startswith("arena_variant_")}


def test_discover_duplicate_names_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "one.py"
    second = tmp_path / "b" / "two.py"
    first.write_text(fusion_file("return rwkv + mamba", name="twin"))
    second.write_text(fusion_file("return rwkv - mamba", name="twin"))
    with pytest.raises(ArenaError) as e:
        discover([tmp_path / "a", tmp_path / "b"])
    msg = str(e.value)
    assert "twin" in msg and str(first) in msg and str(second) in msg and "\n" not in msg


def test_discover_same_file_twice_is_not_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "one.py"
    path.write_text(fusion_file("return rwkv + mamba", name="solo"))
    assert [lv.name for lv in discover([tmp_path, tmp_path])] == ["solo"]


def test_discover_rejects_a_shipped_name_clash(tmp_path: Path) -> None:
    (tmp_path / "my_gf.py").write_text(fusion_file("return rwkv + mamba", name="gf"))
    with pytest.raises(ArenaError, match="the name 'gf' is reserved for arena's shipped variant"):
        discover([builtin_dir(), tmp_path])


def test_every_shipped_entry_is_matched_to_the_reference_within_half_a_percent() -> None:
    """One rule for every entry (the FFN width): the hybrids too, not only the baselines."""
    from arena.core.spec import preset
    from arena.model.lm import build_model, count_params
    from arena.runner.check import reference_params
    from arena.runner.loader import builtin_dir, load_variant

    for name in ("smoke", "phase2"):
        spec = preset(name)
        target = reference_params(spec.dims, spec.reference_variant)
        for path in sorted(builtin_dir().glob("*.py")):
            if path.name == "__init__.py":
                continue
            v = load_variant(path).variant
            n = count_params(build_model(spec.dims, v, match_params_to=target))  # type: ignore[arg-type]
            assert abs(n - target) / target <= 0.005, (name, path.stem, n, target)
    phase2 = preset("phase2")
    assert reference_params(phase2.dims, "gf") == 3_089_760  # gf at the standard FFN width 4 × 128


def test_an_unmatched_file_says_so_and_keeps_the_standard_width(tmp_path: Path) -> None:
    text = fusion_file("return self.w(rwkv) + mamba + 0 * self.big.sum()",
                       init="self.big = nn.Parameter(torch.zeros(10_000))")
    path = tmp_path / "unmatched.py"
    path.write_text(text.replace("fusion=F,", "fusion=F, match_params=False,"), encoding="utf-8")
    # The fusion's Linear(32, 32) is the size of gf's gate: the count is gf's plus the 2 × 10,000 extra parameters.
    assert check_variant(load_variant(path), SMOKE) == 51_864 + 2 * 10_000
