"""Performance measures: AUC with DeLong variance, Brier score, calibration intercept and slope, net benefit.

AUC confidence intervals
------------------------
*One set of predictions* (external validation, a baseline, a subgroup): DeLong's variance (DeLong, DeLong &
Clarke-Pearson 1988; fast algorithm of Sun & Xu 2014) and a Wald interval on the logit scale, back-transformed:
logit(A) +- z * sqrt(var) / (A (1 - A)) (delta method; as ``ciAUC(delong = TRUE, logit = TRUE)`` of the R
package ROCit, https://rdrr.io/cran/ROCit/man/ciAUC.rocit.html, and ``confIntAUC`` of biostatUZH after Altman,
Machin, Bryant & Gardner 2000, "Statistics with confidence", ch. 10). It stays inside (0, 1) and is asymmetric
near 1, where the plain interval overshoots and had to be clipped. An AUC of exactly 0 or 1 has no logit: its
interval is the point itself. ``scale="auc"`` gives the plain interval clipped to [0, 1] (pROC's rule).

*Cross-validated AUC* (:func:`summarize_repeats` with the folds). Over R repeats of the outer K-fold the
estimate is the mean of the J = R x K test-fold AUCs (each fold model scored on its own test patients). Its
interval (``auc_ci``) is the corrected resampled t interval of Nadeau & Bengio (2003, "Inference for the
generalization error", Machine Learning 52:239-281), which they derive for the generalization error of one
learning algorithm, in the repeated K-fold form of Bouckaert & Frank (2004, PAKDD, LNCS 3056:3-12) that
:mod:`cdeg.modeling.compare` already uses for differences between models (:func:`cv_auc_corrected_t`):

    mean(AUC_j) +- t_{J-1} * sqrt((1/J + n_test/n_train) * s^2),   s^2 = sample variance of the J fold AUCs.

Nadeau & Bengio derive it for a mean of per-example losses; the AUC of a test fold is not one, so taking the
fold AUCs as the per-split measures is our adaptation (the same one :mod:`cdeg.modeling.compare` makes for AUC
differences), and the coverage simulation below is its check. The term n_test/n_train is there because the
folds' training sets overlap: the spread of the fold AUCs alone (1/J) would treat them as independent. The spread of the fold AUCs also carries the instability of the
fitting (and tuning) from one training set to the next, which an interval built on one set of predictions
cannot see.

Two other intervals are kept beside it in metrics.json, for comparison:

* ``auc_ci_influence_curve`` (:func:`cv_auc_ic`): LeDell, Petersen & van der Laan (2015, "Computationally
  efficient confidence intervals for cross-validated area under the ROC curve estimates", Electron J Stat
  9:1583-1607), as in ``ci.cvAUC`` of their R package cvAUC (https://github.com/ledell/cvAUC, R/ci.cvAUC.R).
  Per repeat, each patient i in fold v has the influence-curve value

      IC_i = (n / n_pos) * (share of fold-v negatives scored below i - AUC_v)     if i is positive,
      IC_i = (n / n_neg) * (share of fold-v positives scored above i - AUC_v)     if i is negative,

  (ties count one half; n_pos, n_neg over the whole cohort), sigma^2 = mean over folds of the fold's mean
  IC_i^2, variance sigma^2 / n; over repeats, the mean cvAUC and the mean of the variances. It is fold-aware
  but, like every interval built on the spread of per-patient terms, sees only the sampling of the test
  patients, not the variation of the fitted models: the form of interval that Bates, Hastie & Tibshirani
  (2023, "Cross-validation: what does it estimate and how well does it do it?", JASA; R package nestedcv,
  https://github.com/stephenbates19/nestedcv) show to under-cover.
* ``auc_ci_delong_pooled``: DeLong on each repeat's pooled out-of-fold predictions (mean AUC, square root of
  the mean DeLong variance on the AUC scale, clipped), the interval cdeg reported before. It treats the K fold
  models as one fixed scorer.

How well each covers was measured, not assumed: ``benchmarks/bench_coverage.py`` draws 300 small cohorts from
the synthetic generator and counts how often each interval contains the true AUC (README, "Benchmarks
(measured)"; :data:`CV_AUC_CI_COVERAGE` is the sentence the reports quote). Bates, Hastie & Tibshirani's
nested-CV estimate needs K(K-1)/2 refits of the whole tuned pipeline per repetition and is not implemented.

Calibration
-----------
Calibration slope: b in logit P(y=1) = a + b * logit(p). Calibration intercept (calibration-in-the-large):
a in logit P(y=1) = a + logit(p), slope fixed at 1. Ideal: slope 1, intercept 0; slope < 1 means
predictions too extreme (overfitting).

Net benefit (decision curve, Vickers & Elkin 2006): NB(t) = TP/n - FP/n * t / (1 - t).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

_EPS = 1e-6


def _midrank(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more score vectors and their DeLong covariance matrix.

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    scores : array, shape (n,) or (m, n)

    Returns
    -------
    auc : ndarray, shape (m,)
    cov : ndarray, shape (m, m)
    """
    y = np.asarray(y).astype(int)
    S = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = S[:, y == 1], S[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m == 0 or n == 0:
        raise ValueError("AUC needs both classes")
    k = S.shape[0]
    tx = np.empty((k, m))
    ty = np.empty((k, n))
    tz = np.empty((k, m + n))
    for r in range(k):
        tx[r] = _midrank(pos[r])
        ty[r] = _midrank(neg[r])
        tz[r] = _midrank(np.concatenate([pos[r], neg[r]]))
    auc = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.atleast_2d(np.cov(v01)) if m > 1 else np.zeros((k, k))
    sy = np.atleast_2d(np.cov(v10)) if n > 1 else np.zeros((k, k))
    return auc, sx / m + sy / n


#: ``auc_ci_method`` of one set of predictions (external validation, baselines, subgroups).
AUC_CI_METHOD = "DeLong variance, Wald interval on the logit scale"
#: ``auc_ci_method`` of the cross-validated AUC (:func:`summarize_repeats` with folds).
CV_AUC_CI_METHOD = (
    "mean of the repeats x folds test-fold AUCs; corrected resampled t interval "
    "(Nadeau & Bengio 2003; Bouckaert & Frank 2004)"
)
#: Method of ``auc_ci_influence_curve``, kept beside it for comparison.
IC_METHOD = "cvAUC influence curve (LeDell, Petersen & van der Laan 2015), mean variance over repeats"
#: Method of ``auc_ci_delong_pooled``, the earlier interval, kept beside it for comparison.
POOLED_DELONG_METHOD = "DeLong per repeat on the pooled out-of-fold predictions; mean AUC, mean variance"
#: What the coverage simulation (benchmarks/bench_coverage.py, benchmarks/results/coverage.json) measured for
#: the cross-validated AUC intervals; the reports quote it beside the interval.
CV_AUC_CI_COVERAGE = (
    "In simulation on the synthetic generator (300 cohorts of 109 surgical patients, logistic regression "
    "without tuning, 5-fold cross-validation repeated twice), this interval contained the true AUC of the model refitted "
    "on all patients in 95.3% of cohorts (95% CI 92.3-97.4%); the influence-curve interval in 90.3% and the "
    "pooled DeLong interval used before in 91.7%: both too narrow. Not measured with tuned XGBoost."
)


def logit_interval(a: float, var: float, z: float) -> tuple[float, float]:
    """Wald interval of logit(a) with the delta-method SE sqrt(var) / (a (1 - a)), back-transformed.

    Parameters
    ----------
    a : float
        An AUC (or any proportion-like estimate).
    var : float
        Its variance on its own scale.
    z : float
        Normal quantile (1.96 for 95%).
    """
    if not 0.0 < a < 1.0 or var <= 0.0:
        return a, a  # no logit at 0 or 1; no spread without variance
    centre = np.log(a / (1.0 - a))
    half = z * np.sqrt(var) / (a * (1.0 - a))
    return float(1.0 / (1.0 + np.exp(-(centre - half)))), float(1.0 / (1.0 + np.exp(-(centre + half))))


def auc_ci(
    y: np.ndarray, p: np.ndarray, level: float = 0.95, scale: str = "logit"
) -> tuple[float, float, float, float]:
    """AUC, its DeLong 95% CI (lo, hi) and the DeLong variance.

    Parameters
    ----------
    y : array of 0/1
    p : array
        Scores (higher = more likely 1).
    level : float
        Confidence level.
    scale : {"logit", "auc"}
        "logit": Wald interval of logit(AUC), back-transformed, inside (0, 1) (module docstring);
        "auc": Wald interval on the AUC scale clipped to [0, 1].
    """
    if scale not in ("logit", "auc"):
        raise ValueError(f"scale {scale!r}: valid are logit, auc")
    auc, cov = delong(y, p)
    var = max(float(cov[0, 0]), 0.0)
    z = float(stats.norm.ppf(0.5 + level / 2))
    a = float(auc[0])
    if scale == "logit":
        lo, hi = logit_interval(a, var, z)
        return a, lo, hi, var
    half = z * np.sqrt(var)
    return a, float(max(0.0, a - half)), float(min(1.0, a + half)), var


def _fold_ic(y: np.ndarray, p: np.ndarray, w1: float, w0: float) -> tuple[float, np.ndarray]:
    """AUC of one test fold and its patients' influence-curve values (cvAUC's ``.IC``, module docstring)."""
    pos, neg = p[y == 1], p[y == 0]
    # Share of the fold's negatives scored below each positive (ties one half), and of positives above each
    # negative: DeLong's placement values within the fold.
    below = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=1)
    above = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=0)
    auc = float(below.mean())
    ic = np.empty(len(y))
    ic[y == 1] = w1 * (below - auc)
    ic[y == 0] = w0 * (above - auc)
    return auc, ic


def cv_auc_ic(y: np.ndarray, p: np.ndarray, folds: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Cross-validated AUC (mean of the fold AUCs) and its influence-curve interval (LeDell et al. 2015).

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    p : array, shape (n,)
        Out-of-fold predictions: each patient's from the model of the fold it was tested in.
    folds : array, shape (n,)
        The test fold of each patient.
    level : float
        Confidence level.

    Returns
    -------
    dict
        ``auc`` (cvAUC), ``se``, ``var`` (SE squared), ``ci`` [lo, hi] clipped to [0, 1], ``fold_auc`` (one
        per usable fold), ``skipped_folds`` (test folds with one class only: no AUC, left out of both the
        estimate and the variance).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, float)
    folds = np.asarray(folds)
    n = len(y)
    if y.min() == y.max():
        raise ValueError("AUC needs both classes")
    w1, w0 = n / y.sum(), n / (n - y.sum())
    aucs, sq, skipped = [], [], 0
    for f in np.unique(folds):
        part = folds == f
        if y[part].min() == y[part].max():
            skipped += 1
            continue
        auc, ic = _fold_ic(y[part], p[part], w1, w0)
        aucs.append(auc)
        sq.append(float(np.mean(ic**2)))
    if not aucs:
        raise ValueError("no test fold holds both classes")
    cvauc, var = float(np.mean(aucs)), float(np.mean(sq)) / n
    half = float(stats.norm.ppf(0.5 + level / 2)) * np.sqrt(var)
    return {
        "auc": cvauc,
        "se": float(np.sqrt(var)),
        "var": var,
        "ci": [max(0.0, cvauc - half), min(1.0, cvauc + half)],
        "fold_auc": aucs,
        "skipped_folds": skipped,
    }


def cv_auc_corrected_t(
    y: np.ndarray, P: Sequence[np.ndarray], folds: Sequence[np.ndarray], level: float = 0.95
) -> dict[str, Any]:
    """Mean of the R x K fold AUCs with the Nadeau-Bengio corrected variance (module docstring).

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    P, folds : sequences of R arrays, shape (n,)
        Out-of-fold predictions and test folds of each repeat.
    level : float
        Confidence level.

    Returns
    -------
    dict
        ``auc`` (mean fold AUC), ``se`` (corrected), ``df`` (J - 1), ``ci`` [lo, hi] clipped to [0, 1],
        ``n_folds`` (J usable folds), ``skipped_folds``. With J < 2, ``se``, ``df`` and ``ci`` are None.
    """
    aucs, n_test, skipped = [], [], 0
    for p, f in zip(P, folds, strict=True):
        r = cv_auc_ic(y, p, f, level)
        aucs += r["fold_auc"]
        skipped += r["skipped_folds"]
        n_test += [int(np.sum(f == k)) for k in np.unique(f)]
    J, n = len(aucs), len(y)
    mean = float(np.mean(aucs))
    if J < 2:
        return {"auc": mean, "se": None, "df": None, "ci": None, "n_folds": J, "skipped_folds": skipped}
    ratio = float(np.mean(n_test)) / (n - float(np.mean(n_test)))  # n_test / n_train
    se = float(np.sqrt((1.0 / J + ratio) * np.var(aucs, ddof=1)))
    half = float(stats.t.ppf(0.5 + level / 2, J - 1)) * se
    return {
        "auc": mean,
        "se": se,
        "df": J - 1,
        "ci": [max(0.0, mean - half), min(1.0, mean + half)],
        "n_folds": J,
        "skipped_folds": skipped,
    }


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between probability and outcome."""
    return float(np.mean((np.asarray(p, float) - np.asarray(y, float)) ** 2))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _logistic_fit(X: np.ndarray, y: np.ndarray, offset: np.ndarray, iters: int = 50) -> np.ndarray:
    """Unpenalised logistic regression by Newton-Raphson (small, well-posed problems only)."""
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        eta = X @ beta + offset
        mu = 1 / (1 + np.exp(-np.clip(eta, -35, 35)))
        w = np.maximum(mu * (1 - mu), 1e-10)
        grad = X.T @ (y - mu)
        H = X.T @ (X * w[:, None])
        try:
            step = np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, grad, rcond=None)[0]
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta


def calibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration intercept (in the large, slope fixed at 1) and calibration slope."""
    y = np.asarray(y, float)
    lp = _logit(p)
    ones = np.ones((len(y), 1))
    intercept = float(_logistic_fit(ones, y, lp)[0])
    slope = float(_logistic_fit(np.column_stack([ones, lp]), y, np.zeros(len(y)))[1])
    return intercept, slope


def net_benefit(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating patients with p >= t, for each threshold t."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, float)
    n = len(y)
    out = np.empty(len(thresholds))
    for i, t in enumerate(thresholds):
        treat = p >= t
        tp = np.sum(treat & y)
        fp = np.sum(treat & ~y)
        out[i] = tp / n - fp / n * t / (1 - t)
    return out


def net_benefit_all(y: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating everyone."""
    prev = float(np.mean(y))
    return prev - (1 - prev) * thresholds / (1 - thresholds)


def summarize(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC with DeLong 95% CI (logit scale), Brier score, calibration intercept and slope of one prediction vector."""
    a, lo, hi, var = auc_ci(y, p)
    ci_int, ci_slope = calibration(y, p)
    return {
        "auc": a,
        "auc_ci": [lo, hi],
        "auc_var": var,
        "brier": brier(y, p),
        "calibration_intercept": ci_int,
        "calibration_slope": ci_slope,
        "n": len(y),
        "events": int(np.sum(y)),
        "auc_ci_method": AUC_CI_METHOD,
    }


def _pooled_delong(
    y: np.ndarray, P: Sequence[np.ndarray], z: float
) -> tuple[list[float], float, list[float]]:
    """Per-repeat AUCs of the pooled out-of-fold predictions, their mean and the mean-variance interval."""
    per = [auc_ci(y, p, scale="auc") for p in P]
    aucs = [a for a, *_ in per]
    auc = float(np.mean(aucs))
    half = z * np.sqrt(float(np.mean([v for *_, v in per])))
    return aucs, auc, [max(0.0, auc - half), min(1.0, auc + half)]


def summarize_repeats(
    y: np.ndarray,
    P: Sequence[np.ndarray],
    folds: Sequence[np.ndarray] | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Combine R repeats of out-of-fold predictions (module docstring).

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    P : sequence of R arrays, shape (n,)
        One out-of-fold prediction per patient per repeat.
    folds : sequence of R arrays, shape (n,), optional
        Each patient's test fold in each repeat. With them the AUC is the mean test-fold AUC with the
        corrected resampled t interval (:func:`cv_auc_corrected_t`) and the influence-curve interval beside
        it; without, the mean pooled AUC with the pooled DeLong interval.
    level : float
        Confidence level.

    Returns
    -------
    dict
        ``auc``, ``auc_ci``, ``auc_ci_method``, ``auc_per_repeat``; with folds also ``auc_ci_coverage``,
        ``auc_se``, ``auc_ci_influence_curve``, ``skipped_folds``; always the pooled ``auc_pooled`` and
        ``auc_ci_delong_pooled`` (for comparison), Brier score and calibration averaged over repeats, n, events.
    """
    z = float(stats.norm.ppf(0.5 + level / 2))
    pooled_per, pooled, pooled_ci = _pooled_delong(y, P, z)
    calib = [calibration(y, p) for p in P]
    out: dict[str, Any] = {
        "auc": pooled,
        "auc_ci": pooled_ci,
        "auc_ci_method": POOLED_DELONG_METHOD,
        "auc_per_repeat": pooled_per,
    }
    if folds is not None:
        ic = [cv_auc_ic(y, p, f, level) for p, f in zip(P, folds, strict=True)]
        ic_auc = float(np.mean([c["auc"] for c in ic]))
        half = z * np.sqrt(float(np.mean([c["var"] for c in ic])))
        ic_ci = [max(0.0, ic_auc - half), min(1.0, ic_auc + half)]
        ct = cv_auc_corrected_t(y, P, folds, level)
        usable = ct["ci"] is not None  # fewer than two usable folds: no spread, the influence curve only
        out = {
            "auc": ct["auc"],
            "auc_ci": ct["ci"] if usable else ic_ci,
            "auc_ci_method": CV_AUC_CI_METHOD if usable else IC_METHOD,
            "auc_ci_coverage": CV_AUC_CI_COVERAGE,
            "auc_se": ct["se"],
            "auc_per_repeat": [c["auc"] for c in ic],
            "auc_ci_influence_curve": ic_ci,
            "skipped_folds": ct["skipped_folds"],
        }
    return {
        **out,
        "auc_pooled": pooled,
        "auc_ci_delong_pooled": pooled_ci,
        "brier": float(np.mean([brier(y, p) for p in P])),
        "calibration_intercept": float(np.mean([c[0] for c in calib])),
        "calibration_slope": float(np.mean([c[1] for c in calib])),
        "n": len(y),
        "events": int(np.sum(y)),
    }


def compare_repeats(
    y: np.ndarray, P1: Sequence[np.ndarray], P2: Sequence[np.ndarray], level: float = 0.95
) -> dict[str, float | list[float]]:
    """Paired DeLong comparison of two models' AUCs on the same patients, combined over repeats like the CI."""
    diffs, variances = [], []
    for p1, p2 in zip(P1, P2, strict=True):
        auc, cov = delong(y, np.vstack([p1, p2]))
        diffs.append(float(auc[0] - auc[1]))
        variances.append(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    d = float(np.mean(diffs))
    se = float(np.sqrt(max(np.mean(variances), 0.0)))
    z = stats.norm.ppf(0.5 + level / 2)
    pval = float(2 * stats.norm.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else 0.0)
    return {"auc_difference": d, "ci": [d - z * se, d + z * se], "p_value": pval}


def calibration_curve(
    y: np.ndarray, p: np.ndarray, bins: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted vs observed frequency in `bins` quantile groups; also the group sizes."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, min(bins, len(p)))
    pred = np.array([p[g].mean() for g in groups if len(g)])
    obs = np.array([y[g].mean() for g in groups if len(g)])
    size = np.array([len(g) for g in groups if len(g)])
    return pred, obs, size
