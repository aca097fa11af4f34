"""Preprocessing as scikit-learn-style transformers whose fitted state serialises to JSON (no pickle).

Every step is fitted inside a training fold only, then applied unchanged to the patients of the matching
test fold, so no information of a test patient reaches the model that predicts them. Steps, in order:

1. :class:`MissingFilter`      drop variables missing in more than ``max_missing`` of the training patients;
2. :class:`CategoricalEncoder` fill missing text values with the training mode, one-hot encode (``col=level``);
3. :class:`MedianImputer`      fill missing numbers with the training median;
4. :class:`ConstantFilter`     drop variables with one value only;
5. :class:`CorrelationFilter`  drop near-duplicates (|Spearman r| above a threshold with an earlier kept one);
6. :class:`UnivariateSelector` optional: keep the k variables with the largest |AUC - 0.5|;
7. :class:`Standardizer`       for the logistic models: centre and scale to unit variance.

All work on pandas DataFrames and return float DataFrames, so variable names travel with the data.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from cdeg.modeling.data import is_text
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

ONE_HOT_SEP = "="


class JsonTransformer(TransformerMixin, BaseEstimator):
    """Base class: fitted attributes named in ``_state`` round-trip through :meth:`to_dict`/:func:`from_dict`."""

    _state: ClassVar[tuple[str, ...]] = ()

    def _check_input(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, self._state[0] if self._state else [])
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(
                f"{type(self).__name__}: input lacks {len(missing)} column(s) seen in fit: {missing[:5]}"
            )
        return X[self.feature_names_in_]

    def _start_fit(self, X: pd.DataFrame) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"{type(self).__name__} expects a pandas DataFrame")
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.n_features_in_ = len(self.feature_names_in_)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)

    def to_dict(self) -> dict[str, Any]:
        """Parameters and fitted state as JSON-serialisable data."""
        state = {a: _jsonable(getattr(self, a)) for a in ("feature_names_in_", *self._state)}
        return {"class": type(self).__name__, "params": self.get_params(), "state": state}


class MissingFilter(JsonTransformer):
    """Drop variables missing in more than `max_missing` of the training rows.

    Parameters
    ----------
    max_missing : float
        Largest share of missing values a kept variable may have.
    """

    _state = ("columns_", "missing_share_")

    def __init__(self, max_missing: float = 0.5):
        self.max_missing = max_missing

    def fit(self, X: pd.DataFrame, y: Any = None) -> MissingFilter:
        self._start_fit(X)
        share = X.isna().mean(axis=0)
        self.missing_share_ = {c: float(share[c]) for c in X.columns}
        self.columns_ = [c for c in X.columns if share[c] <= self.max_missing]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


class CategoricalEncoder(JsonTransformer):
    """One-hot encode text columns (all levels kept); missing text values take the training mode.

    A level unseen in training encodes as all zeros. Numeric columns pass through as float.
    """

    _state = ("columns_", "categories_", "modes_")

    def fit(self, X: pd.DataFrame, y: Any = None) -> CategoricalEncoder:
        self._start_fit(X)
        self.categories_: dict[str, list[str]] = {}
        self.modes_: dict[str, str] = {}
        for c in X.columns:
            if is_text(X[c]):
                values = X[c].dropna().astype(str)
                levels = sorted(values.unique())
                self.categories_[c] = levels
                counts = values.value_counts()
                # Ties broken by level order, so the mode does not depend on row order.
                self.modes_[c] = min(levels, key=lambda v: (-counts[v], v)) if levels else ""
        self.columns_ = []
        for c in X.columns:
            if c in self.categories_:
                self.columns_.extend(f"{c}{ONE_HOT_SEP}{lv}" for lv in self.categories_[c])
            else:
                self.columns_.append(c)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        numeric = [c for c in X.columns if c not in self.categories_]
        if not self.categories_:  # the common case: one array operation, no per-column work
            return pd.DataFrame(X.to_numpy(dtype=float), index=X.index, columns=self.columns_)
        num = X[numeric].to_numpy(dtype=float) if numeric else None
        blocks: dict[str, np.ndarray] = {}
        for c, levels in self.categories_.items():
            v = X[c].astype(object).where(X[c].notna(), self.modes_[c]).astype(str).to_numpy()
            blocks[c] = (v[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(float)
        cols, k = [], 0
        for c in X.columns:
            if c in blocks:
                cols.append(blocks[c])
            else:
                cols.append(num[:, k : k + 1])
                k += 1
        A = np.hstack(cols) if cols else np.empty((len(X), 0))
        return pd.DataFrame(A, index=X.index, columns=self.columns_)

    def source_of(self, column: str) -> str:
        """The input column an output column comes from (``smoking=current`` -> ``smoking``)."""
        if column in self.feature_names_in_:
            return column
        base = column.rsplit(ONE_HOT_SEP, 1)[0]
        return base if base in self.categories_ else column


class MedianImputer(JsonTransformer):
    """Fill missing values with the training median (0 for a column with no value at all)."""

    _state = ("columns_", "medians_")

    def fit(self, X: pd.DataFrame, y: Any = None) -> MedianImputer:
        self._start_fit(X)
        med = X.median(axis=0, skipna=True)
        self.medians_ = {c: (float(med[c]) if np.isfinite(med[c]) else 0.0) for c in X.columns}
        self.columns_ = list(X.columns)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        A = X.to_numpy(dtype=float, copy=True)
        med = np.asarray([self.medians_[c] for c in X.columns], dtype=float)
        rows, cols = np.nonzero(np.isnan(A))
        A[rows, cols] = med[cols]
        return pd.DataFrame(A, index=X.index, columns=X.columns)


class ConstantFilter(JsonTransformer):
    """Drop variables that take a single value in the training rows."""

    _state = ("columns_",)

    def fit(self, X: pd.DataFrame, y: Any = None) -> ConstantFilter:
        self._start_fit(X)
        A = X.to_numpy(dtype=float)
        varies = (np.nanmax(A, axis=0) - np.nanmin(A, axis=0)) > 0 if A.size else np.zeros(A.shape[1], bool)
        self.columns_ = [c for c, v in zip(X.columns, varies, strict=True) if v]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


class CorrelationFilter(JsonTransformer):
    """Drop near-duplicate variables: a column is dropped when |Spearman r| with an earlier kept one exceeds `threshold`.

    Greedy in column order, so clinical columns (first in the table) are preferred to image features.

    Parameters
    ----------
    threshold : float
        1.0 keeps every column.
    """

    _state = ("columns_",)

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold

    def fit(self, X: pd.DataFrame, y: Any = None) -> CorrelationFilter:
        from scipy.stats import rankdata

        self._start_fit(X)
        if self.threshold >= 1.0 or X.shape[1] < 2:
            self.columns_ = list(X.columns)
            return self
        R = rankdata(X.to_numpy(dtype=float), axis=0)
        R = (R - R.mean(axis=0)) / np.maximum(R.std(axis=0), 1e-12)
        C = np.abs(R.T @ R) / R.shape[0]
        keep: list[int] = []
        for j in range(C.shape[0]):
            if not keep or C[j, keep].max() <= self.threshold:
                keep.append(j)
        self.columns_ = [X.columns[j] for j in keep]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


class UnivariateSelector(JsonTransformer):
    """Keep the `k` variables with the largest |AUC - 0.5| against the training target (k=0: keep all)."""

    _state = ("columns_", "scores_")

    def __init__(self, k: int = 0):
        self.k = k

    def fit(self, X: pd.DataFrame, y: Any = None) -> UnivariateSelector:
        from cdeg.modeling.data import univariate_auc

        self._start_fit(X)
        if self.k <= 0 or self.k >= X.shape[1]:
            self.scores_ = {}
            self.columns_ = list(X.columns)
            return self
        if y is None:
            raise ValueError("UnivariateSelector needs the target y")
        score = np.abs(np.nan_to_num(univariate_auc(X, np.asarray(y)), nan=0.5) - 0.5)
        order = np.argsort(-score, kind="stable")[: self.k]
        chosen = set(order.tolist())
        self.columns_ = [c for j, c in enumerate(X.columns) if j in chosen]
        self.scores_ = {X.columns[j]: float(score[j]) for j in sorted(chosen)}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


class Standardizer(JsonTransformer):
    """Centre on the training mean and divide by the training standard deviation (1 where it is 0)."""

    _state = ("columns_", "mean_", "scale_")

    def fit(self, X: pd.DataFrame, y: Any = None) -> Standardizer:
        self._start_fit(X)
        A = X.to_numpy(dtype=float)
        self.mean_ = A.mean(axis=0).tolist()
        sd = A.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0).tolist()
        self.columns_ = list(X.columns)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        A = (X.to_numpy(dtype=float) - np.asarray(self.mean_)) / np.asarray(self.scale_)
        return pd.DataFrame(A, index=X.index, columns=self.columns_)


#: The transformers a saved preprocessor may contain (explicit registry; no discovery by name).
STEPS: dict[str, type[JsonTransformer]] = {
    cls.__name__: cls
    for cls in (
        MissingFilter,
        CategoricalEncoder,
        MedianImputer,
        ConstantFilter,
        CorrelationFilter,
        UnivariateSelector,
        Standardizer,
    )
}


class Preprocessor(JsonTransformer):
    """The whole preprocessing chain, fitted on training rows only.

    Parameters
    ----------
    max_missing, corr_threshold, select_k : see :class:`cdeg.modeling.config.PreprocessOptions`.
    standardize : bool
        Append a :class:`Standardizer` (logistic models).

    Attributes
    ----------
    steps_ : list of JsonTransformer
        The fitted steps.
    columns_ : list of str
        Output variables (after one-hot encoding and filtering).
    used_inputs_ : list of str
        Input columns that reach the output (a categorical column counts once): the variables the model needs.
    imputation_ : dict
        Value used for a missing input: the training median (numbers) or mode (text).
    """

    _state = ("columns_", "used_inputs_", "imputation_")

    def __init__(
        self,
        max_missing: float = 0.5,
        corr_threshold: float = 0.95,
        select_k: int = 0,
        standardize: bool = False,
    ):
        self.max_missing = max_missing
        self.corr_threshold = corr_threshold
        self.select_k = select_k
        self.standardize = standardize

    def _make_steps(self) -> list[JsonTransformer]:
        steps: list[JsonTransformer] = [
            MissingFilter(self.max_missing),
            CategoricalEncoder(),
            MedianImputer(),
            ConstantFilter(),
            CorrelationFilter(self.corr_threshold),
            UnivariateSelector(self.select_k),
        ]
        if self.standardize:
            steps.append(Standardizer())
        return steps

    def fit(self, X: pd.DataFrame, y: Any = None) -> Preprocessor:
        self._start_fit(X)
        self.steps_ = self._make_steps()
        Z = X
        for step in self.steps_:
            Z = step.fit(Z, y).transform(Z)
        self._finish()
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        self._start_fit(X)
        self.steps_ = self._make_steps()
        Z = X
        for step in self.steps_:
            Z = step.fit(Z, y).transform(Z)
        self._finish()
        return Z

    def _finish(self) -> None:
        self.columns_ = list(self.steps_[-1].columns_)
        enc = self.encoder_
        used = {enc.source_of(c) for c in self.columns_}
        self.used_inputs_ = [c for c in self.feature_names_in_ if c in used]
        imp = self.steps_[2]
        self.imputation_ = {}
        for c in self.used_inputs_:
            self.imputation_[c] = enc.modes_[c] if c in enc.categories_ else imp.medians_.get(c)

    @property
    def encoder_(self) -> CategoricalEncoder:
        return next(s for s in self.steps_ if isinstance(s, CategoricalEncoder))

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "steps_")
        Z = X
        for step in self.steps_:
            Z = step.transform(Z)
        return Z

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["steps"] = [s.to_dict() for s in self.steps_]
        return d


def from_dict(data: dict[str, Any]) -> JsonTransformer:
    """Rebuild a fitted transformer from :meth:`JsonTransformer.to_dict` output."""
    name = data.get("class")
    classes = {**STEPS, "Preprocessor": Preprocessor}
    if name not in classes:
        raise ValueError(f"unknown transformer {name!r}; valid: {', '.join(classes)}")
    obj = classes[name](**data.get("params", {}))
    for attr, value in data.get("state", {}).items():
        setattr(obj, attr, value)
    if isinstance(obj, Preprocessor):
        obj.steps_ = [from_dict(s) for s in data["steps"]]
    obj.n_features_in_ = len(obj.feature_names_in_)
    return obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
