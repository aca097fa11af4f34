"""`cdeg demo`: the study end to end on synthetic cohorts; an alias of ``cdeg run --config configs/demo.yaml``.

``make demo`` runs the same thing. The configuration (``configs/demo.yaml``) synthesises an annotated
cohort to train segmentation on, a 109-patient surgical (neck) cohort for development and a population
cohort for external validation, then segments, extracts, fits both questions (``accelerated`` and
``poor_outcome_2y``), validates and writes ``report.html``. A re-run reuses every stage whose inputs did not
change.
"""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.cli import progress_enabled, run_api
from cdeg.progress import ProgressArg


def demo(out: str | Path | None = None, jobs: int | None = None, progress: ProgressArg = True):
    """Run ``configs/demo.yaml`` (into `out` when given) and return the pipeline's result."""
    from cdeg.config import shipped_config
    from cdeg.pipeline import run

    return run(shipped_config("demo.yaml"), out=out, jobs=jobs, progress=progress)


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: demo_output, from configs/demo.yaml).",
)
@click.option("--jobs", type=click.IntRange(min=0), default=None, help="Worker processes (0 = all cores).")
def demo_command(out: Path | None, jobs: int | None) -> None:
    """Run the study end to end on synthetic cohorts (same as `cdeg run --config configs/demo.yaml`)."""
    result = run_api(demo, out=out, jobs=jobs, progress=progress_enabled())
    report = getattr(result, "report", None)
    if report:
        click.echo(f"Report: {Path(report).resolve()}")
