"""Hyperparameter tuning with Optuna (TPE, seeded) on an inner stratified K-fold, studies kept in a database.

* Storage: a SQLite file in the run folder by default (``sqlite:///RUN_DIR/optuna.db``), or any SQLAlchemy URL
  (PostgreSQL, MySQL) given with ``--storage`` and shared by several ``cdeg fit`` workers.
* One study per (model, repeat, outer fold) and one per model for the final fit, with deterministic names
  ``cdeg-<key>-<model>-r<repeat>-f<fold>`` / ``cdeg-<key>-<model>-final``; ``<key>`` hashes the data and the
  protocol (everything in the configuration except trials, jobs and plotting), so a re-run with the same
  inputs finds its studies and only adds missing trials, and a changed input never mixes with old trials.
* Reproducible and resumable: trial i is proposed by a TPE sampler seeded with (study seed, number of completed
  trials), so an interrupted and resumed study proposes the same trials as an uninterrupted one.
* Shared storages (several workers on one study): the sampler of trial number k is seeded with (study seed, k),
  k being allocated by the database, so two workers never draw with the same seed, and one worker alone
  proposes exactly the trials of a run on the private SQLite file. TPE's constant liar (Optuna's default)
  counts the trials other workers are running, so workers do not all explore the same region.
* Objective: mean inner-fold log loss (default; minimised) or mean inner-fold AUC (maximised). The
  preprocessing of each inner split is fitted once on its inner training part and reused by every trial.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling.config import FitConfig
from cdeg.modeling.models import TabularClassifier, estimator_proba, fit_estimator

log = logging.getLogger(__name__)

#: Heartbeat of trials in a shared storage: a trial whose worker died is failed after the grace period.
HEARTBEAT_S = 20
GRACE_S = 120
#: Attempts at creating Optuna's tables when workers start together (their CREATE TABLEs can collide).
STORAGE_ATTEMPTS = 5
#: Database drivers cdeg suggests when SQLAlchemy cannot load one.
DRIVER_HINTS = {
    "postgresql": "'psycopg[binary]' (SQLAlchemy's default PostgreSQL driver; psycopg2-binary needs a "
    "postgresql+psycopg2:// URL)",
    "mysql": "PyMySQL (and a mysql+pymysql:// URL)",
}


def suggest(trial: Any, kind: str, cfg: FitConfig) -> dict[str, Any]:
    """Hyperparameters of one trial from the configured search space."""
    if kind == "xgboost":
        s = cfg.xgboost
        return {
            "max_depth": trial.suggest_int("max_depth", *s.max_depth),
            "n_estimators": trial.suggest_int("n_estimators", *s.n_estimators, step=_step(s.n_estimators)),
            "learning_rate": trial.suggest_float("learning_rate", *s.learning_rate, log=True),
            "subsample": trial.suggest_float("subsample", *s.subsample),
            "colsample_bytree": trial.suggest_float("colsample_bytree", *s.colsample_bytree),
            "min_child_weight": trial.suggest_float(
                "min_child_weight", *s.min_child_weight, log=s.min_child_weight[0] > 0
            ),
            "reg_lambda": trial.suggest_float("reg_lambda", *s.reg_lambda, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", *s.reg_alpha, log=True),
        }
    if kind == "logistic":
        s = cfg.logistic
        return {
            "C": trial.suggest_float("C", *s.C, log=True),
            "l1_ratio": trial.suggest_float("l1_ratio", *s.l1_ratio),
            "max_iter": s.max_iter,
        }
    raise ValueError(f"model {kind!r} is not tuned")


def _step(bounds: tuple[int, int]) -> int:
    # Trees in steps of 10 (or 1 for tiny ranges): neighbouring counts differ by noise only.
    lo, hi = bounds
    return 10 if (hi - lo) >= 20 and (hi - lo) % 10 == 0 else 1


def fixed_params(kind: str, cfg: FitConfig) -> dict[str, Any]:
    """Hyperparameters of the untuned reference model."""
    if kind == "clinical_only":
        return {"C": cfg.clinical_only.C, "max_iter": 1000}
    raise ValueError(f"model {kind!r} has no fixed hyperparameters")


def study_name(key: str, model: str, repeat: int | None, fold: int | None) -> str:
    """Deterministic study name (``repeat=None`` = the final model tuned on all patients)."""
    if repeat is None:
        return f"cdeg-{key}-{model}-final"
    return f"cdeg-{key}-{model}-r{repeat}-f{fold}"


def check_storage(url: str) -> str:
    """Check an Optuna storage URL before any work: its syntax and its database driver.

    Returns
    -------
    str
        The URL with any password masked, for logs and metrics.json.

    Raises
    ------
    ValueError
        Not a SQLAlchemy database URL.
    CdegError
        The driver for this database is not installed.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from cdeg.errors import CdegError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            f"--storage {url!r} is not a database URL; e.g. postgresql://user@host:5432/optuna"
        ) from None
    try:
        parsed.get_dialect().import_dbapi()  # the driver itself, not only SQLAlchemy's dialect
    except NoSuchModuleError:
        raise ValueError(
            f"--storage: unknown database kind {parsed.drivername!r}; e.g. postgresql://user@host:5432/optuna"
        ) from None
    except ImportError as e:
        hint = DRIVER_HINTS.get(parsed.get_backend_name(), "its SQLAlchemy driver")
        raise CdegError(
            f"--storage {parsed.get_backend_name()} needs a driver: pip install {hint} ({e})"
        ) from None
    return parsed.render_as_string(hide_password=True)


def make_storage(url: str, shared: bool) -> Any:
    """An Optuna RDB storage; shared storages get heartbeats so a dead worker's trial is retried.

    Workers that start together on an empty database all try to create Optuna's tables; the losers of that
    race get an error from the database and simply retry (the tables then exist), as Optuna's maintainers
    advise for concurrent first runs.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        engine_kwargs["creator"] = functools.partial(_sqlite_connect, url[len("sqlite:///") :])
    kwargs: dict[str, Any] = {}
    if shared:
        kwargs = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    for attempt in range(STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # heartbeat options are marked experimental
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except SQLAlchemyError as e:
            if not shared or attempt == STORAGE_ATTEMPTS - 1:
                raise
            log.debug(
                "creating Optuna's tables collided with another worker (%s); retrying", type(e).__name__
            )
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def trial_seeded_sampler(study_seed: int, n_startup_trials: int) -> Any:
    """A multivariate TPE sampler whose randomness for trial number k comes from (study seed, k).

    Optuna samplers hold one random state per process, so workers sharing a study would otherwise draw
    the same "random" start trials. Here a fresh TPE sampler is made for every trial, in the ``before_trial``
    hook, once the database has given the trial its number.
    """
    import optuna

    def make(seed: int) -> Any:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True)

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._tpe = make(study_seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._tpe = make(int(np.random.SeedSequence([study_seed, trial.number]).generate_state(1)[0]))
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self._tpe.sample_independent(study, trial, name, distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._tpe.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._tpe.reseed_rng()

    return TrialSeededTPE()


def _sqlite_connect(path: str) -> Any:
    """A SQLite connection for Optuna: waits for locks held by other workers; WAL journal, fsync at checkpoints.

    Optuna commits ~12 times per trial; with SQLite's default full sync each commit is an fsync, which costs
    more than a logistic-regression trial. WAL with synchronous=NORMAL keeps the database consistent after a
    crash of the process (at worst the last trials are lost, and a re-run redoes them).
    """
    import sqlite3

    con = sqlite3.connect(path, timeout=120, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


@dataclass
class TuneResult:
    """Outcome of one study."""

    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    new_trials: int
    seconds: float


def inner_cache(
    kind: str, X: pd.DataFrame, y: np.ndarray, cfg: FitConfig, seed: int
) -> list[tuple[Any, ...]]:
    """Preprocessed inner splits (fitted on each inner training part), reused by every trial."""
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=cfg.inner_folds, shuffle=True, random_state=seed % (2**32))
    out = []
    for tr, va in skf.split(np.zeros(len(y)), y):
        prep = TabularClassifier(kind, preprocess=cfg.preprocess)._preprocessor()
        Ztr = prep.fit_transform(X.iloc[tr], y[tr])
        out.append((Ztr, y[tr], prep.transform(X.iloc[va]), y[va]))
    return out


def make_objective(kind: str, cache: list[tuple[Any, ...]], cfg: FitConfig) -> Callable[[Any], float]:
    """The Optuna objective: mean inner-fold log loss (or AUC) of one hyperparameter set."""
    from sklearn.metrics import log_loss, roc_auc_score

    dmatrices = _dmatrices(cache) if kind == "xgboost" else None

    def objective(trial: Any) -> float:
        params = suggest(trial, kind, cfg)
        scores = []
        for k, (Ztr, ytr, Zva, yva) in enumerate(cache):
            if dmatrices is not None:
                p = _xgb_fit_predict(params, cfg.seed, *dmatrices[k])
            else:
                p = estimator_proba(fit_estimator(kind, params, cfg.seed, Ztr, ytr), Zva)
            if cfg.objective == "auc":
                scores.append(roc_auc_score(yva, p))
            else:
                scores.append(log_loss(yva, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
        return float(np.mean(scores))

    return objective


def _dmatrices(cache: list[tuple[Any, ...]]) -> list[tuple[Any, Any]]:
    # Building the DMatrix (and its quantile sketch) once per inner split instead of once per trial and
    # split saves about a fifth of the tuning time with ~1,000 variables.
    import xgboost as xgb

    return [
        (
            xgb.DMatrix(Ztr.to_numpy(dtype=float), label=ytr, nthread=1),
            xgb.DMatrix(Zva.to_numpy(dtype=float), nthread=1),
        )
        for Ztr, ytr, Zva, _ in cache
    ]


def _xgb_fit_predict(params: dict[str, Any], seed: int, dtrain: Any, dvalid: Any) -> np.ndarray:
    """The same model as :func:`cdeg.modeling.models.make_estimator` ("xgboost"), through the native API."""
    import xgboost as xgb

    native = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "nthread": 1,
        "seed": seed,
        "max_depth": params["max_depth"],
        "eta": params["learning_rate"],
        "subsample": params["subsample"],
        "colsample_bytree": params["colsample_bytree"],
        "min_child_weight": params["min_child_weight"],
        "lambda": params["reg_lambda"],
        "alpha": params["reg_alpha"],
    }
    booster = xgb.train(native, dtrain, num_boost_round=params["n_estimators"])
    return np.asarray(booster.predict(dvalid), dtype=float)


def tune(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: FitConfig,
    name: str,
    storage_url: str,
    seed: int,
    shared: bool = False,
    attrs: dict[str, Any] | None = None,
) -> TuneResult:
    """Run (or resume) the study `name` until it holds ``cfg.trials`` completed trials; return its best.

    Parameters
    ----------
    shared : bool
        The storage may be used by other workers at the same time (``--storage``): running trials of others
        count towards the total and are waited for. With the run's own SQLite file, a trial left running by an
        interrupted run is marked failed and redone.
    """
    import optuna

    t0 = time.perf_counter()
    storage = make_storage(storage_url, shared)
    direction = "maximize" if cfg.objective == "auc" else "minimize"
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise; we log per study
    try:
        study = _open_study(storage, name, direction, attrs, shared)
        new = _run_trials(study, kind, X, y, cfg, seed, shared)
        # Other workers may still be running trials of this study: wait for them (dead ones fail after GRACE_S).
        while shared and _count(study, "RUNNING"):
            time.sleep(0.5)
            optuna.storages.fail_stale_trials(study)
        # The first `trials` completed trials: a study run longer before gives the same answer as a fresh one.
        complete = sorted(_trials(study, "COMPLETE"), key=lambda t: t.number)[: cfg.trials]
        if not complete:
            raise RuntimeError(f"study {name} has no completed trial")
        best = min(complete, key=lambda t: (t.value if direction == "minimize" else -t.value, t.number))
        params = dict(best.params)
        if kind == "logistic":
            params["max_iter"] = cfg.logistic.max_iter
        return TuneResult(params, float(best.value), len(complete), new, time.perf_counter() - t0)
    finally:
        optuna.logging.set_verbosity(previous)
        if hasattr(storage, "engine"):
            storage.engine.dispose()


def _trials(study: Any, state: str) -> list[Any]:
    """The trials of `study` in `state` ("COMPLETE", "RUNNING", ...), not copied."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState[state],))


def _count(study: Any, state: str) -> int:
    return len(_trials(study, state))


def _open_study(storage: Any, name: str, direction: str, attrs: dict[str, Any] | None, shared: bool) -> Any:
    """Create or load the study `name`; with the run's own storage, trials left running are marked failed."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {name} exists with direction {study.direction.name.lower()}, not {direction}"
        )
    if attrs and "cdeg" not in study.user_attrs:
        study.set_user_attr("cdeg", attrs)
    if not shared:
        for t in _trials(study, "RUNNING"):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
    return study


def _run_trials(
    study: Any, kind: str, X: pd.DataFrame, y: np.ndarray, cfg: FitConfig, seed: int, shared: bool
) -> int:
    """Run trials one at a time until the study holds ``cfg.trials`` (completed or running); return how many."""
    import optuna

    cache = None
    new = 0
    while True:
        if shared:
            optuna.storages.fail_stale_trials(study)
        done = _count(study, "COMPLETE")
        if done + _count(study, "RUNNING") >= cfg.trials:
            return new
        if cache is None:
            cache = inner_cache(kind, X, y, cfg, seed)
            objective = make_objective(kind, cache, cfg)
        if shared:
            study.sampler = trial_seeded_sampler(seed, cfg.startup_trials)
        else:
            study.sampler = optuna.samplers.TPESampler(
                seed=int(np.random.SeedSequence([seed, done]).generate_state(1)[0]),
                n_startup_trials=cfg.startup_trials,
                multivariate=True,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=1)
        new += 1
