"""Does the model travel? The development and the external distribution of the primary model's top variables.

A model is applied to patients unlike those it was fitted on when the external cohort lies outside the
development range (a population study's patients over 65 against a surgical cohort of 18-65) or lacks a
variable (the surgical index level), which validation fills with the development median. Per top variable of
the primary model (largest mean |SHAP| on the development patients):

* the development and the external median (IQR) of the values the model reads (before imputation);
* the share of external patients whose value is imputed (missing, set to the development median or mode);
* the share of external values below the development minimum or above its maximum: beyond them a tree model
  predicts as at the extreme (its splits were learnt from the development values only), and a linear one
  extrapolates;
* the standardised mean difference (SMD), external minus development over the pooled SD
  ``sqrt((sd_dev**2 + sd_ext**2) / 2)`` (the pooled form of the standardised difference of balance
  diagnostics: couplr ``standardized_difference``, https://rdrr.io/cran/couplr/man/standardized_difference.html;
  cobalt FAQ, https://stat.ethz.ch/CRAN/web/packages/cobalt/vignettes/faq.html). SDs are population SDs
  (ddof 0), so for a 0/1 variable the SD is ``sqrt(p (1 - p))`` and the same formula is the standardised
  difference of two proportions. Values above 0.1 are commonly read as a meaningful imbalance (stddiff,
  https://rdrr.io/cran/stddiff/man/stddiff.html).

The development side is summarised at fit time (:func:`development_summary`, kept in model.json, no patient
rows), so the model folder alone is enough for `cdeg validate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Top variables of the table (by development mean |SHAP|).
TOP_N = 12
#: Share of external values outside the development range (or imputed) that the sentence counts as "many".
MANY = 0.10
#: Columns of transport.csv, in order.
COLUMNS: tuple[str, ...] = (
    "rank",
    "variable",
    "label",
    "mean_abs_shap",
    "development_n",
    "development_median",
    "development_q1",
    "development_q3",
    "development_min",
    "development_max",
    "external_n",
    "external_median",
    "external_q1",
    "external_q3",
    "external_imputed_share",
    "external_below_min",
    "external_above_max",
    "external_outside_range",
    "smd",
)


def model_values(model: Any, X: pd.DataFrame) -> pd.DataFrame:
    """The variables of a fitted :class:`~cdeg.modeling.models.TabularClassifier` as its estimator reads them,
    but before imputation: missing stays missing (NaN), so the share a validation imputes can be counted.

    The preprocessing chain runs up to its categorical encoder (the first step that fills values); a one-hot
    variable ``col=level`` is 1 where `col` equals `level`, 0 where it has another value, NaN where it is
    missing. Columns: the model's variables (``preprocessor_.columns_``).
    """
    from cdeg.modeling.preprocess import ONE_HOT_SEP, CategoricalEncoder

    pre = model.preprocessor_
    Z = X
    for step in pre.steps_:
        if isinstance(step, CategoricalEncoder):
            break
        Z = step.transform(Z)
    enc = pre.encoder_
    out: dict[str, pd.Series] = {}
    for c in pre.columns_:
        if c in Z.columns and c not in enc.categories_:
            out[c] = pd.to_numeric(Z[c], errors="coerce").astype(float)
            continue
        base, level = c.rsplit(ONE_HOT_SEP, 1) if ONE_HOT_SEP in c else (c, "")
        if base in Z.columns:
            s = Z[base]
            out[c] = (s.astype(str) == level).astype(float).where(s.notna())
        else:  # not derivable from the inputs: unknown, counted as imputed
            out[c] = pd.Series(np.nan, index=Z.index)
    return pd.DataFrame(out, index=Z.index)


def summarise(values: pd.Series) -> dict[str, Any]:
    """n, share missing, mean, SD (ddof 0), min, 1st, 25th, 50th, 75th, 99th percentile and max of one variable
    (statistics None without any value)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    obs = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": len(obs), "missing": float(1 - len(obs) / len(v)) if len(v) else 1.0}
    keys = ("min", "p01", "q1", "median", "q3", "p99", "max")
    if not len(obs):
        return {**out, "mean": None, "sd": None, **dict.fromkeys(keys)}
    q = np.percentile(obs, [0, 1, 25, 50, 75, 99, 100])
    return {
        **out,
        "mean": float(obs.mean()),
        "sd": float(obs.std()),
        **{k: float(x) for k, x in zip(keys, q, strict=True)},
    }


def development_summary(
    model: Any, name: str, X: pd.DataFrame, importance: list[dict[str, Any]]
) -> dict[str, Any]:
    """The development distribution of the top variables of the fitted model `name` (for model.json).

    `importance`: ``[{"variable", "mean_abs_shap"}, ...]`` largest first (``shap_top`` of the fit's
    metrics). Only summaries are kept, never a patient's row.
    """
    from cdeg.modeling.names import describe

    values = model_values(model, X)
    rows = []
    for item in importance:
        c = item["variable"]
        if c not in values.columns:
            continue
        rows.append(
            {
                "variable": c,
                "label": describe(c).label,
                "mean_abs_shap": float(item["mean_abs_shap"]),
                **summarise(values[c]),
            }
        )
    return {
        "model": name,
        "values": "the model's variables before imputation (derived variables included)",
        "variables": rows,
    }


def smd(dev: dict[str, Any], ext: dict[str, Any]) -> float | None:
    """Standardised mean difference, external minus development, over the pooled SD (module docstring);
    None when either side has no value or both are constant."""
    if dev.get("mean") is None or ext.get("mean") is None:
        return None
    pooled = np.sqrt((dev["sd"] ** 2 + ext["sd"] ** 2) / 2)
    return float((ext["mean"] - dev["mean"]) / pooled) if pooled > 0 else None


def transport_rows(summary: dict[str, Any], external: pd.DataFrame, top: int = TOP_N) -> list[dict[str, Any]]:
    """One row per top variable of the development `summary`: development against `external` (the external
    patients' :func:`model_values`); keys :data:`COLUMNS`."""
    rows = []
    for rank, d in enumerate(summary.get("variables", [])[:top], start=1):
        c = d["variable"]
        e_all = (
            pd.to_numeric(external[c], errors="coerce")
            if c in external.columns
            else pd.Series(np.nan, index=external.index)
        )
        e = summarise(e_all)
        obs = e_all.dropna().to_numpy(dtype=float)
        below = float((obs < d["min"]).mean()) if len(obs) and d.get("min") is not None else None
        above = float((obs > d["max"]).mean()) if len(obs) and d.get("max") is not None else None
        rows.append(
            {
                "rank": rank,
                "variable": c,
                "label": d["label"],
                "mean_abs_shap": d["mean_abs_shap"],
                "development_n": d["n"],
                "development_median": d["median"],
                "development_q1": d["q1"],
                "development_q3": d["q3"],
                "development_min": d["min"],
                "development_max": d["max"],
                "external_n": e["n"],
                "external_median": e["median"],
                "external_q1": e["q1"],
                "external_q3": e["q3"],
                "external_imputed_share": e["missing"],
                "external_below_min": below,
                "external_above_max": above,
                "external_outside_range": None if below is None else below + above,
                "smd": smd(d, e),
            }
        )
    return rows


def transport_sentence(rows: list[dict[str, Any]], model: str, many: float = MANY) -> str:
    """One plain sentence that reads the table: how many top variables have many external values outside
    the development range, and how many are often imputed."""
    if not rows:
        return ""
    n = len(rows)
    outside = [r for r in rows if (r["external_outside_range"] or 0) > many]
    imputed = [r for r in rows if r["external_imputed_share"] > many]
    flat = (
        "the model's trees predict there as at the development extremes"
        if model == "xgboost"
        else "the model extrapolates there"
    )
    if outside:
        names = ", ".join(r["label"] for r in outside[:3]) + (" ..." if len(outside) > 3 else "")
        text = (
            f"{len(outside)} of the {n} top variables have more than {many:.0%} of external values outside the "
            f"development range ({names}); {flat}."
        )
    else:
        text = f"None of the {n} top variables has more than {many:.0%} of external values outside the development range."
    if imputed:
        text += (
            f" {len(imputed)} of them are missing for more than {many:.0%} of the external patients and were set "
            "to the development median or most frequent value."
        )
    return text


def transport_summary(rows: list[dict[str, Any]], model: str, many: float = MANY) -> dict[str, Any]:
    """The counts behind :func:`transport_sentence` (metrics.json ``transport.summary``)."""
    smds = [abs(r["smd"]) for r in rows if r["smd"] is not None]
    return {
        "n_variables": len(rows),
        "threshold": many,
        "n_outside_range": sum((r["external_outside_range"] or 0) > many for r in rows),
        "n_imputed": sum(r["external_imputed_share"] > many for r in rows),
        "n_smd_above_0.1": sum(s > 0.1 for s in smds),
        "largest_abs_smd": max(smds) if smds else None,
        "sentence": transport_sentence(rows, model, many),
    }


def age_shift(subgroups: list[dict[str, Any]], development_range: list[float] | None) -> dict[str, Any]:
    """The external patients outside the development ages, from the subgroup rows of
    :func:`cdeg.modeling.subgroups.subgroup_table`: how many, the mean predicted risk and the observed share
    with the outcome among them, and one sentence."""
    from cdeg.modeling.subgroups import OUTSIDE

    out: dict[str, Any] = {"development_range": development_range}
    outside = next((r for r in subgroups if r["group"].startswith(OUTSIDE)), None)
    with_age = sum(r["n"] for r in subgroups if r["variable"] == "age" and r is not outside)
    out["n_with_age"] = with_age
    if development_range is None or not with_age:
        return out
    n = outside["n"] if outside else 0
    out.update(n_outside=n, share_outside=n / with_age)
    lo, hi = development_range
    if not outside:
        out["sentence"] = (
            f"Every external patient with an age is within the development ages ({lo:g}-{hi:g} years)."
        )
        return out
    risk, seen = outside["mean_risk"], outside["observed"]
    out.update(mean_risk_outside=risk, observed_outside=seen)
    how = (
        "predicts about the observed share there"
        if abs(risk - seen) < 0.01
        else f"{'over' if risk > seen else 'under'}-predicts there"
    )
    out["sentence"] = (
        f"{n / with_age:.0%} of the external patients are outside the development ages ({lo:g}-{hi:g} years); "
        f"the model {how}: mean risk {risk:.0%} against {seen:.0%} observed."
    )
    return out
