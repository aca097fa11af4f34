"""`cdeg validate`: external validation of a saved model beside its development figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import compare as C
from cdeg.modeling import metrics as M
from cdeg.modeling import plots, report
from cdeg.modeling.bundle import (
    Inputs,
    ModelBundle,
    check_clinical,
    check_out,
    curves,
    predict_table,
    read_inputs,
)
from cdeg.modeling.data import parse_target
from cdeg.modeling.label import outcome_definition
from cdeg.modeling.predict import write_waterfalls
from cdeg.modeling.recalibration import check_method, recalibration

from cdeg.errors import CdegError
from cdeg.io import write_json, write_table, write_text
from cdeg.outputs import ModelFolder, ValidationRun, versions
from cdeg.progress import ProgressArg, shown

log = logging.getLogger(__name__)


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
    max_imputed: float = 0.5,
    recalibrate: str = "none",
    progress: ProgressArg = None,
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
        ``RUN_DIR/model`` written by :func:`cdeg.modeling.fit.fit`.
    features, clinical : path
        Tables of the external cohort; `target` is a 0/1 column of `clinical`.
    out : path
        Folder for metrics.json, predictions.csv, plots/ and report.html.
    progress : bool or callable, optional
        Progress of the waterfalls (:mod:`cdeg.progress`).
    max_imputed : float
        Largest share of the primary model's input values that may be missing in the external cohort (and
        filled with development values); above it the stage stops before writing anything: the figures would
        describe the development medians, not the external patients.
    recalibrate : {"none", "intercept", "logistic"}
        Model updating on the external patients (:mod:`cdeg.modeling.recalibration`), reported separately
        (metrics.json ``recalibration``, its own table and calibration figure): the original external figures
        are never replaced. ``intercept``: recalibration in the large; ``logistic``: intercept and slope.
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.
    """
    out = check_out(out)
    if not target:
        raise ValueError("--target must name the 0/1 column of the clinical table")
    check_method(recalibrate)
    bundle = ModelBundle.load(model)
    if target != bundle.manifest["target"]:
        log.warning(
            "validating against %r, but the model was fitted for %r", target, bundle.manifest["target"]
        )
    used = {*bundle.input_columns, target}
    idc = id_column or bundle.manifest["id_column"]
    check = check_clinical("validate", clinical, idc, used.__contains__, strict)
    if not 0 <= max_imputed <= 1:
        raise ValueError(f"--max-imputed {max_imputed} must be a share between 0 and 1")
    inp = read_inputs(bundle, features, clinical, id_column, check)
    share = inp.imputed_share.get(bundle.primary, 0.0)
    if share > max_imputed:
        raise CdegError(
            f"{share:.0%} of the {bundle.primary} model's input values are missing in the external cohort "
            f"(limit {max_imputed:.0%}, --max-imputed); first missing variables: "
            f"{', '.join(inp.missing.get(bundle.primary, [])[:5]) or 'values missing per patient'}",
            path=features,
        )
    y, inp = _with_target(inp, target, clinical, strict)
    preds = predict_table(bundle, inp)
    preds.insert(1, target, y)
    write_table(ValidationRun(out).predictions, preds)
    metrics = _metrics(bundle, inp, preds, y, target)
    metrics["baselines"] = _baselines(bundle, inp, y)
    metrics["primary_model"] = bundle.primary
    metrics["subgroups"] = _subgroups(bundle, inp, preds, y)
    metrics["transport"] = _transport(bundle, inp, metrics["subgroups"], ValidationRun(out))
    metrics["recalibration"] = recalibration(y, _probabilities(bundle, preds), recalibrate)
    metrics["max_imputed"] = max_imputed
    metrics["outcome_definition"] = outcome_definition(clinical, target, bundle.input_columns)
    metrics["skipped_patients"] = check.skipped
    metrics["auc_ci_method"] = M.AUC_CI_METHOD
    metrics["model"] = str(bundle.path)
    metrics["versions"] = versions("model")
    figs = plots.performance_figures(_panels(bundle, preds, y, metrics["external"]), ValidationRun(out).plots)
    figs.update(_recalibration_figure(bundle, preds, y, metrics, ValidationRun(out)))
    if waterfalls:
        with shown(progress) as report_progress:
            write_waterfalls(bundle, inp, ValidationRun(out).waterfalls, report_progress)
    write_json(ValidationRun(out).metrics, metrics)
    write_text(ValidationRun(out).report, report.validate_report(metrics, figs))
    log.info("external AUC: %s", "; ".join(f"{m} {s['auc']:.3f}" for m, s in metrics["external"].items()))
    return ValidateResult(out, metrics, preds)


def _with_target(inp: Inputs, target: str, clinical: str | Path, strict: bool) -> tuple[np.ndarray, Inputs]:
    """The 0/1 target of the patients who have one, and their inputs; a constant target stops the stage."""
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
    return y, inp.subset(keep)


def _metrics(
    bundle: ModelBundle, inp: Inputs, preds: pd.DataFrame, y: np.ndarray, target: str
) -> dict[str, Any]:
    """External metrics and comparisons, the development ones beside them, and the imputation report."""
    ext = {m: M.summarize(y, preds[f"probability_{m}"].to_numpy()) for m in bundle.models}
    for m, s in ext.items():
        # Patient-bootstrap intervals of Brier and calibration, as for the development estimates.
        s["bootstrap"] = C.bootstrap_calibration(y, [preds[f"probability_{m}"].to_numpy()])
    comparison = {}
    for a, b in (("xgboost", "logistic"), ("xgboost", "clinical_only"), ("logistic", "clinical_only")):
        if a in ext and b in ext:
            comparison[f"{a}_vs_{b}"] = M.compare_repeats(
                y, [preds[f"probability_{a}"].to_numpy()], [preds[f"probability_{b}"].to_numpy()]
            )
    dev = bundle.manifest["development"]
    return {
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
            "baselines": dev.get("baselines", {}),
        },
        "missing_variables": inp.missing,
        "imputed_share": inp.imputed_share,
        "imputed_share_by_variable": inp.imputed_by_variable,
        "unseen_levels": inp.unseen_levels,
        "imputation": "development median / most frequent level (the fitted imputer's values)",
    }


def _baselines(bundle: ModelBundle, inp: Inputs, y: np.ndarray) -> dict[str, Any]:
    """Age alone and the age-blind degeneration count on the external patients (nothing fitted): from the
    whole features table (`inp.features`), since the model's own inputs may hold few of the disc measurements."""
    from cdeg.modeling.baselines import baseline_metrics, baseline_scores

    assert inp.features is not None
    feat = inp.features.reindex(inp.X.index)
    age_column = bundle.manifest.get("config", {}).get("preprocess", {}).get("age_column", "age")
    clin = inp.clinical
    age = clin[age_column] if clin is not None and age_column in clin.columns else None
    return baseline_metrics(y, baseline_scores(feat, age))


def _subgroups(bundle: ModelBundle, inp: Inputs, preds: pd.DataFrame, y: np.ndarray) -> list[dict[str, Any]]:
    """The primary model's performance by age band, sex and index level, and outside the development ages."""
    from cdeg.modeling.subgroups import subgroup_table, subgroups_of

    if inp.clinical is None:
        return []
    pre = bundle.manifest.get("config", {}).get("preprocess", {})
    age_col = pre.get("age_column", "age")
    clin = inp.clinical.reindex(inp.X.index)
    groups = subgroups_of(clin, age_col, pre.get("sex_column", "sex"), pre.get("index_column", "index_level"))
    dev_range = bundle.manifest["development"].get("age_range")
    ages = clin[age_col] if age_col in clin.columns else None
    p = preds[f"probability_{bundle.primary}"].to_numpy()
    return subgroup_table(y, p, groups, ages, tuple(dev_range) if dev_range else None)


def _panels(
    bundle: ModelBundle, preds: pd.DataFrame, y: np.ndarray, ext: dict[str, Any]
) -> list[tuple[str, list[plots.Curve]]]:
    """The development panel (when the model folder keeps its out-of-fold means) and the external one."""
    dev = bundle.manifest["development"]
    panels = []
    dev_file = ModelFolder(bundle.path).oof_mean
    if dev_file.is_file():
        dev_oof = pd.read_csv(dev_file)
        panels.append(
            (
                f"development: nested CV (n={dev['n_patients']})",
                curves(dev_oof["y"].to_numpy(), dev_oof, dev["metrics"]),
            )
        )
    ext_probs = pd.DataFrame({m: preds[f"probability_{m}"] for m in bundle.models})
    panels.append((f"external validation (n={len(y)})", curves(y, ext_probs, ext)))
    return panels


def _probabilities(bundle: ModelBundle, preds: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each model's external probabilities."""
    return {m: preds[f"probability_{m}"].to_numpy(dtype=float) for m in bundle.models}


def _transport(
    bundle: ModelBundle, inp: Inputs, subgroups: list[dict[str, Any]], folder: ValidationRun
) -> dict[str, Any]:
    """The development-vs-external table of the primary model's top variables (also written as transport.csv)
    and the external patients outside the development ages: how far the external cohort lies from the
    development one (TRIPOD+AI item 16, differences between development and evaluation data)."""
    from cdeg.modeling.transport import COLUMNS, age_shift, model_values, transport_rows, transport_summary

    dev = bundle.manifest["development"]
    out: dict[str, Any] = {"age": age_shift(subgroups, dev.get("age_range"))}
    summary = dev.get("distribution")
    if not summary or summary.get("model") not in bundle.models:
        out["available"] = False
        out["reason"] = "model.json keeps no development distribution (a model fitted by an older cdeg)"
        return out
    name = summary["model"]
    X = inp.X[bundle.manifest["models"][name]["input_columns"]]
    rows = transport_rows(summary, model_values(bundle.models[name], X))
    write_table(folder.transport, pd.DataFrame(rows, columns=list(COLUMNS)))
    out.update(
        available=True,
        model=name,
        values=summary.get("values"),
        ranking="mean |SHAP| of the final model on the development patients",
        rows=rows,
        summary=transport_summary(rows, name),
    )
    out["text"] = out["summary"]["sentence"]  # one sentence (TRIPOD+AI items 16 and 20c)
    return out


def _recalibration_figure(
    bundle: ModelBundle, preds: pd.DataFrame, y: np.ndarray, metrics: dict[str, Any], folder: ValidationRun
) -> dict[str, list[Path]]:
    """The calibration of the primary model before and after the update (cross-validated); {} without one."""
    from cdeg.modeling.recalibration import cross_validated

    rec = metrics["recalibration"]
    if not rec["applied"]:
        return {}
    m = bundle.primary
    p = preds[f"probability_{m}"].to_numpy(dtype=float)
    p_new = cross_validated(y, p, rec["method"], rec["folds"], rec["seed"])
    return {
        "recalibration": plots.recalibration_figure(
            y, p, p_new, m, rec["method"], folder.plot("recalibration", "")
        )
    }
