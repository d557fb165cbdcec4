"""The search space, sampler and pruner of a variant's study: what a search may change and when it stops a trial."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import optuna

from arena.core.config import did_you_mean
from arena.core.errors import ArenaError
from arena.core.hparams import VALUE_PARAMS, HParam
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant

DEFAULT_PARAMS: tuple[str, ...] = VALUE_PARAMS  # what a search changes unless told: values, so it can pack


def search_space(loaded: LoadedVariant, params: Sequence[str] = DEFAULT_PARAMS) -> dict[str, HParam]:
    """The requested hyperparameters the variant declares (the default names it lacks are skipped; any other
    undeclared name is an error). ArenaError if nothing is left to search."""
    declared = loaded.variant.hparams
    space: dict[str, HParam] = {}
    for name in params:
        if name in declared:
            space[name] = declared[name]
        elif name not in DEFAULT_PARAMS:
            raise ArenaError(
                f"--params: {loaded.name} has no hyperparameter '{name}'{did_you_mean(name, declared)}; "
                f"it declares: {', '.join(declared) or 'none'}"
            )
    if not space:
        raise ArenaError(
            f"{loaded.name} declares none of the hyperparameters to search ({', '.join(params)}); "
            f"it declares: {', '.join(declared) or 'none'}"
        )
    return space


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    """Median pruning that spares slow starters: nothing is pruned before 5 trials completed, before half of the
    training steps, or against fewer than 3 other trials at that step."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=spec.steps // 2, n_min_trials=3)


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    """TPE; with the constant liar, trials sampled while others run (a pack's, other workers') count those as bad
    results, so a pack spreads over the space instead of sampling one point K times (Optuna's advice for batches)."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def sampler_seed(seed: int, n_existing: int, index: int) -> int:
    """Workers (and resumed calls) get distinct seeds: equal seeds would replay the same random start-up points."""
    return int(hashlib.sha256(f"{seed}|{n_existing}|{index}".encode()).hexdigest()[:8], 16)
