"""Preprocessing as scikit-learn-style transformers whose fitted state serialises to JSON (no pickle).

Every step is fitted inside a training fold only, then applied unchanged to the patients of the matching
test fold, so no information of a test patient reaches the model that predicts them. Steps, in order:

1. :class:`StableFeatureFilter` optional: drop radiomics features whose ICC (a stability table) is below ``min_icc``;
2. :class:`AgeNorm`            add ``<modality>__<level>__<measurement>__age_z``: SD from the age and sex norm of
                               each clinical measurement (norms fitted on the training rows or a reference cohort);
3. :class:`LevelSummary`       add ``<modality>__<agg>__<measurement>[__age_z]`` over levels: mean, worst, and the
                               index level and its neighbours;
   :class:`DegenerationScore`  add ``<modality>__discs_mean__degeneration_score__age_z``: the patient's disc
                               degeneration beyond the age norm, height and signal loss averaged over the discs;
4. :class:`MissingFilter`      drop variables missing in more than ``max_missing`` of the training patients;
5. :class:`CategoricalEncoder` fill missing text values with the training mode, one-hot encode (``col=level``);
6. :class:`MedianImputer`      fill missing numbers with the training median;
7. :class:`ConstantFilter`     drop variables with one value, or one value in more than ``near_constant`` of rows;
8. :class:`CorrelationFilter`  drop near-duplicates (|Spearman r| above a threshold with a kept one), clinical
                               columns kept first, then measurements, then radiomics;
9. :class:`UnivariateSelector` keep the k image variables with the largest |AUC - 0.5| (clinical columns stay);
10. :class:`Standardizer`      for the logistic models: centre and scale to unit variance.

All work on pandas DataFrames and return DataFrames, so variable names travel with the data.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from cdeg.modeling.data import SEP, is_text, is_text_dtype
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from cdeg import labels, measures
from cdeg.cohort import MODALITIES
from cdeg.errors import CdegError

ONE_HOT_SEP = "="
#: Last name part of an age-adjusted measurement: ``xray__C5-C6__disc_height_middle_mm__age_z``.
AGE_Z = "age_z"
AGE_Z_SUFFIX = SEP + AGE_Z
#: Level aggregates of :class:`LevelSummary`, in output order; they take the place of the level in the name
#: (``xray__worst__disc_height_middle_mm``).
AGGREGATES: tuple[str, ...] = ("mean", "worst", "index", "above_index", "below_index")
#: Level tokens of the radiomics means: a PyRadiomics feature averaged over the discs or over the vertebrae
#: (``mri__discs_mean__original_firstorder_Mean``). One level's texture is a noisy reading of its
#: degeneration; their mean over the levels is what a patient-level question needs.
RADIOMICS_MEANS: dict[str, str] = {"disc": "discs_mean", "vertebra": "vertebrae_mean"}
#: Feature part of the patient-level degeneration score (:class:`DegenerationScore`):
#: ``mri__discs_mean__degeneration_score__age_z``.
DEGENERATION_SCORE = "degeneration_score"
#: Aggregates that read the patient's index level, and the disc they take relative to it.
INDEX_OFFSETS: dict[str, int] = {"index": 0, "above_index": -1, "below_index": 1}
#: Where the age norms come from: the training rows of each fold, a reference cohort, or nowhere.
AGE_NORM_MODES: tuple[str, ...] = ("training", "reference", "off")


def parse_image_name(name: str) -> tuple[str, str, str, bool] | None:
    """(modality, level, feature, age-adjusted) of ``<modality>__<level>__<feature>[__age_z]``; None otherwise."""
    parts = name.split(SEP)
    if len(parts) < 3 or parts[0] not in MODALITIES:
        return None
    z = len(parts) >= 4 and parts[-1] == AGE_Z
    return parts[0], parts[1], SEP.join(parts[2:-1] if z else parts[2:]), z


def column_priority(name: str) -> int:
    """Which of two near-duplicates to keep (lower first): 0 clinical-table columns (no ``__``), 1 clinical
    measurements (per level, age-adjusted or aggregated over levels), 2 radiomics and any other image feature."""
    if SEP not in name:
        return 0
    parsed = parse_image_name(name)
    return 1 if parsed is not None and (parsed[2] in measures.UNITS or parsed[2] == DEGENERATION_SCORE) else 2


class JsonTransformer(TransformerMixin, BaseEstimator):
    """Base class: fitted attributes named in ``_state`` round-trip through :meth:`to_dict`/:func:`from_dict`."""

    _state: ClassVar[tuple[str, ...]] = ()

    def _check_input(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, self._state[0] if self._state else [])
        # The chain hands each step the frame the previous step returned: its columns are already these, in this
        # order, and selecting ~3,000 columns by name again costs more than the step itself.
        if X.columns.tolist() == self.feature_names_in_:
            return X
        present = set(X.columns.tolist())  # membership in a pyarrow-backed Index iterates it
        missing = [c for c in self.feature_names_in_ if c not in present]
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

    def sources(self, columns: Iterable[str]) -> set[str]:
        """Input columns the output `columns` are computed from (a filter passes its columns through)."""
        return set(columns)

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
        share = X.isna().to_numpy().mean(axis=0) if len(X) else np.zeros(X.shape[1])
        self.missing_share_ = {c: float(v) for c, v in zip(X.columns, share, strict=True)}
        self.columns_ = [c for c, v in zip(X.columns, share, strict=True) if v <= self.max_missing]
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
        for c, dtype in X.dtypes.items():
            if is_text_dtype(dtype):
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

    def sources(self, columns: Iterable[str]) -> set[str]:
        return {self.source_of(c) for c in columns}


class MedianImputer(JsonTransformer):
    """Fill missing values with the training median (0 for a column with no value at all)."""

    _state = ("columns_", "medians_")

    def fit(self, X: pd.DataFrame, y: Any = None) -> MedianImputer:
        self._start_fit(X)
        A = X.to_numpy(dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column: 0 below
            med = np.nanmedian(A, axis=0) if len(A) else np.full(A.shape[1], np.nan)
        self.medians_ = {
            c: (float(m) if np.isfinite(m) else 0.0) for c, m in zip(X.columns, med, strict=True)
        }
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
    """Drop variables that take a single value, or whose most frequent value covers more than `max_share` of the
    training rows (near-constant: too few patients differ to learn from).

    Parameters
    ----------
    max_share : float
        Largest share of training rows the most frequent value of a kept variable may cover; 1.0 drops only
        variables with a single value.
    """

    _state = ("columns_", "dropped_")

    def __init__(self, max_share: float = 1.0):
        self.max_share = max_share

    def fit(self, X: pd.DataFrame, y: Any = None) -> ConstantFilter:
        self._start_fit(X)
        A = X.to_numpy(dtype=float)
        share = _mode_share(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns: dropped below
            varies = (
                (np.nanmax(A, axis=0) - np.nanmin(A, axis=0)) > 0 if A.size else np.zeros(A.shape[1], bool)
            )
        keep = varies & (share <= self.max_share)
        self.columns_ = [c for c, k in zip(X.columns, keep, strict=True) if k]
        self.dropped_ = {c: float(f) for c, k, f in zip(X.columns, keep, share, strict=True) if not k}
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


def _mode_share(A: np.ndarray) -> np.ndarray:
    """Per column, the share of rows holding its most frequent value (missing values count as distinct)."""
    n, m = A.shape
    if n == 0:
        return np.zeros(m)
    S = np.sort(A, axis=0)
    new_run = np.ones_like(S, dtype=bool)
    new_run[1:] = S[1:] != S[:-1]  # NaN != NaN: each missing value is a run of its own
    rows = np.arange(n)[:, None]
    start = np.maximum.accumulate(np.where(new_run, rows, 0), axis=0)
    return (rows - start + 1).max(axis=0) / n


class CorrelationFilter(JsonTransformer):
    """Drop near-duplicate variables: a column is dropped when its |Spearman r| with a kept one exceeds `threshold`.

    Greedy, visiting the columns by :func:`column_priority` (clinical columns, then clinical measurements, then
    radiomics; table order within each), so a measurement survives over a radiomics feature that duplicates it.
    Output columns keep the table order.

    Parameters
    ----------
    threshold : float
        1.0 keeps every column.

    Attributes
    ----------
    groups_ : dict
        Each kept column that stands for others -> the columns dropped for it (each assigned to the kept column it
        is most correlated with).
    """

    _state = ("columns_", "groups_")

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold

    def fit(self, X: pd.DataFrame, y: Any = None) -> CorrelationFilter:
        from scipy.stats import rankdata

        self._start_fit(X)
        self.groups_: dict[str, list[str]] = {}
        if self.threshold >= 1.0 or X.shape[1] < 2:
            self.columns_ = list(X.columns)
            return self
        R = rankdata(X.to_numpy(dtype=float), axis=0)
        R = (R - R.mean(axis=0)) / np.maximum(R.std(axis=0), 1e-12)
        names = X.columns.tolist()
        order = np.array(
            sorted(range(len(names)), key=lambda j: column_priority(names[j]))
        )  # stable: table order
        # The correlation matrix in visiting order, built in place: with ~3,000 columns it is 70 MB, and each
        # extra pass over it costs more than the greedy loop.
        Rp = R[:, order]
        C = Rp.T @ Rp
        np.abs(C, out=C)
        C /= R.shape[0]
        above = C > self.threshold
        # A column is dropped when a column kept before it correlates above the threshold, for the kept one it
        # correlates with most (the first of equals).
        kept = np.ones(len(order), dtype=bool)
        # Only a column with a partner before it can be dropped: the others are not visited one by one.
        candidates = np.nonzero(np.tril(above, -1).any(axis=1))[0]
        for i in candidates.tolist():
            partners = above[i, :i]
            if not (partners & kept[:i]).any():
                continue
            kept[i] = False
            best = int(np.argmax(np.where(kept[:i], C[i, :i], -np.inf)))
            self.groups_.setdefault(names[int(order[best])], []).append(names[int(order[i])])
        keep = set(order[kept].tolist())
        self.columns_ = [c for j, c in enumerate(names) if j in keep]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


class UnivariateSelector(JsonTransformer):
    """Keep the `k` image variables with the largest |AUC - 0.5| against the training target (k=0: keep all).

    Columns without a ``<modality>__`` prefix (:func:`column_priority` 0: the clinical table's age, sex and
    scores, and any other plain column) are always kept and not counted: they are few and chosen before the
    study, and the image variables are read against them (age above all, whose own AUC for "degeneration beyond
    age" is near 0.5 by definition).
    """

    _state = ("columns_", "scores_")

    def __init__(self, k: int = 0):
        self.k = k

    def fit(self, X: pd.DataFrame, y: Any = None) -> UnivariateSelector:
        from cdeg.modeling.data import univariate_auc

        self._start_fit(X)
        image = [j for j, c in enumerate(X.columns) if column_priority(c) > 0]
        if self.k <= 0 or self.k >= len(image):
            self.scores_ = {}
            self.columns_ = list(X.columns)
            return self
        if y is None:
            raise ValueError("UnivariateSelector needs the target y")
        score = np.abs(np.nan_to_num(univariate_auc(X.iloc[:, image], np.asarray(y)), nan=0.5) - 0.5)
        order = np.argsort(-score, kind="stable")[: self.k]
        chosen = {image[i] for i in order.tolist()}
        self.columns_ = [c for j, c in enumerate(X.columns) if j in chosen or column_priority(c) == 0]
        self.scores_ = {X.columns[image[i]]: float(score[i]) for i in sorted(order.tolist())}
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


# --- stability, age norms and level summaries ------------------------------------------------------------------


class StableFeatureFilter(JsonTransformer):
    """Drop radiomics features whose reliability (ICC, e.g. from a test-retest or inter-rater study) is below
    `min_icc`. Clinical columns and clinical measurements are never dropped; a radiomics feature without an ICC
    is kept (counted in ``unrated_``).

    Parameters
    ----------
    icc : dict, optional
        Feature name -> ICC. A name is either the full column name ``<modality>__<level>__<feature>`` or
        ``<modality>__<feature>`` (every level); the full name wins. None: keep everything.
    min_icc : float
        Smallest ICC of a kept radiomics feature.
    """

    _state = ("columns_", "dropped_", "unrated_")

    def __init__(self, icc: dict[str, float] | None = None, min_icc: float = 0.75):
        self.icc = icc
        self.min_icc = min_icc

    def fit(self, X: pd.DataFrame, y: Any = None) -> StableFeatureFilter:
        self._start_fit(X)
        self.dropped_: dict[str, float] = {}
        self.unrated_ = 0
        for c in X.columns if self.icc else ():
            if column_priority(c) != 2:
                continue
            parsed = parse_image_name(c)
            keys = [c] + ([f"{parsed[0]}{SEP}{parsed[2]}"] if parsed else [])
            value = next((self.icc[k] for k in keys if k in self.icc), None)
            if value is None:
                self.unrated_ += 1
            elif value < self.min_icc:
                self.dropped_[c] = float(value)
        self.columns_ = [c for c in X.columns if c not in self.dropped_]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


def read_icc_table(path: str | Path) -> dict[str, float]:
    """The stability table: a CSV with columns ``feature`` and ``icc``, one row per feature name (see
    :class:`StableFeatureFilter` for the two name forms).

    Raises
    ------
    CdegError
        Naming the file: missing, unreadable, without the two columns, or with an ICC that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise CdegError("stability table (preprocess.stable_features) not found", path=path)
    stat = path.stat()
    return dict(_read_icc(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _read_icc(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, float], ...]:
    # Cached by file version: every fold of every study builds a preprocessor from the same table.
    from cdeg.io import read_table

    table = read_table(path)
    if not {"feature", "icc"} <= set(table.columns):
        raise CdegError(
            f"stability table needs columns 'feature' and 'icc' (has: {', '.join(map(str, table.columns[:6]))})",
            path=path,
        )
    icc = pd.to_numeric(table["icc"], errors="coerce")
    bad = table["feature"][icc.isna() & table["icc"].notna()]
    if len(bad):
        raise CdegError(f"icc of {bad.iloc[0]!r} is not a number", path=path)
    return tuple((str(f), float(v)) for f, v in zip(table["feature"], icc, strict=True) if np.isfinite(v))


def spline_knots(age: np.ndarray, n_knots: int) -> list[float]:
    """Knots of a natural cubic spline of age at quantiles of the (non-missing) ages.

    Placement as Hmisc ``rcspline.eval`` (Harrell, Regression Modeling Strategies) for 3-5 knots: the outer
    knots at the 5th and 95th percentiles, the others equally spaced in quantile between them. Tied quantiles
    (few distinct ages) collapse, so fewer knots (a simpler curve) may come back.
    """
    age = age[np.isfinite(age)]
    if age.size == 0:
        return []
    return [float(k) for k in np.unique(np.quantile(age, np.linspace(0.05, 0.95, n_knots)))]


def spline_basis(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    """Natural cubic spline basis without intercept: x, then one non-linear term per knot beyond the second.

    Truncated-power form of Hastie, Tibshirani and Friedman, The Elements of Statistical Learning (2nd ed.),
    eq. 5.4-5.5: N_{k+2}(x) = d_k(x) - d_{K-1}(x), d_k(x) = ((x - xi_k)^3_+ - (x - xi_K)^3_+) / (xi_K - xi_k):
    cubic between the knots, linear beyond the outer ones (so the norm does not swing at the age extremes).
    The non-linear terms are divided by (xi_K - xi_1)^2 (Hmisc ``norm=2``) for a well-conditioned fit.
    Missing x gives a missing row.
    """
    x = np.asarray(x, dtype=float)
    K = len(knots)
    if K < 2:
        return x[:, None] if K == 1 else np.empty((len(x), 0))
    xi = np.asarray(knots, dtype=float)
    cube = np.maximum(x[:, None] - xi[None, :], 0.0) ** 3
    cube[np.isnan(x)] = np.nan
    d = (cube[:, : K - 1] - cube[:, [K - 1]]) / (xi[K - 1] - xi[: K - 1])
    nonlinear = (d[:, : K - 2] - d[:, [K - 2]]) / (xi[-1] - xi[0]) ** 2
    return np.column_stack([x, nonlinear])


def male_indicator(sex: pd.Series) -> np.ndarray:
    """Sex as 1 (male) / 0 (female): text M/F or male/female (any case); numbers are taken as they are coded.
    Anything else is missing."""
    if not is_text(sex):
        return sex.to_numpy(dtype=float)
    codes = {"m": 1.0, "male": 1.0, "f": 0.0, "female": 0.0}
    return np.array([codes.get(str(v).strip().lower(), np.nan) if v is not None else np.nan for v in sex])


class AgeNorm(JsonTransformer):
    """Age-adjusted clinical measurements: adds ``<column>__age_z`` = (value - expected for age and sex) / SD for
    every clinical measurement column (feature part in :data:`cdeg.measures.UNITS`, any modality and level).

    The norm of each measurement is an ordinary least-squares fit on a natural cubic spline of age
    (:func:`spline_basis`, `age_df` terms) plus sex; the SD is the robust SD of its residuals
    (1.4826 x median absolute deviation), so a few outliers do not widen the norm. A patient with a missing age,
    sex or value gets a missing z (imputed later in the chain). Degeneration beyond what is expected for age
    shows as z far from 0 in the direction of :data:`cdeg.measures.DEGENERATION_SIGN`.

    Parameters
    ----------
    mode : {"training", "reference", "off"}
        training: fit the norms on the rows given to :meth:`fit` (the training fold); reference: take them from
        `reference` (fitted once on a reference cohort by :func:`fit_age_norms`), nothing is refitted; off: no-op.
    reference : dict, optional
        The norms of :func:`fit_age_norms` (JSON data), for mode "reference".
    age_column, sex_column : str
        Clinical columns of age (years) and sex (see :func:`male_indicator`). Without them the step is a no-op and
        says why in ``reason_``.
    age_df : int
        Age terms of the spline (age_df + 1 knots).
    min_rows : int
        Fewest rows with value, age and sex a norm is fitted on; columns with fewer are skipped.

    Attributes
    ----------
    knots_ : list of float
    norms_ : dict
        Measurement column -> {"coef": intercept, age terms, male; "sd": residual SD; "n": rows fitted}.
    skipped_ : dict
        Measurement column -> why it has no norm.
    reason_ : str
        Why the step adds nothing ("" when it adds columns).
    """

    _state = ("columns_", "knots_", "norms_", "skipped_", "reason_")

    def __init__(
        self,
        mode: str = "training",
        reference: dict[str, Any] | None = None,
        age_column: str = "age",
        sex_column: str = "sex",
        age_df: int = 3,
        min_rows: int = 20,
    ):
        self.mode = mode
        self.reference = reference
        self.age_column = age_column
        self.sex_column = sex_column
        self.age_df = age_df
        self.min_rows = min_rows

    def fit(self, X: pd.DataFrame, y: Any = None) -> AgeNorm:
        if self.mode not in AGE_NORM_MODES:
            raise ValueError(f"AgeNorm mode {self.mode!r}; valid: {', '.join(AGE_NORM_MODES)}")
        if self.mode == "reference" and not self.reference:
            raise ValueError("AgeNorm mode 'reference' needs the reference norms (fit_age_norms)")
        self._start_fit(X)
        self.knots_: list[float] = []
        self.norms_: dict[str, dict[str, Any]] = {}
        self.skipped_: dict[str, str] = {}
        self.reason_ = self._why_not(X)
        measured = [c for c in X.columns if _is_plain_measurement(c) and c + AGE_Z_SUFFIX not in X.columns]
        if not self.reason_ and not measured:
            self.reason_ = "no clinical measurement column"
        if not self.reason_ and self.mode == "reference":
            self.knots_ = list(self.reference["knots"])
            ref = self.reference["norms"]
            self.norms_ = {c: ref[c] for c in measured if c in ref}
            self.skipped_ = {c: "no norm in the reference cohort" for c in measured if c not in ref}
        elif not self.reason_:
            self._fit_norms(X, measured)
        self.columns_ = list(X.columns) + [c + AGE_Z_SUFFIX for c in self.norms_]
        return self

    def _why_not(self, X: pd.DataFrame) -> str:
        if self.mode == "off":
            return "age_norm is off"
        absent = [c for c in (self.age_column, self.sex_column) if c not in X.columns]
        return f"no {' or '.join(map(repr, absent))} column among the predictors" if absent else ""

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        age = pd.to_numeric(X[self.age_column], errors="coerce").to_numpy(dtype=float)
        male = male_indicator(X[self.sex_column])
        return np.column_stack([np.ones(len(X)), spline_basis(age, self.knots_), male])

    def _fit_norms(self, X: pd.DataFrame, measured: list[str]) -> None:
        age = pd.to_numeric(X[self.age_column], errors="coerce").to_numpy(dtype=float)
        self.knots_ = spline_knots(age, self.age_df + 1)
        B = self._design(X)
        complete = np.isfinite(B).all(axis=1)
        for c in measured:
            v = X[c].to_numpy(dtype=float)
            rows = complete & np.isfinite(v)
            if rows.sum() < self.min_rows:
                self.skipped_[c] = f"{int(rows.sum())} rows with value, age and sex (< {self.min_rows})"
                continue
            coef = np.linalg.lstsq(B[rows], v[rows], rcond=None)[0]  # minimum norm when one sex only
            resid = v[rows] - B[rows] @ coef
            sd = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
            if not sd > 0:
                self.skipped_[c] = "no spread around the norm"
                continue
            self.norms_[c] = {"coef": coef.tolist(), "sd": sd, "n": int(rows.sum())}

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        if not self.norms_:
            return X
        cols = list(self.norms_)
        coef = np.array([self.norms_[c]["coef"] for c in cols], dtype=float).T
        sd = np.array([self.norms_[c]["sd"] for c in cols], dtype=float)
        Z = (X[cols].to_numpy(dtype=float) - self._design(X) @ coef) / sd
        new = pd.DataFrame(Z, index=X.index, columns=[c + AGE_Z_SUFFIX for c in cols])
        return pd.concat([X, new], axis=1)

    def sources(self, columns: Iterable[str]) -> set[str]:
        out = set()
        for c in columns:
            if c.endswith(AGE_Z_SUFFIX) and c[: -len(AGE_Z_SUFFIX)] in self.norms_:
                out |= {c[: -len(AGE_Z_SUFFIX)], self.age_column, self.sex_column}
            else:
                out.add(c)
        return out


def _is_plain_measurement(column: str) -> bool:
    parsed = parse_image_name(column)
    return parsed is not None and not parsed[3] and parsed[2] in measures.UNITS


def fit_age_norms(
    features: pd.DataFrame,
    clinical: pd.DataFrame,
    *,
    age_column: str = "age",
    sex_column: str = "sex",
    id_column: str | None = None,
    age_df: int = 3,
) -> dict[str, Any]:
    """Age norms of every clinical measurement, fitted once on a reference cohort (e.g. a population study).

    Parameters
    ----------
    features, clinical : DataFrame
        The reference cohort's features table and clinical table, joined on `id_column` (or on their index when
        None).

    Returns
    -------
    dict
        JSON data for ``AgeNorm(mode="reference", reference=...)`` (and ``Preprocessor(age_reference=...)``):
        ``knots``, ``norms`` (as :attr:`AgeNorm.norms_`), ``n_patients``.

    Raises
    ------
    CdegError
        No age or sex column, no patient in both tables, or no measurement with enough patients.
    """
    if id_column is not None:
        features, clinical = features.set_index(id_column), clinical.set_index(id_column)
    absent = [c for c in (age_column, sex_column) if c not in clinical.columns]
    if absent:
        raise CdegError(f"reference clinical table has no {' or '.join(map(repr, absent))} column")
    joined = clinical[[age_column, sex_column]].join(
        features.drop(columns=absent, errors="ignore"), how="inner"
    )
    if joined.empty:
        raise CdegError("no patient id is in both reference tables")
    norm = AgeNorm(age_column=age_column, sex_column=sex_column, age_df=age_df).fit(joined)
    if not norm.norms_:
        raise CdegError(
            f"no age norm could be fitted on the reference cohort: {norm.reason_ or norm.skipped_}"
        )
    return {"knots": norm.knots_, "norms": norm.norms_, "n_patients": len(joined)}


def reference_age_norms(
    paths: Sequence[str | Path], age_column: str = "age", sex_column: str = "sex"
) -> dict[str, Any]:
    """:func:`fit_age_norms` on the reference tables at `paths` = (features, clinical), joined on the one column
    they share (the patient id). Cached by file version: every fold builds a preprocessor from them.

    Raises
    ------
    CdegError
        A missing or unreadable file, or tables that do not share exactly one column.
    """
    if len(paths) != 2:
        raise CdegError(f"the age reference is two tables (features, clinical); got {len(paths)}")
    keys = []
    for p in map(Path, paths):
        if not p.is_file():
            raise CdegError("age reference table not found", path=p)
        st = p.stat()
        keys.append((str(p.resolve()), st.st_mtime_ns, st.st_size))
    return _reference_norms(tuple(keys), age_column, sex_column)


@functools.lru_cache(maxsize=2)
def _reference_norms(
    keys: tuple[tuple[str, int, int], ...], age_column: str, sex_column: str
) -> dict[str, Any]:
    from cdeg.io import read_table

    features, clinical = (read_table(k[0]) for k in keys)
    shared = sorted(set(features.columns) & set(clinical.columns))
    if len(shared) != 1:
        raise CdegError(
            f"the age reference tables must share exactly one column (the patient id); they share {shared}",
            path=keys[0][0],
        )
    features, clinical = (
        t.set_index(t[shared[0]].astype(str)).drop(columns=shared) for t in (features, clinical)
    )
    return fit_age_norms(features, clinical, age_column=age_column, sex_column=sex_column)


def disc_position(value: Any) -> int:
    """Position of an index level (``"C5-C6"``, ``"C5/C6"`` or label 105) in :data:`cdeg.labels.DISC_NAMES`;
    -1 when missing or not a disc."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return -1
    key: Any = value
    if isinstance(value, str):
        key = value.strip().upper().replace("/", "-").replace(" ", "")
    elif isinstance(value, (int, float, np.number)) and float(value).is_integer():
        key = int(value)
    try:
        s = labels.structure(key)
    except (KeyError, ValueError):
        return -1
    return labels.DISC_NAMES.index(s.name) if s.kind == "disc" else -1


class LevelSummary(JsonTransformer):
    """Per patient, each clinical measurement (and its ``__age_z``) summarised over the levels of one modality:
    adds ``<modality>__<agg>__<feature>`` (``xray__worst__disc_height_middle_mm__age_z``); per-level columns stay.

    Aggregates (:data:`AGGREGATES`):

    * ``mean``: mean over the levels measured (missing levels left out);
    * ``worst``: the most degenerated level, by :data:`cdeg.measures.DEGENERATION_SIGN` (lowest value where
      degeneration lowers the measurement); none for a measurement without a known direction (angles);
    * ``index``, ``above_index``, ``below_index``: the value at the patient's index level (clinical column
      `index_column`, e.g. "C5-C6") and at the discs directly above and below it; disc measurements only (the
      index level is a disc), and only when the index column is among the predictors.

    ``mean`` and ``worst`` need at least two levels. Stateless (each row is summarised on its own); what it
    computes is decided from the column names at fit time and kept in ``summaries_``.

    Parameters
    ----------
    aggregates : sequence of str
        Which of :data:`AGGREGATES` to add; empty: no-op.
    index_column : str
        Clinical column of the index level.
    """

    _state = ("columns_", "summaries_", "skipped_")

    def __init__(
        self,
        aggregates: Sequence[str] = AGGREGATES,
        index_column: str = "index_level",
        radiomics_mean: bool = True,
    ):
        self.aggregates = aggregates
        self.index_column = index_column
        self.radiomics_mean = radiomics_mean

    def fit(self, X: pd.DataFrame, y: Any = None) -> LevelSummary:
        bad = [a for a in self.aggregates if a not in AGGREGATES]
        if bad:
            raise ValueError(f"unknown level aggregate(s) {bad}; valid: {', '.join(AGGREGATES)}")
        self._start_fit(X)
        self.skipped_: list[str] = []
        has_index = self.index_column in X.columns
        if not has_index and any(a in INDEX_OFFSETS for a in self.aggregates):
            self.skipped_.append(
                f"index-level aggregates: no {self.index_column!r} column among the predictors"
            )
        self.summaries_: list[dict[str, Any]] = []
        for (modality, feature), levels in _level_groups(X.columns).items():
            base = feature.removesuffix(AGE_Z_SUFFIX)
            sign = measures.DEGENERATION_SIGN.get(base, 0)
            is_disc = labels.structure(next(iter(levels))).kind == "disc"
            for agg in self.aggregates:
                if (agg in ("mean", "worst") and len(levels) < 2) or (agg == "worst" and not sign):
                    continue
                if agg in INDEX_OFFSETS and not (has_index and is_disc):
                    continue
                name = SEP.join((modality, agg, feature))
                if name not in X.columns:
                    self.summaries_.append({"name": name, "agg": agg, "sign": sign, "levels": levels})
        if self.radiomics_mean:
            for (modality, feature, kind), levels in _radiomics_groups(X.columns).items():
                name = SEP.join((modality, RADIOMICS_MEANS[kind], feature))
                if len(levels) >= 2 and name not in X.columns:
                    self.summaries_.append({"name": name, "agg": "mean", "sign": 0, "levels": levels})
        self.columns_ = list(X.columns) + [s["name"] for s in self.summaries_]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        if not self.summaries_:
            return X
        index = None
        if any(s["agg"] in INDEX_OFFSETS for s in self.summaries_):
            index = np.array([disc_position(v) for v in X[self.index_column].to_numpy(dtype=object)])
        new = {}
        # One float array and a name -> position map: a pandas column selection per summary (hundreds) costs more
        # than the summaries themselves.
        A, where = _numeric_view(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a patient without any level: missing
            for s in self.summaries_:
                V = A[:, [where[c] for c in s["levels"].values()]]
                new[s["name"]] = _summarise(V, list(s["levels"]), s["agg"], s["sign"], index)
        return pd.concat([X, pd.DataFrame(new, index=X.index)], axis=1)

    def sources(self, columns: Iterable[str]) -> set[str]:
        by_name = {s["name"]: s for s in self.summaries_}
        out = set()
        for c in columns:
            s = by_name.get(c)
            if s is None:
                out.add(c)
                continue
            out |= set(s["levels"].values())
            if s["agg"] in INDEX_OFFSETS:
                out.add(self.index_column)
        return out


#: Columns of each sign of degeneration, per modality and disc level: modality -> level -> kind -> [(column, sign)].
DegenerationMembers = dict[str, dict[str, dict[str, list[tuple[str, int]]]]]


def degeneration_members(columns: Iterable[str], age_adjusted: bool) -> DegenerationMembers:
    """The disc measurements of :data:`cdeg.measures.DEGENERATION_KIND` among `columns`, grouped by modality,
    disc level and sign of degeneration, with their :data:`cdeg.measures.DEGENERATION_SIGN`; either the
    age-adjusted (``__age_z``) columns or the plain ones."""
    members: DegenerationMembers = {}
    for c in columns:
        parsed = parse_image_name(c)
        if parsed is None or parsed[3] != age_adjusted or parsed[2] not in measures.DEGENERATION_KIND:
            continue
        modality, level, feature, _ = parsed
        if level not in labels.DISC_NAMES:
            continue
        kinds = members.setdefault(modality, {}).setdefault(level, {})
        kinds.setdefault(measures.DEGENERATION_KIND[feature], []).append(
            (c, measures.DEGENERATION_SIGN[feature])
        )
    return members


def degeneration_mean(
    X: pd.DataFrame, levels: dict[str, dict[str, list[tuple[str, int]]]], min_levels: int
) -> np.ndarray:
    """Per row: each sign of degeneration is the mean of its signed columns, a level the mean of its signs, the
    result the mean over the levels (NaN with fewer than `min_levels` levels with a value)."""
    A, where = _numeric_view(
        X[sorted({c for kinds in levels.values() for cols in kinds.values() for c, _ in cols})]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a level or a row without any value: missing
        per_level = []
        for kinds in levels.values():
            signs = [
                np.nanmean(np.column_stack([sign * A[:, where[c]] for c, sign in cols]), axis=1)
                for cols in kinds.values()
            ]
            per_level.append(np.nanmean(np.column_stack(signs), axis=1))
        L = np.column_stack(per_level)
        out = np.nanmean(L, axis=1)
    out[np.isfinite(L).sum(axis=1) < min_levels] = np.nan
    return out


class DegenerationScore(JsonTransformer):
    """The patient's disc degeneration beyond the age norm, as one number per modality: adds
    ``<modality>__discs_mean__degeneration_score__age_z``, in SD, positive = more degenerated than expected for
    age and sex.

    Per disc level, each sign of degeneration (:data:`cdeg.measures.DEGENERATION_KIND`: height loss, signal
    loss) is the mean of its age-adjusted measurements turned so that degeneration is positive
    (:data:`cdeg.measures.DEGENERATION_SIGN`); the level's value is the mean of its signs, and the score the mean
    over the disc levels (at least `min_levels`). Each sign counts once, so four height measurements do not
    outweigh the one signal ratio.

    Why: the study's target, "degeneration beyond what age explains", is a property of the patient, spread
    over all discs. A model of 109 patients cannot learn from ~100 per-level variables that their signed sum
    is what matters (README, "Closer to the ceiling"); written down a priori, the sum is one variable it reads,
    and a clinician reads it too ("discs 1.2 SD more degenerated than the age norm"). Its inputs are the
    ``__age_z`` columns of :class:`AgeNorm`, fitted on the training fold or a reference cohort, so nothing of a
    test patient enters it. The score columns come first, so that the correlation filter keeps the score over
    a single measurement it duplicates.

    Parameters
    ----------
    enabled : bool
        False: no-op.
    min_levels : int
        Fewest disc levels with a value for a patient's score (else missing, imputed later in the chain).
    """

    _state = ("columns_", "scores_")

    def __init__(self, enabled: bool = True, min_levels: int = 2):
        self.enabled = enabled
        self.min_levels = min_levels

    def fit(self, X: pd.DataFrame, y: Any = None) -> DegenerationScore:
        self._start_fit(X)
        members = degeneration_members(X.columns, age_adjusted=True) if self.enabled else {}
        self.scores_ = [
            {"name": SEP.join((m, RADIOMICS_MEANS["disc"], DEGENERATION_SCORE)) + AGE_Z_SUFFIX, "levels": lv}
            for m, lv in members.items()
            if len(lv) >= self.min_levels
        ]
        self.scores_ = [s for s in self.scores_ if s["name"] not in X.columns]
        self.columns_ = [s["name"] for s in self.scores_] + list(X.columns)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        X = self._check_input(X)
        if not self.scores_:
            return X
        new = {s["name"]: degeneration_mean(X, s["levels"], self.min_levels) for s in self.scores_}
        return pd.concat([pd.DataFrame(new, index=X.index), X], axis=1)

    def sources(self, columns: Iterable[str]) -> set[str]:
        by_name = {s["name"]: s for s in self.scores_}
        out = set()
        for c in columns:
            s = by_name.get(c)
            if s is None:
                out.add(c)
                continue
            out |= {col for kinds in s["levels"].values() for cols in kinds.values() for col, _ in cols}
        return out


class PerLevelFilter(JsonTransformer):
    """Drop each level's own image variables (``<modality>__<level>__<feature>`` at a named level), keeping
    the level summaries made from them (:class:`LevelSummary`) and every other column; ``keep=True``: no-op.

    Why an option: the question is about the patient, and each level's texture and signal is a noisy
    reading of its degeneration. On the synthetic study, 2,600 per-level variables next to ~450 summaries
    cost the tuned models about 0.05 AUC in nested CV (README, "Closer to the ceiling"); a study that asks
    which level carries the signal keeps them.
    """

    _state = ("columns_",)

    def __init__(self, keep: bool = True):
        self.keep = keep

    def fit(self, X: pd.DataFrame, y: Any = None) -> PerLevelFilter:
        self._start_fit(X)
        self.columns_ = list(X.columns) if self.keep else [c for c in X.columns if not _at_named_level(c)]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self._check_input(X)[self.columns_]


_LEVEL_NAMES = frozenset(labels.VERTEBRA_NAMES + labels.DISC_NAMES)


def _at_named_level(column: str) -> bool:
    parsed = parse_image_name(column)
    return parsed is not None and parsed[1] in _LEVEL_NAMES


def _level_groups(columns: Iterable[str]) -> dict[tuple[str, str], dict[str, str]]:
    """(modality, feature incl. ``__age_z``) -> {level: column}, cranio-caudal, for clinical measurements
    at named levels of one kind (disc or vertebra: the kind of the first level met)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for c in columns:
        parsed = parse_image_name(c)
        if parsed is None or parsed[2] not in measures.UNITS:
            continue
        modality, level, feature, z = parsed
        try:
            s = labels.structure(level)
        except KeyError:
            continue  # "C2-C7" (Cobb angle) and other spans
        group = groups.setdefault((modality, feature + (AGE_Z_SUFFIX if z else "")), {})
        if not group or labels.structure(next(iter(group))).kind == s.kind:
            group[level] = c
    return {
        k: dict(sorted(v.items(), key=lambda kv: labels.structure(kv[0]).order)) for k, v in groups.items()
    }


def _radiomics_groups(columns: Iterable[str]) -> dict[tuple[str, str, str], dict[str, str]]:
    """(modality, PyRadiomics feature, "disc" | "vertebra") -> {level: column}, cranio-caudal."""
    from cdeg.modeling.data import RADIOMICS_NAME

    groups: dict[tuple[str, str, str], dict[str, str]] = {}
    for c in columns:
        parts = c.split(SEP)
        if len(parts) != 3 or not RADIOMICS_NAME.match(parts[2]):
            continue
        try:
            s = labels.structure(parts[1])
        except KeyError:
            continue
        groups.setdefault((parts[0], parts[2], s.kind), {})[parts[1]] = c
    return {
        k: dict(sorted(v.items(), key=lambda kv: labels.structure(kv[0]).order)) for k, v in groups.items()
    }


def _numeric_view(X: pd.DataFrame) -> tuple[np.ndarray, dict[str, int]]:
    """`X` as one float array (text columns as NaN: summaries never read them) and column -> position."""
    numeric = [not is_text_dtype(d) for d in X.dtypes]
    if all(numeric):
        A = X.to_numpy(dtype=float)
    else:
        A = np.full(X.shape, np.nan)
        idx = [j for j, ok in enumerate(numeric) if ok]
        if idx:
            A[:, idx] = X.iloc[:, idx].to_numpy(dtype=float)
    return A, {c: j for j, c in enumerate(X.columns)}


def _summarise(V: np.ndarray, levels: list[str], agg: str, sign: int, index: np.ndarray | None) -> np.ndarray:
    """One aggregate of the level values `V` (rows = patients, columns = `levels`)."""
    if agg == "mean":
        return np.nanmean(V, axis=1)
    if agg == "worst":
        return np.nanmin(V, axis=1) if sign < 0 else np.nanmax(V, axis=1)
    assert index is not None
    target = np.where(index >= 0, index + INDEX_OFFSETS[agg], -99)
    out = np.full(len(V), np.nan)
    for j, level in enumerate(levels):
        rows = target == labels.DISC_NAMES.index(level)
        out[rows] = V[rows, j]
    return out


#: The transformers a saved preprocessor may contain (explicit registry; no discovery by name).
STEPS: dict[str, type[JsonTransformer]] = {
    cls.__name__: cls
    for cls in (
        StableFeatureFilter,
        AgeNorm,
        LevelSummary,
        DegenerationScore,
        PerLevelFilter,
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
    max_missing, corr_threshold, select_k, near_constant, age_norm, age_column, sex_column, index_column,
    level_summary, radiomics_mean, per_level, degeneration_score, min_icc :
        See :class:`cdeg.modeling.config.PreprocessOptions`.
    standardize : bool
        Append a :class:`Standardizer` (logistic models).
    age_reference : dict, optional
        Reference-cohort norms of :func:`fit_age_norms` (or :func:`reference_age_norms`), for
        ``age_norm="reference"``.
    icc : dict, optional
        Feature -> ICC (:func:`read_icc_table`) for the :class:`StableFeatureFilter`; None keeps every feature.

    Attributes
    ----------
    steps_ : list of JsonTransformer
        The fitted steps.
    columns_ : list of str
        Output variables (after one-hot encoding and filtering).
    used_inputs_ : list of str
        Input columns that reach the output, directly or through a derived variable (an age-adjusted value needs
        its measurement, age and sex; a level summary its levels and the index level; a categorical column counts
        once): the variables the model needs.
    imputation_ : dict
        Value used for a missing input: the training median (numbers) or mode (text).
    """

    _state = ("columns_", "used_inputs_", "imputation_")

    def __init__(
        self,
        max_missing: float = 0.5,
        corr_threshold: float = 0.9,
        select_k: int = 20,
        standardize: bool = False,
        near_constant: float = 0.95,
        age_norm: str = "training",
        age_reference: dict[str, Any] | None = None,
        age_column: str = "age",
        sex_column: str = "sex",
        index_column: str = "index_level",
        level_summary: Sequence[str] = AGGREGATES,
        radiomics_mean: bool = True,
        per_level: bool = True,
        degeneration_score: bool = True,
        icc: dict[str, float] | None = None,
        min_icc: float = 0.75,
    ):
        self.max_missing = max_missing
        self.corr_threshold = corr_threshold
        self.select_k = select_k
        self.standardize = standardize
        self.near_constant = near_constant
        self.age_norm = age_norm
        self.age_reference = age_reference
        self.age_column = age_column
        self.sex_column = sex_column
        self.index_column = index_column
        self.level_summary = level_summary
        self.radiomics_mean = radiomics_mean
        self.per_level = per_level
        self.degeneration_score = degeneration_score
        self.icc = icc
        self.min_icc = min_icc

    def _make_steps(self) -> list[JsonTransformer]:
        steps: list[JsonTransformer] = [
            StableFeatureFilter(self.icc, self.min_icc),
            AgeNorm(self.age_norm, self.age_reference, self.age_column, self.sex_column),
            LevelSummary(list(self.level_summary), self.index_column, self.radiomics_mean),
            DegenerationScore(self.degeneration_score),
            PerLevelFilter(self.per_level),
            MissingFilter(self.max_missing),
            CategoricalEncoder(),
            MedianImputer(),
            ConstantFilter(self.near_constant),
            CorrelationFilter(self.corr_threshold),
            UnivariateSelector(self.select_k),
        ]
        if self.standardize:
            steps.append(Standardizer())
        return steps

    def fit(self, X: pd.DataFrame, y: Any = None) -> Preprocessor:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y: Any = None, **fit_params: Any) -> pd.DataFrame:
        self._start_fit(X)
        self.steps_ = self._make_steps()
        Z = _object_columns(X)
        for step in self.steps_:
            Z = _object_columns(step.fit(Z, y).transform(Z))
        self._finish()
        return Z

    def _finish(self) -> None:
        self.columns_ = list(self.steps_[-1].columns_)
        needed = set(self.columns_)
        for step in reversed(self.steps_):
            needed = step.sources(needed)
        self.used_inputs_ = [c for c in self.feature_names_in_ if c in needed]
        enc = self.encoder_
        imp = next(s for s in self.steps_ if isinstance(s, MedianImputer))
        self.imputation_ = {}
        for c in self.used_inputs_:
            self.imputation_[c] = enc.modes_[c] if c in enc.categories_ else imp.medians_.get(c)

    def step(self, cls: type[JsonTransformer]) -> JsonTransformer:
        """The fitted step of class `cls` (e.g. ``pre.step(CorrelationFilter).groups_`` for the report)."""
        check_is_fitted(self, "steps_")
        return next(s for s in self.steps_ if isinstance(s, cls))

    @property
    def encoder_(self) -> CategoricalEncoder:
        return next(s for s in self.steps_ if isinstance(s, CategoricalEncoder))

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "steps_")
        Z = _object_columns(X)
        for step in self.steps_:
            Z = _object_columns(step.transform(Z))
        return Z

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["steps"] = [s.to_dict() for s in self.steps_]
        return d


def _object_columns(X: pd.DataFrame) -> pd.DataFrame:
    """`X` with its column labels in a plain object Index.

    pandas 3 keeps string labels in a pyarrow-backed Index, and every step walks the ~3,000 labels several times:
    element by element that costs ten times a list's walk, most of the chain's own time in a nested CV.
    """
    if X.columns.dtype == object:
        return X
    return X.set_axis(pd.Index(X.columns.tolist(), dtype=object), axis=1)


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
