"""`cdeg run`: parse options and call :func:`cdeg.pipeline.run`."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.choices import DEVICES
from cdeg.cli import progress_enabled, run_api


def format_stages(rows: list[dict]) -> str:
    """The per-stage summary printed at the end of a run (status, seconds, why it ran)."""
    width = max(len(r["stage"]) for r in rows)
    lines = [f"{'stage':{width}s}  {'status':10s} {'seconds':>8s}  reason"]
    for r in rows:
        secs = f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-"
        lines.append(f"{r['stage']:{width}s}  {r['status']:10s} {secs:>8s}  {r.get('reason', '')}")
    return "\n".join(lines)


@click.command("run")
@click.option(
    "--config",
    "config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Study configuration (YAML; see configs/study_template.yaml, configs/demo.yaml).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: `out` of the configuration).",
)
@click.option("--jobs", type=click.IntRange(min=0), default=None, help="Worker processes (0 = all cores).")
@click.option(
    "--device",
    type=click.Choice(list(DEVICES)),
    default=None,
    help="Where segmentation runs (default: segmentation.device of the configuration).",
)
@click.option(
    "--force",
    multiple=True,
    help="Run this stage (name or kind, e.g. fit:accelerated, extract, all) "
    "even when up to date; its downstream stages follow. Repeatable.",
)
@click.option(
    "--strict",
    is_flag=True,
    default=None,
    help="Stop at the first problem with an input instead of skipping that patient "
    "(default: `strict` of the configuration).",
)
@click.option("--dry-run", is_flag=True, help="Only list the stages that would run, and why.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
def run_command(
    config: Path,
    out: Path | None,
    jobs: int | None,
    device: str | None,
    force: tuple[str, ...],
    strict: bool | None,
    dry_run: bool,
    print_config: bool,
) -> None:
    """Run a whole study: each stage only when its inputs or options changed; print where the report is."""
    from cdeg.pipeline import load_run_config, run

    if print_config:
        from cdeg.config import dump_yaml

        click.echo(dump_yaml(run_api(load_run_config, path=config)), nl=False)
        return
    res = run_api(
        run,
        config=config,
        out=out,
        jobs=jobs,
        device=device,
        force=list(force),
        dry_run=dry_run,
        progress=progress_enabled(),
        strict=strict or None,
    )
    click.echo(format_stages(res.stages))
    click.echo(f"{len(res.ran)} stage(s) ran, {res.seconds:.0f} s in all.")
    if not dry_run:
        click.echo(f"Report: {res.report.resolve()}")
