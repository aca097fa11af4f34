"""Nested cross-validation: outer repeated stratified K-fold for the estimate, inner K-fold (Optuna) for the tuning.

Every (model, repeat, outer fold) is one task: tune on the outer training part only (its own Optuna study, its
own inner folds, preprocessing refitted inside each inner training part), refit preprocessing + model with the
best hyperparameters on the whole outer training part, predict the outer test part (and, for the primary model,
explain it: the SHAP values of its test patients, so that each cross-validated risk has the explanation of the
model that gave it). One more task per tuned
model tunes on all patients for the final model. Tasks are independent and seeded, so running them in
``jobs`` worker processes gives the same numbers as running them one by one.

Out-of-fold predictions are kept per repeat: each repeat gives every patient exactly one prediction from a
model that never saw them. Metrics are computed per repeat and combined (see :mod:`cdeg.modeling.metrics`);
plots show the per-patient mean over repeats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling.config import MODELS, TIERS, TUNED_MODELS, FitConfig, split_arm
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.tuning import fixed_params, study_name, tune

from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

#: Column of a task's SHAP table holding the row position in X (replaced by the patient id in :func:`nested_cv`).
ROW = "row"


@dataclass(frozen=True)
class Task:
    """One unit of work: tune (if the model is tuned), then fit on `train` and predict `test`."""

    model: str
    repeat: int | None
    fold: int | None
    train: np.ndarray
    test: np.ndarray | None
    columns: tuple[str, ...]
    #: Outcome to use instead of the real one (a label-permutation task), with its own study tag and trials.
    labels: np.ndarray | None = None
    tag: str | None = None
    trials: int | None = None
    #: Also return the SHAP values of the test rows (the primary model's outer folds).
    explain: bool = False

    @property
    def is_final(self) -> bool:
        return self.repeat is None


@dataclass
class TaskResult:
    """What a task returns to the main process."""

    model: str
    repeat: int | None
    fold: int | None
    test: np.ndarray | None
    proba: np.ndarray | None
    params: dict[str, Any]
    best_value: float | None
    n_trials: int
    new_trials: int
    seconds: float
    study: str | None
    #: :func:`cdeg.modeling.explain.shap_table` of the test rows (``row`` = position in X), when explained.
    shap: pd.DataFrame | None = None


@dataclass
class CVResult:
    """Nested-CV outcome.

    Attributes
    ----------
    oof : DataFrame
        One row per (repeat, patient): id, target, repeat, fold, then one probability column per model.
    tuning : list of dict
        Per task: model, repeat, fold, study, best inner score, hyperparameters, trials, seconds.
    final_params : dict
        Model -> hyperparameters tuned on all patients.
    shap : DataFrame or None
        SHAP values of the primary model's outer-fold models on their test patients
        (:func:`cdeg.modeling.explain.shap_table`, all repeats); None when the primary model was not run.
    """

    oof: pd.DataFrame
    tuning: list[dict[str, Any]]
    final_params: dict[str, dict[str, Any]]
    seconds: float
    new_trials: int = 0
    models: list[str] = field(default_factory=list)
    shap: pd.DataFrame | None = None

    @property
    def main_models(self) -> list[str]:
        """The models (final fits, predictions): every arm that is not a feature tier."""
        return [m for m in self.models if split_arm(m)[1] is None]

    @property
    def tier_arms(self) -> list[str]:
        """The feature-tier arms (cross-validated only)."""
        return [m for m in self.models if split_arm(m)[1] is not None]


def task_seed(cfg: FitConfig, model: str, repeat: int | None, fold: int | None) -> int:
    """Seed of a task's study and inner folds, stable across runs and independent of task order.

    `model` is an arm: a model of MODELS, or a tier arm (``xgboost@radiomics``) whose seed differs from its
    model's by one more entropy word (so the plain models keep the seeds, and studies, they always had).
    """
    kind, tier = split_arm(model)
    r = 0 if repeat is None else repeat + 1
    f = 0 if fold is None else fold + 1
    words = [cfg.seed, MODELS.index(kind), r, f] + ([] if tier is None else [TIERS.index(tier) + 1])
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def make_tasks(y: np.ndarray, cfg: FitConfig, columns: dict[str, list[str]]) -> list[Task]:
    """All tasks: every arm x repeat x outer fold, plus the final tuning of each tuned model (not of the tier
    arms, which are cross-validated only). Every arm gets the same outer splits."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    rskf = RepeatedStratifiedKFold(n_splits=cfg.outer_folds, n_repeats=cfg.repeats, random_state=cfg.seed)
    splits = list(rskf.split(np.zeros(len(y)), y))
    everyone = np.arange(len(y))
    tasks = []
    for model in columns:
        cols = tuple(columns[model])
        kind, tier = split_arm(model)
        if kind in TUNED_MODELS and tier is None:
            tasks.append(Task(model, None, None, everyone, None, cols))
        explain = model == cfg.primary_model  # TreeSHAP of a small model on ~1/K of the patients: cheap
        for i, (tr, te) in enumerate(splits):
            tasks.append(
                Task(model, i // cfg.outer_folds, i % cfg.outer_folds, tr, te, cols, explain=explain)
            )
    return tasks


def run_task(
    task: Task, X: pd.DataFrame, y: np.ndarray, cfg: FitConfig, storage: str, key: str, shared: bool
) -> TaskResult:
    """Tune (tuned models), refit on the task's training rows and predict its test rows."""
    t0 = time.perf_counter()
    kind = split_arm(task.model)[0]
    if task.labels is not None:
        y = task.labels
    if task.trials is not None:
        cfg = replace(cfg, trials=task.trials)
    Xtr = X.iloc[task.train][list(task.columns)]
    ytr = y[task.train]
    name = None
    best_value = None
    n_trials = new = 0
    if kind in TUNED_MODELS:
        name = study_name(
            key if task.tag is None else f"{key}-{task.tag}", task.model, task.repeat, task.fold
        )
        res = tune(
            kind,
            Xtr,
            ytr,
            cfg,
            name,
            storage,
            task_seed(cfg, task.model, task.repeat, task.fold),
            shared=shared,
            attrs={"model": task.model, "repeat": task.repeat, "fold": task.fold, "key": key},
        )
        params, best_value, n_trials, new = res.best_params, res.best_value, res.n_trials, res.new_trials
    else:
        params = fixed_params(kind, cfg)
    proba = shap = None
    if not task.is_final:
        clf = TabularClassifier(kind, params=params, preprocess=cfg.preprocess, random_state=cfg.seed)
        clf.fit(Xtr, ytr)
        Xte = X.iloc[task.test][list(task.columns)]
        proba = clf.predict_proba(Xte)[:, 1]
        if task.explain:
            shap = _explain_fold(clf, Xtr, Xte, task)
    return TaskResult(
        task.model,
        task.repeat,
        task.fold,
        task.test,
        proba,
        params,
        best_value,
        n_trials,
        new,
        time.perf_counter() - t0,
        name,
        shap,
    )


def _explain_fold(clf: TabularClassifier, Xtr: pd.DataFrame, Xte: pd.DataFrame, task: Task) -> pd.DataFrame:
    """SHAP values of an outer-fold model on its test rows, with the mean risk of its training rows."""
    from cdeg.modeling.explain import shap_table, shap_values

    mean_risk = float(np.mean(clf.predict_proba(Xtr)[:, 1]))
    sr = shap_values(clf, Xte, mean_risk=mean_risk)
    return shap_table(sr, list(task.test), int(task.repeat or 0), int(task.fold or 0), ROW)


# --- worker processes -----------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(
    X: pd.DataFrame, y: np.ndarray, cfg: FitConfig, storage: str, key: str, shared: bool
) -> None:
    from threadpoolctl import threadpool_limits

    # One BLAS/OpenMP thread per worker: `jobs` processes already use the cores.
    _WORKER.update(X=X, y=y, cfg=cfg, storage=storage, key=key, shared=shared, limits=threadpool_limits(1))


def _run_in_worker(task: Task) -> TaskResult:
    w = _WORKER
    return run_task(task, w["X"], w["y"], w["cfg"], w["storage"], w["key"], w["shared"])


def run_tasks(
    tasks: list[Task],
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: FitConfig,
    storage: str,
    key: str,
    shared: bool,
    jobs: int,
) -> Iterator[TaskResult]:
    """Run tasks in this process (jobs=1) or in `jobs` spawned worker processes; yield results as they finish."""
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield run_task(t, X, y, cfg, storage, key, shared)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: forking a process that has started OpenMP/BLAS threads can deadlock.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(X, y, cfg, storage, key, shared),
    ) as pool:
        futures = [pool.submit(_run_in_worker, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def nested_cv(
    X: pd.DataFrame,
    y: np.ndarray,
    ids: list[str],
    cfg: FitConfig,
    columns: dict[str, list[str]],
    storage: str,
    key: str,
    shared: bool = False,
    jobs: int = 1,
    progress: ProgressArg = None,
) -> CVResult:
    """Run every task and assemble out-of-fold predictions, tuning records and final hyperparameters.

    Parameters
    ----------
    columns : dict
        Arm -> input columns, in report order: the models of MODELS to fit, then any tier arms
        (:func:`cdeg.modeling.config.tier_arm`; cross-validated only, no final tuning).
    storage : str
        Optuna storage URL.
    key : str
        Run key used in study names (data + protocol hash).
    progress : bool or callable, optional
        Reported once per finished task as "nested CV" (:mod:`cdeg.progress`).
    """
    t0 = time.perf_counter()
    tasks = make_tasks(y, cfg, columns)
    models = list(columns)
    n = len(y)
    probs = {(m, r): np.full(n, np.nan) for m in models for r in range(cfg.repeats)}
    folds = {r: np.full(n, -1) for r in range(cfg.repeats)}
    tuning: list[dict[str, Any]] = []
    final: dict[str, dict[str, Any]] = {}
    shap: list[pd.DataFrame] = []
    new_trials = 0
    results = run_tasks(tasks, X, y, cfg, storage, key, shared, jobs)
    for res in track(results, progress, "nested CV", total=len(tasks)):
        new_trials += res.new_trials
        if res.repeat is None:
            final[res.model] = res.params
        else:
            probs[(res.model, res.repeat)][res.test] = res.proba
            folds[res.repeat][res.test] = res.fold
            if res.shap is not None:
                shap.append(res.shap)
        tuning.append(
            {
                "model": res.model,
                "repeat": res.repeat,
                "fold": res.fold,
                "study": res.study,
                "best_inner_score": res.best_value,
                "params": res.params,
                "trials": res.n_trials,
                "new_trials": res.new_trials,
                "seconds": round(res.seconds, 3),
            }
        )
        log.debug(
            "%s repeat %s fold %s: %.1f s, %d new trials",
            res.model,
            res.repeat,
            res.fold,
            res.seconds,
            res.new_trials,
        )
    for m in models:
        kind, tier = split_arm(m)
        if kind not in TUNED_MODELS and tier is None:
            final[m] = fixed_params(kind, cfg)
    rows = []
    for r in range(cfg.repeats):
        df = pd.DataFrame({cfg.id_column: ids, "target": y, "repeat": r, "fold": folds[r]})
        for m in models:
            df[m] = probs[(m, r)]
        rows.append(df)
    oof = pd.concat(rows, ignore_index=True)
    if oof[models].isna().any().any():
        raise RuntimeError("internal error: a patient has no out-of-fold prediction")
    tuning.sort(
        key=lambda d: (models.index(d["model"]), -1 if d["repeat"] is None else d["repeat"], d["fold"] or 0)
    )
    return CVResult(
        oof,
        tuning,
        final,
        time.perf_counter() - t0,
        new_trials,
        models,
        _shap_by_id(shap, ids, cfg.id_column),
    )


def _shap_by_id(tables: list[pd.DataFrame], ids: list[str], id_column: str) -> pd.DataFrame | None:
    """The tasks' SHAP tables in one, sorted by repeat, fold and patient, the row position replaced by the id."""
    if not tables:
        return None
    df = pd.concat(tables, ignore_index=True).sort_values(["repeat", "fold", ROW], kind="stable")
    df.insert(0, id_column, np.asarray(ids, dtype=object)[df.pop(ROW).to_numpy(dtype=int)])
    return df.reset_index(drop=True)


# --- label-permutation test -----------------------------------------------------------------------------------


def permutation_test(
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: FitConfig,
    arm: str,
    columns: list[str],
    storage: str,
    key: str,
    shared: bool = False,
    jobs: int = 1,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Label-permutation test of `arm`'s cross-validated AUC, the cheap version of the full protocol.

    Each of ``cfg.permutation.n`` shuffles of the outcome, and the real outcome, goes through one stratified
    K-fold (``cfg.outer_folds``) with the arm's tuning inside every training fold, but with
    ``cfg.permutation.trials`` Optuna trials per study instead of ``cfg.trials`` and no repeats: the observed
    AUC is this same cheap procedure on the real outcome, so observed and null are comparable (the headline
    AUC of the full protocol is reported beside it). p = (1 + #{null >= observed}) / (1 + n) (see
    :mod:`cdeg.modeling.compare`). Studies are stored like the others, so a rerun resumes.
    """
    from cdeg.modeling.compare import permutation_p
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    n, trials = cfg.permutation.n, cfg.permutation.trials
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 7919]))
    outcomes = [np.asarray(y)] + [rng.permutation(y) for _ in range(n)]
    tasks = []
    for k, yk in enumerate(outcomes):
        skf = StratifiedKFold(cfg.outer_folds, shuffle=True, random_state=cfg.seed)
        for f, (tr, te) in enumerate(skf.split(np.zeros(len(yk)), yk)):
            tag = "perm-observed" if k == 0 else f"perm{k}"
            tasks.append(Task(arm, k, f, tr, te, tuple(columns), labels=yk, tag=tag, trials=trials))
    pred = [np.full(len(y), np.nan) for _ in outcomes]
    t0 = time.perf_counter()
    results = run_tasks(tasks, X, y, cfg, storage, key, shared, jobs)
    for res in track(results, progress, "permutation test", total=len(tasks)):
        pred[res.repeat][res.test] = res.proba
    scores = [float(roc_auc_score(yk, p)) for yk, p in zip(outcomes, pred, strict=True)]
    observed, null = scores[0], scores[1:]
    return {
        "model": arm,
        "observed": observed,
        "null": null,
        "null_mean": float(np.mean(null)) if null else None,
        "p_value": permutation_p(observed, null),
        "n_permutations": n,
        "trials_per_study": trials,
        "outer_folds": cfg.outer_folds,
        "seconds": round(time.perf_counter() - t0, 2),
        "method": f"outcome shuffled {n} times; one stratified {cfg.outer_folds}-fold CV with {trials} Optuna "
        "trials per fold (the full protocol, cheapened); observed = the same procedure on the real outcome",
    }
