"""Comparing models on the same cross-validation folds, bootstrap intervals for calibration, permutation tests.

Corrected resampled t-test
--------------------------
Over J = repeats x folds test folds, d_j is a performance measure of one model minus the same measure of the
reference on test fold j. The folds share most of their training patients, so the d_j are positively
correlated and the plain paired t-test (variance s^2 / J) is far too liberal. Nadeau & Bengio (2003,
"Inference for the generalization error", Machine Learning 52:239-281) correct the variance of the mean to
(1/J + n_test/n_train) * s^2; Bouckaert & Frank (2004, "Evaluating the replicability of significance tests
for comparing learning algorithms", PAKDD, LNCS 3056:3-12) apply it to r x repeated k-fold CV, with t on
J - 1 degrees of freedom:

    t = mean(d) / sqrt((1/J + n_test/n_train) * s^2),   s^2 = sum (d_j - mean(d))^2 / (J - 1).

(Formula as in the scikit-learn example "Statistical comparison of models using grid search",
https://scikit-learn.org/stable/auto_examples/model_selection/plot_grid_search_stats.html, and the R package
correctR, ``repkfold_ttest``, https://search.r-project.org/CRAN/refmans/correctR/html/repkfold_ttest.html.)
A fold whose test part holds one class only has no AUC; it is left out and counted.

DeLong on pooled out-of-fold predictions
----------------------------------------
Within one repeat every patient has exactly one out-of-fold prediction, so the paired DeLong test applies to
the pooled predictions of that repeat; repeats are combined as :func:`cdeg.modeling.metrics.compare_repeats`
does (mean difference, square root of the mean variance). It answers a slightly different question (the
fold-to-fold variation of the models is not in it), which is why both are reported.

Bootstrap of Brier score and calibration
----------------------------------------
Patients are resampled with replacement; in each replicate the measure is computed per repeat on the same
resampled patients and averaged over repeats, exactly as :func:`cdeg.modeling.metrics.summarize_repeats`
computes the point estimate. We do not average each patient's predictions over repeats first: that average
is an ensemble of the fold models, smoother than any one model, and its calibration slope would describe a
model nobody fitted. Percentile intervals; replicates with one class only are left out and counted.

Permutation test
----------------
The outcome labels are shuffled ``n`` times and the whole cross-validation rerun; p = (1 + #{null >= observed})
/ (1 + n) (Phipson & Smyth 2010, "Permutation p-values should never be zero", Stat Appl Genet Mol Biol 9:39),
the rule of scikit-learn's ``permutation_test_score``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import metrics as M
from scipy import stats

from cdeg.progress import ProgressArg, track

TTEST_METHOD = "corrected resampled t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004)"
DELONG_METHOD = "paired DeLong per repeat on pooled out-of-fold predictions; mean difference, mean variance"
BOOTSTRAP_METHOD = "patient bootstrap, measure per repeat then averaged, percentile interval"


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(M.delong(y, p)[0][0])


#: Per-fold performance measures: name -> (function of y and p, whether it needs both classes).
FOLD_METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    "auc": (_auc, True),
    "brier": (M.brier, False),
}


@dataclass(frozen=True)
class FoldDifferences:
    """Per-test-fold differences (model minus reference) and the fold sizes the correction needs.

    Attributes
    ----------
    differences : ndarray, shape (J,)
        One value per usable (repeat, fold), in (repeat, fold) order.
    n_train, n_test : float
        Mean number of training and test patients per fold.
    skipped : int
        Folds left out because the measure is undefined there (AUC of a single-class test fold).
    """

    differences: np.ndarray
    n_train: float
    n_test: float
    skipped: int


def fold_differences(
    oof: pd.DataFrame, model: str, reference: str, metric: str = "auc", y_col: str = "target"
) -> FoldDifferences:
    """The per-(repeat, fold) differences of `metric` between two probability columns of `oof`.

    Parameters
    ----------
    oof : DataFrame
        Out-of-fold predictions, one row per (repeat, patient), with columns `y_col`, ``repeat``, ``fold``,
        `model` and `reference` (see :class:`cdeg.modeling.nested_cv.CVResult`).
    model, reference : str
        Probability columns; the difference is ``metric(model) - metric(reference)``.
    metric : {"auc", "brier"}
    y_col : str
        The 0/1 outcome column.
    """
    if metric not in FOLD_METRICS:
        raise ValueError(f"metric {metric!r}: valid are {', '.join(FOLD_METRICS)}")
    missing = [c for c in (y_col, "repeat", "fold", model, reference) if c not in oof.columns]
    if missing:
        raise ValueError(f"out-of-fold table lacks column(s) {missing}")
    fn, needs_both = FOLD_METRICS[metric]
    diffs, n_train, n_test, skipped = [], [], [], 0
    for _, rep in oof.groupby("repeat", sort=True):
        for _, part in rep.groupby("fold", sort=True):
            n_test.append(len(part))
            n_train.append(len(rep) - len(part))
            y = part[y_col].to_numpy().astype(int)
            if needs_both and y.min() == y.max():
                skipped += 1
                continue
            diffs.append(fn(y, part[model].to_numpy()) - fn(y, part[reference].to_numpy()))
    return FoldDifferences(np.asarray(diffs, float), float(np.mean(n_train)), float(np.mean(n_test)), skipped)


def corrected_ttest(
    differences: Sequence[float] | np.ndarray, n_train: float, n_test: float, level: float = 0.95
) -> dict[str, Any]:
    """Corrected resampled t-test of the mean of per-fold differences (formula in the module docstring).

    Parameters
    ----------
    differences : array, shape (J,)
        Per test fold: measure of the model minus measure of the reference.
    n_train, n_test : float
        Training and test patients per fold (means, if the folds differ by one patient).
    level : float
        Confidence level of the interval.

    Returns
    -------
    dict
        ``difference`` (mean), ``se`` (corrected), ``se_naive`` (sqrt(s^2 / J), for comparison), ``t``,
        ``df`` (J - 1), ``p_value`` (two-sided), ``ci`` [lo, hi] (t quantile on J - 1 df), ``n_folds`` (J).
        With J < 2 the statistics are None. Identical models (all differences 0) give t = 0, p = 1; the same
        nonzero difference in every fold gives t = None (infinite) and p = 0.
    """
    d = np.asarray(differences, float)
    J = len(d)
    out: dict[str, Any] = {"difference": float(d.mean()) if J else None, "n_folds": J}
    if J < 2:
        return {**out, "se": None, "se_naive": None, "t": None, "df": None, "p_value": None, "ci": None}
    mean = float(d.mean())
    var = float(d.var(ddof=1))
    se = float(np.sqrt((1.0 / J + n_test / n_train) * var))
    se_naive = float(np.sqrt(var / J))
    df = J - 1
    if se > 0:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), df))
    else:  # every fold gave the same difference: no spread to test against
        t = 0.0 if mean == 0 else None  # infinite t: None keeps the result valid JSON
        p = 1.0 if mean == 0 else 0.0
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return {
        **out,
        "se": se,
        "se_naive": se_naive,
        "t": t,
        "df": df,
        "p_value": p,
        "ci": [mean - half, mean + half],
    }


def cv_ttest(
    oof: pd.DataFrame,
    model: str,
    reference: str,
    metric: str = "auc",
    y_col: str = "target",
    level: float = 0.95,
) -> dict[str, Any]:
    """Corrected resampled t-test of `model` minus `reference` on the test folds of `oof`.

    Returns the dict of :func:`corrected_ttest` plus ``skipped_folds``, ``n_train``, ``n_test`` and
    ``method``.
    """
    fd = fold_differences(oof, model, reference, metric, y_col)
    res = corrected_ttest(fd.differences, fd.n_train, fd.n_test, level)
    return {
        **res,
        "skipped_folds": fd.skipped,
        "n_train": fd.n_train,
        "n_test": fd.n_test,
        "method": TTEST_METHOD,
    }


def repeat_predictions(
    oof: pd.DataFrame, model: str, y_col: str = "target", id_col: str | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The outcome and one prediction vector per repeat, patients in the same order in every repeat.

    With `id_col` each repeat is sorted by it; without, the rows of each repeat are taken in table order
    (as :func:`cdeg.modeling.nested_cv.run` writes them) and the outcome must agree across repeats.
    """
    ys, P = [], []
    for _, rep in oof.groupby("repeat", sort=True):
        if id_col is not None:
            rep = rep.sort_values(id_col, kind="stable")
        ys.append(rep[y_col].to_numpy().astype(int))
        P.append(rep[model].to_numpy().astype(float))
    if any(len(y) != len(ys[0]) or not np.array_equal(y, ys[0]) for y in ys):
        raise ValueError("repeats hold different patients or orders; pass id_col to align them")
    return ys[0], P


def compare_models(
    oof: pd.DataFrame,
    y_col: str,
    models: Sequence[str],
    reference: str,
    metrics: Sequence[str] = ("auc", "brier"),
    id_col: str | None = None,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Each model against `reference` on every measure: corrected t-test, and for AUC the DeLong test too.

    Parameters
    ----------
    oof : DataFrame
        Out-of-fold predictions (columns `y_col`, ``repeat``, ``fold`` and one per model).
    y_col : str
        The 0/1 outcome column.
    models : list of str
        Probability columns compared with `reference` (`reference` itself is skipped if listed).
    reference : str
        The probability column every model is compared with (e.g. the clinical-only model).
    metrics : sequence of {"auc", "brier"}
    id_col : str, optional
        Patient id column, used to align repeats for DeLong (see :func:`repeat_predictions`).
    level : float
        Confidence level of the intervals.

    Returns
    -------
    list of dict
        One JSON-ready dict per (model, metric): ``model``, ``reference``, ``metric``, ``difference`` (model
        minus reference: positive is better for AUC, negative is better for Brier), ``ci``, ``p_value``,
        ``se``, ``se_naive``, ``t``, ``df``, ``n_folds``, ``skipped_folds``, ``method``, and
        ``delong_difference``, ``delong_ci``, ``delong_p_value``, ``delong_method`` (None for Brier).
    """
    bad = [m for m in metrics if m not in FOLD_METRICS]
    if bad:
        raise ValueError(f"metrics {bad}: valid are {', '.join(FOLD_METRICS)}")
    rows = []
    y, P_ref = repeat_predictions(oof, reference, y_col, id_col) if "auc" in metrics else (None, None)
    for model in [m for m in models if m != reference]:
        for metric in metrics:
            tt = cv_ttest(oof, model, reference, metric, y_col, level)
            row: dict[str, Any] = {"model": model, "reference": reference, "metric": metric, **tt}
            row.update(delong_difference=None, delong_ci=None, delong_p_value=None, delong_method=None)
            if metric == "auc":
                _, P = repeat_predictions(oof, model, y_col, id_col)
                dl = M.compare_repeats(y, P, P_ref, level)
                row.update(
                    delong_difference=dl["auc_difference"],
                    delong_ci=[float(v) for v in dl["ci"]],
                    delong_p_value=dl["p_value"],
                    delong_method=DELONG_METHOD,
                )
            rows.append(row)
    return rows


def bootstrap_calibration(
    y: np.ndarray,
    P: Sequence[np.ndarray] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Patient-level bootstrap percentile intervals of Brier score, calibration intercept and slope.

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    P : array (n,) or sequence of arrays (n,)
        One prediction vector per repeat (patients in the same order as `y`).
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the resampling.
    level : float
        Confidence level.

    Returns
    -------
    dict
        ``brier``, ``calibration_intercept``, ``calibration_slope``: each ``{"estimate": float, "ci": [lo,
        hi] or None if every replicate failed}`` (estimate on all patients, averaged over repeats, as in
        ``summarize_repeats``); ``n_boot``,
        ``n_failed`` (single-class replicates left out), ``seed``, ``level``, ``method``.
    """
    y = np.asarray(y).astype(int)
    P = np.atleast_2d(np.asarray(P, float))
    if P.shape[1] != len(y):
        raise ValueError(f"predictions have {P.shape[1]} patients, outcome {len(y)}")
    if n_boot < 1:
        raise ValueError(f"n_boot {n_boot}: must be at least 1")
    names = ("brier", "calibration_intercept", "calibration_slope")
    estimate = _brier_calibration(y, P)
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        reps.append(_brier_calibration(y[idx], P[:, idx]))
    R = np.asarray(reps).reshape(-1, len(names))
    alpha = (1 - level) / 2
    out: dict[str, Any] = {}
    for k, name in enumerate(names):
        ci = [float(v) for v in np.quantile(R[:, k], [alpha, 1 - alpha])] if len(R) else None
        out[name] = {"estimate": float(estimate[k]), "ci": ci}
    return {
        **out,
        "n_boot": n_boot,
        "n_failed": n_boot - len(R),
        "seed": seed,
        "level": level,
        "method": BOOTSTRAP_METHOD,
    }


def _brier_calibration(y: np.ndarray, P: np.ndarray) -> tuple[float, float, float]:
    """Brier score, calibration intercept and slope, each averaged over the rows (repeats) of `P`."""
    per = np.array([(M.brier(y, p), *M.calibration(y, p)) for p in P])
    return tuple(per.mean(axis=0))  # type: ignore[return-value]


def bootstrap_oof(
    oof: pd.DataFrame,
    model: str,
    y_col: str = "target",
    id_col: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """:func:`bootstrap_calibration` of one probability column of an out-of-fold table."""
    y, P = repeat_predictions(oof, model, y_col, id_col)
    return bootstrap_calibration(y, P, n_boot, seed, level)


def permutation_test(
    score_fn: Callable[[np.ndarray], float],
    y: np.ndarray,
    n_permutations: int = 1000,
    seed: int = 0,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Label-permutation test of a cross-validated score.

    Parameters
    ----------
    score_fn : callable
        ``score_fn(y)`` runs the whole cross-validation with outcome `y` and returns its AUC (larger is
        better); e.g. ``lambda yy: cheap_cv_auc(X, yy, make_model)``.
    y : array, shape (n,)
        The observed outcome.
    n_permutations : int
        Shuffles; the smallest possible p is 1 / (1 + n_permutations).
    seed : int
        Seed of the shuffles.
    progress : bool or callable, optional
        Reported as task ``"permutation test"`` (see :mod:`cdeg.progress`).

    Returns
    -------
    dict
        ``observed``, ``null`` (list of the permuted scores), ``p_value`` = (1 + #{null >= observed}) /
        (1 + n_permutations), ``n_permutations``, ``seed``.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations {n_permutations}: must be at least 1")
    y = np.asarray(y)
    observed = float(score_fn(y))
    rng = np.random.default_rng(seed)
    null = [
        float(score_fn(rng.permutation(y)))
        for _ in track(range(n_permutations), progress, "permutation test")
    ]
    return {
        "observed": observed,
        "null": null,
        "p_value": permutation_p(observed, null),
        "n_permutations": n_permutations,
        "seed": seed,
    }


def permutation_p(observed: float, null: Sequence[float]) -> float:
    """(1 + #{null >= observed}) / (1 + len(null)): never zero (Phipson & Smyth 2010, module docstring)."""
    return float((1 + sum(v >= observed for v in null)) / (1 + len(null)))


def cheap_cv_auc(
    X: pd.DataFrame | np.ndarray, y: np.ndarray, make_model: Callable[[], Any], folds: int = 5, seed: int = 0
) -> float:
    """Pooled out-of-fold AUC of one stratified K-fold with a fixed classifier (no tuning).

    Parameters
    ----------
    X : DataFrame or array, shape (n, p)
    y : array of 0/1, shape (n,)
    make_model : callable
        Returns a fresh unfitted scikit-learn-like classifier (``fit``, ``predict_proba``); called once per
        fold so that nothing learnt on one fold reaches another.
    folds : int
        Number of folds.
    seed : int
        Seed of the fold assignment.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y).astype(int)
    rows = (lambda i: X.iloc[i]) if isinstance(X, pd.DataFrame) else (lambda i: np.asarray(X)[i])
    pred = np.empty(len(y))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y):
        clf = make_model().fit(rows(tr), y[tr])
        pred[te] = clf.predict_proba(rows(te))[:, 1]
    return _auc(y, pred)
