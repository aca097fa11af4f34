"""`cdeg extract`: the command line over :func:`cdeg.features.extract.extract` (parsing only)."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.cli import progress_enabled, run_api


@click.command("extract")
@click.option("--cohort", type=click.Path(file_okay=False, path_type=Path), help="Cohort folder.")
@click.option(
    "--masks",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Mask folder (<patient>/<modality>.nii.gz, e.g. `cdeg segment` output). Default: the cohort's masks/.",
)
@click.option("--modality", default="mri,xray", show_default=True, help="Modalities, comma-separated.")
@click.option(
    "--params",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="One PyRadiomics parameter file for all modalities, used unchanged. "
    "Default: configs/radiomics_mri.yaml and configs/radiomics_xray.yaml.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Local worker processes (0 = all cores).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Run on an existing Dask cluster: scheduler address (tcp://HOST:8786) or scheduler file (.json). "
    "Workers need the cohort and OUT at the same paths. Same output as a local run.",
)
@click.option(
    "--cluster",
    metavar="local:N",
    default=None,
    help="Start a local Dask cluster of N worker processes for this run.",
)
@click.option(
    "--geometry-tolerance",
    "geometry_tolerance_mm",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Masks whose grid differs from the image by up to this (mm) are resampled with a warning; beyond, that "
    "patient/modality fails.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder (re-runs resume)."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first problem with an input file (before any work) instead of skipping that "
    "patient/modality.",
)
@click.option(
    "--label-map",
    default=None,
    metavar="NAME|FILE",
    help="--masks is another tool's output (spineps, totalspineseg, totalsegmentator_total_mr, ... or a label "
    "map file): converted into OUT/masks first (`cdeg segment import-masks`).",
)
@click.option(
    "--corners",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Measure radiographs from vertebral body corner points instead of masks: a file or folder of 3D "
    "Slicer .mrk.json, CSV (patient_id, level, corner, x_mm, y_mm), labelme .json or CVAT .xml (points named "
    "C5_AS, C5_PS, C5_PI, C5_AI). Clinical measurements only, no PyRadiomics.",
)
@click.option(
    "--patients",
    default=None,
    metavar="ID,ID,...",
    help="Extract only these patients of the cohort (comma-separated ids; default: all).",
)
@click.option("--print-params", is_flag=True, help="Print the default PyRadiomics parameter files and exit.")
def extract_command(
    cohort: Path | None,
    masks: Path | None,
    modality: str,
    params: Path | None,
    jobs: int,
    scheduler: str | None,
    cluster: str | None,
    geometry_tolerance_mm: float,
    out: Path | None,
    strict: bool,
    label_map: str | None,
    corners: Path | None,
    patients: str | None,
    print_params: bool,
) -> None:
    """Per-level features: PyRadiomics (shape, intensity, texture) and clinical measurements
    (disc heights, disc height index, angles, Cobb, body size, disc/CSF signal).

    Writes features_long.parquet, features.parquet, features.csv, provenance.json and, when something
    failed, errors.csv into OUT.
    """
    if print_params:
        from cdeg.features.extract import DEFAULT_PARAMS

        from cdeg.config import shipped_config

        for name in DEFAULT_PARAMS.values():
            click.echo(f"# --- {name}")
            click.echo(shipped_config(name).read_text(encoding="utf-8"))
        return
    if cohort is None or out is None:
        raise click.UsageError("--cohort and --out are required")
    if corners is not None:
        given = [
            n
            for n, v in (
                ("--masks", masks),
                ("--params", params),
                ("--label-map", label_map),
                ("--patients", patients),
            )
            if v
        ]
        if given:
            raise click.UsageError(
                f"--corners measures corner points, not masks: leave out {', '.join(given)}"
            )
        from cdeg.features.corners import extract_corners

        run_api(
            extract_corners,
            cohort=cohort,
            corners=corners,
            out=out,
            strict=strict,
            progress=progress_enabled(),
        )
        return
    from cdeg.features.extract import extract

    run_api(
        extract,
        cohort=cohort,
        out=out,
        masks=masks,
        modality=modality,
        params=params,
        jobs=jobs,
        scheduler=scheduler,
        cluster=cluster,
        geometry_tolerance_mm=geometry_tolerance_mm,
        progress=progress_enabled(),
        strict=strict,
        label_map=label_map,
        patients=patients,
    )


@click.command("extract-agreement")
@click.option(
    "--features",
    "features",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A `cdeg extract` folder or its features table (CSV/Parquet); give it twice (e.g. predicted, then "
    "reference masks). Differences are the first minus the second.",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--id-column", default=None, help="Patient id column of both tables [patient_id].")
@click.option(
    "--patients",
    default=None,
    metavar="ID,ID,...",
    help="Compare only these patients (comma-separated ids; default: every patient of both tables).",
)
def agreement_command(
    features: tuple[Path, ...], out: Path, id_column: str | None, patients: str | None
) -> None:
    """Agreement of two feature tables of the same patients (two mask sets, or two raters).

    Writes agreement.csv (ICC(2,1), ICC(3,1) with 95% CIs per feature; Bland-Altman for the clinical
    measurements), stable_features.csv (for `cdeg fit --stable-features`) and agreement.json into OUT.
    """
    from cdeg.features.agreement import GOOD_ICC, agreement

    res = run_api(agreement, features=list(features), out=out, id_column=id_column, patients=patients)
    rated = res.table["icc_2_1"].notna()
    good = int((res.table.loc[rated, "icc_2_1"] >= GOOD_ICC).sum())
    click.echo(
        f"{res.manifest['patients']['matched']} patients, {int(rated.sum())} features with an ICC, "
        f"{good} with ICC(2,1) >= {GOOD_ICC}"
    )
    click.echo(f"wrote {res.out}")
