"""The classifiers: preprocessing + estimator, fitted and saved as JSON (XGBoost's own JSON, coefficients, no pickle).

Three kinds share one protocol (:data:`cdeg.modeling.config.MODELS`):

* ``xgboost``        gradient-boosted shallow trees (``binary:logistic``), hyperparameters from Optuna;
* ``logistic``       elastic-net logistic regression (saga) on standardised variables, C and l1_ratio from Optuna;
* ``clinical_only``  L2 logistic regression on standardised baseline clinical variables, fixed light penalty.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import preprocess as pp
from cdeg.modeling.config import MODELS, PreprocessOptions
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from cdeg.io import atomic_path, write_json
from cdeg.outputs import ModelFolder

FORMAT_VERSION = 1


def make_estimator(kind: str, params: dict[str, Any], random_state: int) -> Any:
    """A fresh, unfitted estimator of `kind` with hyperparameters `params`."""
    if kind == "xgboost":
        from xgboost import XGBClassifier

        # One thread per fit: data are tiny, and parallelism comes from running studies in separate processes.
        return XGBClassifier(
            objective="binary:logistic",
            eval_metric="logloss",
            tree_method="hist",
            n_jobs=1,
            random_state=random_state,
            **params,
        )
    if kind in ("logistic", "clinical_only"):
        from sklearn.linear_model import LogisticRegression

        params = dict(params)
        if kind == "logistic":
            # saga is the solver of elastic-net; tol 1e-3 on standardised data keeps tuning fast.
            return LogisticRegression(solver="saga", tol=1e-3, random_state=random_state, **params)
        return LogisticRegression(
            solver="lbfgs",
            l1_ratio=0.0,
            max_iter=params.pop("max_iter", 1000),
            random_state=random_state,
            **params,
        )
    raise ValueError(f"unknown model {kind!r}; valid: {', '.join(MODELS)}")


class TabularClassifier(ClassifierMixin, BaseEstimator):
    """Preprocessing (fitted on the training rows) followed by one estimator.

    Parameters
    ----------
    kind : {"xgboost", "logistic", "clinical_only"}
        The estimator.
    params : dict, optional
        Estimator hyperparameters (e.g. Optuna's best trial).
    preprocess : PreprocessOptions, optional
        Preprocessing options; the logistic kinds always standardise.
    random_state : int
        Seed of the estimator.

    Attributes
    ----------
    preprocessor_ : Preprocessor
    estimator_ : XGBClassifier or LogisticRegression
    feature_names_in_ : list of str
        Input columns.
    classes_ : ndarray, [0, 1]
    """

    def __init__(
        self,
        kind: str = "xgboost",
        params: dict[str, Any] | None = None,
        preprocess: PreprocessOptions | None = None,
        random_state: int = 0,
    ):
        self.kind = kind
        self.params = params
        self.preprocess = preprocess
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        """What scikit-learn's checks should expect: a binary classifier that imputes missing values itself,
        with a ``transform`` (the preprocessed variables) that keeps the column names."""
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.allow_nan = True
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags

    def _preprocessor(self) -> pp.Preprocessor:
        opt = self.preprocess or PreprocessOptions()
        # The reference norms and the stability table are read once per process (cached by file version) and
        # travel as JSON data inside the preprocessor, so a saved model needs neither file again.
        reference = None
        if opt.age_norm == "reference":
            reference = pp.reference_age_norms(opt.age_reference, opt.age_column, opt.sex_column)
        return pp.Preprocessor(
            max_missing=opt.max_missing,
            corr_threshold=opt.corr_threshold,
            select_k=opt.select_k,
            standardize=self.kind != "xgboost",
            near_constant=opt.near_constant,
            age_norm=opt.age_norm,
            age_reference=reference,
            age_column=opt.age_column,
            sex_column=opt.sex_column,
            index_column=opt.index_column,
            level_summary=list(opt.level_summary),
            radiomics_mean=opt.radiomics_mean,
            per_level=opt.per_level,
            degeneration_score=opt.degeneration_score,
            icc=pp.read_icc_table(opt.stable_features) if opt.stable_features else None,
            min_icc=opt.min_icc,
        )

    def fit(self, X: pd.DataFrame, y: Any) -> TabularClassifier:
        """Fit preprocessing and estimator on (X, y); y must hold both classes 0 and 1."""
        if self.kind not in MODELS:
            raise ValueError(f"unknown model {self.kind!r}; valid: {', '.join(MODELS)}")
        if not isinstance(X, pd.DataFrame):
            raise TypeError("TabularClassifier expects a pandas DataFrame (variable names travel with it)")
        y = np.asarray(y).astype(int)
        if len(y) != len(X) or set(np.unique(y)) != {0, 1}:
            raise ValueError("y must have one 0/1 value per row and contain both classes")
        self.feature_names_in_ = [str(c) for c in X.columns]
        self.n_features_in_ = len(self.feature_names_in_)
        self.preprocessor_ = self._preprocessor()
        Z = self.preprocessor_.fit_transform(X, y)
        self.estimator_ = fit_estimator(self.kind, self.params or {}, self.random_state, Z, y)
        self.classes_ = np.array([0, 1])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Preprocessed variables (what the estimator sees)."""
        check_is_fitted(self, "estimator_")
        return self.preprocessor_.transform(X)

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Log-odds of class 1."""
        Z = self.transform(X)  # first: an unfitted model raises NotFittedError, not AttributeError
        return estimator_log_odds(self.estimator_, Z)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        Z = self.transform(X)  # first: an unfitted model raises NotFittedError, not AttributeError
        p = estimator_proba(self.estimator_, Z)
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    @property
    def used_inputs_(self) -> list[str]:
        """Input columns the fitted model needs (after the filters)."""
        return self.preprocessor_.used_inputs_

    # -- persistence (JSON only) ----------------------------------------------------------------------
    def save(self, directory: str | Path, name: str | None = None) -> dict[str, str]:
        """Write ``<name>.preprocess.json`` and ``<name>.model.json``; return the file names."""
        check_is_fitted(self, "estimator_")
        name = name or self.kind
        directory = Path(directory)
        files = ModelFolder.model_files(name)
        write_json(directory / files["preprocess"], self.preprocessor_.to_dict())
        if self.kind == "xgboost":
            with atomic_path(directory / files["model"]) as tmp:
                self.estimator_.save_model(str(tmp))
        else:
            est = self.estimator_
            write_json(
                directory / files["model"],
                {
                    "format": "cdeg-logistic",
                    "format_version": FORMAT_VERSION,
                    "kind": self.kind,
                    "features": self.preprocessor_.columns_,
                    "coef": est.coef_[0].tolist(),
                    "intercept": float(est.intercept_[0]),
                    "params": _jsonable_params(est.get_params()),
                    "note": "p = 1 / (1 + exp(-(intercept + sum(coef * (x - mean) / scale)))); mean and scale are the "
                    "Standardizer step of the preprocess file",
                },
            )
        return files

    @classmethod
    def load(
        cls,
        directory: str | Path,
        kind: str,
        files: dict[str, str],
        params: dict[str, Any] | None = None,
        random_state: int = 0,
    ) -> TabularClassifier:
        """Rebuild a fitted classifier from the files written by :meth:`save`."""
        directory = Path(directory)
        obj = cls(kind=kind, params=params, random_state=random_state)
        obj.preprocessor_ = pp.from_dict(json.loads((directory / files["preprocess"]).read_text()))
        obj.feature_names_in_ = list(obj.preprocessor_.feature_names_in_)
        obj.n_features_in_ = len(obj.feature_names_in_)
        if kind == "xgboost":
            from xgboost import XGBClassifier

            est = XGBClassifier()
            est.load_model(str(directory / files["model"]))
        else:
            from sklearn.linear_model import LogisticRegression

            d = json.loads((directory / files["model"]).read_text())
            est = LogisticRegression(**{k: v for k, v in d["params"].items() if k != "penalty"})
            est.coef_ = np.asarray([d["coef"]], dtype=float)
            est.intercept_ = np.asarray([d["intercept"]], dtype=float)
            est.classes_ = np.array([0, 1])
            est.n_features_in_ = len(d["coef"])
            est.n_iter_ = np.array([0])
        obj.estimator_ = est
        obj.classes_ = np.array([0, 1])
        return obj


def fit_estimator(
    kind: str, params: dict[str, Any], random_state: int, Z: pd.DataFrame, y: np.ndarray
) -> Any:
    """Fit an estimator on preprocessed data (numpy arrays, so names never reach XGBoost's checks)."""
    est = make_estimator(kind, params, random_state)
    with warnings.catch_warnings():
        # saga on strongly or weakly penalised fits may stop at max_iter; the tuning judges the result.
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(Z.to_numpy(dtype=float), y)
    return est


def estimator_proba(est: Any, Z: pd.DataFrame) -> np.ndarray:
    """Probability of class 1 from a fitted estimator and preprocessed data."""
    return np.asarray(est.predict_proba(Z.to_numpy(dtype=float))[:, 1], dtype=float)


def estimator_log_odds(est: Any, Z: pd.DataFrame) -> np.ndarray:
    """Log-odds of class 1 from a fitted estimator and preprocessed data."""
    A = Z.to_numpy(dtype=float)
    if hasattr(est, "get_booster"):
        return np.asarray(est.predict(A, output_margin=True), dtype=float)
    return np.asarray(est.decision_function(A), dtype=float)


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        if isinstance(v, float) and not np.isfinite(v):
            continue
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
    return out
