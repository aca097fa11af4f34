"""Commands about a cohort folder: `cdeg cohort init`, `cdeg check`, `cdeg summary` (parsing only).

Each parses its options and calls the stage function (:func:`cdeg.cohort_init.init_cohort`,
:func:`cdeg.check.check_cohort`, :func:`cdeg.summary.summarize`); nothing else happens here.
"""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.check import FINDING_COLUMNS, check_cohort, format_table, summary_line
from cdeg.cli import run_api
from cdeg.cohort import MODALITIES
from cdeg.cohort_init import init_cohort
from cdeg.summary import format_summary, summarize


@click.command("check")
@click.option(
    "--cohort", type=click.Path(file_okay=False, path_type=Path), required=True, help="Cohort folder."
)
@click.option(
    "--masks",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Mask folder to check against the images (default: the cohort's masks/).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML overriding configs/check.yaml (ranges, categories, tolerances).",
)
@click.option("--strict", is_flag=True, help="Warnings count as errors for the exit status.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv"]),
    default="table",
    show_default=True,
    help="Output format of the findings.",
)
def check_command(cohort: Path, masks: Path | None, config: Path | None, strict: bool, fmt: str) -> None:
    """Validate a cohort before running anything: files, geometry, labels, clinical table.

    Exit status 0 when there are no errors (warnings allowed unless --strict), 1 otherwise.
    """
    import csv
    import io

    findings = run_api(check_cohort, cohort=cohort, masks=masks, config=config)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(FINDING_COLUMNS)
        w.writerows([getattr(f, c) for c in FINDING_COLUMNS] for f in findings)
        click.echo(buf.getvalue(), nl=False)
    elif findings:
        click.echo(format_table(findings))
    click.echo(summary_line(findings), err=fmt == "csv")
    failed = any(f.severity == "error" or strict for f in findings)
    if failed:
        raise SystemExit(1)


@click.command("summary")
@click.option(
    "--cohort", type=click.Path(file_okay=False, path_type=Path), required=True, help="Cohort folder."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the summary as JSON to this file.",
)
def summary_command(cohort: Path, out: Path | None) -> None:
    """Summarise a cohort: patients, images, masks, clinical variables and, if synthetic, the truth."""
    s = run_api(summarize, cohort=cohort, out=out)
    click.echo(format_summary(s))


def _parse_patterns(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        modality, sep, glob = v.partition("=")
        if not sep or not glob:
            raise click.BadParameter(f"{v!r}: expected MODALITY=GLOB, e.g. mri='{{id}}_T2w.nii.gz'")
        if modality not in MODALITIES:
            raise click.BadParameter(f"{v!r}: modality must be one of {', '.join(MODALITIES)}")
        out[modality] = glob
    return out


@click.group("cohort")
def cohort_group() -> None:
    """Create cohort folders from your own scans."""


@cohort_group.command("init")
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cohort folder to create.")
@click.option("--bids", is_flag=True, help="The image folder is a BIDS dataset (sub-*/[ses-*/]anat/*_T2w).")
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    help="MODALITY=GLOB relative to --images, {id} = patient id, e.g. mri='{id}/t2_sag.nii.gz' (repeatable).",
)
@click.option(
    "--clinical",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Clinical table (CSV/TSV/Parquet) with patient_id or participant_id; default: ids only.",
)
@click.option(
    "--link/--copy", default=False, help="Symlink canonical images instead of copying (default copy)."
)
@click.option("--name", default=None, help="Cohort name (default: the folder name).")
def init_command(
    images: Path,
    out: Path,
    bids: bool,
    patterns: tuple[str, ...],
    clinical: Path | None,
    link: bool,
    name: str | None,
) -> None:
    """Build a cohort from a folder of NIfTI files or a BIDS dataset."""
    res = run_api(
        init_cohort,
        images=images,
        out=out,
        bids=bids,
        patterns=_parse_patterns(patterns),
        clinical=clinical,
        link=link,
        name=name,
    )
    counts = ", ".join(f"{n} {m}" for m, n in res["images"].items())
    click.echo(f"{out}: {res['patients']} patients ({counts}), {res['reoriented']} reoriented")
    for line in res["problems"]:
        click.echo(f"skipped: {line}", err=True)
