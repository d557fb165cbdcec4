"""The benchmark spec: one frozen, hashed description of the whole protocol.

Results are only ever compared within one spec hash. Anything that changes what a run computes (data,
dimensions, optimizer, schedule, evaluation, seeds, protocol version) is a field here, so changing it derives a
new spec with a new hash. Variants cannot reach this module (a test asserts no file in variants/ imports it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from arena.core.config import did_you_mean, from_dict_strict, replace_strict
from arena.core.errors import ArenaError

# Bump when the meaning of a field changes. Changes to the code that computes runs need no bump: every run is keyed
# on a digest of that code (``arena.runner.provenance``), so a changed loop, model core or data pipeline recomputes.
# 2: parameter matching for every entry, tuning split, decay by role, fusion arguments by name.
PROTOCOL_VERSION = 2

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


@dataclass(frozen=True)
class ModelDims:
    """Model dimensions. They come from the spec, never from the variant."""

    d_model: int = 128
    n_layer: int = 8
    vocab_size: int = 65
    ffn_mult: int = 4
    # RWKV-6 time-mix (FLA RWKV6Attention layout).
    rwkv_heads: int = 4
    rwkv_expand_k: float = 0.5
    rwkv_expand_v: float = 1.0
    rwkv_mix_rank: int = 32  # proj_low_rank_dim: the 5-way token-shift LoRA
    rwkv_decay_rank: int = 64  # gate_low_rank_dim: the data-dependent decay LoRA
    rwkv_init: str = "fla"  # "fla" (what the seeds trained) or "x060" (official RWKV-LM)
    # Mamba-2 mixer (mamba_ssm Mamba2 layout).
    mamba_d_state: int = 64
    mamba_head_dim: int = 64
    mamba_expand: int = 2
    mamba_d_conv: int = 4
    mamba_n_groups: int = 1
    mamba_chunk: int = 64
    # Causal attention (the gpt baseline).
    attn_heads: int = 4


@dataclass(frozen=True)
class Spec:
    """The frozen protocol. ``hash`` identifies it; ``derive`` makes a changed copy (with a new hash)."""

    name: str = "phase2"
    protocol_version: int = PROTOCOL_VERSION
    # Data.
    track: str = "shakespeare"  # shakespeare | mqar | text:PATH
    data_sha256: str = SHAKESPEARE_SHA256  # checksum of the corpus ("" for mqar: generated from the seed)
    val_fraction: float = 0.1  # contiguous tail split
    # The tuning split: the last ``tune_fraction`` of the training tokens. Runs on ``tuning_seeds`` train on the rest
    # and score on it, so a search never selects on the val split the leaderboard reports.
    tune_fraction: float = 0.05
    # Model.
    dims: ModelDims = field(default_factory=ModelDims)
    param_budget: int = 3_600_000  # total parameters (embedding counted once: it is tied)
    reference_variant: str = "gf"  # noise floor, param matching, default champion
    # Training.
    steps: int = 500
    batch_size: int = 64
    seq_len: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100
    lr_schedule: str = "cosine"  # cosine | constant (after linear warm-up)
    min_lr_ratio: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1  # by role: the weight matrices of linear maps only (runner/optim.py says which)
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    # Evaluation.
    eval_every: int = 50
    eval_batches: int = 8  # intermediate evals: the first eval_batches*batch_size fixed val windows
    final_eval_batches: int = 0  # final eval: 0 = every non-overlapping val window
    # Seeds: ``seeds`` is the tournament set; champion contests may extend up to ``max_seeds`` (seeds 0..max-1);
    # ``tuning_seeds`` are disjoint by construction and are the only ones Optuna trains on.
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    max_seeds: int = 10
    tuning_seeds: tuple[int, ...] = (1000,)
    # MQAR track only.
    mqar_vocab: int = 128
    mqar_kv_pairs: int = 8
    mqar_train_examples: int = 20_000
    mqar_val_examples: int = 1_000

    # -- identity ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def canonical_json(self) -> str:
        """The JSON the hash is taken over (the display ``name`` is excluded: it does not change what runs)."""
        d = self.to_dict()
        d.pop("name")
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.name}@{self.hash[:8]}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spec:
        return from_dict_strict(cls, data)

    # -- derivation -------------------------------------------------------------------------------------------
    def derive(self, **changes: Any) -> Spec:
        """A copy with some fields changed (``dims`` fields may be given by name too); validated.

        Derived rules (the only place they live: the CLI's ``--steps N`` and ``derive(steps=N)`` give one hash):
        changing ``steps`` caps ``warmup_steps`` at a fifth of the run and ``eval_every`` at the run, unless those
        are given too; changing ``seeds`` raises ``max_seeds`` to cover them.
        """
        dim_names = {f.name for f in dataclasses.fields(ModelDims)}
        names = dim_names | {f.name for f in dataclasses.fields(Spec)}
        for key in changes:
            if key not in names:  # suggest among the dims fields too, which derive() accepts by name
                raise ArenaError(f"unknown field '{key}'{did_you_mean(key, names)}")
        dim_changes = {k: v for k, v in changes.items() if k in dim_names}
        top = {k: v for k, v in changes.items() if k not in dim_names}
        spec = replace_strict(self, top) if top else self
        if dim_changes:
            spec = dataclasses.replace(spec, dims=replace_strict(spec.dims, dim_changes))
        if "steps" in changes:  # a shorter run keeps the preset's shape: warm-up ≤ a fifth, at least one eval
            if "warmup_steps" not in changes:
                spec = dataclasses.replace(spec, warmup_steps=min(self.warmup_steps, max(0, spec.steps // 5)))
            if "eval_every" not in changes:
                spec = dataclasses.replace(spec, eval_every=min(self.eval_every, max(1, spec.steps)))
        if "seeds" in changes and "max_seeds" not in changes:
            spec = dataclasses.replace(spec, max_seeds=max(spec.max_seeds, max(spec.seeds, default=-1) + 1))
        spec.validate()
        return spec

    def validate(self) -> None:
        """Raise ArenaError naming the first field that makes no sense."""
        checks: list[tuple[bool, str]] = [
            (self.steps > 0, f"--steps must be positive, got {self.steps}"),
            (self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}"),
            (self.seq_len > 1, f"--seq-len must be > 1, got {self.seq_len}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.eval_every > 0, f"eval_every must be positive, got {self.eval_every}"),
            (len(self.seeds) > 0, "--seeds needs at least one seed"),
            (len(set(self.seeds)) == len(self.seeds), f"--seeds has duplicates: {self.seeds}"),
            (all(s >= 0 for s in self.seeds), "--seeds must be non-negative"),
            (not set(self.seeds) & set(self.tuning_seeds), "tuning seeds must be disjoint from tournament seeds"),
            (self.lr_schedule in ("cosine", "constant"),
             f"lr_schedule must be cosine|constant, not {self.lr_schedule}"),
            (self.precision in ("fp32", "bf16"), f"precision must be fp32|bf16, not {self.precision}"),
            (0 < self.val_fraction < 1, "val_fraction must lie in (0, 1)"),
            (0 < self.tune_fraction < 1, "tune_fraction must lie in (0, 1)"),
            (self.dims.rwkv_init in ("fla", "x060"), f"rwkv_init must be fla|x060, not {self.dims.rwkv_init}"),
        ]
        valid_track = self.track in ("shakespeare", "mqar") or self.track.startswith("text:")
        checks.append((valid_track, f"--track must be shakespeare, mqar or text:PATH, not '{self.track}'"))
        for ok, message in checks:
            if not ok:
                raise ArenaError(message)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def contest_seeds(self) -> tuple[int, ...]:
        """The tournament seeds, then the extension seeds a borderline champion contest may add (max_seeds)."""
        out = list(self.seeds)
        candidate = 0
        while len(out) < self.max_seeds:
            if candidate not in out and candidate not in self.tuning_seeds:
                out.append(candidate)
            candidate += 1
        return tuple(out)


PRESETS: dict[str, Spec] = {
    # The seeds' Phase-2 setting (GroundThink V4): char-level Shakespeare, 8 × d128, batch 64 × seq 64,
    # 500 steps, AdamW 3e-4 with 100 warm-up steps, eval every 50.
    "phase2": Spec(),
    # Small enough that a whole tournament of the shipped variants finishes in minutes on 2 CPU cores.
    "smoke": Spec(
        name="smoke",
        dims=ModelDims(
            d_model=32, n_layer=2, rwkv_heads=2, rwkv_mix_rank=8, rwkv_decay_rank=16,
            mamba_d_state=16, mamba_head_dim=16, mamba_chunk=16, attn_heads=2,
        ),
        param_budget=80_000,
        steps=40,
        batch_size=8,
        seq_len=32,
        warmup_steps=8,
        lr=3e-3,
        eval_every=10,
        eval_batches=4,
        final_eval_batches=16,
        seeds=(0, 1, 2),
        max_seeds=6,
    ),
}


def preset(name: str) -> Spec:
    """The named preset, or an ArenaError listing the presets (with a suggestion)."""
    if name not in PRESETS:
        raise ArenaError(
            f"unknown preset '{name}'{did_you_mean(name, PRESETS)}; presets: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]
