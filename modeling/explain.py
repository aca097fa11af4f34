"""SHAP explanations of a fitted classifier, in log-odds, with variable names a clinician reads.

SHAP is a separate function taking a fitted :class:`~cdeg.modeling.models.TabularClassifier`:

* XGBoost: exact TreeSHAP (``shap.TreeExplainer``) of the booster's raw output, the log-odds;
* logistic models: exact linear SHAP with the training mean as background, ``coef * (z - 0)`` on the
  standardised scale (the Standardizer centres on the training mean), i.e. also log-odds.

Contributions add up: base value + sum of SHAP values = the patient's log-odds; probability = 1/(1+exp(-log-odds)).
The values shown next to the variables are the model inputs in their original units (after imputation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from cdeg.modeling.groups import group_of
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.names import describe

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
    """

    values: np.ndarray
    base_value: float
    data: pd.DataFrame

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


def shap_values(model: TabularClassifier, X: pd.DataFrame) -> ShapResult:
    """SHAP values (log-odds) of `model` for the patients in `X` (raw input columns, as for predict)."""
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
    return ShapResult(values=values, base_value=base, data=data)


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
