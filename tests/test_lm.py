"""The model shell: the fixed-order embedding (used on CUDA in deterministic mode) against torch's embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from arena.core.spec import preset
from arena.model.lm import build_model, embed_tokens
from arena.runner.loader import builtin
from arena.runner.repeat import differing_grads


def test_fixed_order_embedding_matches_torch_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 7, (4, 33), generator=g)  # (B, T): every token repeats many times
    w1 = torch.randn(11, 16, generator=g, dtype=torch.float64, requires_grad=True)  # 4 rows never used
    w2 = w1.detach().clone().requires_grad_(True)
    upstream = torch.randn(4, 33, 16, generator=g, dtype=torch.float64)  # (B, T, D)

    out1 = embed_tokens(idx, w1, fixed_order=True)
    out2 = F.embedding(idx, w2)
    assert torch.equal(out1, out2)
    (out1 * upstream).sum().backward()
    (out2 * upstream).sum().backward()
    assert w1.grad is not None and w2.grad is not None
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(w1.grad[7:]) == 0  # unused rows get exactly zero


def test_fixed_order_embedding_is_bitwise_repeatable() -> None:
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 65, (8, 64), generator=g)
    w = torch.randn(65, 32, generator=g, requires_grad=True)
    upstream = torch.randn(8, 64, 32, generator=g)
    grads = []
    for _ in range(2):
        w.grad = None
        (embed_tokens(idx, w, fixed_order=True) * upstream).sum().backward()
        grads.append(w.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_every_gradient_of_the_model_repeats_exactly_on_the_cpu() -> None:
    spec = preset("smoke")
    model = build_model(spec.dims, builtin("gf").variant, seed=0)
    idx = torch.randint(0, spec.dims.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    differ, worst = differing_grads(model, idx[:, :-1], idx[:, 1:])  # (B, T) each
    assert differ == [] and worst == 0.0


def test_a_seed_builds_the_same_weights_at_any_cpu_thread_count() -> None:
    # MKL's QR (orthogonal_) sums in a thread-count-dependent order: a Ray task (1 CPU) built other RWKV-6 LoRA
    # weights than a local worker (16 threads) for the same seed, and their runs parted on an H200 (2026-12-02).
    spec, v = preset("phase2"), builtin("gf").variant
    before = torch.get_num_threads()
    built = []
    try:
        for threads in (1, 16):
            torch.set_num_threads(threads)
            built.append({n: p.detach().clone() for n, p in build_model(spec.dims, v, None, seed=3).named_parameters()})
            assert torch.get_num_threads() == threads  # the caller's count is left as it was
    finally:
        torch.set_num_threads(before)
    assert [n for n in built[0] if not torch.equal(built[0][n], built[1][n])] == []
