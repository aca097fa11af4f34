"""The minimum sample size to develop a prediction model of a binary outcome (Riley et al. criteria).

Riley RD, Snell KIE, Ensor J, et al. Minimum sample size for developing a multivariable prediction model:
PART II - binary and time-to-event outcomes. Stat Med 2019;38:1276-1296 (doi:10.1002/sim.7992); Riley RD,
Ensor J, Snell KIE, et al. Calculating the sample size required for developing a clinical prediction model.
BMJ 2020;368:m441. Three criteria, each giving a number of patients; the largest is the minimum:

1. expected uniform shrinkage of the predictor effects >= S (0.9): ``n = p / ((S - 1) ln(1 - R2cs / S))``;
2. small optimism in Nagelkerke's R2 (<= 0.05): criterion 1 with the shrinkage
   ``S = R2cs / (R2cs + 0.05 max R2cs)``, where ``max R2cs = 1 - exp(2 lnLnull / n)`` and
   ``lnLnull / n = phi ln(phi) + (1 - phi) ln(1 - phi)`` for an outcome proportion phi;
3. precise overall risk (margin of error <= 0.05 at 95%): ``n = (1.96 / 0.05)^2 phi (1 - phi)``.

The formulas and their rounding (max R2cs to 2 decimals, the shrinkage of criterion 2 to 3, each n rounded up)
are those of the reference implementation, pmsampsize (R package by Ensor, Martin and Riley; file
``R/pmsampsize_bin.R``), so that this module reproduces its published examples (``tests/testthat/test_bin.R``:
24 parameters, prevalence 0.174, R2cs 0.288 gives 623, 668 and 221 patients).

The anticipated Cox-Snell R2 comes from, in this order: the caller (``r2_cs``); an anticipated C-statistic,
converted as pmsampsize's ``cstat2rsq`` does (Riley RD, Van Calster B, Collins GS. A note on estimating the
Cox-Snell R2 from a reported C statistic (AUROC) to inform sample size calculations for developing a
prediction model with a binary outcome. Stat Med 2021;40:859-864): the linear predictor is N(0, 1) in one
class and N(sqrt(2) Phi^-1(C), 1) in the other, a logistic calibration model is fitted to it, and
``R2cs = 1 - exp(-LR / n)``. pmsampsize simulates a million patients; here the same quantity is computed
exactly: with two normals of equal variance the true log-odds are linear in the predictor, so the fitted
calibration model is the true one and ``LR / n`` is twice the expected log-likelihood gain over the null
model, a one-dimensional integral. Failing both, 15% of the maximum R2cs, the conservative default that
Riley et al. (BMJ 2020) propose when nothing is known of the model's performance; that figure was not found
in the sources searched for this module (pmsampsize's code, the Stat Med 2019 abstract) and is an assumption
taken from the BMJ paper as cited.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import expit, ndtri

__all__ = ["RileySampleSize", "cox_snell_from_c", "max_cox_snell", "riley_sample_size"]

#: Share of the maximum Cox-Snell R2 anticipated when neither R2 nor a C-statistic is given (Riley et al. 2020).
DEFAULT_R2_SHARE = 0.15
_Z95 = 1.96  # pmsampsize's criterion 3: 95% interval


@dataclass(frozen=True)
class RileySampleSize:
    """The three criteria of Riley et al. for one number of candidate parameters and outcome proportion.

    Attributes
    ----------
    n_params : int
        Candidate predictor parameters p.
    prevalence : float
        Outcome proportion.
    r2_cs : float
        Anticipated Cox-Snell R2 used.
    r2_source : str
        Where it came from: "given", "c_statistic" or "15% of max".
    max_r2_cs : float
        Largest Cox-Snell R2 the outcome proportion allows (rounded to 2 decimals, as pmsampsize).
    n_shrinkage, n_optimism, n_risk : int
        Patients required by criterion 1 (shrinkage), 2 (Nagelkerke R2 optimism) and 3 (overall risk).
    shrinkage_optimism : float
        Shrinkage that criterion 2 implies.
    n_required : int
        The largest of the three: the minimum sample size.
    events_required : float
        Events at that size (n_required x prevalence).
    epp_required : float
        Events per candidate parameter at that size.
    """

    n_params: int
    prevalence: float
    r2_cs: float
    r2_source: str
    max_r2_cs: float
    n_shrinkage: int
    n_optimism: int
    n_risk: int
    shrinkage_optimism: float
    n_required: int
    events_required: float
    epp_required: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _null_loglik_per_patient(prevalence: float) -> float:
    return prevalence * math.log(prevalence) + (1.0 - prevalence) * math.log(1.0 - prevalence)


def max_cox_snell(prevalence: float) -> float:
    """Largest Cox-Snell R2 for an outcome proportion: ``1 - exp(2 lnLnull / n)`` (Riley et al. 2019, eq. 23)."""
    _check_prevalence(prevalence)
    return 1.0 - math.exp(2.0 * _null_loglik_per_patient(prevalence))


def cox_snell_from_c(c_statistic: float, prevalence: float) -> float:
    """Cox-Snell R2 of a calibrated model with this C-statistic and outcome proportion (Riley et al. 2021).

    The method of pmsampsize's ``cstat2rsq`` without its simulation (see the module docstring): the linear
    predictor is N(mu, 1) among events and N(0, 1) among non-events, ``mu = sqrt(2) Phi^-1(C)``; the true
    log-odds are ``logit(phi) + mu x - mu^2 / 2``, and ``R2cs = 1 - exp(-2 E[gain])`` with ``gain`` each
    patient's log-likelihood under that model minus under the null model.
    """
    _check_prevalence(prevalence)
    if not 0.5 < c_statistic < 1.0:
        raise ValueError(f"the C-statistic must lie between 0.5 and 1 (exclusive), got {c_statistic!r}")
    mu = math.sqrt(2.0) * float(ndtri(c_statistic))
    x, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    logit_phi = math.log(prevalence / (1.0 - prevalence))

    def log_p(lp: np.ndarray, event: bool) -> np.ndarray:
        eta = logit_phi + mu * lp - mu * mu / 2.0
        return np.log(expit(eta)) if event else np.log(expit(-eta))

    # Expected log-likelihood per patient: events have lp ~ N(mu, 1), non-events lp ~ N(0, 1).
    loglik = prevalence * float(w @ log_p(x + mu, True)) + (1.0 - prevalence) * float(w @ log_p(x, False))
    return 1.0 - math.exp(-2.0 * (loglik - _null_loglik_per_patient(prevalence)))


def _n_for_shrinkage(n_params: int, r2_cs: float, shrinkage: float) -> int:
    # Riley et al. 2019, eq. 11 (criterion 1); pmsampsize rounds up.
    return math.ceil(n_params / ((shrinkage - 1.0) * math.log(1.0 - r2_cs / shrinkage)))


def riley_sample_size(
    n_params: int,
    prevalence: float,
    r2_cs: float | None = None,
    c_statistic: float | None = None,
    shrinkage: float = 0.9,
    optimism: float = 0.05,
    margin: float = 0.05,
) -> RileySampleSize:
    """The minimum development sample size of a binary-outcome prediction model (Riley et al. criteria).

    Parameters
    ----------
    n_params : int
        Candidate predictor parameters p (>= 1): every coefficient the model may estimate.
    prevalence : float
        Outcome proportion (0 < prevalence < 1).
    r2_cs : float, optional
        Anticipated (adjusted) Cox-Snell R2 of the model.
    c_statistic : float, optional
        Anticipated C-statistic, converted to a Cox-Snell R2 (:func:`cox_snell_from_c`) when `r2_cs` is
        not given. Without either, 15% of the maximum Cox-Snell R2.
    shrinkage : float
        Target expected uniform shrinkage of criterion 1 (default 0.9).
    optimism : float
        Largest optimism in Nagelkerke's R2 of criterion 2 (default 0.05).
    margin : float
        Margin of error of the overall risk of criterion 3 (default 0.05).

    Returns
    -------
    RileySampleSize

    Raises
    ------
    ValueError
        On a value out of range, or an R2 above what the outcome proportion allows.
    """
    if isinstance(n_params, bool) or not isinstance(n_params, (int, np.integer)) or n_params < 1:
        raise ValueError(f"n_params must be a positive whole number, got {n_params!r}")
    _check_prevalence(prevalence)
    for name, value in (("shrinkage", shrinkage), ("optimism", optimism), ("margin", margin)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie between 0 and 1, got {value!r}")
    # pmsampsize rounds the maximum R2 to 2 decimals before using it (R/pmsampsize_bin.R).
    max_r2 = round(max_cox_snell(prevalence), 2)
    if r2_cs is not None:
        source = "given"
    elif c_statistic is not None:
        r2_cs, source = cox_snell_from_c(c_statistic, prevalence), "c_statistic"
    else:
        r2_cs, source = DEFAULT_R2_SHARE * max_cox_snell(prevalence), "15% of max"
    if not 0.0 < r2_cs < shrinkage or r2_cs > max_r2:
        raise ValueError(
            f"the anticipated Cox-Snell R2 {r2_cs:.3g} must be positive, below the shrinkage {shrinkage} and "
            f"at most the maximum {max_r2} that a prevalence of {prevalence:.3g} allows"
        )
    n1 = _n_for_shrinkage(int(n_params), r2_cs, shrinkage)
    # Criterion 2: the shrinkage that keeps Nagelkerke's R2 optimism <= `optimism` (eq. 25), 3 decimals.
    s2 = round(r2_cs / (r2_cs + optimism * max_r2), 3)
    n2 = _n_for_shrinkage(int(n_params), r2_cs, s2)
    # Criterion 3: the overall risk within +- margin (95%), the normal approximation to a proportion.
    n3 = math.ceil((_Z95 / margin) ** 2 * prevalence * (1.0 - prevalence))
    n = max(n1, n2, n3)
    return RileySampleSize(
        n_params=int(n_params),
        prevalence=float(prevalence),
        r2_cs=float(r2_cs),
        r2_source=source,
        max_r2_cs=float(max_r2),
        n_shrinkage=n1,
        n_optimism=n2,
        n_risk=n3,
        shrinkage_optimism=float(s2),
        n_required=n,
        events_required=n * float(prevalence),
        epp_required=n * float(prevalence) / int(n_params),
    )


def _check_prevalence(prevalence: float) -> None:
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"the outcome proportion must lie strictly between 0 and 1, got {prevalence!r}")
