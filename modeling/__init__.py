"""The classifier stage (``cdeg fit``, ``cdeg predict``, ``cdeg validate``).

* :func:`cdeg.modeling.fit.fit`           - nested-CV XGBoost vs elastic-net vs clinical-only logistic regression,
  final model (JSON), SHAP, report
* :func:`cdeg.modeling.predict.predict`   - probabilities and SHAP waterfalls for new patients
* :func:`cdeg.modeling.validate.validate` - external validation beside the development figures
* :func:`cdeg.modeling.label.derive_label` - an operational target label by a stated rule (``cdeg label``)
* :class:`cdeg.modeling.bundle.ModelBundle`        - a saved model folder, shared by predict and validate
* :class:`cdeg.modeling.models.TabularClassifier` - preprocessing + estimator (scikit-learn conventions)
* :func:`cdeg.modeling.explain.shap_values`       - SHAP values of a fitted classifier (log-odds)
* :mod:`cdeg.modeling.config`        - the options (``FitConfig``; defaults in ``configs/fit.yaml``)

Importing this package imports none of XGBoost, Optuna or SHAP; the modules load what they need.
"""
