"""`cdeg import-dicom`: the command-line shell over :func:`cdeg.dicom.api.import_dicom`."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.cli import progress_enabled, run_api


@click.command("import-dicom")
@click.option(
    "--dicom",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of DICOM files (any nesting, several patients and studies).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Cohort folder to create (new or empty)."
)
@click.option(
    "--clinical",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Clinical table (CSV/TSV/Parquet) whose patient_id column holds the DICOM PatientID.",
)
@click.option(
    "--id-map",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV pseudonym,patient_id to write (or reuse) OUTSIDE the cohort; the only link back to "
    "the hospital ids. A table file key -> path is written next to it (<name>.files.csv).",
)
@click.option(
    "--series",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Override CSV patient,series_instance_uid,modality for ambiguous cases (patient: PatientID "
    "or pseudonym; series: UID or the series key from import_report.csv).",
)
@click.option("--name", default=None, help="Cohort name recorded in cohort.json (default: folder name).")
@click.option(
    "--salt",
    envvar="CDEG_ID_SALT",
    show_envvar=True,
    default=None,
    help="Secret that orders the pseudonyms and keys the report's file names (default: the one stored "
    "in an existing --id-map, else a new random one, stored in the id map only); prefer the "
    "environment variable (a command line is visible to other users).",
)
@click.option(
    "--mask-burned-in",
    is_flag=True,
    default=False,
    help="Blank the corners/bands of a radiograph that hold burned-in text (BurnedInAnnotation YES or "
    "text found there) before writing it; without it such images are only reported.",
)
def import_dicom_command(dicom, out, clinical, id_map, series, name, salt, mask_burned_in):
    """Import a DICOM export as a de-identified cohort: sagittal T2 MRI and lateral radiograph per patient.

    Patient ids become pseudonyms (P0001, ...); names, birth dates, accession numbers, institutions, UIDs
    and file paths never reach the cohort or the log. Every file not imported is listed with its reason
    in COHORT/import_report.csv, as is every image with text burned into its pixels (blanked with
    --mask-burned-in).
    """
    from cdeg.dicom.api import import_dicom

    summary = run_api(
        import_dicom,
        dicom=dicom,
        out=out,
        clinical=clinical,
        id_map=id_map,
        series=series,
        name=name,
        salt=salt,
        mask_burned_in=mask_burned_in,
        progress=progress_enabled(),
    )
    click.echo(summary.one_line())
