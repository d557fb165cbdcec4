"""MQAR: synthetic multi-query associative recall, generated from the seed (no corpus). Scored on the query
positions only (targets are IGNORE_INDEX elsewhere)."""

from __future__ import annotations

import copy

import torch

from arena.core.errors import ArenaError
from arena.core.spec import Spec
from arena.runner.tracks import IGNORE_INDEX, Batch, Track, batched, seeded_generator


def mqar_examples(spec: Spec, n: int, g: torch.Generator) -> Batch:
    """``n`` MQAR examples (x[n, T], y[n, T]) from ``g`` (zoology-style multi-query associative recall).

    Layout: x = k1 v1 k2 v2 ... kD vD, then 0 filler in which every key is queried once, in random order, at a
    random even offset p (x[p] = key, x[p + 1] = its value). Keys come from 1..V/2-1 (distinct), values from
    V/2..V-1 (distinct); 0 is the filler. y[p] = the value at each query position, IGNORE_INDEX everywhere else.
    """
    V, D, T = spec.mqar_vocab, spec.mqar_kv_pairs, spec.seq_len
    n_slots = (T + 1 - 2 * D) // 2  # even query offsets p in [2D, T-1]
    if D < 1 or D > V // 2 - 1 or n_slots < D:
        raise ArenaError(
            f"mqar needs 1 <= mqar_kv_pairs <= mqar_vocab/2 - 1 and seq_len >= 4*mqar_kv_pairs - 1; "
            f"got mqar_kv_pairs={D}, mqar_vocab={V}, seq_len={T}"
        )

    def pick(n_options: int, k: int) -> torch.Tensor:  # k distinct indices per row, stable argsort of f64 uniforms
        return torch.rand(n, n_options, generator=g, dtype=torch.float64).argsort(dim=1, stable=True)[:, :k]

    keys = pick(V // 2 - 1, D) + 1  # [n, D]
    values = pick(V - V // 2, D) + V // 2  # [n, D]
    order = pick(D, D)  # [n, D] query order
    pos = 2 * D + 2 * pick(n_slots, D)  # [n, D] query offsets
    seq = torch.zeros(n, T + 1, dtype=torch.int64)  # [n, T+1]
    seq[:, 0 : 2 * D : 2], seq[:, 1 : 2 * D : 2] = keys, values
    q_keys, q_values = keys.gather(1, order), values.gather(1, order)  # [n, D]
    seq.scatter_(1, pos, q_keys)
    seq.scatter_(1, pos + 1, q_values)
    y = torch.full((n, T), IGNORE_INDEX, dtype=torch.int64).scatter_(1, pos, q_values)  # [n, T]
    return seq[:, :T].contiguous(), y


class MQARData(Track):
    """MQAR: a train pool of ``mqar_train_examples`` from the run seed, a val set from a fixed seed. No download."""

    kind = "mqar"
    data_sha256 = ""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.vocab_size = spec.mqar_vocab
        self.val_x, self.val_y = mqar_examples(spec, spec.mqar_val_examples, seeded_generator("mqar-val"))  # [N_val, T]
        self._pool: tuple[int, Batch] | None = None  # (seed, train examples) of the last seed asked for
        self._perms: dict[tuple[int, int], torch.Tensor] = {}  # (seed, epoch) -> order [n] (last seed only)

    def tuning_split(self) -> MQARData:
        """The same training stream, scored on examples from the tuning seed stream (never the val set's)."""
        view = copy.copy(self)
        view.val_x, view.val_y = mqar_examples(self.spec, self.spec.mqar_val_examples, seeded_generator("mqar-tune"))
        return view

    def train_pool(self, seed: int) -> Batch:
        """The ``mqar_train_examples`` train examples of a run seed (cached for the last seed asked for)."""
        if self._pool is None or self._pool[0] != seed:
            examples = mqar_examples(self.spec, self.spec.mqar_train_examples, seeded_generator("mqar-train", seed))
            self._pool = (seed, examples)
            self._perms = {}
        return self._pool[1]

    def _epoch_order(self, seed: int, epoch: int, n: int) -> torch.Tensor:
        if (seed, epoch) not in self._perms:
            self._perms[(seed, epoch)] = torch.randperm(n, generator=seeded_generator("mqar-epoch", seed, epoch))  # [n]
        return self._perms[(seed, epoch)]

    def train_batch(self, seed: int, step: int) -> Batch:
        """Epochs over the pool, each in its own seeded order; step s takes positions [s*B, (s+1)*B) of that stream."""
        x, y = self.train_pool(seed)
        n, B = x.shape[0], self.spec.batch_size
        flat = torch.arange(step * B, (step + 1) * B)  # [B] positions in the endless epoch stream
        epochs = flat // n
        idx = torch.empty(B, dtype=torch.int64)
        for e in epochs.unique().tolist():
            mask = epochs == e
            idx[mask] = self._epoch_order(seed, e, n)[flat[mask] % n]
        return x[idx], y[idx]  # [B, T], [B, T]

    def val_batches(self, final: bool) -> list[Batch]:
        n = self.spec.final_eval_batches if final else self.spec.eval_batches
        return batched(self.val_x, self.val_y, self.spec.batch_size, n)


def mqar_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored positions (targets != IGNORE_INDEX) where argmax(logits[B, T, V]) equals targets[B, T]."""
    mask = targets != IGNORE_INDEX  # [B, T]
    n = int(mask.sum())
    if n == 0:
        raise ValueError("mqar_accuracy: no scored positions in targets")
    return int((logits.argmax(dim=-1)[mask] == targets[mask]).sum()) / n
