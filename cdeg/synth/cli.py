"""`cdeg synth`: the command-line shell over :func:`cdeg.synth.synthesize`."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.choices import SYNTH_PROFILES
from cdeg.cli import progress_enabled, run_api


@click.command("synth")
@click.option(
    "--profile",
    type=click.Choice(list(SYNTH_PROFILES)),
    default="neck",
    show_default=True,
    help="neck: surgical radiculopathy cohort (age 18-65, index level, 1- and 2-year outcomes); "
    "population: population study (age 45-90, not operated).",
)
@click.option(
    "--n", "n", type=click.IntRange(min=1), default=109, show_default=True, help="Number of patients."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed. Same seed, version and config give byte-identical files, whatever --jobs is.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=False,
    help="Cohort folder to create (must be new or empty unless --overwrite).",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="YAML with the keys of configs/synth.yaml to change (see --print-config).",
)
@click.option(
    "--modality",
    "modalities",
    default="mri,xray",
    show_default=True,
    help="Images to render: mri, xray or mri,xray.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Worker processes (0 = all cores). Output does not depend on it.",
)
@click.option("--name", default=None, help="Cohort name recorded in cohort.json (default: folder name).")
@click.option("--overwrite", is_flag=True, help="Replace a cohort already in --out.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["nifti", "dicom"]),
    default="nifti",
    show_default=True,
    help="nifti: the cohort layout with masks and truth. dicom: a hospital-style DICOM export "
    "(identifying tags, decoy series; no masks or truth) to test `cdeg import-dicom` with.",
)
@click.option(
    "--ceiling/--no-ceiling",
    default=None,
    help="Write (or not) the observable and latent ceiling columns into truth/patients.csv. "
    "Default: as ceiling.enabled of the configuration says. The first cohort of a configuration fits the "
    "ceiling models on a large synthetic cohort (cached in $CDEG_CACHE_DIR, default ~/.cache/cdeg).",
)
@click.option(
    "--print-config", is_flag=True, help="Print the resolved generator configuration (YAML) and exit."
)
def synth(profile, n, seed, out, config, modalities, jobs, name, overwrite, format_, ceiling, print_config):
    """Generate a synthetic cohort (MRI, radiograph, masks, clinical table, ground truth).

    The cohort follows the layout every cdeg stage reads (see README, "Cohort format"), plus truth/levels.csv
    (true per-level anatomy and degeneration) and truth/patients.csv (predisposition, oracle probability, and
    the observable and latent ceilings of each outcome).
    """
    if print_config:
        from cdeg.config import dump_yaml
        from cdeg.synth import load_synth_config

        cfg = run_api(load_synth_config, path=config)
        click.echo(dump_yaml(cfg), nl=False)
        return
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    from cdeg.synth import synthesize

    path = run_api(
        synthesize,
        out=out,
        profile=profile,
        n=n,
        seed=seed,
        config=config,
        modalities=modalities,
        jobs=jobs,
        name=name,
        overwrite=overwrite,
        format=format_,
        ceiling=ceiling,
        progress=progress_enabled(),
    )
    click.echo(f"wrote {n} {profile} patients to {path}{' as DICOM' if format_ == 'dicom' else ''}")
