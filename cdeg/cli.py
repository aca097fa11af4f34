"""The `cdeg` command line: a thin shell over the stage functions.

Subcommands live next to the stage they belong to (``cdeg/synth/cli.py``, ``segmentation/cli.py``,
...) and are listed in :data:`COMMANDS`. They are imported only when called, so ``cdeg --help`` is
instant and ``cdeg segment`` never imports PyRadiomics.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from cdeg import __version__
from cdeg.errors import CdegError

#: Subcommand name -> "module:attribute" of its click command. The one list of commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("cdeg.synth.cli:synth", "Generate a synthetic cohort with known ground truth."),
    "summary": ("cdeg.cohort_cli:summary_command", "Summarise a cohort (patients, images, degeneration)."),
    "labels": ("cdeg.cli:labels_command", "Print the label convention (label, level name, kind)."),
    "extract": (
        "cdeg.features.cli:extract_command",
        "Per-level features: PyRadiomics plus clinical measurements.",
    ),
    "extract-agreement": (
        "cdeg.features.cli:agreement_command",
        "Agreement (ICC, Bland-Altman) of the features of two mask sets of the same patients.",
    ),
    "label": (
        "cdeg.modeling.label_cli:label_command",
        "Derive an operational target label: a standardised degeneration score above a reference centile.",
    ),
    "fit": (
        "cdeg.modeling.cli:fit_command",
        "Nested-CV XGBoost vs logistic regression, final model, SHAP, report.",
    ),
    "predict": (
        "cdeg.modeling.cli:predict_command",
        "Probabilities and SHAP waterfalls per patient from a fitted model.",
    ),
    "validate": (
        "cdeg.modeling.cli:validate_command",
        "External validation of a fitted model on another cohort.",
    ),
    "run": (
        "cdeg.pipeline.cli:run_command",
        "Run a whole study from a YAML configuration; print the report's path.",
    ),
    "report": (
        "cdeg.report.cli:report_command",
        "Rebuild the HTML report of a `cdeg run` folder from its files.",
    ),
    "demo": ("cdeg.demo:demo_command", "Run the end-to-end demo on an embedded synthetic cohort."),
    "import-dicom": (
        "cdeg.dicom.cli:import_dicom_command",
        "Import a DICOM export as a de-identified cohort (sagittal T2 MRI, lateral radiograph).",
    ),
    "cohort": (
        "cdeg.cohort_cli:cohort_group",
        "Create a cohort from your own scans: a folder of NIfTI files or a BIDS dataset.",
    ),
    "check": (
        "cdeg.cohort_cli:check_command",
        "Validate a cohort (files, geometry, labels, clinical table) before running anything.",
    ),
    "segment": (
        "cdeg.segmentation.cli:segment",
        "nnU-Net segmentation and level naming (prepare, train, predict, evaluate).",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table, so `cdeg --help` imports no stage.
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def configure_logging(verbosity: int) -> None:
    """Configure the root logger once, for the command line only (library code only logs)."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(
        verbosity, logging.DEBUG if verbosity > 0 else logging.ERROR
    )
    # The root logger stays at WARNING: third-party libraries (nnU-Net logs through the root logger itself) are
    # chatty at INFO. cdeg's own loggers get the chosen level; -vv shows everything.
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 1 else max(level, logging.WARNING),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("cdeg").setLevel(level)
    # Some libraries set their own logger levels on import; keep them quiet too unless -vv.
    for noisy in ("radiomics", "matplotlib", "PIL", "numba", "numexpr", "optuna", "shap", "h5py"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, prog_name="cdeg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv also shows third-party debug logs).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--no-progress", is_flag=True, envvar="CDEG_NO_PROGRESS", help="Hide progress bars (cluster jobs, logs)."
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, no_progress: bool) -> None:
    """cdeg: predict accelerated cervical spine degeneration from a lateral radiograph, a sagittal T2 MRI
    and clinical scores.

    The pipeline: synth (synthetic cohorts) -> segment (nnU-Net) -> extract (features) -> fit (classifier).
    Every stage reads and writes files in documented formats, so each can run alone.
    """
    configure_logging(-2 if quiet else verbose)
    ctx.obj = {"progress": not no_progress}


@click.command("labels")
@click.option(
    "--map",
    "label_map",
    default=None,
    metavar="NAME|FILE",
    help="Print a foreign label map instead (how its values become cdeg labels).",
)
@click.option("--list-maps", is_flag=True, help="List the shipped label maps.")
def labels_command(label_map: str | None, list_maps: bool) -> None:
    """Print the label convention used in every mask (VerSe/SPINEPS), or a foreign label map."""
    from cdeg import label_maps, labels

    if list_maps:
        for name in label_maps.available():
            click.echo(f"{name}\t{label_maps.load_label_map(name).description}")
        return
    if label_map is not None:
        lmap = run_api(label_maps.load_label_map, name_or_path=label_map)
        click.echo(f"# label map: {lmap.name} - {lmap.description}")
        click.echo(f"# source: {lmap.source}")
        click.echo("value\tclass\tbecomes\taction")
        for row in lmap.rows():
            click.echo(f"{row['value']}\t{row['class']}\t{row['becomes']}\t{row['action']}")
        return
    click.echo(f"# label convention: {labels.CONVENTION_NAME}")
    click.echo("label\tname\tkind")
    for row in labels.lookup_table():
        click.echo(f"{row['label']}\t{row['name']}\t{row['kind']}")


def progress_enabled() -> bool:
    """Whether the current command may show progress bars (false under --no-progress)."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    return bool(root.obj.get("progress", True)) if root and isinstance(root.obj, dict) else True


def run_api(func: Any, /, **kwargs: Any) -> Any:
    """Call a stage function from a click command, turning user errors into one-line messages.

    ValueError for bad option combinations becomes a usage error (exit 2); CdegError for bad input
    data becomes ``Error: patient X / file: reason`` (exit 1). Anything else is a bug and keeps its
    traceback.
    """
    try:
        return func(**kwargs)
    except CdegError as e:
        raise click.ClickException(e.one_line()) from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    except KeyboardInterrupt:
        click.echo("Interrupted; finished outputs are kept and a re-run resumes.", err=True)
        sys.exit(130)


def main() -> None:
    """Console entry point."""
    cli(prog_name="cdeg")


if __name__ == "__main__":  # pragma: no cover
    main()
