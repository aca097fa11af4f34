"""`cdeg segment`: the click group over prepare, train, predict and evaluate (parsing only)."""

from __future__ import annotations

from pathlib import Path

import click

from cdeg.choices import DEVICES, FOLDS, SEGMENT_PRESETS
from cdeg.cli import progress_enabled, run_api
from cdeg.cohort import MODALITIES

_modality = click.option(
    "--modality",
    required=True,
    type=click.Choice(list(MODALITIES)),
    help="Which images (one model per modality).",
)
_cohort = click.option(
    "--cohort",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cohort folder.",
)
_device = click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(list(DEVICES)),
    help="Where the network runs; auto takes CUDA when available.",
)
_strict = click.option(
    "--strict",
    is_flag=True,
    help="Stop at the first problem with an input file (before any work) instead of skipping that patient.",
)
_train_masks = click.option(
    "--masks",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mask folder to train on (e.g. masks corrected in an editor and read back with import-masks) "
    "instead of the cohort's reference masks/.",
)
_config = click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML overriding keys of configs/segment.yaml.",
)


@click.group("segment")
def segment() -> None:
    """nnU-Net v2 segmentation and level naming of vertebrae C2-T1 and discs (MRI and radiographs).

    Typical use: `train` on a cohort with reference masks, `predict` on the rest, `evaluate` against
    references. Level naming is checked and repaired after every prediction (see qc.csv).
    """


@segment.command("prepare")
@_cohort
@_modality
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="nnU-Net raw dataset folder to write.",
)
@_train_masks
@_strict
def prepare_command(cohort: Path, modality: str, out: Path, masks: Path | None, strict: bool) -> None:
    """Write an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json) from images with reference masks."""
    from cdeg.segmentation.dataset import prepare_dataset

    result = run_api(prepare_dataset, cohort=cohort, modality=modality, out=out, strict=strict, masks=masks)
    click.echo(
        f"{len(result['cases'])} case(s) written to {out}; {len(result['problems'])} problem(s), "
        f"{len(result['unlabelled'])} image(s) without reference mask"
    )


@segment.command("train")
@_cohort
@_modality
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model folder (an interrupted training there is resumed).",
)
@click.option(
    "--preset",
    default="fast",
    show_default=True,
    type=click.Choice(list(SEGMENT_PRESETS)),
    help="full: nnU-Net defaults (hours on a GPU); fast: ~10 minutes on this device; smoke: seconds.",
)
@_device
@click.option(
    "--fold",
    default="all",
    show_default=True,
    type=click.Choice(list(FOLDS)),
    help="all: train on every case; 0-4: nnU-Net's 5-fold split.",
)
@_config
@click.option("--keep-work", is_flag=True, help="Keep nnU-Net's raw and preprocessed data in MODEL_DIR/work.")
@_train_masks
@_strict
def train_command(
    cohort: Path,
    modality: str,
    out: Path,
    preset: str,
    device: str,
    fold: str,
    config: Path | None,
    keep_work: bool,
    masks: Path | None,
    strict: bool,
) -> None:
    """Plan, preprocess and train nnU-Net on the cohort's reference masks (or those of --masks)."""
    from cdeg.segmentation.train import train

    m = run_api(
        train,
        cohort=cohort,
        modality=modality,
        out=out,
        preset=preset,
        device=device,
        fold=fold,
        config=config,
        keep_work=keep_work,
        progress=progress_enabled(),
        strict=strict,
        masks=masks,
    )
    skipped = m.get("cohort", {}).get("skipped") or {}
    click.echo(
        f"{m['modality']} model ({m['preset']}, {m.get('configuration')}, {m.get('epochs_completed')} epochs) in {out}"
        + (f"; {len(skipped)} patient(s) skipped for bad input" if skipped else "")
    )


@segment.command("predict")
@_cohort
@_modality
@click.option(
    "--model",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="cdeg model folder, or a plain nnU-Net results folder (DatasetXXX_Name/Trainer__Plans__Configuration).",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Mask folder to write."
)
@_device
@click.option(
    "--devices",
    default=None,
    metavar="0,1,...|cpu:N",
    help="Split the patients over one worker process per device: CUDA indices (0,1,...) or cpu:N "
    "processes. Same masks and qc.csv as one process (with batched tiles, up to float rounding: a worker has "
    "fewer threads). Instead of --device.",
)
@click.option(
    "--label-map",
    default=None,
    metavar="NAME|FILE",
    help="Plain nnU-Net folder: what its output values are, a shipped map (`cdeg labels --map`) or a YAML "
    "file. Default: dataset.json's label names when all are cdeg level names (C2, C2-C3, ...).",
)
@click.option(
    "--folds",
    default=None,
    metavar="0,1,...|all",
    help="Folds to load; several are ensembled as nnU-Net does (mean logits). Default: the cdeg model's "
    "fold; every fold holding the checkpoint in a plain folder.",
)
@click.option(
    "--checkpoint",
    default="final",
    show_default=True,
    type=click.Choice(["final", "best"]),  # the keys of cdeg.segmentation.predict.CHECKPOINTS
    help="nnU-Net's checkpoint_final.pth or checkpoint_best.pth.",
)
@_config
@_strict
def predict_command(
    cohort: Path,
    modality: str,
    model: Path,
    out: Path,
    device: str,
    devices: str | None,
    label_map: str | None,
    folds: str | None,
    checkpoint: str,
    config: Path | None,
    strict: bool,
) -> None:
    """Segment and name the levels of every image of one modality; masks, QC PNGs and qc.csv in --out."""
    from cdeg.segmentation.predict import predict

    from cdeg.outputs import MaskFolder

    s = run_api(
        predict,
        cohort=cohort,
        modality=modality,
        model=model,
        out=out,
        device=device,
        devices=devices,
        config=config,
        strict=strict,
        label_map=label_map,
        folds=folds,
        checkpoint=checkpoint,
        progress=progress_enabled(),
    )
    c = s["counts"]
    click.echo(
        f"{c['ok']} ok, {c['flagged']} flagged, {c['empty']} empty, {c['failed']} failed, "
        f"{c['skipped']} skipped; see {MaskFolder(out).qc_csv}"
    )


@segment.command("evaluate")
@click.option(
    "--pred",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Predicted mask folder.",
)
@click.option(
    "--ref",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Cohort folder (its masks/) or a reference mask folder.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON file to write; the per-structure CSV goes next to it (same name, .csv).",
)
@click.option("--modality", default=None, help="mri, xray or mri,xray (default: all with references).")
@click.option(
    "--label-map",
    default=None,
    metavar="NAME|FILE",
    help="--pred is another tool's output (spineps, totalspineseg, ... or a label map file); --ref must be the "
    "cohort. Converted masks are kept in <OUT stem>_masks/.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Worker processes comparing patients at once (0 = all cores).",
)
def evaluate_command(
    pred: Path, ref: Path, out: Path, modality: str | None, label_map: str | None, jobs: int
) -> None:
    """Dice, HD95, ASSD (mm) and level identification of predicted masks against reference masks.

    Writes the JSON (OUT) and, next to it with the same stem, a per-structure CSV.
    """
    from cdeg.segmentation.evaluate import evaluate

    report = run_api(
        evaluate,
        pred=pred,
        ref=ref,
        out=out,
        modality=modality,
        label_map=label_map,
        progress=progress_enabled(),
        jobs=jobs,
    )
    for mod, s in report["summary"].items():
        click.echo(
            f"{mod}: {s['n_evaluated']} evaluated, level identification {s['level_identification']}, "
            f"structures identified (VerSe) {s['identification_rate_verse']}, "
            f"Dice vertebrae {s['dice_vertebrae_mean']}, discs {s['dice_discs_mean']}, "
            f"HD95 vertebrae {s['hd95_max_directed_vertebrae_mean_mm']} mm, "
            f"discs {s['hd95_max_directed_discs_mean_mm']} mm (detected structures only); "
            f"{s['n_missed']} reference structures missed, {s['n_false_positive']} spurious"
        )
    click.echo(f"per-structure table: {report['csv']}")


@segment.command("import-masks")
@click.option(
    "--from",
    "label_map",
    required=True,
    metavar="NAME|FILE",
    help="The tool's label map: spineps, totalspineseg, totalsegmentator_total_mr, ... (`cdeg labels --map`) "
    "or a YAML file in the same form; slicer or itksnap: files corrected in that editor after "
    "`cdeg segment export` (their segment or label names decide the labels).",
)
@click.option(
    "--masks",
    "--source",
    "masks",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The tool's output folder, in its own layout (for slicer/itksnap: the export folder).",
)
@_cohort
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Mask folder to write."
)
@click.option(
    "--modality",
    default="mri",
    show_default=True,
    type=click.Choice(list(MODALITIES)),
    help="Which images the masks belong to.",
)
@click.option(
    "--geometry-tolerance",
    "geometry_tolerance_mm",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Largest grid difference (mm) resampled with a warning; beyond it the patient is refused.",
)
@_strict
def import_masks_command(
    label_map: str,
    masks: Path,
    cohort: Path,
    out: Path,
    modality: str,
    geometry_tolerance_mm: float,
    strict: bool,
) -> None:
    """Masks from SPINEPS, TotalSpineSeg, TotalSegmentator or your own convention, in cdeg's labels."""
    from cdeg.segmentation.import_masks import import_masks

    from cdeg.outputs import MaskFolder

    m = run_api(
        import_masks,
        cohort=cohort,
        masks=masks,
        out=out,
        label_map=label_map,
        modality=modality,
        geometry_tolerance_mm=geometry_tolerance_mm,
        strict=strict,
        progress=progress_enabled(),
    )
    c = m["counts"]
    click.echo(
        f"{c['ok'] + c['flagged']} imported ({c['flagged']} flagged), {c['failed']} failed, "
        f"{c['skipped']} without a mask; see {MaskFolder(out).import_csv}"
    )


@segment.command("export")
@click.option(
    "--masks",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mask folder (segment predict, import-masks, or a cohort's masks/).",
)
@_cohort
@click.option(
    "--format",
    "editor",
    required=True,
    type=click.Choice(["slicer", "itksnap"]),  # cdeg.segmentation.editors.EDITORS
    help="slicer: <id>_<modality>.seg.nrrd + .nrrd image; itksnap: image, <id>_<modality>_seg.nii.gz, label file.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write."
)
@click.option(
    "--modality",
    default="mri",
    show_default=True,
    type=click.Choice(list(MODALITIES)),
    help="Which masks.",
)
def export_command(masks: Path, cohort: Path, editor: str, out: Path, modality: str) -> None:
    """Masks as files Slicer or ITK-SNAP opens with level names and colours, worst QC first (export.csv).

    Correct them in the editor, then read them back with `cdeg segment import-masks --from slicer|itksnap`.
    """
    from cdeg.segmentation.editors import export_masks

    r = run_api(
        export_masks,
        masks=masks,
        cohort=cohort,
        out=out,
        editor=editor,
        modality=modality,
        progress=progress_enabled(),
    )
    click.echo(
        f"{len(r['order'])} {modality} mask(s) for {editor} in {out}, worst QC first: {r['csv']}"
        + (f"; {len(r['skipped'])} skipped" if r["skipped"] else "")
    )


@segment.command("masks-from-corners")
@_cohort
@click.option(
    "--corners",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Corner file or folder: 3D Slicer .mrk.json, CSV (patient_id, level, corner, x_mm, y_mm), labelme "
    ".json or CVAT .xml, points named C5_AS, C5_PS, C5_PI, C5_AI.",
)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Mask folder to write."
)
@click.option(
    "--posterior-mm",
    type=click.FloatRange(0, 200),
    default=70.0,
    show_default=True,
    help="Depth of the unannotated band behind the bodies (posterior elements).",
)
@click.option(
    "--dens-mm",
    type=click.FloatRange(0, 200),
    default=25.0,
    show_default=True,
    help="Height above C2 left unannotated (dens, atlas).",
)
@click.option(
    "--endplate-band-mm",
    type=click.FloatRange(0, 10),
    default=0.5,
    show_default=True,
    help="Half-width of the unannotated band around each drawn endplate; 0: none.",
)
@click.option(
    "--straight-endplates",
    is_flag=True,
    help="Draw endplates as the straight chords between the corners instead of the published mean concavity.",
)
@_strict
def masks_from_corners_command(
    cohort: Path,
    corners: Path,
    out: Path,
    posterior_mm: float,
    dens_mm: float,
    endplate_band_mm: float,
    straight_endplates: bool,
    strict: bool,
) -> None:
    """Radiograph training masks from vertebral body corner points: bodies and discs between concave endplates
    drawn through the corners, posterior elements marked 'not annotated' (nnU-Net's ignore label)."""
    from cdeg.segmentation.corners import masks_from_corners

    res = run_api(
        masks_from_corners,
        corners=corners,
        cohort=cohort,
        out=out,
        posterior_mm=posterior_mm,
        dens_mm=dens_mm,
        endplate_band_mm=endplate_band_mm,
        straight_endplates=straight_endplates,
        strict=strict,
        progress=progress_enabled(),
    )
    click.echo(
        f"{res['counts']['written']} masks written, {res['counts']['left_out']} patients left out -> {out}"
    )


@segment.command("suggest")
@click.option(
    "--masks",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Mask folder of predict or import-masks (or any folder of <patient_id>/<modality>.nii.gz masks).",
)
@click.option(
    "--modality", default=None, type=click.Choice(list(MODALITIES)), help="Rank one modality (default: all)."
)
@click.option(
    "--n", "n", default=20, show_default=True, type=click.IntRange(min=1), help="How many masks to list."
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="CSV to write (default: suggest.csv in the mask folder).",
)
@_config
def suggest_command(masks: Path, modality: str | None, n: int, out: Path | None, config: Path | None) -> None:
    """Rank the masks most likely wrong (QC findings, network doubt, anatomy), worst first, with the reasons."""
    from cdeg.segmentation.suggest import suggest

    table = run_api(suggest, masks=masks, n=n, modality=modality, out=out, config=config)
    for row in table.itertuples():
        click.echo(f"{row.rank:>3}  {row.patient_id}  {row.modality}  {row.score:7.2f}  {row.reasons or '-'}")


@segment.command("presets")
@_config
def presets_command(config: Path | None) -> None:
    """Print the resolved configuration (presets per device and modality, predict, postprocess) as YAML."""
    from cdeg.segmentation.presets import load_segment_config

    from cdeg.config import dump_yaml

    click.echo(dump_yaml(run_api(load_segment_config, config=config)), nl=False)
