"""Where a packed step's GPU time goes: torch.profiler over eager steps of gf at phase2, solo and packed (K=3).

    python -P bench/profile_pack.py   (after installing the checkout; prints the top kernels of each)
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from arena.core.spec import PRESETS
from arena.model.backend import prepare_cuda
from arena.model.lm import build_model
from arena.model.pack import PackedLM
from arena.runner.evaluate import loss_of, member_losses
from arena.runner.loader import builtin
from arena.runner.optim import clip_per_member

spec = PRESETS["phase2"]
prepare_cuda()
gf = builtin("gf").variant


def solo_step(m: torch.nn.Module, x: torch.Tensor) -> None:
    loss_of(m(x), x).backward()
    torch.nn.utils.clip_grad_norm_(list(m.parameters()), 1.0, foreach=True)


def pack_step(p: PackedLM, x: torch.Tensor) -> None:
    _, logits = p.embed_forward(x)
    member_losses(logits, x).sum().backward()
    clip_per_member(list(p.parameters()), 1.0)


for k in (1, 3):
    members = [build_model(spec.dims, gf, None, seed=s).cuda() for s in range(k)]
    model: torch.nn.Module | PackedLM = members[0] if k == 1 else PackedLM(members)
    x = torch.randint(0, spec.dims.vocab_size, (64, 64) if k == 1 else (k, 64, 64), device="cuda")

    def step(model: torch.nn.Module | PackedLM = model, x: torch.Tensor = x) -> None:
        if isinstance(model, PackedLM):
            pack_step(model, x)
        else:
            solo_step(model, x)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    print(f"K={k}: eager step {1000 * (time.perf_counter() - t0) / 10:.1f} ms")
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=70))
    # Which operator (and shapes) launches the costly GEMMs: aten ops by their total CUDA time, per input shape.
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="cuda_time_total", row_limit=25,
                                                             max_name_column_width=30, max_shapes_column_width=90))
