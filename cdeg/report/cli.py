"""`cdeg report`: rebuild the study report of a run folder (:func:`cdeg.report.build_report`)."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.cli import run_api


@click.command("report")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A `cdeg run` folder (finished, or stopped after some stages).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: RUN/report/report.html).",
)
def report_command(run_dir: Path, out: Path | None) -> None:
    """Rebuild the HTML report of a study from its run folder's files; print its path."""
    from cdeg.report import build_report

    click.echo(run_api(build_report, run_dir=run_dir, path=out))
