"""The TRIPOD+AI items one run's files answer, in words, and the limitations the run itself shows.

:mod:`cdeg.modeling.checklist` lists every item and who answers it; this module reads a fit's metrics.json
(and, when the model was validated, the validation's metrics.json) and writes the answer cdeg can give for
the items its outputs hold: the outcome definition (8a), the sample size against the Riley criteria (10),
differences between the development and the evaluation data (16, 20c), subgroup performance (23a), model
updating (12f, 24) and the limitations (26). Everything else stays for the authors.

The limitations are rules on the run's own figures, each with its threshold below, so a reader can see why a
sentence appears. They describe what this run shows, not every limitation a study has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: A 95% interval of the cross-validated AUC wider than this is called wide (about +-0.075).
WIDE_AUC_CI = 0.15
#: A development calibration slope outside this range is reported (1 = predictions neither too extreme nor
#: too moderate; below 1, the out-of-fold risks are too extreme, a sign of overfitting).
SLOPE_RANGE = (0.8, 1.2)
#: Share of external patients outside the development ages above which the shift is a limitation.
OUTSIDE_AGES_SHARE = 0.1
#: Share of the primary model's external input values filled with development values above which it is one.
IMPUTED_SHARE = 0.05
#: Permutation p-value above which the model is not distinguishable from chance.
PERMUTATION_ALPHA = 0.05

Metrics = dict[str, Any]


def _primary(fit: Metrics) -> str:
    """The headline model: the one named in the metrics (set by :func:`with_primary`), else XGBoost."""
    cv = fit.get("cv") or {}
    return fit.get("primary_model") or ("xgboost" if "xgboost" in cv else next(iter(cv), ""))


def with_primary(fit: Metrics, primary: str | None) -> Metrics:
    """`fit` naming its primary model (a fit's metrics.json leaves the name to its configuration)."""
    return {**fit, "primary_model": primary} if primary else fit


def _auc_text(d: dict[str, Any]) -> str:
    ci = d.get("auc_ci") or [float("nan"), float("nan")]
    return f"{d['auc']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"


def outcome_answer(fit: Metrics) -> str:
    """Item 8a: the rule that defines the outcome when cdeg derived it, else the column it read."""
    definition = fit.get("outcome_definition")
    n, events = fit.get("n_patients"), fit.get("events")
    counts = f" ({events} events in {n} patients)" if n is not None and events is not None else ""
    if isinstance(definition, dict) and definition.get("text"):
        return f"{definition['text']}{counts}"
    if isinstance(definition, str) and definition:
        return f"{definition}{counts}"
    return f"column {fit.get('target', '?')} of the clinical table{counts}; its definition is the authors'"


def sample_size_answer(fit: Metrics) -> str:
    """Item 10: events per candidate variable, and the Riley criteria when the fit computed them."""
    n, events = fit.get("n_patients"), fit.get("events")
    cv = (fit.get("cv") or {}).get(_primary(fit), {})
    p = cv.get("n_input_variables") or fit.get("n_features")
    parts = [f"{n} patients, {events} events"]
    if p and events is not None:
        parts.append(f"{p:,} candidate variables ({events / p:.2f} events per candidate variable)")
    riley = _riley(fit)
    if riley:
        enough = n is not None and n >= riley["n_required"]
        parts.append(
            f"the Riley criteria need {riley['n_required']:,} patients for {riley['n_params']:,} candidate parameters "
            f"after the preprocessing reduction ({'met' if enough else 'not met'}; anticipated Cox-Snell R2 "
            f"{riley['r2_cs']:.3f}, {riley['r2_source']})"
        )
    else:
        parts.append("no sample size calculation in this run")
    return "; ".join(parts)


def _riley(fit: Metrics) -> dict[str, Any] | None:
    """The Riley calculation for the variables the model chooses from (else its input columns), if any."""
    ss = fit.get("sample_size") or {}
    return ss.get("after_reduction") or ss.get("raw") if isinstance(ss, dict) else None


def _age_shift(val: Metrics) -> dict[str, Any] | None:
    """The external patients outside the development ages as `cdeg validate` counted them
    (:func:`cdeg.modeling.transport.age_shift`: among the patients with an age), when there are any."""
    age = (val.get("transport") or {}).get("age") or {}
    return age if age.get("n_outside") and age.get("development_range") else None


def _outside_words(age: dict[str, Any]) -> str:
    lo, hi = age["development_range"]
    return f"have an age outside the development range ({lo:g}-{hi:g})"


def differences_answer(val: Metrics | None) -> str:
    """Items 16 / 20c: what differs between the development and the external data, as the run measured it."""
    if not val:
        return "no external validation in this run"
    parts = []
    age = _age_shift(val)
    if age:
        parts.append(
            f"{age['n_outside']} of {age['n_with_age']} external patients {_outside_words(age)}; there the mean "
            f"predicted risk is {age['mean_risk_outside']:.0%} against {age['observed_outside']:.0%} observed"
        )
    primary = val.get("primary_model", "")
    share = (val.get("imputed_share") or {}).get(primary)
    if share is not None:
        parts.append(
            f"{share:.1%} of the primary model's input values were missing and filled with development values"
        )
    transport = val.get("transport") or {}
    text = transport.get("text") if isinstance(transport, dict) else None
    if text:
        parts.append(text)
    return "; ".join(parts) or "no differences measured"


def subgroups_answer(val: Metrics | None) -> str:
    """Item 23a: the range of subgroup AUCs the validation measured."""
    rows = [r for r in (val or {}).get("subgroups") or [] if r.get("auc") is not None]
    if not rows:
        return "no subgroup table in this run"
    lo = min(rows, key=lambda r: r["auc"])
    hi = max(rows, key=lambda r: r["auc"])
    return (
        f"{len(rows)} subgroups (age band, sex, index level, outside the development ages) with AUC and 95% CI; "
        f"lowest {lo['auc']:.3f} ({lo['variable']} {lo['group']}), highest {hi['auc']:.3f} "
        f"({hi['variable']} {hi['group']})"
    )


def updating_answer(val: Metrics | None) -> str:
    """Items 12f / 24: recalibration, when the validation was asked for one."""
    if not val:
        return "no external validation in this run"
    rec = val.get("recalibration") or {}
    if not isinstance(rec, dict) or rec.get("method") in (None, "none"):
        return "the model was applied unchanged (no recalibration asked for)"
    text = rec.get("text")
    return text or f"{rec['method']} recalibration, reported separately from the original figures"


def limitations(fit: Metrics, val: Metrics | None = None) -> list[str]:
    """Sentences on the limitations this run's own figures show (item 26), most important first."""
    out: list[str] = []
    for rule in _RULES:
        sentence = rule(fit, val or {})
        if sentence:
            out.append(sentence)
    return out


def _circular(fit: Metrics, val: Metrics) -> str:
    d = fit.get("outcome_definition")
    if isinstance(d, dict) and d.get("circular"):
        return (
            "The outcome is derived from image measurements the model also reads: the figures measure how well "
            "the model automates that reading, not whether the images predict a clinical course."
        )
    return ""


def _exploratory(fit: Metrics, val: Metrics) -> str:
    from cdeg.modeling.report import exploratory_note

    return exploratory_note(fit.get("ceilings") or {}) or ""


def _too_few(fit: Metrics, val: Metrics) -> str:
    riley = _riley(fit)
    n = fit.get("n_patients")
    if riley and n is not None and n < riley["n_required"]:
        return (
            f"{n} patients are fewer than the {riley['n_required']:,} the Riley criteria ask for "
            f"{riley['n_params']:,} candidate parameters: expect overfitting, and optimistic apparent performance."
        )
    return ""


def _chance(fit: Metrics, val: Metrics) -> str:
    perm = fit.get("permutation_test") or {}
    p = perm.get("p_value")
    if p is not None and p > PERMUTATION_ALPHA:
        return (
            f"The label-permutation test does not separate the model from chance (p = {p:.3f}): read its figures "
            "as no detectable signal."
        )
    return ""


def _wide(fit: Metrics, val: Metrics) -> str:
    cv = (fit.get("cv") or {}).get(_primary(fit)) or {}
    ci = cv.get("auc_ci")
    if ci and ci[1] - ci[0] > WIDE_AUC_CI:
        return (
            f"With {fit.get('n_patients')} patients and {fit.get('events')} events the cross-validated AUC "
            f"{_auc_text(cv)} is imprecise; a study of the same size could find a quite different value."
        )
    return ""


def _baseline(fit: Metrics, val: Metrics) -> str:
    cv = (fit.get("cv") or {}).get(_primary(fit)) or {}
    count = (fit.get("baselines") or {}).get("degeneration_count") or {}
    if cv.get("auc") is not None and count.get("auc") is not None and count["auc"] >= cv["auc"]:
        return (
            f"The model ({cv['auc']:.3f}) does not beat the age-blind degeneration count "
            f"({count['auc']:.3f}), which needs no fitting: what it finds is mostly how degenerated the spine is."
        )
    return ""


def _slope(fit: Metrics, val: Metrics) -> str:
    cv = (fit.get("cv") or {}).get(_primary(fit)) or {}
    s = cv.get("calibration_slope")
    if s is not None and not SLOPE_RANGE[0] <= s <= SLOPE_RANGE[1]:
        how = "too extreme (overfitting)" if s < SLOPE_RANGE[0] else "too moderate"
        return f"The out-of-fold calibration slope is {s:.2f}: the predicted risks are {how}."
    return ""


def _ages(fit: Metrics, val: Metrics) -> str:
    age = _age_shift(val)
    if age and age["share_outside"] > OUTSIDE_AGES_SHARE:
        return (
            f"{age['share_outside']:.0%} of the external patients {_outside_words(age)}, where the model "
            f"extrapolates (mean predicted risk {age['mean_risk_outside']:.0%}, observed "
            f"{age['observed_outside']:.0%})."
        )
    return ""


def _external_calibration(fit: Metrics, val: Metrics) -> str:
    ext = (val.get("external") or {}).get(val.get("primary_model", "")) or {}
    ci = ((ext.get("bootstrap") or {}).get("calibration_intercept") or {}).get("ci")
    if ci and (ci[0] > 0 or ci[1] < 0):
        how = "under-predicts" if ci[0] > 0 else "over-predicts"
        return (
            f"In the external cohort the model {how} systematically (calibration intercept "
            f"{ext['calibration_intercept']:.2f}, 95% CI {ci[0]:.2f} to {ci[1]:.2f}): its absolute risks need "
            "recalibration before use there."
        )
    return ""


def _imputed(fit: Metrics, val: Metrics) -> str:
    share = (val.get("imputed_share") or {}).get(val.get("primary_model", ""))
    if share is not None and share > IMPUTED_SHARE:
        return (
            f"{share:.0%} of the model's input values were missing in the external cohort and filled with "
            "development values; those patients' risks lean towards the development average."
        )
    return ""


_RULES: tuple[Callable[[Metrics, Metrics], str], ...] = (
    _circular,
    _exploratory,
    _chance,
    _too_few,
    _baseline,
    _wide,
    _slope,
    _ages,
    _external_calibration,
    _imputed,
)


def run_answers(fit: Metrics, val: Metrics | None = None) -> dict[str, str]:
    """Answer per TRIPOD+AI item id (``"TRIPOD+AI 8a"``...) from one target's fit and validation."""
    lim = limitations(fit, val)
    diff = differences_answer(val)
    return {
        "TRIPOD+AI 8a": outcome_answer(fit),
        "TRIPOD+AI 10": sample_size_answer(fit),
        "TRIPOD+AI 12f": updating_answer(val),
        "TRIPOD+AI 16": diff,
        "TRIPOD+AI 20c": diff,
        "TRIPOD+AI 23a": subgroups_answer(val),
        "TRIPOD+AI 24": updating_answer(val),
        "TRIPOD+AI 26": " ".join(lim) if lim else "none of the run's checks flagged a limitation",
    }
