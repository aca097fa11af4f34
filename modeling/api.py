"""The three public functions of the classifier stage: :func:`fit`, :func:`predict`, :func:`validate`.

Each is what the matching ``cdeg`` command calls; their keyword parameters are the command-line options.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import metrics as M
from cdeg.modeling import plots, report
from cdeg.modeling.config import MODELS, FitConfig, resolve_config
from cdeg.modeling.data import (
    Dataset,
    check_events,
    is_text,
    load_dataset,
    match_patterns,
    parse_names,
    parse_target,
    read_clinical_table,
    read_features_table,
)
from cdeg.modeling.explain import shap_values
from cdeg.modeling.models import TabularClassifier
from cdeg.modeling.names import describe
from cdeg.modeling.nested_cv import CVResult, nested_cv

from cdeg import __version__
from cdeg.errors import CdegError
from cdeg.io import read_json, remove_stale_temporaries, write_bytes, write_json, write_table, write_text

log = logging.getLogger(__name__)

MODEL_DIR = "model"
MANIFEST = "model.json"
DEV_DIR = "development"
FORMAT = "cdeg-model"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """Versions of cdeg and of the libraries whose behaviour the results depend on."""
    import optuna
    import shap
    import sklearn
    import xgboost

    return {
        "cdeg": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "xgboost": xgboost.__version__,
        "optuna": optuna.__version__,
        "shap": shap.__version__,
    }


def _progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    from cdeg.cli import progress_enabled

    return progress_enabled()


# ==============================================================================================================
# fit
# ==============================================================================================================


@dataclass
class FitResult:
    """What :func:`fit` wrote: the run folder, its metrics and the out-of-fold predictions."""

    out: Path
    metrics: dict[str, Any]
    oof: pd.DataFrame
    config: FitConfig
    files: dict[str, Any] = field(default_factory=dict)
    models: dict[str, TabularClassifier] = field(default_factory=dict)


def fit(
    features: str | Path,
    clinical: str | Path,
    target: str,
    out: str | Path,
    *,
    id_column: str | None = None,
    feature_set: str | list[str] | None = None,
    trials: int | None = None,
    outer_folds: int | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    storage: str | None = None,
    jobs: int | None = None,
    exclude: str | list[str] | None = None,
    config: str | Path | None = None,
    progress: bool | None = None,
    strict: bool = False,
) -> FitResult:
    """Nested-CV estimate and final fit of XGBoost, elastic-net and clinical-only logistic regression.

    The clinical table is checked once before anything is fitted, with the checks of ``cdeg check``
    (:func:`cdeg.check.check_stage_table`). The rule: a missing or unreadable table or a missing id column
    stop the stage; an id on several rows, or a bad value (text in a numeric column, a value outside the
    plausible range of configs/check.yaml) in a column the models may use (the target, and every column
    not left out by the leakage rule or `exclude`) leaves that patient (all its rows) out of both tables,
    with one log line naming the patient, the file and the line(s), and is listed in metrics.json
    (``data.skipped_patients``); a row with an empty id is left out with a warning; bad values in columns
    the models never use (follow-up scores, outcomes) are read as missing. With `strict`, the first such
    problem stops the stage before anything is written.

    Parameters
    ----------
    features, clinical : path
        Features table (CSV/Parquet, one row per patient) and clinical table, joined on `id_column`.
    target : str
        0/1 column of the clinical table.
    out : path
        Run folder: metrics.json, oof_predictions.csv, model/, plots/, report.html, optuna.db.
    feature_set : str or list, optional
        "clinical,mri,xray,other" (any subset) for the xgboost and logistic models.
    trials, outer_folds, repeats, seed, jobs, id_column : optional
        Override the configuration (configs/fit.yaml < `config` < these).
    storage : str, optional
        SQLAlchemy URL of the Optuna storage shared by several workers; default: SQLite file in `out`.
    exclude : str or list, optional
        Columns (names or glob patterns, comma-separated) never used as predictors.
    config : path, optional
        YAML with configuration keys to override.
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.

    Returns
    -------
    FitResult
    """
    t_start = time.perf_counter()
    overrides: dict[str, Any] = {
        "id_column": id_column,
        "trials": trials,
        "outer_folds": outer_folds,
        "repeats": repeats,
        "seed": seed,
        "jobs": jobs,
    }
    if feature_set is not None:
        overrides["feature_sets"] = list(parse_names(feature_set))
    cfg = resolve_config(config, overrides)
    if exclude is not None:
        cfg = _replace(cfg, exclude=tuple(cfg.exclude) + parse_names(exclude))
    if not target or not isinstance(target, str):
        raise ValueError("--target must name the 0/1 column of the clinical table")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    shared = storage is not None
    if shared:
        from cdeg.modeling.tuning import check_storage

        storage_label = check_storage(storage)
    storage_url = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    show = _progress(progress)

    def uses(column: str) -> bool:  # the target, and every column the leakage rule and exclusions leave
        return column == target or not match_patterns([column], [*cfg.leakage_columns, *cfg.exclude])

    check = _check_clinical("fit", clinical, cfg.id_column, uses, strict)
    ds = load_dataset(
        features,
        clinical,
        target,
        cfg.id_column,
        exclude=cfg.exclude,
        leakage_columns=cfg.leakage_columns,
        max_categories=cfg.preprocess.max_categories,
        leak_auc_threshold=cfg.leak_auc_threshold,
        skip=set(check.skipped),
        unused=_unused_columns(check),
        skip_bad_target=not strict,
    )
    ds.report["skipped_patients"] = check.skipped
    check_events(ds.y, cfg.outer_folds, cfg.inner_folds, target, clinical)
    columns = _model_columns(ds, cfg)
    key = hashlib.sha256(
        (ds.fingerprint() + json.dumps(cfg.protocol(), sort_keys=True)).encode()
    ).hexdigest()[:12]
    log.info(
        "%d patients (%d with %s = 1), %d candidate variables; models: %s; run key %s",
        len(ds.y),
        int(ds.y.sum()),
        target,
        ds.X.shape[1],
        ", ".join(columns),
        key,
    )
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # left by a killed run; out is this fit's own folder
    from cdeg.modeling.tuning import make_storage

    make_storage(storage_url, shared=shared).engine.dispose()  # create the tables before workers connect

    cv = nested_cv(
        ds.X, ds.y, ds.ids, cfg, columns, storage_url, key, shared=shared, jobs=cfg.jobs, progress=show
    )
    t_cv = time.perf_counter()
    metrics = _cv_metrics(ds, cfg, cv, columns, key, storage_label if shared else "sqlite (run folder)")

    # Final models: tuned on all patients by the same inner procedure (the "final" studies), refitted on all.
    model_dir = out / MODEL_DIR
    finals: dict[str, TabularClassifier] = {}
    manifest_models: dict[str, Any] = {}
    for m in cv.models:
        clf = TabularClassifier(
            m, params=cv.final_params[m], preprocess=cfg.preprocess, random_state=cfg.seed
        )
        clf.fit(ds.X[columns[m]], ds.y)
        finals[m] = clf
        manifest_models[m] = {
            "files": clf.save(model_dir, m),
            "params": cv.final_params[m],
            "input_columns": columns[m],
            "used_columns": clf.used_inputs_,
            "n_model_variables": len(clf.preprocessor_.columns_),
        }
        metrics["cv"][m]["n_variables_final"] = len(clf.preprocessor_.columns_)
    t_final = time.perf_counter()

    oof_path = out / "oof_predictions.csv"
    oof_out = cv.oof.rename(columns={"target": target})
    write_table(oof_path, oof_out)
    dev_mean = cv.oof.groupby(cfg.id_column, sort=False)[["target", *cv.models]].mean()
    # No patient ids in the model folder: it may travel to another centre.
    write_table(
        model_dir / DEV_DIR / "oof_mean.csv", dev_mean.reset_index(drop=True).rename(columns={"target": "y"})
    )
    write_json(model_dir / DEV_DIR / "metrics.json", metrics["cv"])

    figs = plots.performance_figures(
        [
            (
                "nested cross-validation (out-of-fold)",
                _curves(dev_mean["target"].to_numpy(), dev_mean, metrics["cv"]),
            )
        ],
        out / "plots",
    )
    for _name, paths in figs.items():  # copies beside the model, for `cdeg validate`
        for p in paths:
            if p.suffix == ".png":
                write_bytes(model_dir / DEV_DIR / p.name, p.read_bytes())
    primary = cfg.primary_model if cfg.primary_model in finals else cv.models[0]
    sr = shap_values(finals[primary], ds.X[columns[primary]])
    figs["shap_bar"] = plots.shap_bar(sr, out / "plots" / "shap_bar", target)
    figs["shap_beeswarm"] = plots.shap_beeswarm(sr, out / "plots" / "shap_beeswarm", target)
    top = list(sr.importance().index[: cfg.shap_dependence])
    for k, c in enumerate(top):
        figs[f"shap_dependence_{k + 1}"] = plots.shap_dependence(
            sr, c, out / "plots" / f"shap_dependence_{k + 1}", target
        )
    metrics["shap_top"] = [
        {"variable": c, "label": describe(c).label, "mean_abs_shap": float(v)}
        for c, v in sr.importance().iloc[:15].items()
    ]
    t_end = time.perf_counter()
    metrics["timings_s"] = {
        "nested_cv": round(t_cv - t_start, 2),
        "final_models": round(t_final - t_cv, 2),
        "plots_and_shap": round(t_end - t_final, 2),
        "total": round(t_end - t_start, 2),
    }
    metrics["new_trials"] = cv.new_trials

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": target,
        "id_column": cfg.id_column,
        "primary_model": primary,
        "models": manifest_models,
        "categorical": [
            c for c in ds.categorical if any(c in v["input_columns"] for v in manifest_models.values())
        ],
        "column_sets": {c: s for c, s in ds.column_sets.items()},
        "development": {
            "n_patients": len(ds.y),
            "events": int(ds.y.sum()),
            "prevalence": float(ds.y.mean()),
            "metrics": metrics["cv"],
            "comparison": metrics["comparison"],
        },
        "versions": metrics["versions"],
        "config": json.loads(json.dumps(_cfg_dict(cfg))),
    }
    write_json(model_dir / MANIFEST, manifest)
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.html", _fit_report(metrics, figs, cfg))
    log.info(
        "nested CV AUC: %s; wrote %s", "; ".join(f"{m} {metrics['cv'][m]['auc']:.3f}" for m in cv.models), out
    )
    return FitResult(
        out=out,
        metrics=metrics,
        oof=oof_out,
        config=cfg,
        files={"figures": figs, "model": model_dir, "report": out / "report.html"},
        models=finals,
    )


def _check_clinical(stage: str, clinical: str | Path, id_column: str, uses: Any, strict: bool) -> Any:
    """The stage's check of its clinical table (:func:`cdeg.check.check_stage_table`); see :func:`fit`."""
    from cdeg.check import check_stage_table

    return check_stage_table(stage, clinical, id_column=id_column, uses=uses, strict=strict)


def _unused_columns(check: Any) -> set[str]:
    """Columns with bad values the stage does not use: read as missing rather than stopping it."""
    return {f.column for f in check.ignored if f.column}


def _replace(cfg: FitConfig, **changes: Any) -> FitConfig:
    from dataclasses import replace

    return replace(cfg, **changes)


def _cfg_dict(cfg: FitConfig) -> dict[str, Any]:
    from cdeg.config import to_dict

    return to_dict(cfg)


def _model_columns(ds: Dataset, cfg: FitConfig) -> dict[str, list[str]]:
    """Input columns of each model; models without any column are skipped with a warning."""
    main = ds.columns_of(cfg.feature_sets)
    clin = ds.columns_of(["clinical"])
    if cfg.clinical_only.variables:
        wanted = match_patterns(clin, cfg.clinical_only.variables)
        clin = [c for c in clin if c in wanted]
    out: dict[str, list[str]] = {}
    for m in cfg.models:
        cols = clin if m == "clinical_only" else main
        if not cols:
            if m == "clinical_only":
                log.warning(
                    "no baseline clinical variable left: the clinical-only reference model is skipped"
                )
                continue
            raise CdegError(
                f"no variable in feature set(s) {', '.join(cfg.feature_sets)} after the exclusions; "
                f"available sets: {', '.join(sorted(set(ds.column_sets.values())))}"
            )
        out[m] = cols
    return out


def _cv_metrics(
    ds: Dataset, cfg: FitConfig, cv: CVResult, columns: dict[str, list[str]], key: str, storage: str
) -> dict[str, Any]:
    y = ds.y
    per_model: dict[str, Any] = {}
    P: dict[str, list[np.ndarray]] = {}
    for m in cv.models:
        P[m] = [cv.oof.loc[cv.oof["repeat"] == r, m].to_numpy() for r in range(cfg.repeats)]
        s = M.summarize_repeats(y, P[m])
        s["n_input_variables"] = len(columns[m])
        s["final_params"] = cv.final_params[m]
        per_model[m] = s
    comparison = {}
    for a, b in (("xgboost", "logistic"), ("xgboost", "clinical_only"), ("logistic", "clinical_only")):
        if a in P and b in P:
            comparison[f"{a}_vs_{b}"] = M.compare_repeats(y, P[a], P[b])
    return {
        "target": ds.target,
        "n_patients": len(y),
        "n_features": int(ds.X.shape[1]),
        "prevalence": float(y.mean()),
        "events": int(y.sum()),
        "cv": per_model,
        "comparison": comparison,
        "protocol": {
            "outer": f"{cfg.repeats} x repeated stratified {cfg.outer_folds}-fold",
            "inner": f"stratified {cfg.inner_folds}-fold",
            "trials": cfg.trials,
            "objective": f"mean inner-fold {cfg.objective}",
            "sampler": "TPE (multivariate, seeded)",
            "seed": cfg.seed,
            "feature_sets": list(cfg.feature_sets),
            "run_key": key,
            "storage": storage,
            "oof": "one prediction per patient per repeat; metrics per repeat, then averaged",
            "auc_ci": "DeLong per repeat; mean AUC +- 1.96 sqrt(mean DeLong variance) (conservative)",
        },
        "tuning": cv.tuning,
        "data": {**ds.report, "column_sets": _count(ds.column_sets.values()), "categorical": ds.categorical},
        "versions": versions(),
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _curves(y: np.ndarray, probs: pd.DataFrame, per_model: dict[str, Any]) -> list[plots.Curve]:
    out = []
    for m in MODELS:
        if m in probs.columns and m in per_model:
            s = per_model[m]
            legend = (
                f"{plots.MODEL_LABELS[m]}: AUC {s['auc']:.2f} [{s['auc_ci'][0]:.2f}, {s['auc_ci'][1]:.2f}]"
            )
            out.append((m, np.asarray(y, int), probs[m].to_numpy(dtype=float), legend))
    return out


def _fit_report(metrics: dict[str, Any], figs: dict[str, list[Path]], cfg: FitConfig) -> str:
    r = report
    d = metrics["data"]
    body = [
        f"<p>Target <code>{r.esc(metrics['target'])}</code>: {metrics['n_patients']} patients, {metrics['events']} events "
        f"(prevalence {metrics['prevalence']:.1%}), {metrics['n_features']} candidate variables "
        f"({', '.join(f'{k}: {v}' for k, v in d['column_sets'].items())}).</p>",
        "<h2>Nested cross-validation</h2>",
        r.table(r.METRIC_HEADER, r.metrics_rows(metrics["cv"])),
        f"<p><b>{r.esc(r.verdict(metrics['comparison']))}</b></p>",
        r.table(
            ["AUC difference", "estimate", "95% CI", "p (paired DeLong)"],
            r.comparison_rows(metrics["comparison"]),
        ),
        f"<p class='note'>Outer loop: {r.esc(metrics['protocol']['outer'])}; inner loop: "
        f"{r.esc(metrics['protocol']['inner'])} with {cfg.trials} Optuna trials per study minimising "
        f"{r.esc(metrics['protocol']['objective'])}. Preprocessing (imputation, near-constant and near-duplicate "
        "removal, encoding, scaling) is fitted inside each training fold only. AUC CI: "
        f"{r.esc(metrics['protocol']['auc_ci'])}. Calibration intercept: calibration-in-the-large (0 ideal); "
        "slope: 1 ideal, below 1 means too extreme predictions.</p>",
        r.figure_block(
            figs,
            [
                ("roc", "ROC curves (mean out-of-fold prediction per patient)"),
                ("calibration", "Calibration"),
                ("decision_curve", "Decision curve"),
            ],
        ),
        "<h2>What drives the XGBoost model (SHAP, final model, development patients)</h2>",
        "<p class='note'>SHAP values are contributions to the log-odds; they add up from the average patient's "
        "log-odds to each patient's. They explain the model, not causation.</p>",
        r.figure_block(figs, [("shap_bar", "Mean |SHAP|"), ("shap_beeswarm", "SHAP per patient")]),
        r.figure_block(
            figs,
            [
                (f"shap_dependence_{k + 1}", "SHAP dependence: " + t["label"])
                for k, t in enumerate(metrics["shap_top"][: cfg.shap_dependence])
            ],
        ),
        "<h2>Data</h2>",
        r.table(["item", "value"], _data_rows(d)),
    ]
    if d.get("suspected_leaks"):
        body.append(
            "<p class='warn'>Variables that alone separate the target almost perfectly (check they are "
            f"known before surgery): {r.esc(', '.join(d['suspected_leaks']))}</p>"
        )
    body += [
        "<h2>Final hyperparameters</h2>",
        r.table(
            ["model", "hyperparameters"],
            [[m, json.dumps(s["final_params"], default=str)] for m, s in metrics["cv"].items()],
        ),
        "<h2>Versions and timings</h2>",
        r.table(
            ["", ""],
            [[k, v] for k, v in metrics["versions"].items()]
            + [[f"time: {k}", f"{v} s"] for k, v in metrics.get("timings_s", {}).items()],
        ),
    ]
    return r.page(f"cdeg fit: {metrics['target']}", body)


def _data_rows(d: dict[str, Any]) -> list[list[str]]:
    def lst(x: Any) -> str:
        x = list(x or [])
        return f"{len(x)}" + (f": {', '.join(map(str, x[:12]))}{' ...' if len(x) > 12 else ''}" if x else "")

    return [
        ["patients left out for bad input values", lst(d.get("skipped_patients"))],
        ["patients without a target (left out)", lst(d.get("ids_without_target"))],
        ["ids only in the features table", lst(d.get("ids_only_in_features"))],
        ["ids only in the clinical table", lst(d.get("ids_only_in_clinical"))],
        ["columns left out by the leakage rule", lst(d.get("leakage_excluded"))],
        ["columns excluded on request", lst(d.get("user_excluded"))],
        ["text columns left out (too many values)", lst(d.get("text_columns_excluded"))],
        ["categorical (one-hot) columns", lst(d.get("categorical"))],
    ]


# ==============================================================================================================
# saved models
# ==============================================================================================================


@dataclass
class ModelBundle:
    """A saved model folder: the manifest and the fitted classifiers."""

    path: Path
    manifest: dict[str, Any]
    models: dict[str, TabularClassifier]

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        """Load ``RUN_DIR/model`` (or the run folder itself) written by :func:`fit`; JSON only."""
        path = Path(path)
        if (path / MODEL_DIR / MANIFEST).is_file() and not (path / MANIFEST).is_file():
            path = path / MODEL_DIR
        manifest = read_json(path / MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CdegError(
                f"not a cdeg model folder ({MANIFEST} has no format {FORMAT!r})", path=path / MANIFEST
            )
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise CdegError(
                f"model format {manifest['format_version']} is newer than this cdeg reads "
                f"({FORMAT_VERSION}); update cdeg",
                path=path / MANIFEST,
            )
        models = {}
        for m, info in manifest["models"].items():
            try:
                models[m] = TabularClassifier.load(path, m, info["files"], params=info.get("params"))
            except (OSError, ValueError, KeyError) as e:
                raise CdegError(f"cannot load model {m!r} ({type(e).__name__}: {e})", path=path) from None
        return cls(path, manifest, models)

    @property
    def primary(self) -> str:
        return self.manifest["primary_model"]

    @property
    def input_columns(self) -> list[str]:
        cols: list[str] = []
        for info in self.manifest["models"].values():
            cols += [c for c in info["input_columns"] if c not in cols]
        return cols


@dataclass
class Inputs:
    """External patients prepared for a saved model."""

    X: pd.DataFrame
    clinical: pd.DataFrame | None
    missing: dict[str, list[str]]
    imputed_share: dict[str, float]
    imputed_by_variable: dict[str, dict[str, float]]
    imputed_per_patient: dict[str, np.ndarray]
    unseen_levels: dict[str, list[str]]


def _read_inputs(
    bundle: ModelBundle,
    features: str | Path,
    clinical: str | Path | None,
    id_column: str | None,
    check: Any = None,
) -> Inputs:
    """The model's input columns for the patients of the two tables (less those `check` skipped)."""
    idc = id_column or bundle.manifest["id_column"]
    skip = set(check.skipped) if check is not None else set()
    feat = read_features_table(features, idc, skip)
    clin = (
        read_clinical_table(clinical, idc, skip, _unused_columns(check) if check is not None else ())
        if clinical is not None
        else None
    )
    frames = [feat]
    if clin is not None:
        only_f = sorted(set(feat.index) - set(clin.index))
        only_c = sorted(set(clin.index) - set(feat.index))
        if only_f or only_c:
            log.warning(
                "%d id(s) only in %s and %d only in %s are left out",
                len(only_f),
                features,
                len(only_c),
                clinical,
            )
        ids = [i for i in feat.index if i in clin.index]
        frames = [feat.loc[ids], clin.loc[ids, [c for c in clin.columns if c not in feat.columns]]]
    data = pd.concat(frames, axis=1)
    if data.empty:
        raise CdegError("no patient to predict", path=features)
    cats = set(bundle.manifest.get("categorical", []))
    needed = bundle.input_columns
    cols: dict[str, Any] = {}
    for c in needed:
        if c not in data.columns:
            cols[c] = pd.Series(
                None if c in cats else np.nan, index=data.index, dtype=object if c in cats else float
            )
            continue
        s = data[c]
        if c in cats:
            cols[c] = s.map(
                lambda v: (
                    None if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v == int(v) else str(v))
                )
            ).astype(object)
        elif is_text(s):
            src = clinical if clin is not None and c in clin.columns else features
            bad = s.dropna()
            raise CdegError(
                f"column {c!r} is numeric in the model but holds text such as {bad.iloc[0]!r}",
                patient=str(bad.index[0]),
                path=src,
            )
        else:
            cols[c] = s.astype(float)
    X = pd.DataFrame(cols, index=data.index)
    X.index.name = idc
    missing, share, by_var, per_patient, unseen = _imputation_report(bundle, X, list(data.columns))
    extra = [c for c in data.columns if c not in needed]
    if extra:
        log.info("%d input column(s) not used by the model", len(extra))
    return Inputs(X, clin, missing, share, by_var, per_patient, unseen)


def _imputation_report(bundle: ModelBundle, X: pd.DataFrame, available: list[str]) -> tuple[Any, ...]:
    """Per model: missing variables, share of imputed values (overall, per variable, per patient); unseen levels."""
    missing, share, by_var, per_patient, unseen = {}, {}, {}, {}, {}
    for m, info in bundle.manifest["models"].items():
        used = info["used_columns"]
        missing[m] = [c for c in used if c not in available]
        na = X[used].isna() if used else pd.DataFrame(index=X.index)
        share[m] = float(na.to_numpy().mean()) if used else 0.0
        by_var[m] = {c: float(na[c].mean()) for c in used if na[c].any()}
        per_patient[m] = na.mean(axis=1).to_numpy() if used else np.zeros(len(X))
        if missing[m]:
            log.warning(
                "model %s: %d of its %d variables are not in the input and are imputed with the development "
                "values (median / most frequent): %s",
                m,
                len(missing[m]),
                len(used),
                ", ".join(missing[m][:10]) + (" ..." if len(missing[m]) > 10 else ""),
            )
        if share[m] > 0:
            log.warning("model %s: %.1f%% of its input values are imputed", m, 100 * share[m])
        enc = bundle.models[m].preprocessor_.encoder_
        for c, levels in enc.categories_.items():
            if c in X.columns:
                new = sorted({v for v in X[c].dropna() if v not in levels})
                if new:
                    unseen[c] = new
    for c, new in unseen.items():
        log.warning(
            "column %r has values not seen in development (%s): encoded as none of the known levels",
            c,
            ", ".join(new[:5]),
        )
    return missing, share, by_var, per_patient, unseen


# ==============================================================================================================
# predict
# ==============================================================================================================


@dataclass
class PredictResult:
    """Predictions and the imputation report."""

    out: Path
    predictions: pd.DataFrame
    missing: dict[str, list[str]]
    imputed_share: dict[str, float]
    waterfalls: list[Path] = field(default_factory=list)


def predict(
    model: str | Path,
    features: str | Path,
    out: str | Path,
    *,
    clinical: str | Path | None = None,
    id_column: str | None = None,
    waterfalls: bool = True,
    progress: bool | None = None,
    strict: bool = False,
) -> PredictResult:
    """Probabilities per patient from a saved model, and one SHAP waterfall PNG per patient.

    Variables of the model missing from the input are imputed with the development values (the fitted
    imputer's medians / most frequent levels), named in a warning, and their share is reported in
    predict.json and the predictions table.

    The clinical table (when given) is checked first with the checks of ``cdeg check``: a bad value in a
    column the model uses (text in a numeric column, a value outside its plausible range) leaves that
    patient out (one log line naming the patient and the file; ``skipped_patients`` in predict.json), and
    so does an id on several rows (all its rows); a row with an empty id is left out with a warning; bad
    values in other columns are read as missing; an unreadable table stops the stage. With `strict`, the
    first such problem stops the stage before anything is written.

    Parameters
    ----------
    model : path
        ``RUN_DIR/model`` written by :func:`fit`.
    features, clinical : path
        Tables of the new patients (clinical optional).
    out : path
        Folder for predictions.csv, predict.json and waterfalls/<patient>.png.
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    bundle = ModelBundle.load(model)
    idc = id_column or bundle.manifest["id_column"]
    used = set(bundle.input_columns)
    check = (
        _check_clinical("predict", clinical, idc, used.__contains__, strict) if clinical is not None else None
    )
    inp = _read_inputs(bundle, features, clinical, id_column, check)
    preds = _predict_table(bundle, inp)
    write_table(out / "predictions.csv", preds)
    files = []
    if waterfalls:
        files = _waterfalls(bundle, inp, out / "waterfalls", _progress(progress))
    write_json(
        out / "predict.json",
        {
            "model": str(bundle.path),
            "target": bundle.manifest["target"],
            "primary_model": bundle.primary,
            "n_patients": len(preds),
            "missing_variables": inp.missing,
            "imputed_share": inp.imputed_share,
            "imputed_share_by_variable": inp.imputed_by_variable,
            "unseen_levels": inp.unseen_levels,
            "imputation": "missing variables and values take the development median (numbers) or most frequent level "
            "(categories) stored in the model's preprocess files",
            "skipped_patients": check.skipped if check is not None else {},
            "versions": versions(),
        },
    )
    log.info("wrote %d predictions to %s", len(preds), out)
    return PredictResult(out, preds, inp.missing, inp.imputed_share, files)


def _predict_table(bundle: ModelBundle, inp: Inputs) -> pd.DataFrame:
    idc = inp.X.index.name
    df = pd.DataFrame({idc: inp.X.index})
    probs = {}
    for m, clf in bundle.models.items():
        probs[m] = clf.predict_proba(inp.X[bundle.manifest["models"][m]["input_columns"]])[:, 1]
    df["probability"] = probs[bundle.primary]
    for m in bundle.models:
        df[f"probability_{m}"] = probs[m]
    df["imputed_share"] = inp.imputed_per_patient[bundle.primary]
    return df


def _safe_name(pid: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "_", pid)[:80] or "patient"


def _waterfalls(bundle: ModelBundle, inp: Inputs, folder: Path, progress: bool) -> list[Path]:
    from tqdm.auto import tqdm

    m = bundle.primary
    clf = bundle.models[m]
    cols = bundle.manifest["models"][m]["input_columns"]
    sr = shap_values(clf, inp.X[cols])
    target = bundle.manifest["target"]
    used = bundle.manifest["models"][m]["used_columns"]
    na = inp.X[used].isna().to_numpy()  # row access on a wide DataFrame per patient would dominate the cost
    files = []
    for i, pid in enumerate(
        tqdm(list(inp.X.index), desc="waterfalls", unit="patient", disable=not progress, leave=False)
    ):
        imputed = [c for c, missing in zip(used, na[i], strict=True) if missing]
        note = (
            f"{len(imputed)} of {len(used)} variables were missing and set to development values: "
            f"{', '.join(describe(c).text for c in imputed[:6])}{' ...' if len(imputed) > 6 else ''}"
            if imputed
            else ""
        )
        files += plots.shap_waterfall(sr, i, folder / _safe_name(str(pid)), target, str(pid), note=note)
    return files


# ==============================================================================================================
# validate
# ==============================================================================================================


@dataclass
class ValidateResult:
    """External-validation metrics (and the development figures beside them)."""

    out: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame


def validate(
    model: str | Path,
    features: str | Path,
    clinical: str | Path,
    target: str,
    out: str | Path,
    *,
    id_column: str | None = None,
    waterfalls: bool = False,
    progress: bool | None = None,
    strict: bool = False,
) -> ValidateResult:
    """External validation: AUC (DeLong CI), Brier, calibration, decision curve, beside the development figures.

    The clinical table is checked first with the checks of ``cdeg check``: a bad value in the target or in
    a column the model uses (text in a numeric column, a value outside its plausible range) leaves that
    patient out (one log line naming the patient and the file; ``skipped_patients`` in metrics.json), and
    so does an id on several rows (all its rows); a row with an empty id is left out with a warning; bad
    values in other columns are read as missing; an unreadable table stops the stage. With `strict`, the
    first such problem stops the stage before anything is written.

    Parameters
    ----------
    model : path
        ``RUN_DIR/model`` written by :func:`fit`.
    features, clinical : path
        Tables of the external cohort; `target` is a 0/1 column of `clinical`.
    out : path
        Folder for metrics.json, predictions.csv, plots/ and report.html.
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if not target:
        raise ValueError("--target must name the 0/1 column of the clinical table")
    bundle = ModelBundle.load(model)
    if target != bundle.manifest["target"]:
        log.warning(
            "validating against %r, but the model was fitted for %r", target, bundle.manifest["target"]
        )
    used = {*bundle.input_columns, target}
    idc = id_column or bundle.manifest["id_column"]
    check = _check_clinical("validate", clinical, idc, used.__contains__, strict)
    inp = _read_inputs(bundle, features, clinical, id_column, check)
    assert inp.clinical is not None
    y_all = parse_target(inp.clinical, target, clinical, skip_bad=not strict).reindex(inp.X.index)
    keep = y_all.notna().to_numpy()
    if not keep.all():
        log.warning("%d patient(s) without a value of %r are left out", int((~keep).sum()), target)
    y = y_all[keep].to_numpy().astype(int)
    if len(np.unique(y)) < 2:
        raise CdegError(
            f"target {target!r} is constant in the external cohort: AUC is undefined", path=clinical
        )
    inp = _subset(inp, keep)
    preds = _predict_table(bundle, inp)
    preds.insert(1, target, y)
    write_table(out / "predictions.csv", preds)

    ext = {m: M.summarize(y, preds[f"probability_{m}"].to_numpy()) for m in bundle.models}
    comparison = {}
    for a, b in (("xgboost", "logistic"), ("xgboost", "clinical_only"), ("logistic", "clinical_only")):
        if a in ext and b in ext:
            comparison[f"{a}_vs_{b}"] = M.compare_repeats(
                y, [preds[f"probability_{a}"].to_numpy()], [preds[f"probability_{b}"].to_numpy()]
            )
    dev = bundle.manifest["development"]
    metrics = {
        "target": target,
        "n_patients": len(y),
        "events": int(y.sum()),
        "prevalence": float(y.mean()),
        "external": ext,
        "comparison": comparison,
        "development": {
            "n_patients": dev["n_patients"],
            "prevalence": dev["prevalence"],
            "cv": dev["metrics"],
            "comparison": dev.get("comparison", {}),
        },
        "missing_variables": inp.missing,
        "imputed_share": inp.imputed_share,
        "imputed_share_by_variable": inp.imputed_by_variable,
        "unseen_levels": inp.unseen_levels,
        "imputation": "development median / most frequent level (the fitted imputer's values)",
        "skipped_patients": check.skipped,
        "auc_ci_method": "DeLong",
        "model": str(bundle.path),
        "versions": versions(),
    }
    panels = []
    dev_file = bundle.path / DEV_DIR / "oof_mean.csv"
    if dev_file.is_file():
        dev_oof = pd.read_csv(dev_file)
        panels.append(
            (
                f"development: nested CV (n={dev['n_patients']})",
                _curves(dev_oof["y"].to_numpy(), dev_oof, dev["metrics"]),
            )
        )
    ext_probs = pd.DataFrame({m: preds[f"probability_{m}"] for m in bundle.models})
    panels.append((f"external validation (n={len(y)})", _curves(y, ext_probs, ext)))
    figs = plots.performance_figures(panels, out / "plots")
    if waterfalls:
        _waterfalls(bundle, inp, out / "waterfalls", _progress(progress))
    write_json(out / "metrics.json", metrics)
    write_text(out / "report.html", _validate_report(metrics, figs))
    log.info("external AUC: %s", "; ".join(f"{m} {s['auc']:.3f}" for m, s in ext.items()))
    return ValidateResult(out, metrics, preds)


def _subset(inp: Inputs, keep: np.ndarray) -> Inputs:
    return Inputs(
        inp.X[keep],
        inp.clinical,
        inp.missing,
        inp.imputed_share,
        inp.imputed_by_variable,
        {m: v[keep] for m, v in inp.imputed_per_patient.items()},
        inp.unseen_levels,
    )


def _validate_report(metrics: dict[str, Any], figs: dict[str, list[Path]]) -> str:
    r = report
    dev = metrics["development"]
    rows = []
    for m, s in metrics["external"].items():
        d = dev["cv"].get(m)
        rows.append(
            [
                plots.MODEL_LABELS.get(m, m),
                f"{d['auc']:.3f} [{d['auc_ci'][0]:.3f}, {d['auc_ci'][1]:.3f}]" if d else "-",
                f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
                r.fmt(d["brier"]) if d else "-",
                r.fmt(s["brier"]),
                r.fmt(s["calibration_intercept"], 2),
                r.fmt(s["calibration_slope"], 2),
                f"{metrics['imputed_share'].get(m, 0):.1%}",
            ]
        )
    body = [
        f"<p>Target <code>{r.esc(metrics['target'])}</code>: {metrics['n_patients']} external patients, "
        f"{metrics['events']} events (prevalence {metrics['prevalence']:.1%}); development: {dev['n_patients']} "
        f"patients (prevalence {dev['prevalence']:.1%}).</p>",
        r.table(
            [
                "model",
                "AUC development (nested CV)",
                "AUC external [95% DeLong CI]",
                "Brier dev.",
                "Brier ext.",
                "calibration intercept (ext.)",
                "calibration slope (ext.)",
                "imputed values",
            ],
            rows,
        ),
        f"<p><b>{r.esc(r.verdict(metrics['comparison']))}</b></p>",
        r.table(
            ["AUC difference (external)", "estimate", "95% CI", "p (paired DeLong)"],
            r.comparison_rows(metrics["comparison"]),
        ),
    ]
    miss = {m: v for m, v in metrics["missing_variables"].items() if v}
    if miss or any(v > 0 for v in metrics["imputed_share"].values()):
        items = "".join(
            f"<li>{r.esc(plots.MODEL_LABELS.get(m, m))}: {metrics['imputed_share'][m]:.1%} of input values imputed; "
            f"missing variables ({len(v)}): {r.esc(', '.join(v[:20]))}{' ...' if len(v) > 20 else ''}</li>"
            for m, v in metrics["missing_variables"].items()
        )
        body.append(
            "<div class='warn'><p>Variables absent from the external cohort were set to the development "
            f"median / most frequent value (the fitted imputer's values):</p><ul>{items}</ul></div>"
        )
    body.append(
        r.figure_block(
            figs,
            [
                ("roc", "ROC: development (left) and external (right)"),
                ("calibration", "Calibration"),
                ("decision_curve", "Decision curve"),
            ],
        )
    )
    body.append(r.table(["", ""], [[k, v] for k, v in metrics["versions"].items()]))
    return r.page(f"cdeg validate: {metrics['target']}", body)
