"""A study's bookkeeping: open or resume it (refusing another variant version), its best trial, its summary, and
adoption of the best trial as a tuned entry."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from arena.core.errors import ArenaError
from arena.core.hparams import declared_defaults, resolve
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.db.store import Store
from arena.orchestration.search.storage import default_storage, open_storage, study_name

# What optuna-dashboard calls the one objective (without a name it shows "Objective 0").
OBJECTIVE_NAME = "tuning val loss (nats)"


@dataclass(frozen=True)
class TuneSummary:
    """What a search left behind. ``n_trials`` counts the whole study by state name; ``ran`` this call only."""

    study_name: str
    storage: str
    n_trials: dict[str, int]
    ran: int
    best_value: float | None
    best_params: dict[str, float]
    best_trial: int | None
    baseline_value: float | None
    dashboard_hint: str
    seconds: float = 0.0


def open_study(
    storage: BaseStorage, name: str, resume: bool, loaded: LoadedVariant, spec: Spec, params: list[str], where: str
) -> optuna.Study:
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        attrs: dict[str, Any] = {
            "variant": loaded.name,
            "variant_sha": loaded.sha256,
            "spec_hash": spec.hash,
            "spec": spec.label,
            "params": params,
            "tuning_seed": spec.tuning_seeds[0],
            "objective": "final val loss (nats/token, full final eval) at the tuning seed",
        }
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        name_objective(study)
        return study
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    if not resume:
        raise ArenaError(
            f"study '{name}' already exists in {where} ({len(study.trials)} trials); pass --resume to continue it"
        )
    check_study(study, loaded, where)
    name_objective(study)  # a study made before the objective had a name gets it when it is resumed
    if study.user_attrs.get("params") not in (None, params):
        raise ArenaError(
            f"study '{name}' searches {', '.join(study.user_attrs['params'])}, not {', '.join(params)}; "
            f"resume with --params {','.join(study.user_attrs['params'])} or use another --storage"
        )
    return study


def name_objective(study: optuna.Study) -> None:
    """Name the study's one objective ``OBJECTIVE_NAME`` for the dashboard; a study that has names keeps them."""
    if study.metric_names is None and len(study.directions) == 1:
        with warnings.catch_warnings():  # set_metric_names is "experimental" since optuna 3.2, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])


def check_study(study: optuna.Study, loaded: LoadedVariant, where: str) -> None:
    sha = study.user_attrs.get("variant_sha")
    if sha is not None and sha != loaded.sha256:
        raise ArenaError(
            f"study '{study.study_name}' in {where} was made for another version of {loaded.name} "
            f"(sha {sha[:12]}, this file is {loaded.sha256[:12]}); delete it "
            f"(optuna delete-study --study-name '{study.study_name}' --storage …) or use another --storage"
        )


def register_variant(store: Store, spec: Spec, loaded: LoadedVariant) -> None:
    v = loaded.variant
    store.add_spec(spec)
    store.add_variant(v.name, v.kind, v.summary, loaded.source, loaded.sha256, loaded.path, declared_defaults(v))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def summarize(study: optuna.Study, storage: str, ran: int = 0, seconds: float = 0.0) -> TuneSummary:
    """The summary of a study as it stands (``ran``/``seconds`` describe the call that asks)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = best_trial(study)
    baselines = [t for t in trials if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE]
    return TuneSummary(
        study_name=study.study_name,
        storage=storage,
        n_trials=counts,
        ran=ran,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        baseline_value=baselines[0].value if baselines else None,
        dashboard_hint=dashboard_hint(storage),
        seconds=seconds,
    )


def dashboard_hint(storage: str) -> str:
    return f"arena dashboard --storage '{storage}'   (or: optuna-dashboard '{storage}')"


# -- adoption ---------------------------------------------------------------------------------------------------
def load_tuned_study(loaded: LoadedVariant, spec: Spec, storage: str) -> optuna.Study:
    """The existing study of (variant, spec) in ``storage``; ArenaError naming ``arena tune`` if there is none."""
    name = study_name(loaded.name, spec)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ArenaError(f"no study '{name}' in {storage}; run: arena tune {loaded.name} --trials N") from None
    check_study(study, loaded, storage)
    return study


def spent(study: optuna.Study) -> int:
    """The trials a study spent: the finished ones, less those its sweeper failed because their process died
    (``storage.sweep_stale_trials``: an interruption is not a result, and the trial was run again)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not t.user_attrs.get("swept"))


def concurrency(study: optuna.Study) -> int:
    """How many trials the study had in flight at once, at most (optimizers × pack; 1: one after another). TPE
    learns only from finished trials, so a search of 30 trials 6 at a time is a weaker search than 30 in a row:
    the shape is part of the budget (trials before this was recorded count as one at a time)."""
    return max((int(t.user_attrs.get("concurrency", 1)) for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and not t.user_attrs.get("swept")), default=1)


def tuned_league(budget: int, at_once: int) -> str:
    """``tuned-30`` (30 trials, one at a time) or ``tuned-30x6`` (30 trials, 6 at a time)."""
    return f"tuned-{budget}" if at_once <= 1 else f"tuned-{budget}x{at_once}"


def adopt(
    loaded: LoadedVariant, spec: Spec, store: Store, storage: str | None = None, *, name: str | None = None
) -> str:
    """Freeze the study's best COMPLETE trial as the entry ``<variant>@tuned-<N>`` (or ``name``): the variant version
    with the trial's params over its defaults, ``origin="tuned"``, in the league ``tuned-<N>`` where N is the number
    of finished trials the study spent (its tuning budget), ``tuned-<N>x<C>`` when it ran C trials at once: a tuned
    entry competes only against entries tuned with the same budget, searched alike. Returns the entry name.
    Adopting the same trial again is a no-op; an existing entry with other content raises ArenaError (entries are
    frozen)."""
    storage = storage or default_storage(store.url)
    study = load_tuned_study(loaded, spec, storage)
    best = best_trial(study)
    if best is None:
        raise ArenaError(f"study '{study.study_name}' has no completed trial to adopt; run more trials")
    budget = spent(study)
    hparams = resolve(loaded.variant.hparams, {k: float(v) for k, v in best.params.items()}, loaded.name)
    league = tuned_league(budget, concurrency(study))
    entry = name or f"{loaded.name}@{league}"
    register_variant(store, spec, loaded)
    store.add_entry(entry, loaded.sha256, hparams.to_dict(), origin="tuned", study_name=study.study_name,
                    league=league, budget=budget)
    study.set_user_attr("adopted", {"entry": entry, "trial": best.number, "league": league})
    return entry
