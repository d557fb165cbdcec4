"""K seeds of one variant trained as one model (horizontal fusion, after HFTA, MLSys'21).

Every parameter of the K solo models is stacked along a new leading dimension: ``blocks.0.ffn.0.weight`` of shape
(out, in) becomes (K, out, in). The forward runs the solo model's own code under ``torch.func.vmap`` over the
stacked parameters (``functional_call`` on a template), so

* every projection is one batched matmul instead of K small ones;
* the sequence kernels run once with K·H heads (``arena.model.fold``), the embedding as one batched lookup;
* a variant's own fusion module is vmapped like everything else: no variant needs to know it is packed.

Member k computes exactly its solo model's function: the same initialisation (each member is built by
``build_model`` with its own seed, then stacked), its own batches, its own loss; the optimizer is elementwise and
the gradient clipping is per member (``runner.optim.clip_per_member``). Only the floating-point order of some
reductions differs from a solo run, which is why a run records its pack size in its execution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.overrides import TorchFunctionMode

from arena.model.fold import is_batched, on_pack, split_rows
from arena.model.lm import HybridLM

__all__ = ["PackedLM"]


class _EmbedForward(nn.Module):
    """``lm.embed_forward`` as a module's forward, for ``functional_call`` (parameter names ``lm.<name>``)."""

    def __init__(self, lm: HybridLM) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lm.embed_forward(idx)  # (B, T, D), (B, T, V)


class _PackedLinear(torch.autograd.Function):
    """``y[k] = x[k] @ w[k]ᵀ + b[k]`` for x (K, N, in), w (K, out, in), b (K, out) or None: every pack member's
    linear map in one bmm, with the weight gradient's N-long reduction split (``split_rows``): autograd's own
    batched form of it ran 10× slower than the whole solo layer on an H200."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        y = torch.bmm(x, w.transpose(1, 2))  # (K, N, out)
        return y if b is None else y + b.unsqueeze(1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x, w = ctx.saved_tensors  # (K, N, in), (K, out, in)
        k, n, d_in = x.shape
        c = split_rows(n)
        gx = torch.bmm(g, w.to(g.dtype))  # (K, N, in)
        gw = torch.bmm(g.reshape(k * c, n // c, -1).transpose(1, 2), x.to(g.dtype).reshape(k * c, n // c, d_in))
        gw = gw.view(k, c, -1, d_in).sum(1)  # (K, out, in)
        gb = g.sum(1) if ctx.has_bias else None  # (K, out)
        return gx, gw.to(w.dtype), gb


def _linear_on_pack(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Physical x (K, ..., in), w (K, out, in) → (K, ..., out) through ``_PackedLinear``."""
    k, d_in = x.shape[0], x.shape[-1]
    y: torch.Tensor = _PackedLinear.apply(x.reshape(k, -1, d_in), w, b)  # (K, N, out)
    return y.view(*x.shape[:-1], w.shape[0 if w.dim() == 2 else 1])


class _PackedLinearMode(TorchFunctionMode):
    """While a pack's forward runs: every ``F.linear`` on batched tensors (nn.Linear's, in arena's layers and in a
    variant's fusion alike) goes through ``_PackedLinear``; everything else runs as it is."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear:
            x, w = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            if is_batched(x, w, b):
                return on_pack(_linear_on_pack, x, w, b)
        return func(*args, **kwargs)


def _restore_flat_weights(module: nn.Module) -> None:
    """Point every RNN's weight list back at its own parameters: ``functional_call`` restores the parameters but
    leaves ``nn.GRU``/``nn.LSTM``'s ``_flat_weights`` on the tensors it swapped in (the stacked ones), so the
    template's own forward (the diagnostics) would compute with them, and the state audit rightly flags tensors
    outside its parameters."""
    for sub in module.modules():
        if isinstance(sub, nn.RNNBase):
            sub._init_flat_weights()


def _looped(fusion: nn.Module) -> Any:
    """``fusion``'s call under a packed forward, once per member on its own slice of the inputs and parameters (a
    module torch cannot vmap, e.g. ``nn.GRU``: no batching rule for it)."""
    names = tuple(n for n, _ in fusion.named_parameters())

    def per_member(rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        # Physical tensors: inputs (K, B, T, D), parameters (K, ...).
        outs = [functional_call(fusion, {n: p[i] for n, p in zip(names, params, strict=True)}, (),
                                {"rwkv": rwkv[i], "mamba": mamba[i], "x": x[i]}) for i in range(rwkv.shape[0])]
        return torch.stack(outs)  # (K, B, T, D)

    def call(rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not is_batched(rwkv, mamba, x):  # the template's own plain forward (diagnostics): the fusion as it is
            plain: torch.Tensor = fusion(rwkv=rwkv, mamba=mamba, x=x)
            return plain
        params = dict(fusion.named_parameters())  # inside the packed forward: this member's (batched) tensors
        return on_pack(per_member, rwkv, mamba, x, *(params[n] for n in names))

    return call


def vmappable(fusion: nn.Module, d_model: int, device: torch.device) -> bool:
    """Whether ``fusion`` runs under vmap: one tiny forward of two members on random inputs (variant code: the
    caller runs it where variant code runs)."""
    params = {n: torch.stack([p.detach()] * 2) for n, p in fusion.named_parameters()}
    inputs = [torch.randn(2, 1, 4, d_model, device=device) for _ in range(3)]  # (K=2, B=1, T=4, D)

    def one(p: dict[str, torch.Tensor], rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(fusion, p, (), {"rwkv": rwkv, "mamba": mamba, "x": x})
        return out

    try:
        with torch.no_grad():
            vmap(one)(params, *inputs)
    except Exception:  # no batching rule (CPU), no storage behind a batched weight (cuDNN's GRU), ...: loop it.
        return False  # a fusion broken in itself fails the same way in the loop, where it is the run's result
    return True


class PackedLM:
    """K solo ``HybridLM`` members as one trainable model: ``embed_forward(idx (K, B, T))``.

    ``template`` is member 0's module: its code runs every member's forward (its own parameters are not used by
    the packed forward) and it is the solo model that diagnostics load one member into (``load_member``).
    """

    def __init__(self, members: Sequence[HybridLM]) -> None:
        if not members:
            raise ValueError("a pack needs at least one member")
        names = [[n for n, _ in m.named_parameters()] for m in members]
        if any(n != names[0] for n in names):
            raise ValueError("every member of a pack must have the same parameters (one variant, one spec)")
        self.k = len(members)
        self.template = members[0]
        params, buffers = stack_module_state(list(members))  # name -> (K, ...) leaves that require grad
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self._wrapper = _EmbedForward(self.template)
        # A fusion torch cannot vmap (no batching rule for one of its ops) runs once per member instead.
        self.looped: list[int] = []
        self._looped_fusions: list[nn.Module] = []  # a plain list: not submodules (the template holds them)
        for i, block in enumerate(self.template.blocks):
            fusion = getattr(block, "fusion", None)
            if fusion is not None and not vmappable(fusion, self.template.dims.d_model,
                                                    next(self.template.parameters()).device):
                block.packed_fusion = _looped(fusion)
                self.looped.append(i)
                self._looped_fusions.append(fusion)
        self._vmapped = vmap(self._member_forward, in_dims=(0, 0, 0), randomness="error")

    # -- forward ----------------------------------------------------------------------------------------------
    def _member_forward(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                        idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = {f"lm.{n}": t for n, t in params.items()} | {f"lm.{n}": t for n, t in buffers.items()}
        out: tuple[torch.Tensor, torch.Tensor] = functional_call(self._wrapper, state, (idx,), tie_weights=False)
        return out

    def embed_forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings (K, B, T, D) and logits (K, B, T, V) of every member on its own batch ``idx[k]``."""
        if idx.dim() == 2:  # one batch for every member (evaluation): (B, T) → (K, B, T) without a copy
            idx = idx.expand(self.k, *idx.shape)
        with _PackedLinearMode():
            out: tuple[torch.Tensor, torch.Tensor] = self._vmapped(self.params, self.buffers, idx)
        for fusion in self._looped_fusions:
            _restore_flat_weights(fusion)
        return out

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embed_forward(idx)[1]  # (K, B, T, V)

    # -- the parts a training loop needs ----------------------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.params.items()

    def parameters(self) -> Iterator[torch.Tensor]:
        yield from self.params.values()

    def part_of(self, name: str) -> str:
        return self.template.part_of(name)

    def train(self) -> PackedLM:
        self.template.train()
        return self

    def eval(self) -> PackedLM:
        self.template.eval()
        return self

    def backends_used(self) -> dict[str, str]:
        return self.template.backends_used()

    def params_by_part(self) -> dict[str, int]:
        return self.template.params_by_part()

    # -- members ----------------------------------------------------------------------------------------------
    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict, the names and shapes of its solo model's (a view into the stacked tensors)."""
        return {n: t[k].detach() for n, t in {**self.params, **self.buffers}.items()}

    @torch.no_grad()
    def load_member(self, k: int, grads: bool = True) -> HybridLM:
        """The template holding member k's parameters (and, with ``grads``, its last gradients): a solo model on
        which the solo diagnostics run. The packed forward never reads the template's own parameters."""
        for name, p in self.template.named_parameters():
            stacked = self.params[name]
            p.copy_(stacked[k])
            if grads:
                p.grad = None if stacked.grad is None else stacked.grad[k].clone()
        return self.template
