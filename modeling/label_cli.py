"""`cdeg label`: the command over :func:`cdeg.modeling.label.derive_label` (it parses options and calls it)."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.cli import run_api
from cdeg.cohort import MODALITIES

_TABLE = click.Path(exists=True, path_type=Path)


@click.command("label")
@click.option(
    "--features", required=True, type=_TABLE, help="The cohort's `cdeg extract` folder or features table."
)
@click.option(
    "--clinical",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Its clinical table.",
)
@click.option(
    "--reference-features",
    required=True,
    type=_TABLE,
    help="The reference cohort's features (e.g. the population study): its norms and centiles define the rule.",
)
@click.option(
    "--reference-clinical",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The reference cohort's clinical table (age, sex).",
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--measurements",
    default=None,
    metavar="NAME,NAME",
    help="Disc measurements averaged into the score [disc_height_index,disc_csf_signal_ratio].",
)
@click.option(
    "--modality",
    type=click.Choice(list(MODALITIES)),
    default=None,
    help="Modality of the measurements [mri].",
)
@click.option(
    "--centile",
    type=click.FloatRange(0, 100, min_open=True, max_open=True),
    default=None,
    help="Threshold centile [90].",
)
@click.option(
    "--by-sex/--both-sexes",
    default=None,
    help="One norm and one threshold per sex, or one for both with sex as a shift [--by-sex].",
)
@click.option(
    "--min-levels", type=click.IntRange(min=1), default=None, help="Fewest discs measured for a score [2]."
)
@click.option(
    "--name", default="accelerated_operational", show_default=True, help="The label column (the target)."
)
@click.option("--id-column", default=None, help="Patient id column of every table [patient_id].")
def label_command(
    features: Path,
    clinical: Path,
    reference_features: Path,
    reference_clinical: Path,
    out: Path,
    measurements: str | None,
    modality: str | None,
    centile: float | None,
    by_sex: bool | None,
    min_levels: int | None,
    name: str,
    id_column: str | None,
) -> None:
    """Derive an operational target label: an age- and sex-standardised degeneration score above a centile of a
    reference cohort.

    Writes labels.csv (score, reference centile, label per patient), clinical.csv (the clinical table with the
    label column, for `cdeg fit` / `cdeg validate`) and label.json (the rule, the reference and its SHA-256).
    """
    from cdeg.modeling.label import derive_label

    res = run_api(
        derive_label,
        features=features,
        clinical=clinical,
        reference_features=reference_features,
        reference_clinical=reference_clinical,
        out=out,
        measurements=measurements,
        modality=modality,
        centile=centile,
        by_sex=by_sex,
        min_levels=min_levels,
        name=name,
        id_column=id_column,
    )
    c = res.manifest["counts"]
    click.echo(res.manifest["rule"]["words"])
    click.echo(f"{c['positive']} of {c['labelled']} labelled patients are 1; {c['missing']} without a label")
    click.echo(f"wrote {res.out}")
