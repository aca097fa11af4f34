"""SHAP explanations of a fitted classifier, in log-odds, with variable names a clinician reads.

SHAP is a separate function taking a fitted :class:`~cdeg.modeling.models.TabularClassifier`:

* XGBoost: exact TreeSHAP (``shap.TreeExplainer``) of the booster's raw output, the log-odds;
* logistic models: exact linear SHAP with the training mean as background, ``coef * (z - 0)`` on the
  standardised scale (the Standardizer centres on the training mean), i.e. also log-odds.

Contributions add up: base value + sum of SHAP values = the patient's log-odds; probability = 1/(1+exp(-log-odds)).
The values shown next to the variables are the model inputs in their original units (after imputation).

The base value is an average in log-odds, not a risk: for the logistic models the log-odds at the training mean,
which is the mean training log-odds; for XGBoost TreeSHAP's expected value, the training patients' log-odds
averaged with the weights the trees were grown with (the hessian-weighted cover of each node; shap issue #1559,
https://github.com/shap/shap/issues/1559). The expit of a mean log-odds is not the mean risk (shap issue #1685,
https://github.com/shap/shap/issues/1685), so the "average patient" risk is given separately as the mean predicted
probability of the training patients (:attr:`ShapResult.mean_risk`).

Cross-validated explanations: :func:`shap_table` keeps, for each outer-fold model of the nested CV, the SHAP values
of the test patients it predicted, so a patient card explains the very model that gave its cross-validated risk
(:func:`from_table` rebuilds the :class:`ShapResult` of one fold); :func:`shap_stability` says how much the
outer-fold models agree on which variables matter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling.data import feature_set_of
from cdeg.modeling.groups import group_of
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.names import describe

from cdeg.cohort import MODALITIES

#: Why age can lower the risk at equal degeneration (the reports, and the patient card when it does).
AGE_SENTENCE = (
    "Why age can lower the risk: the question is degeneration beyond what is expected for the patient's age, so "
    "for the same images an older patient is less 'accelerated' than a younger one. At equal degeneration a higher "
    "age therefore lowers the predicted risk; this follows from the definition of the target, it is not a "
    "protective effect of age."
)
#: How to read ``shap_stability`` (metrics.json, the fit report and the study report).
STABILITY_HOW = (
    "Each outer-fold model ranks the variables by mean |SHAP| on the patients it predicted. Rank agreement is "
    "Spearman's correlation of two fold models' mean |SHAP| over the union of their top {top}, averaged over all "
    "pairs of the {models} fold models: 1 = the same order, 0 = unrelated orders. 'In top {top}' counts the fold "
    "models in which the variable is among the {top} most influential: a variable in few of them is a weak "
    "finding, whatever its rank in the final model."
)

#: Ways of grouping variables (:meth:`cdeg.modeling.groups.Group.key`).
GROUPINGS: tuple[str, ...] = ("level", "concept", "level_concept")


@dataclass
class ShapResult:
    """SHAP values of some patients.

    Attributes
    ----------
    values : ndarray, shape (n, p)
        Contributions to the log-odds.
    base_value : float
        Log-odds of the average training patient (expected model output).
    data : DataFrame, shape (n, p)
        Variable values as the model sees them, in original units (imputed; one-hot 0/1).
    mean_risk : float or None
        Mean predicted probability of the model's training patients (the "average patient" risk; the base
        value is a mean log-odds, whose expit is not this mean); None when unknown.
    """

    values: np.ndarray
    base_value: float
    data: pd.DataFrame
    mean_risk: float | None = None

    @property
    def feature_names(self) -> list[str]:
        return list(self.data.columns)

    @property
    def labels(self) -> list[str]:
        """Display names with units ("disc height C5-C6 (radiograph), mm")."""
        return [describe(c).label for c in self.data.columns]

    def importance(self) -> pd.Series:
        """Mean |SHAP| per variable, largest first."""
        imp = pd.Series(np.abs(self.values).mean(axis=0), index=self.data.columns)
        return imp.sort_values(ascending=False, kind="stable")

    def log_odds(self) -> np.ndarray:
        return self.base_value + self.values.sum(axis=1)


def shap_values(model: TabularClassifier, X: pd.DataFrame, mean_risk: float | None = None) -> ShapResult:
    """SHAP values (log-odds) of `model` for the patients in `X` (raw input columns, as for predict);
    `mean_risk` is the mean predicted probability of its training patients, when known."""
    Z = model.transform(X)
    if model.kind == "xgboost":
        import shap

        explainer = shap.TreeExplainer(model.estimator_)
        ex = explainer(Z.to_numpy(dtype=float))
        values = np.asarray(ex.values, dtype=float)
        base = (
            float(np.ravel(ex.base_values)[0]) if np.size(ex.base_values) else float(explainer.expected_value)
        )
        data = Z
    else:
        coef = np.asarray(model.estimator_.coef_[0], dtype=float)
        values = Z.to_numpy(dtype=float) * coef
        base = float(model.estimator_.intercept_[0])
        std = next(s for s in model.preprocessor_.steps_ if type(s).__name__ == "Standardizer")
        data = pd.DataFrame(
            Z.to_numpy() * np.asarray(std.scale_) + np.asarray(std.mean_), index=Z.index, columns=Z.columns
        )
    return ShapResult(values=values, base_value=base, data=data, mean_risk=mean_risk)


def group_keys(columns: list[str], by: str) -> list[str]:
    """The group name of each column when grouping `by` one of :data:`GROUPINGS`."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; valid: {', '.join(GROUPINGS)}")
    return [group_of(c).key(by) for c in columns]


def grouped_shap(sr: ShapResult, by: str = "level") -> pd.DataFrame:
    """SHAP values summed per group (patients x groups), groups ordered by mean |grouped SHAP|.

    SHAP values are additive, so a group's sum is its contribution to the patient's log-odds and the row sums
    equal those of the per-variable values: base value + row sum = the patient's log-odds.
    """
    keys = group_keys(sr.feature_names, by)
    per_var = pd.DataFrame(sr.values, index=sr.data.index, columns=range(len(keys)))
    grouped = per_var.T.groupby(pd.Index(keys), sort=False).sum().T
    order = grouped.abs().mean(axis=0).sort_values(ascending=False, kind="stable").index
    return grouped[order]


def grouped_importance(sr: ShapResult, by: str = "level") -> pd.Series:
    """Mean |grouped SHAP| per group, largest first (the absolute value of the sum, not the sum of absolutes)."""
    return grouped_shap(sr, by).abs().mean(axis=0)


# --- patients without a scan ------------------------------------------------------------------------------------


def absent_modalities(X: pd.DataFrame) -> dict[str, list[str]]:
    """Per patient (index of `X`, raw inputs), the modalities of which every input column is missing: the patient
    has no such scan, and the model sees only imputed values for all its variables of that modality."""
    by_mod = {m: [c for c in X.columns if feature_set_of(str(c)) == m] for m in MODALITIES}
    out: dict[str, list[str]] = {str(pid): [] for pid in X.index}
    for m, cols in by_mod.items():
        if not cols:
            continue
        none = X[cols].isna().to_numpy().all(axis=1)
        for pid, absent in zip(X.index, none, strict=True):
            if absent:
                out[str(pid)].append(m)
    return out


def modality_of(column: str) -> str:
    """The modality of a model variable ("mri", "xray"; derived variables keep their modality prefix), or
    "other" for clinical and other columns."""
    return feature_set_of(column)


# --- cross-validated explanations -------------------------------------------------------------------------------

#: Columns of the per-fold SHAP table (oof_shap.csv), after the patient id column.
SHAP_TABLE_COLUMNS: tuple[str, ...] = (
    "repeat",
    "fold",
    "variable",
    "shap",
    "value",
    "base_value",
    "mean_risk",
)


def shap_table(sr: ShapResult, ids: Sequence[str], repeat: int, fold: int, id_column: str) -> pd.DataFrame:
    """The SHAP values of one outer-fold model on its test patients `ids`, one row per patient and variable
    (long format: the variables differ between fold models)."""
    n, p = sr.values.shape
    return pd.DataFrame(
        {
            id_column: np.repeat(np.asarray(ids, dtype=object), p),
            "repeat": repeat,
            "fold": fold,
            "variable": np.tile(np.asarray(sr.feature_names, dtype=object), n),
            "shap": sr.values.reshape(-1),
            "value": sr.data.to_numpy(dtype=float).reshape(-1),
            "base_value": sr.base_value,
            "mean_risk": np.nan if sr.mean_risk is None else sr.mean_risk,
        }
    )


def from_table(table: pd.DataFrame, id_column: str) -> ShapResult:
    """The :class:`ShapResult` of the rows of :func:`shap_table` of one fold model (one repeat, one fold)."""
    keys = table[["repeat", "fold"]].drop_duplicates()
    if len(keys) != 1:
        raise ValueError(f"from_table needs the rows of one fold model, got {len(keys)}")
    variables = list(dict.fromkeys(table["variable"]))
    values = table.pivot(index=id_column, columns="variable", values="shap")
    ids = list(dict.fromkeys(table[id_column]))
    values = values.loc[ids, variables]
    data = table.pivot(index=id_column, columns="variable", values="value").loc[ids, variables]
    data.index, data.columns = data.index.astype(str), list(variables)
    mean_risk = float(table["mean_risk"].iloc[0])
    return ShapResult(
        values=values.to_numpy(dtype=float),
        base_value=float(table["base_value"].iloc[0]),
        data=data,
        mean_risk=mean_risk if np.isfinite(mean_risk) else None,
    )


def fold_importance(
    table: pd.DataFrame, id_column: str, by: str | None = None
) -> dict[tuple[int, int], pd.Series]:
    """Mean |SHAP| per variable (`by` None) or per group (`by` one of :data:`GROUPINGS`: |sum of the group's
    values| averaged over patients, as :func:`grouped_importance`) of each fold model, keyed (repeat, fold)."""
    out: dict[tuple[int, int], pd.Series] = {}
    for (r, f), rows in table.groupby(["repeat", "fold"], sort=True):
        key = (
            rows["variable"].to_numpy() if by is None else np.asarray(group_keys(list(rows["variable"]), by))
        )
        per = rows["shap"].groupby([rows[id_column].to_numpy(), key], sort=False).sum().abs()
        imp = per.groupby(level=1, sort=False).mean()
        out[(int(r), int(f))] = imp.sort_values(ascending=False, kind="stable")
    return out


def shap_stability(importances: Sequence[pd.Series], top: int = 10) -> dict[str, Any]:
    """How much the outer-fold models agree on which variables (or groups) matter.

    For each pair of fold models, Spearman's rank correlation of their mean |SHAP| over the union of their
    `top` variables (a variable a model lacks or does not use counts 0); then the mean, lowest and highest over
    the pairs that both rank at least two variables (1 = the same ranking; None when no pair does: e.g. fold
    models that use no variable). Variables with no contribution in a model are not in its top. And, for the `top`
    variables by mean |SHAP| over all folds, in how many fold models each is among the `top`. Spearman's rho is the Pearson correlation of the ranks, ties given their
    mean rank (scipy.stats.spearmanr, https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html).
    """
    from scipy.stats import spearmanr

    # A variable a model gives no contribution at all is in nobody's top: ties at 0 are not a ranking.
    imps = [s[s.index.notna() & (s > 0)] for s in importances]
    tops = [set(s.index[:top]) for s in imps]
    rhos = []
    for a, b in combinations(range(len(imps)), 2):
        union = sorted(tops[a] | tops[b])
        x = imps[a].reindex(union, fill_value=0.0).to_numpy(dtype=float)
        y = imps[b].reindex(union, fill_value=0.0).to_numpy(dtype=float)
        if len(union) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue  # one of the two ranks nothing (no or one variable used): no order to compare
        rhos.append(float(spearmanr(x, y).statistic))
    overall = pd.concat(imps, axis=1).fillna(0.0).mean(axis=1) if imps else pd.Series(dtype=float)
    overall = overall.sort_values(ascending=False, kind="stable")
    return {
        "models": len(imps),
        "top": top,
        "pairs": len(rhos),
        "mean_spearman": float(np.mean(rhos)) if rhos else None,
        "min_spearman": float(np.min(rhos)) if rhos else None,
        "max_spearman": float(np.max(rhos)) if rhos else None,
        "top_variables": [
            {"name": str(v), "mean_abs_shap": float(m), "folds_in_top": int(sum(v in t for t in tops))}
            for v, m in overall.iloc[:top].items()
        ],
    }
