"""`cdeg demo`: the main job end to end on an embedded synthetic cohort (what `make demo` runs)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from cdeg.cli import progress_enabled, run_api

log = logging.getLogger(__name__)

DEMO_SEED = 2026
DEMO_N_NECK = 109


def demo(out: str | Path = "demo_output", jobs: int = 0, progress: bool = True) -> Path:
    """Generate the demo cohort and summarise it; return the folder with the results.

    Parameters
    ----------
    out : path
        Results folder; an existing demo cohort there is reused (same seed gives the same cohort).
    jobs : int
        Worker processes (0 = all cores).
    progress : bool
        Show progress bars.
    """
    from cdeg.cohort import COHORT_JSON
    from cdeg.summary import format_summary, summarize
    from cdeg.synth import synthesize

    out = Path(out)
    neck = out / "cohort_neck"
    t0 = time.perf_counter()
    if not (neck / COHORT_JSON).exists():
        synthesize(neck, profile="neck", n=DEMO_N_NECK, seed=DEMO_SEED, jobs=jobs, progress=progress)
    else:
        log.info("reusing the demo cohort in %s", neck)
    s = summarize(neck, out=out / "summary_neck.json")
    click.echo(format_summary(s))
    log.info("demo finished in %.0f s", time.perf_counter() - t0)
    return out


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo_output"),
              show_default=True, help="Folder for the demo's cohort and results.")
@click.option("--jobs", type=click.IntRange(min=0), default=0, show_default=True, help="Worker processes (0 = all cores).")
def demo_command(out: Path, jobs: int) -> None:
    """Run the pipeline end to end on an embedded synthetic cohort and print where the results are."""
    path = run_api(demo, out=out, jobs=jobs, progress=progress_enabled())
    click.echo(f"\nResults are in {path.resolve()}")
