"""Recalibration of a validated model on the external patients: an explicit, separately reported update.

A model that discriminates well in another population can still be miscalibrated there (other prevalence,
other case mix). TRIPOD+AI counts recalibration as *model updating* (items 12f and 24); the two simplest
updates keep the model's ranking, so the AUC does not change:

* ``intercept`` (recalibration in the large): ``logit P(y=1) = a + lp``, the model's logit ``lp`` as offset, only
  the intercept ``a`` estimated;
* ``logistic`` (logistic recalibration): ``logit P(y=1) = a + b * lp``, intercept and slope.

Sources: Steyerberg et al., "Validation and updating of predictive logistic regression models: a study on
sample size and shrinkage", Stat Med 2004;23:2567-86 (re-calibration: re-estimation of the intercept or the
slope of the linear predictor); Van Calster et al., "Calibration: the Achilles heel of predictive analytics",
BMC Med 2019;17:230 (https://pmc.ncbi.nlm.nih.gov/articles/PMC6912996; calibration intercept and slope, and
updating when indicated); the table of updating methods 1-3 (no adjustment, intercept, intercept and slope)
of Thorax (https://thorax.bmj.com, "Recalibrating and model revision methods considered for logistic
regression models").

The original figures are never replaced. The recalibrated figures come from 5-fold stratified cross-validation
within the external cohort (seeded): each patient's recalibrated risk comes from the update fitted on the
other folds, so the update is not judged on the patients it was estimated on. The intercept and slope fitted
on all external patients are what a user applies to new patients of that population (``recalibration`` in
metrics.json); their apparent figures (fitted and judged on the same patients) are optimistic and kept only
for reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cdeg.modeling import metrics as M

from cdeg.choices import RECALIBRATION_METHODS

#: The updates `cdeg validate --recalibrate` offers; "none" applies the model unchanged.
METHODS: tuple[str, ...] = RECALIBRATION_METHODS
#: Words of each update (reports).
METHOD_WORDS: dict[str, str] = {
    "none": "none (the model applied unchanged)",
    "intercept": "recalibration in the large (intercept re-estimated, the model's logit as offset)",
    "logistic": "logistic recalibration (intercept and slope on the model's logit re-estimated)",
}
#: Folds and seed of the cross-validated recalibrated figures.
FOLDS = 5
SEED = 0


def check_method(method: str) -> str:
    """`method` if it is one of :data:`METHODS`, else ValueError listing them."""
    if method not in METHODS:
        raise ValueError(f"--recalibrate {method!r}; valid: {', '.join(METHODS)}")
    return method


def fit_update(y: np.ndarray, p: np.ndarray, method: str) -> tuple[float, float]:
    """The intercept and slope of the update `method` fitted on outcomes `y` and the model's probabilities
    `p` (slope 1 for ``intercept``; (0, 1) for ``none``)."""
    check_method(method)
    if method == "none":
        return 0.0, 1.0
    y = np.asarray(y, float)
    lp = M._logit(p)
    ones = np.ones((len(y), 1))
    if method == "intercept":
        return float(M._logistic_fit(ones, y, lp)[0]), 1.0
    a, b = M._logistic_fit(np.column_stack([ones, lp]), y, np.zeros(len(y)))
    return float(a), float(b)


def apply_update(p: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """Recalibrated probabilities: ``1 / (1 + exp(-(intercept + slope * logit(p))))``."""
    eta = intercept + slope * M._logit(p)
    return 1 / (1 + np.exp(-np.clip(eta, -35, 35)))


def cross_validated(
    y: np.ndarray, p: np.ndarray, method: str, folds: int = FOLDS, seed: int = SEED
) -> np.ndarray:
    """Each patient's recalibrated probability from the update fitted on the other folds (stratified)."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, int)
    p = np.asarray(p, float)
    k = max(2, min(folds, int(np.bincount(y, minlength=2).min())))
    out = np.empty(len(y))
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(p, y):
        a, b = fit_update(y[train], p[train], method)
        out[test] = apply_update(p[test], a, b)
    return out


def recalibration(
    y: np.ndarray, probs: dict[str, np.ndarray], method: str, folds: int = FOLDS, seed: int = SEED
) -> dict[str, Any]:
    """The update `method` of every model of `probs` (name -> external probabilities): fitted intercept and
    slope (all external patients), cross-validated and apparent figures (:func:`cdeg.modeling.metrics.summarize`),
    for metrics.json ``recalibration``. With ``none``: the method and that nothing was updated."""
    check_method(method)
    out: dict[str, Any] = {"method": method, "words": METHOD_WORDS[method], "applied": method != "none"}
    if method == "none":
        out["text"] = "the model was applied unchanged (no recalibration asked for)"
        return out
    models = {}
    for m, p in probs.items():
        a, b = fit_update(y, p, method)
        models[m] = {
            "intercept": a,
            "slope": b,
            "cross_validated": M.summarize(y, cross_validated(y, p, method, folds, seed)),
            "apparent": M.summarize(y, apply_update(p, a, b)),
        }
    out.update(
        models=models,
        formula="p_new = 1 / (1 + exp(-(intercept + slope * logit(p))))",
        folds=folds,
        seed=seed,
        evaluation=(
            f"recalibrated figures from {folds}-fold stratified cross-validation within the external cohort "
            "(seeded); 'apparent' figures are fitted and judged on the same patients (optimistic)"
        ),
        original="the original external figures (key 'external') are those of the model unchanged",
    )
    out["text"] = _text(method, models, len(y), folds)
    return out


def _text(method: str, models: dict[str, Any], n: int, folds: int) -> str:
    """One sentence (TRIPOD+AI items 12f and 24): the update, its fitted values and what it changed."""
    parts = [
        f"{m}: intercept {r['intercept']:.3f}, slope {r['slope']:.3f}, calibration slope "
        f"{r['cross_validated']['calibration_slope']:.2f} and Brier {r['cross_validated']['brier']:.3f} after it"
        for m, r in models.items()
    ]
    return (
        f"{METHOD_WORDS[method]} on the {n} external patients, reported separately from the original figures "
        f"(recalibrated figures {folds}-fold cross-validated within the external cohort); " + "; ".join(parts)
    )
