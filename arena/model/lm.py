"""The language model every variant plugs into.

Token embedding (tied to the head) → N × [RMSNorm → the mixers in parallel → fusion → residual → RMSNorm →
FFN 4× GELU → residual] → RMSNorm → logits. Dimensions come from the spec; the variant contributes only its
fusion module (or, for a baseline, its mixer set).

Pairing: every component is initialised from its own RNG stream, derived from (seed, component path). So at seed
s the RWKV-6 pathway of layer 3 starts from the same weights in every hybrid variant, whatever the fusion's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from arena.core.hparams import HParams, resolve
from arena.core.spec import ModelDims
from arena.core.variant import MIXERS, Fusion, Variant
from arena.model.attribution import amplitude
from arena.model.backend import deterministic
from arena.model.fold import is_batched, on_pack, split_rows

PARTS = ("embed", "rwkv6", "mamba2", "attention", "fusion", "ffn", "norm")
_PART_RE = re.compile(r"blocks\.\d+\.(?:mixers\.(rwkv6|mamba2|attention)|(fusion|ffn))\.")


@contextlib.contextmanager
def seeded(seed: int, tag: str) -> Iterator[None]:
    """Run a block with the global torch RNG seeded from (seed, tag), restoring the caller's RNG afterwards."""
    derived = int.from_bytes(hashlib.sha256(f"{seed}/{tag}".encode()).digest()[:8], "little") & (2**63 - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived)
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run a block on one CPU thread, restoring the caller's count afterwards. Initialisation runs under it: MKL's QR
    (``orthogonal_``, RWKV-6's LoRA and output maps) gives other last bits at another thread count, so the same seed
    built other weights in a Ray task (1 CPU) than in a local worker (16) — their runs parted from step 4–13 on an
    H200 (bench/results, 2026-12-02) — and would on a machine with another core count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _MatmulGradEmbedding(torch.autograd.Function):
    """An embedding lookup whose weight gradient is one_hot(idx)ᵀ @ grad: a matmul with a fixed summation order.

    Why: CUDA's embedding backward sums the rows of repeated tokens in a varying order; on an H100 one identical
    forward+backward of the phase2 model gave ``embed.weight`` gradients 2e-8 apart and nothing else (bench/results).
    For char-level vocabularies the one-hot matrix is small (4,096 × 65 at phase2). In a packed model (under vmap)
    ``embed_tokens`` uses ``_PackedEmbedding``: the K lookups as one, the gradients as one batched matmul.
    """

    @staticmethod
    def forward(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, weight)  # (B, T, D)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        idx, weight = inputs
        ctx.save_for_backward(idx)
        ctx.num_embeddings = weight.shape[0]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (idx,) = ctx.saved_tensors
        one_hot = F.one_hot(idx.reshape(-1), ctx.num_embeddings).to(grad.dtype)  # (B·T, V); no host sync on CUDA
        return None, one_hot.t() @ grad.reshape(-1, grad.shape[-1])  # (V, D)


class _PackedEmbedding(torch.autograd.Function):
    """K lookups ``weight[k][idx[k]]`` (K, B, T) × (K, V, D) → (K, B, T, D); weight gradient one_hot ᵀ @ grad per k."""

    @staticmethod
    def forward(ctx: Any, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.num_embeddings = weight.shape[1]
        k, v = weight.shape[:2]
        offset = torch.arange(k, device=idx.device).view(k, *([1] * (idx.dim() - 1))) * v  # (K, 1, 1)
        return F.embedding(idx + offset, weight.reshape(k * v, -1))  # (K, B, T, D)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        (idx,) = ctx.saved_tensors
        k, n, d = idx.shape[0], idx[0].numel(), grad.shape[-1]
        c = split_rows(n)  # the B·T-long reduction in chunks (arena.model.fold.split_rows)
        one_hot = F.one_hot(idx.reshape(k * c, n // c), ctx.num_embeddings).to(grad.dtype)  # (K·c, B·T/c, V)
        parts = one_hot.transpose(1, 2) @ grad.reshape(k * c, n // c, d)  # (K·c, V, D)
        return None, parts.view(k, c, -1, d).sum(1)  # (K, V, D)


def embed_tokens(idx: torch.Tensor, weight: torch.Tensor, fixed_order: bool) -> torch.Tensor:
    """``F.embedding`` (B, T) → (B, T, D); with ``fixed_order`` its weight gradient is a matmul (see above)."""
    if not fixed_order:
        return F.embedding(idx, weight)
    if is_batched(idx, weight):  # a packed model's forward (arena.model.pack)
        return on_pack(_PackedEmbedding.apply, idx, weight)  # (B, T, D) per member
    out: torch.Tensor = _MatmulGradEmbedding.apply(idx, weight)
    return out


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight  # (B, T, D)


def _mixer_factory(name: str) -> Callable[..., nn.Module]:
    # Imported here so that building a GPT baseline never needs the RWKV/Mamba modules and vice versa.
    if name == "rwkv6":
        from arena.model.rwkv6 import RWKV6TimeMix

        return RWKV6TimeMix
    if name == "mamba2":
        from arena.model.mamba2 import Mamba2Mixer

        return Mamba2Mixer
    if name == "attention":
        from arena.model.attention import CausalSelfAttention

        return CausalSelfAttention
    raise ValueError(f"unknown mixer '{name}'")


class Block(nn.Module):
    def __init__(
        self,
        dims: ModelDims,
        variant: Variant,
        hp: HParams,
        layer_idx: int,
        ffn_hidden: int,
        backend: str,
        seed: int,
    ) -> None:
        super().__init__()
        d = dims.d_model
        self.norm1 = RMSNorm(d)
        self.mixers = nn.ModuleDict()
        # In one fixed order whatever order the file lists them in: the same parameter order, the same model.
        for name in sorted(variant.mixers, key=lambda n: MIXERS.index(n) if n in MIXERS else len(MIXERS)):
            with seeded(seed, f"layer{layer_idx}/{name}"):
                self.mixers[name] = _mixer_factory(name)(dims, layer_idx=layer_idx, backend=backend)
        self.fusion: Fusion | None = None
        if variant.fusion is not None:
            with seeded(seed, f"layer{layer_idx}/fusion"):
                self.fusion = variant.fusion(d, hp)
        self.norm2 = RMSNorm(d)
        with seeded(seed, f"layer{layer_idx}/ffn"):
            up, down = nn.Linear(d, ffn_hidden, bias=False), nn.Linear(ffn_hidden, d, bias=False)
            for lin in (up, down):
                nn.init.normal_(lin.weight, std=0.02)
            self.ffn = nn.Sequential(up, nn.GELU(), down)
        # A packed model (arena.model.pack) sets this to call a fusion that cannot run under vmap once per member.
        self.packed_fusion: Callable[..., torch.Tensor] | None = None
        self.record = False  # when True, forward stores pathway output norms and amplitudes for diagnostics
        self.last_norms: dict[str, float] = {}
        self.last_amplitude: dict[str, float | None] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)  # (B, T, D)
        outs = {name: m(h) for name, m in self.mixers.items()}  # each (B, T, D)
        if self.fusion is None:
            (y,) = outs.values()  # (B, T, D): a baseline's one mixer
        else:
            # By name: a variant that lists its mixers in the other order cannot swap the pathways.
            fuse = self.fusion if self.packed_fusion is None else self.packed_fusion
            y = fuse(rwkv=outs["rwkv6"], mamba=outs["mamba2"], x=h)  # (B, T, D)
        if self.record:
            self.last_norms = {n: float(o.detach().float().pow(2).mean().sqrt()) for n, o in outs.items()}
            if self.fusion is not None:
                self.last_amplitude = amplitude(self.fusion, outs["rwkv6"], outs["mamba2"], h, y)
        x = x + y
        return x + self.ffn(self.norm2(x))  # (B, T, D)


class HybridLM(nn.Module):
    def __init__(
        self,
        dims: ModelDims,
        variant: Variant,
        hparams: HParams,
        *,
        seed: int = 0,
        backend: str = "auto",
        ffn_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.dims = dims
        hidden = ffn_hidden if ffn_hidden is not None else dims.ffn_mult * dims.d_model
        self.ffn_hidden = hidden  # what a pack's other members are built with (build_model matched it)
        with one_thread():  # the same weights whatever the machine's or the task's CPU count
            with seeded(seed, "embed"):
                self.embed = nn.Embedding(dims.vocab_size, dims.d_model)
                nn.init.normal_(self.embed.weight, std=0.02)
            self.blocks = nn.ModuleList(
                Block(dims, variant, hparams, i, hidden, backend, seed) for i in range(dims.n_layer)
            )
        self.norm_f = RMSNorm(dims.d_model)
        # On CUDA in deterministic mode only: CPU's embedding backward already sums in a fixed order.
        self.fixed_order_embed = deterministic()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embed_forward(idx)[1]  # (B, T, V)

    def embed_forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token embeddings (B, T, D) and the logits (B, T, V) of one forward. The runner's causality check
        takes the gradient of early logits with respect to later embeddings on the same forward that trains."""
        e = embed_tokens(idx, self.embed.weight, self.fixed_order_embed and idx.is_cuda)  # (B, T, D)
        x = e
        for block in self.blocks:
            x = block(x)
        return e, F.linear(self.norm_f(x), self.embed.weight)  # (B, T, V): tied head

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def part_of(self, name: str) -> str:
        """The part a parameter belongs to (one of PARTS), from its name."""
        if name.startswith("embed."):
            return "embed"
        # Anchored at the block: a fusion's own submodule named like a mixer stays in the fusion.
        found = _PART_RE.match(name)
        return (found.group(1) or found.group(2)) if found else "norm"

    def group_of(self, name: str) -> str:
        """A parameter's group for diagnostics: its part and its name inside the part with the layer left out
        (``fusion/gate.bias``, ``rwkv6/bonus``, ``norm/norm1.weight``), so the same tensor of every layer pools."""
        part = self.part_of(name)
        local = re.sub(r"^blocks\.\d+\.", "", name)
        for prefix in (f"mixers.{part}.", f"{part}."):
            if local.startswith(prefix):
                local = local[len(prefix):]
                break
        return f"{part}/{local}"

    def params_by_part(self) -> dict[str, int]:
        counts = dict.fromkeys(PARTS, 0)
        for name, p in self.named_parameters():
            counts[self.part_of(name)] += p.numel()
        return {k: v for k, v in counts.items() if v}

    def backends_used(self) -> dict[str, str]:
        """Per mixer, the backend its last forward used (e.g. {'rwkv6': 'kernel', 'mamba2': 'torch_chunk'})."""
        out: dict[str, str] = {}
        for block in self.blocks:
            assert isinstance(block, Block)
            for name, m in block.mixers.items():
                used = str(getattr(m, "backend_used", "?"))
                conv = getattr(m, "conv_backend_used", None)
                out[name] = f"{used}+conv:{conv}" if conv else used
        return out

    def set_record(self, on: bool) -> None:
        for block in self.blocks:
            assert isinstance(block, Block)
            block.record = on

    def gate_stats(self) -> list[dict[str, float]]:
        """Per layer, mean and std of the RWKV share from the last forward (empty dicts where there is no gate)."""
        out: list[dict[str, float]] = []
        for block in self.blocks:
            assert isinstance(block, Block)
            share = getattr(block.fusion, "last_share", None) if block.fusion is not None else None
            if share is None:
                out.append({})
            else:
                s = share.detach().float()
                out.append({"mean": float(s.mean()), "std": float(s.std()) if s.numel() > 1 else 0.0})
        return out

    def pathway_norms(self) -> list[dict[str, float]]:
        """Per layer, the RMS of each mixer's output on the last recorded forward."""
        return [dict(b.last_norms) for b in self.blocks if isinstance(b, Block)]

    def amplitude_stats(self) -> list[dict[str, float | None]]:
        """Per layer, each pathway's contribution to the fused output (RMS), the RWKV amplitude share and the
        interaction, on the last recorded forward (``arena.model.attribution``); empty dicts without a fusion."""
        return [dict(b.last_amplitude) for b in self.blocks if isinstance(b, Block)]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Every matched entry lands within this fraction of the reference's parameter count (the FFN width moves the count
# in steps of 2·d_model·n_layer: 0.06% at phase2, 0.16% at smoke).
MATCH_TOLERANCE = 0.005


def build_model(
    dims: ModelDims,
    variant: Variant,
    hparams: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    backend: str = "auto",
    match_params_to: int | None = None,
) -> HybridLM:
    """Build the LM for a variant.

    The one matching rule, for every entry alike: with a target count (the spec's reference variant at the standard
    FFN width ``ffn_mult × d_model``) the FFN width of every block is chosen so that the whole model's count is as
    close as possible to the target; d_model and depth still come from the spec. The reference therefore keeps the
    standard width, a fusion with more parameters gets a narrower FFN, a baseline without one pathway a wider one.
    A variant that declares ``match_params=False`` keeps the standard width (an unmatched entry)."""
    hp = hparams if isinstance(hparams, HParams) else resolve(variant.hparams, hparams, variant.name)
    hidden = None
    if variant.match_params and match_params_to is not None:
        hidden = matched_ffn_hidden(dims, variant, hp, match_params_to)
    return HybridLM(dims, variant, hp, seed=seed, backend=backend, ffn_hidden=hidden)


def matched_ffn_hidden(dims: ModelDims, variant: Variant, hp: HParams, target: int) -> int:
    """The FFN width whose model is closest in size to ``target`` (count is affine in the width); at least 1."""
    n1 = count_params(HybridLM(dims, variant, hp, ffn_hidden=8))
    n2 = count_params(HybridLM(dims, variant, hp, ffn_hidden=16))
    per_unit = (n2 - n1) / 8
    return max(1, round(8 + (target - n1) / per_unit))


def match_deviation(n_params: int, target: int) -> float:
    """(count − target) / target: the relative deviation from the reference's count."""
    return (n_params - target) / target
