"""Performance measures: AUC with DeLong variance, Brier score, calibration intercept and slope, net benefit.

AUC confidence interval
-----------------------
For one set of predictions (external validation, or one repeat of the outer cross-validation) the 95% CI is
DeLong's (DeLong, DeLong & Clarke-Pearson 1988; fast algorithm of Sun & Xu 2014) on the AUC scale, clipped
to [0, 1], as in pROC. Over R repeats of the outer K-fold, each repeat gives one out-of-fold prediction per
patient, an AUC and a DeLong variance; the reported AUC is the mean of the R AUCs and its standard error is
the square root of the MEAN DeLong variance. Because the repeats use the same patients, their AUCs are
positively correlated and the variance of their mean is at most the mean variance: the interval is
conservative, never narrower than a single repeat's. (A percentile interval across repeats would measure
only the split-to-split noise, not the sampling of 109 patients, and would be far too narrow.)

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


def auc_ci(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """AUC, DeLong CI (lo, hi) clipped to [0, 1], and the DeLong variance."""
    auc, cov = delong(y, p)
    var = float(cov[0, 0])
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(max(var, 0.0))
    a = float(auc[0])
    return a, max(0.0, a - half), min(1.0, a + half), var


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
    """AUC with DeLong 95% CI, Brier score, calibration intercept and slope of one prediction vector."""
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
        "auc_ci_method": "DeLong",
    }


def summarize_repeats(y: np.ndarray, P: Sequence[np.ndarray], level: float = 0.95) -> dict[str, Any]:
    """Combine R repeats of out-of-fold predictions (see module docstring for the CI rule)."""
    per = [summarize(y, p) for p in P]
    auc = float(np.mean([s["auc"] for s in per]))
    var = float(np.mean([s["auc_var"] for s in per]))
    z = stats.norm.ppf(0.5 + level / 2)
    half = z * np.sqrt(var)
    return {
        "auc": auc,
        "auc_ci": [max(0.0, auc - half), min(1.0, auc + half)],
        "brier": float(np.mean([s["brier"] for s in per])),
        "calibration_intercept": float(np.mean([s["calibration_intercept"] for s in per])),
        "calibration_slope": float(np.mean([s["calibration_slope"] for s in per])),
        "auc_per_repeat": [s["auc"] for s in per],
        "auc_ci_method": "DeLong per repeat; mean AUC, mean variance (conservative)",
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
