"""`cdeg fit`, `cdeg predict`, `cdeg validate`: thin click commands over :mod:`cdeg.modeling.fit`,
:mod:`cdeg.modeling.predict` and :mod:`cdeg.modeling.validate`."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.choices import RECALIBRATION_METHODS
from cdeg.cli import progress_enabled, run_api

_path_in = click.Path(exists=True, dir_okay=False, path_type=Path)
_dir_in = click.Path(exists=True, file_okay=False, path_type=Path)
_dir_out = click.Path(file_okay=False, path_type=Path)
_strict = click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first bad value in the clinical table (before any work) instead of leaving that "
    "patient out.",
)


@click.command("fit")
@click.option("--features", type=_path_in, help="Features table (CSV/Parquet), one row per patient.")
@click.option("--clinical", type=_path_in, help="Clinical table with the id and target columns.")
@click.option("--target", help="0/1 column of the clinical table to predict (e.g. accelerated).")
@click.option("--id-column", default=None, help="Patient id column in both tables [config: patient_id].")
@click.option(
    "--feature-set", default=None, help="Feature sets, comma-separated: clinical,mri,xray,other [all]."
)
@click.option(
    "--tiers",
    default=None,
    help="Feature tiers compared with all variables, comma-separated: clinical,measurements,radiomics; "
    "'none' for no tiers [config: all three].",
)
@click.option(
    "--permutations",
    type=click.IntRange(0),
    default=None,
    help="Label permutations of the primary model's cross-validated AUC; 0 = no test [config].",
)
@click.option(
    "--age-reference",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    nargs=2,
    default=None,
    metavar="FEATURES CLINICAL",
    help="Features and clinical table of a reference cohort (e.g. a population study) for the age norms of "
    "the measurements [the training patients of each fold].",
)
@click.option(
    "--stable-features",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="CSV",
    help="Stability table (columns feature, icc; e.g. stable_features.csv of `cdeg extract-agreement`): "
    "radiomics features with an ICC below --min-icc are dropped [config: preprocess.stable_features].",
)
@click.option(
    "--min-icc",
    type=click.FloatRange(0, 1),
    default=None,
    help="Smallest ICC of a kept radiomics feature, with --stable-features [config: preprocess.min_icc].",
)
@click.option("--trials", type=click.IntRange(1), default=None, help="Optuna trials per study [config].")
@click.option(
    "--outer-folds", type=click.IntRange(2, 50), default=None, help="Outer stratified folds [config]."
)
@click.option(
    "--repeats", type=click.IntRange(1, 100), default=None, help="Repeats of the outer split [config]."
)
@click.option(
    "--seed", type=click.IntRange(0), default=None, help="Seed of splits, samplers and models [config]."
)
@click.option(
    "--storage",
    default=None,
    help="Optuna storage URL (e.g. postgresql://user@host/db) shared by workers [SQLite in --out].",
)
@click.option("--jobs", type=click.IntRange(1, 256), default=None, help="Worker processes [config].")
@click.option(
    "--waterfalls/--no-waterfalls",
    default=None,
    help="Draw a SHAP waterfall of each development patient's cross-validated risk [config: waterfalls].",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Columns never used as predictors: names or glob patterns, comma-separated; repeatable.",
)
@click.option(
    "--exclude-missing-in",
    "exclude_missing_in",
    type=_path_in,
    default=None,
    metavar="TABLE",
    help="Clinical table of another cohort (its clinical.csv): the clinical columns it lacks are never used "
    "as predictors, so the model travels there.",
)
@click.option("--config", "config", type=_path_in, default=None, help="YAML overriding configs/fit.yaml.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
@click.option("--out", type=_dir_out, help="Run folder (created; re-running resumes).")
@_strict
def fit_command(
    features,
    clinical,
    target,
    id_column,
    feature_set,
    tiers,
    permutations,
    age_reference,
    stable_features,
    min_icc,
    trials,
    outer_folds,
    repeats,
    seed,
    storage,
    jobs,
    waterfalls,
    exclude,
    exclude_missing_in,
    config,
    print_config,
    out,
    strict,
) -> None:
    """Nested-CV XGBoost vs elastic-net vs clinical-only logistic regression, final model, SHAP, report."""
    from cdeg.modeling.config import config_yaml
    from cdeg.modeling.data import parse_names
    from cdeg.modeling.fit import fit, fit_config, parse_tiers, preprocess_overrides

    if print_config:
        overrides = {
            "id_column": id_column,
            "trials": trials,
            "outer_folds": outer_folds,
            "repeats": repeats,
            "seed": seed,
            "jobs": jobs,
            "waterfalls": waterfalls,
            "feature_sets": list(parse_names(feature_set)) if feature_set else None,
            "tiers": parse_tiers(tiers),
            "permutation": {"n": permutations} if permutations is not None else None,
            "preprocess": preprocess_overrides(
                tuple(age_reference) if age_reference else None, stable_features, min_icc
            ),
        }
        cfg, _ = run_api(
            fit_config,
            config=config,
            overrides=overrides,
            clinical=clinical,
            exclude=list(exclude) or None,
            exclude_missing_in=exclude_missing_in,
        )
        click.echo(config_yaml(cfg), nl=False)
        return
    missing = [
        n
        for n, v in (("--features", features), ("--clinical", clinical), ("--target", target), ("--out", out))
        if not v
    ]
    if missing:
        raise click.UsageError(f"missing option(s): {', '.join(missing)}")
    res = run_api(
        fit,
        features=features,
        clinical=clinical,
        target=target,
        out=out,
        id_column=id_column,
        feature_set=feature_set,
        tiers=tiers,
        permutations=permutations,
        age_reference=tuple(age_reference) if age_reference else None,
        stable_features=stable_features,
        min_icc=min_icc,
        trials=trials,
        outer_folds=outer_folds,
        repeats=repeats,
        seed=seed,
        storage=storage,
        jobs=jobs,
        exclude=list(exclude) or None,
        exclude_missing_in=exclude_missing_in,
        config=config,
        waterfalls=waterfalls,
        progress=progress_enabled(),
        strict=strict,
    )
    for m, s in res.metrics["cv"].items():
        click.echo(
            f"{m}\tAUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]\tBrier {s['brier']:.3f}\t"
            f"calibration slope {s['calibration_slope']:.2f}"
        )
    for tier, s in (res.metrics.get("tiers") or {}).get("cv", {}).items():
        click.echo(f"tier {tier}\tAUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]")
    click.echo(f"wrote {res.out}")


@click.command("predict")
@click.option("--model", required=True, type=_dir_in, help="RUN_DIR/model written by `cdeg fit`.")
@click.option("--features", required=True, type=_path_in, help="Features table of the patients.")
@click.option("--clinical", type=_path_in, default=None, help="Clinical table of the patients (optional).")
@click.option("--id-column", default=None, help="Patient id column [the model's].")
@click.option("--no-waterfalls", is_flag=True, help="Skip the per-patient SHAP waterfalls (SVG).")
@click.option("--out", required=True, type=_dir_out, help="Output folder.")
@_strict
def predict_command(model, features, clinical, id_column, no_waterfalls, out, strict) -> None:
    """Probabilities per patient and a SHAP waterfall per patient, in clinical words."""
    from cdeg.modeling.predict import predict

    res = run_api(
        predict,
        model=model,
        features=features,
        clinical=clinical,
        out=out,
        id_column=id_column,
        waterfalls=not no_waterfalls,
        progress=progress_enabled(),
        strict=strict,
    )
    for m, share in res.imputed_share.items():
        if res.missing[m] or share > 0:
            click.echo(
                f"warning: {m}: {len(res.missing[m])} variable(s) missing, {share:.1%} of values imputed "
                "with development values",
                err=True,
            )
    click.echo(f"wrote {len(res.predictions)} predictions to {res.out}")


@click.command("validate")
@click.option("--model", required=True, type=_dir_in, help="RUN_DIR/model written by `cdeg fit`.")
@click.option("--features", required=True, type=_path_in, help="Features table of the external cohort.")
@click.option("--clinical", required=True, type=_path_in, help="Clinical table with the target column.")
@click.option("--target", required=True, help="0/1 column to validate against.")
@click.option("--id-column", default=None, help="Patient id column [the model's].")
@click.option("--out", required=True, type=_dir_out, help="Output folder.")
@click.option(
    "--max-imputed",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Stop when more than this share of the primary model's input values are missing in the cohort.",
)
@click.option(
    "--recalibrate",
    type=click.Choice(RECALIBRATION_METHODS),
    default="none",
    show_default=True,
    help="Model updating on these patients, reported apart from the original figures: intercept "
    "(recalibration in the large) or logistic (intercept and slope).",
)
@_strict
def validate_command(
    model, features, clinical, target, id_column, out, max_imputed, recalibrate, strict
) -> None:
    """External validation: AUC (DeLong CI), Brier, calibration, decision curve, beside the development figures."""
    from cdeg.modeling.validate import validate

    res = run_api(
        validate,
        model=model,
        features=features,
        clinical=clinical,
        target=target,
        out=out,
        id_column=id_column,
        max_imputed=max_imputed,
        recalibrate=recalibrate,
        progress=progress_enabled(),
        strict=strict,
    )
    for m, s in res.metrics["external"].items():
        click.echo(
            f"{m}\texternal AUC {s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]\t"
            f"Brier {s['brier']:.3f}\tcalibration slope {s['calibration_slope']:.2f}\t"
            f"imputed {res.metrics['imputed_share'][m]:.1%}"
        )
    rec = res.metrics["recalibration"]
    for m, r in rec.get("models", {}).items():
        cv = r["cross_validated"]
        click.echo(
            f"{m}\t{rec['method']} recalibration: intercept {r['intercept']:.3f}, slope {r['slope']:.3f}; "
            f"cross-validated Brier {cv['brier']:.3f}, calibration slope {cv['calibration_slope']:.2f}"
        )
    click.echo(f"wrote {res.out}")
