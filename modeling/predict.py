"""`cdeg predict`: probabilities and SHAP waterfalls for new patients from a saved model; and the waterfalls of
the development patients' cross-validated risks that `cdeg fit` draws (:func:`write_oof_waterfalls`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from cdeg.modeling import plots
from cdeg.modeling.bundle import (
    Inputs,
    ModelBundle,
    check_clinical,
    check_out,
    predict_table,
    read_inputs,
)
from cdeg.modeling.explain import absent_modalities, from_table, shap_values
from cdeg.modeling.names import describe

from cdeg.cohort import MODALITY_WORDS
from cdeg.io import write_table
from cdeg.outputs import (
    FitRun,
    PredictionRun,
    grouped_waterfall_stem,
    versions,
    waterfall_stem,
    write_manifest,
)
from cdeg.progress import ProgressArg, shown, track

log = logging.getLogger(__name__)


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
    progress: ProgressArg = None,
    strict: bool = False,
) -> PredictResult:
    """Probabilities per patient from a saved model, and one SHAP waterfall (SVG) per patient.

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
        ``RUN_DIR/model`` written by :func:`cdeg.modeling.fit.fit`.
    features, clinical : path
        Tables of the new patients (clinical optional).
    out : path
        Folder for predictions.csv, predict.json, waterfalls/<patient>.svg and
        waterfalls/by_level/<patient>.svg.
    progress : bool or callable, optional
        Progress of the waterfalls (:mod:`cdeg.progress`).
    strict : bool
        Stop (CdegError) at the first bad value instead of leaving the patient out.
    """
    out = check_out(out)
    bundle = ModelBundle.load(model)
    idc = id_column or bundle.manifest["id_column"]
    used = set(bundle.input_columns)
    check = (
        check_clinical("predict", clinical, idc, used.__contains__, strict) if clinical is not None else None
    )
    inp = read_inputs(bundle, features, clinical, id_column, check)
    preds = predict_table(bundle, inp)
    write_table(PredictionRun(out).predictions, preds)
    files = []
    if waterfalls:
        with shown(progress) as report:
            files = write_waterfalls(bundle, inp, PredictionRun(out).waterfalls, report)
    write_manifest(
        PredictionRun(out).manifest,
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
            "versions": versions("model"),
        },
    )
    log.info("wrote %d predictions to %s", len(preds), out)
    return PredictResult(out, preds, inp.missing, inp.imputed_share, files)


def write_waterfalls(bundle: ModelBundle, inp: Inputs, folder: Path, progress: ProgressArg) -> list[Path]:
    """Two SHAP waterfalls of the primary model per patient in `folder`, naming the imputed variables: one per
    variable, and one with the variables summed per level (:func:`cdeg.outputs.grouped_waterfall_stem`)."""
    m = bundle.primary
    clf = bundle.models[m]
    cols = bundle.manifest["models"][m]["input_columns"]
    # Models saved before the mean training risk was recorded leave it out of the title (None).
    sr = shap_values(clf, inp.X[cols], mean_risk=bundle.manifest["models"][m].get("mean_training_risk"))
    target = bundle.manifest["target"]
    used = bundle.manifest["models"][m]["used_columns"]
    na = inp.X[used].isna().to_numpy()  # row access on a wide DataFrame per patient would dominate the cost
    absent = absent_modalities(inp.X[cols])
    files = []
    for i, pid in enumerate(track(list(inp.X.index), progress, "waterfalls")):
        imputed = [c for c, missing in zip(used, na[i], strict=True) if missing]
        note = (
            f"{len(imputed)} of {len(used)} variables were missing and set to development values: "
            f"{', '.join(describe(c).text for c in imputed[:6])}{' ...' if len(imputed) > 6 else ''}"
            if imputed
            else ""
        )
        note = " ".join(filter(None, [_absent_words(absent[str(pid)]), note]))
        kw = {"note": note, "absent": absent[str(pid)]}
        files += plots.shap_waterfall(sr, i, folder / waterfall_stem(str(pid)), target, str(pid), **kw)
        files += plots.shap_waterfall_grouped(
            sr, i, folder / grouped_waterfall_stem(str(pid)), target, str(pid), **kw
        )
    return files


def _absent_words(absent: list[str]) -> str:
    """The sentence saying which scans the patient lacks ("" when none)."""
    if not absent:
        return ""
    scans = " and ".join(MODALITY_WORDS.get(m, m) for m in absent)
    return f"No {scans}: the model saw only imputed values for those variables (one bar)."


def write_oof_waterfalls(
    table: pd.DataFrame, X: pd.DataFrame, folder: FitRun, target: str, id_column: str, jobs: int = 1
) -> list[Path]:
    """Two waterfalls per development patient of its cross-validated risk, in ``folder.waterfalls``: the SHAP
    values of the first repeat's outer-fold model that predicted the patient (`table`:
    :func:`cdeg.modeling.explain.shap_table` rows), per variable and summed per level. They end at that model's
    probability, the patient's out-of-fold prediction of repeat 1. `X` holds the raw inputs (index = ids).
    With `jobs` > 1 the folds are drawn in that many spawned processes (a figure takes ~0.25 s; a study draws two
    per patient); the files are the same."""
    first = table[table["repeat"] == table["repeat"].min()]
    absent = absent_modalities(X)
    parts = [
        (int(fold), rows, {str(p): absent.get(str(p), []) for p in rows[id_column].astype(str).unique()})
        for fold, rows in first.groupby("fold", sort=True)
    ]
    if jobs <= 1 or len(parts) <= 1:
        return [f for part in parts for f in _fold_waterfalls(*part, folder, target, id_column)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: as the fit's workers (a forked process that started BLAS threads can deadlock).
    with ProcessPoolExecutor(min(jobs, len(parts)), mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = [ex.submit(_fold_waterfalls, *part, folder, target, id_column) for part in parts]
        return [f for fut in futures for f in fut.result()]


def _fold_waterfalls(
    fold: int, rows: pd.DataFrame, absent: dict[str, list[str]], folder: FitRun, target: str, id_column: str
) -> list[Path]:
    """The two waterfalls of each patient one outer-fold model predicted (:func:`write_oof_waterfalls`)."""
    sr = from_table(rows, id_column)
    files: list[Path] = []
    for i, pid in enumerate(sr.data.index):
        note = " ".join(
            filter(
                None,
                [
                    f"Explains the model of outer fold {fold + 1} (repeat 1), which did not see this patient.",
                    _absent_words(absent.get(str(pid), [])),
                ],
            )
        )
        kw = {"note": note, "absent": absent.get(str(pid), []), "what": "cross-validated probability"}
        files += plots.shap_waterfall(sr, i, folder.waterfall(pid, ""), target, str(pid), **kw)
        files += plots.shap_waterfall_grouped(
            sr, i, folder.grouped_waterfall(pid, ""), target, str(pid), **kw
        )
    return files
