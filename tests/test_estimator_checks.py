"""scikit-learn's estimator checks on :class:`cdeg.modeling.models.TabularClassifier`.

TabularClassifier takes a pandas DataFrame only (the variable names travel with the data and are matched by
name at prediction time) and a 0/1 target holding both classes. Most of scikit-learn's checks feed numpy
arrays, so they stop at the TypeError that refuses them: those are listed below as expected failures, each
with its reason, in strict mode (a check that starts passing must leave the list). What they would check is
checked on DataFrames by the tests after them.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling.models import TabularClassifier
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

_ARRAYS = "numpy input is refused (TypeError): the variable names must travel with the data"
_BEFORE = (
    "the condition checked is behind the refusal of numpy input, which raises TypeError first; "
    "checked on a DataFrame below where it applies"
)
#: Checks that feed numpy arrays to fit, predict or transform.
ARRAY_CHECKS = (
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_complex_data",
    "check_decision_proba_consistency",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_dtype_object",
    "check_estimators_dtypes",
    "check_estimators_fit_returns_self",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit1d",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_pipeline_consistency",
    "check_readonly_memmap_input",
    "check_requires_y_none",
    "check_supervised_y_2d",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
)
#: Checks of an error (sparse, empty, one-class, continuous or non-finite target, multiclass) that expect
#: it from numpy input.
ERROR_CHECKS = (
    "check_classifier_not_supporting_multiclass",
    "check_classifiers_one_label",
    "check_classifiers_regression_target",
    "check_classifiers_train",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_estimator_sparse_tag",
    "check_estimators_empty_data_messages",
    "check_positive_only_tag_during_fit",
    "check_supervised_y_no_nan",
)


def expected_failures(estimator: TabularClassifier) -> dict[str, str]:
    return {**dict.fromkeys(ARRAY_CHECKS, _ARRAYS), **dict.fromkeys(ERROR_CHECKS, _BEFORE)}


#: A small configuration of each estimator kind (few trees: the checks fit many times); clinical_only is a
#: logistic regression on fewer columns, which the logistic entry covers.
ESTIMATORS = [
    TabularClassifier("logistic", params={"C": 1.0, "l1_ratio": 0.5, "max_iter": 200}),
    TabularClassifier("xgboost", params={"n_estimators": 5, "max_depth": 2}),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- what the checks that feed arrays would check, on DataFrames ----------------------------------------------


def _data(n: int = 60, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["a", "b", "c", "d"])
    X.iloc[::7, 2] = np.nan  # the model imputes missing values itself
    y = (X["a"] + rng.normal(scale=0.5, size=n) > 0).astype(int).to_numpy()
    return X, y


@pytest.fixture(params=ESTIMATORS, ids=lambda e: e.kind)
def estimator(request) -> TabularClassifier:
    return clone(request.param)


def test_fit_returns_self_keeps_params_and_is_idempotent(estimator):
    X, y = _data()
    params = estimator.get_params()
    assert estimator.fit(X, y) is estimator
    assert estimator.get_params() == params
    assert estimator.n_features_in_ == 4 and list(estimator.classes_) == [0, 1]
    first = estimator.predict_proba(X)
    np.testing.assert_allclose(estimator.fit(X, y).predict_proba(X), first)
    np.testing.assert_allclose(first.sum(axis=1), 1.0)
    assert np.array_equal(estimator.predict(X), (first[:, 1] >= 0.5).astype(int))
    # decision_function and predict_proba agree on the order of the patients.
    assert np.array_equal(np.argsort(estimator.decision_function(X)), np.argsort(first[:, 1]))


def test_pickle_and_row_order_keep_predictions(estimator):
    X, y = _data()
    estimator.fit(X, y)
    p = estimator.predict_proba(X)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(estimator)).predict_proba(X), p)
    order = np.random.default_rng(1).permutation(len(X))
    np.testing.assert_allclose(estimator.predict_proba(X.iloc[order]), p[order])
    np.testing.assert_allclose(estimator.predict_proba(X.iloc[:5]), p[:5])


def test_unfitted_and_bad_targets_raise(estimator):
    X, y = _data()
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        with pytest.raises(NotFittedError):
            getattr(estimator, method)(X)
    with pytest.raises(ValueError, match="both classes"):
        estimator.fit(X, np.zeros(len(X), dtype=int))
    with pytest.raises(ValueError, match="one 0/1 value per row"):
        estimator.fit(X, y[:-1])
    with pytest.raises(TypeError, match="DataFrame"):
        estimator.fit(X.to_numpy(), y)
