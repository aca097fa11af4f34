"""`cdeg segment predict`: segment and name the levels of every image of one modality in a cohort.

Output (``MASK_DIR``, the layout of :func:`cdeg.cohort.mask_path`)::

    <patient_id>/<modality>.nii.gz      mask in the label convention, same grid as the input image
    <patient_id>/<modality>_qc.png      overlay of the mid-sagittal slice with level names
    qc.csv                              patient_id, modality, check, detail, repaired (rows of this
                                        modality are replaced, other modalities' rows kept)
    uncertainty.csv                     per patient and structure of the written mask: voxels, mean
                                        confidence (softmax maximum), share of voxels below
                                        ``predict.low_confidence``, and with ``predict.disagreement`` the
                                        Dice between the unmirrored and mirrored passes (flip_dice) and the
                                        mean Dice of each fold with the ensemble (fold_dice); same
                                        replacement rule as qc.csv
    segment_predict_<modality>.json     manifest: model, device, options, per-patient status and timings

With ``devices`` (``--devices 0,1`` or ``cpu:4``) the patients are dealt round-robin into one shard per
device, each shard is segmented by its own worker process (``CUDA_VISIBLE_DEVICES`` set to its GPU, or a
share of the CPU cores), and the per-patient results are merged in cohort order: masks and qc.csv are
the same files a single process writes.

The whole cohort is checked before the model is loaded, with the checks of ``cdeg check``
(:func:`cdeg.check.check_stage_cohort` on the images of the modality: unreadable or truncated files, 2D/3D
confusion, image folders without a clinical row); a patient with a problem is skipped with a qc.csv row,
a manifest entry (status ``skipped``) and one log line naming the file, and the others are still
segmented. cohort.json, clinical.csv and id problems stop the stage; with ``strict`` so does the first
problem, before anything is written. Masks are not read, so their problems are not this stage's.
Each image is brought to the canonical orientation for the network and the mask is mapped back onto the
input's own grid. Nothing outside MASK_DIR is written; MASK_DIR may not lie inside the cohort.

The model (:func:`resolve_model`) is a cdeg model folder (``cdeg_model.json``, written by
:func:`cdeg.segmentation.train.train`) or a plain nnU-Net results folder
(``DatasetXXX_Name/Trainer__Plans__Configuration`` with plans.json, dataset.json and
``fold_N/checkpoint_*.pth``), e.g. one trained with ``nnUNetv2_train``. Its output values are named by a
label map (:mod:`cdeg.label_maps`): the mapping stored in cdeg_model.json, ``label_map`` for a plain
folder, or, without one, the plain folder's dataset.json label names when they are all cdeg level names.
They are converted with :func:`cdeg.label_maps.convert` and then checked by
:func:`cdeg.segmentation.postprocess.check_levels`; a value the map does not list fails that patient.

Several folds are an ensemble exactly as nnU-Net's own predictor makes one: the folds' parameter sets are
loaded by ``nnUNetPredictor.initialize_from_trained_model_folder(use_folds=...)`` and
``predict_logits_from_preprocessed_data`` sums the sliding-window *logits* of each parameter set and
divides by their number (nnunetv2 2.8.1, nnunetv2/inference/predict_from_raw_data.py); the segmentation is
the argmax of the mean logits and the level repair's confidence the softmax maximum of the mean logits.
Probabilities are averaged only by ``nnUNetv2_ensemble`` (saved .npz files of separate runs), which cdeg
does not use.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation import geometry
from cdeg.segmentation.dataset import Problem, check_output_folder
from cdeg.segmentation.editors import write_label_files
from cdeg.segmentation.nnunet_env import (
    nnunet_environment,
    quiet_stdout,
    resolve_device,
    torch_threads,
)
from cdeg.segmentation.postprocess import Finding, check_levels
from cdeg.segmentation.presets import SegmentConfig, load_segment_config
from cdeg.segmentation.qc import write_qc_overlay
from cdeg.segmentation.train import MANIFEST, PLANS_IDENTIFIER, RESULTS_DIR, read_manifest

from cdeg import label_maps, labels
from cdeg.cohort import ID_COLUMN, MODALITIES, Cohort, check_modality, mask_path
from cdeg.errors import CdegError, CohortError
from cdeg.io import (
    read_image,
    read_json,
    read_table,
    remove_stale_temporaries,
    write_image,
    write_table,
)
from cdeg.label_maps import LabelEntry, LabelMap, LabelMapError
from cdeg.outputs import MaskFolder, versions, write_manifest
from cdeg.progress import Progress, ProgressArg, as_progress

log = logging.getLogger(__name__)

QC_CSV = MaskFolder.QC_CSV
QC_COLUMNS = list(MaskFolder.QC_COLUMNS)
UNCERTAINTY_COLUMNS = list(MaskFolder.UNCERTAINTY_COLUMNS)
#: Obliquity (degrees) above which a reoriented image is flagged for review.
OBLIQUE_WARN_DEG = 10.0


#: ``--checkpoint`` -> the checkpoint file nnU-Net's trainer writes in each fold folder: final at the end of
#: training, best at each new best EMA pseudo-Dice (nnunetv2 2.8.1, training/nnUNetTrainer/nnUNetTrainer.py
#: on_train_end, on_epoch_end). segmentation/cli.py lists the same keys.
CHECKPOINTS: dict[str, str] = {"final": "checkpoint_final.pth", "best": "checkpoint_best.pth"}
#: The files that make a folder an nnU-Net results folder (what nnUNetPredictor reads besides the folds).
RESULTS_FILES = ("plans.json", "dataset.json")
#: The user's trainer folders (os.pathsep-separated, nnunetv2 2.8.1 nnunetv2/utilities/find_objects.py).
EXT_TRAINER_ENV = "nnUNet_extTrainer"


@dataclass(frozen=True)
class ModelSpec:
    """A model resolved for prediction: nnU-Net results folder, folds and checkpoint, and what its values mean.

    Parameters
    ----------
    kind : {"cdeg", "nnunet"}
        A cdeg model folder (cdeg_model.json) or a plain nnU-Net results folder.
    folder : Path
        The folder given as `model`.
    results : Path
        The nnU-Net results folder (``Trainer__Plans__Configuration``: plans.json, dataset.json, fold_N/).
    trainer, plans, configuration : str
        nnU-Net trainer class, plans identifier and configuration.
    folds : tuple of str
        The folds loaded; several are ensembled (see the module docstring).
    checkpoint : str
        Checkpoint file name in each fold folder.
    label_map : LabelMap
        What the model's output values are (converted by :func:`cdeg.label_maps.convert`).
    label_map_source : str
        Where `label_map` comes from (log and manifest).
    label_map_path : str
        The file that defines `label_map` (named by a patient's error when the map misses a value).
    ext_trainer : tuple of str
        The user's ``nnUNet_extTrainer`` folders, searched after cdeg's own trainer shim.
    manifest : dict
        The cdeg model manifest (empty for a plain folder).
    """

    kind: str
    folder: Path
    results: Path
    trainer: str
    plans: str
    configuration: str
    folds: tuple[str, ...]
    checkpoint: str
    label_map: LabelMap
    label_map_source: str
    label_map_path: str
    ext_trainer: tuple[str, ...] = ()
    manifest: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The model as the prediction manifest records it."""
        return {
            "kind": self.kind,
            "results_folder": str(self.results.resolve()),
            "trainer": self.trainer,
            "plans": self.plans,
            "configuration": self.configuration,
            "folds": list(self.folds),
            "checkpoint": self.checkpoint,
            "label_map": {"name": self.label_map.name, "source": self.label_map_source},
        }


def parse_folds(folds: str | tuple[str | int, ...] | list[str | int]) -> tuple[str, ...]:
    """Folds from ``--folds``: ``"0,1"`` -> ``("0", "1")``; ``"all"`` is nnU-Net's fold trained on every case.

    Raises
    ------
    ValueError
        Not fold numbers or "all", or a fold listed twice.
    """
    items = str(folds).split(",") if isinstance(folds, str) else [str(f) for f in folds]
    out = tuple(f.strip().lower() for f in items)
    if not out or not all(f == "all" or f.isdigit() for f in out):
        raise ValueError(f"--folds {folds!r}: expected fold numbers separated by commas (0,1,2) or all")
    out = tuple(f if f == "all" else str(int(f)) for f in out)
    if len(set(out)) != len(out):
        raise ValueError(f"--folds {folds!r}: a fold is listed twice")
    return out


def resolve_model(
    model: str | Path,
    modality: str,
    label_map: str | Path | None = None,
    folds: str | tuple[str, ...] | None = None,
    checkpoint: str = "final",
) -> ModelSpec:
    """Check that `model` can segment `modality` images and say which folds, checkpoint and label map it uses.

    Raises
    ------
    ValueError
        Bad `folds`/`checkpoint`, a model of the other modality or dimension, or `label_map` for a cdeg model.
    CdegError
        Neither kind of model folder, training not completed, a missing fold or checkpoint, dataset.json
        label names that are not cdeg level names (without `label_map`), a trainer class nnU-Net cannot find.
    """
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    wanted = parse_folds(folds) if folds is not None else None
    model = Path(model)
    if (model / MANIFEST).is_file():
        if label_map is not None:
            raise ValueError(
                f"{model} is a cdeg model folder, which names its output values itself ({MANIFEST}); "
                "--label-map is for plain nnU-Net results folders"
            )
        return _cdeg_model(model, modality, wanted, checkpoint)
    if all((model / f).is_file() for f in RESULTS_FILES):
        spec = _plain_model(model, modality, label_map, wanted, checkpoint)
        _check_trainer(spec)
        return spec
    raise CdegError(_not_a_model(model), path=model)


def _not_a_model(model: Path) -> str:
    below = sorted({p.parent for pattern in ("*/plans.json", "*/*/plans.json") for p in model.glob(pattern)})
    hint = f"; nnU-Net results folders below it: {', '.join(map(str, below[:5]))}" if below else ""
    return (
        f"not a cdeg segmentation model folder (no {MANIFEST}) nor an nnU-Net results folder "
        f"(Trainer__Plans__Configuration with {' and '.join(RESULTS_FILES)}){hint}"
    )


def _cdeg_model(model: Path, modality: str, wanted: tuple[str, ...] | None, checkpoint: str) -> ModelSpec:
    manifest = read_manifest(model)
    if manifest.get("modality") != modality:
        raise ValueError(
            f"model {model} was trained on {manifest.get('modality')} images and cannot segment {modality} images; "
            f"train a {modality} model (cdeg segment train --modality {modality})"
        )
    if manifest.get("status") != "complete":
        raise CdegError(
            "training has not completed; run `cdeg segment train` on it again to resume", path=model
        )
    results = model / manifest["results_folder"]
    return ModelSpec(
        kind="cdeg",
        folder=model,
        results=results,
        trainer=manifest["trainer"],
        plans=manifest.get("plans_identifier", PLANS_IDENTIFIER),
        configuration=manifest["configuration"],
        folds=_check_folds(results, wanted or (str(manifest["fold"]),), checkpoint),
        checkpoint=CHECKPOINTS[checkpoint],
        label_map=label_map_from_training(manifest["labels"]["convention_to_training"]),
        label_map_source=f"{MANIFEST} labels.convention_to_training",
        label_map_path=str(model / MANIFEST),
        ext_trainer=_user_ext_trainers(),
        manifest=manifest,
    )


def _plain_model(
    results: Path,
    modality: str,
    label_map: str | Path | None,
    wanted: tuple[str, ...] | None,
    checkpoint: str,
) -> ModelSpec:
    parts = results.name.split("__")
    if len(parts) != 3 or not all(parts):
        raise CdegError(
            "an nnU-Net results folder is named Trainer__Plans__Configuration (as nnU-Net writes it); "
            "give that folder, not a renamed copy or its dataset folder",
            path=results,
        )
    trainer, plans_id, configuration = parts
    dataset = _read_json_object(results / "dataset.json")
    _check_plain_dimensions(
        results, dataset, _read_json_object(results / "plans.json"), configuration, modality
    )
    lmap, source, lmap_path = _plain_label_map(results, dataset, label_map)
    return ModelSpec(
        kind="nnunet",
        folder=results,
        results=results,
        trainer=trainer,
        plans=plans_id,
        configuration=configuration,
        folds=_check_folds(results, wanted or _default_folds(results, checkpoint), checkpoint),
        checkpoint=CHECKPOINTS[checkpoint],
        label_map=lmap,
        label_map_source=source,
        label_map_path=lmap_path,
        ext_trainer=_user_ext_trainers(),
    )


def _read_json_object(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise CdegError("expected a JSON object", path=path)
    return data


def _check_plain_dimensions(
    results: Path, dataset: dict[str, Any], plans: dict[str, Any], configuration: str, modality: str
) -> None:
    """One input channel, and a configuration whose dimension fits the images.

    A 2D configuration on 3D MRI is accepted: nnU-Net's predictor then segments the volume slice by slice
    along its first axis after the plans' ``transpose_forward``. A 3D configuration on 2D radiographs is
    refused (nnU-Net would pad the single slice to a 3D patch).
    """
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or len(channels) != 1:
        names = ", ".join(map(str, channels.values())) if isinstance(channels, dict) else "none listed"
        raise CdegError(
            f"the model takes {len(channels) if isinstance(channels, dict) else 0} input channels ({names}); "
            "cdeg gives it one image per patient and modality",
            path=results / "dataset.json",
        )
    if configuration not in plans.get("configurations", {}):
        raise CdegError(
            f"no configuration {configuration!r} (the folder's name) in plans.json; it has "
            f"{', '.join(plans.get('configurations', {})) or 'none'}",
            path=results / "plans.json",
        )
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dims = len(PlansManager(plans).get_configuration(configuration).patch_size)
    if dims == 3 and MODALITIES[modality] == 2:
        raise ValueError(
            f"model {results} uses the 3D configuration {configuration}; {modality} images are 2D: use a 2D model"
        )
    if dims == 2 and MODALITIES[modality] == 3:
        log.info(
            "%s is a 2D configuration: each slice of the 3D %s images is segmented on its own",
            configuration,
            modality,
        )


def _plain_label_map(
    results: Path, dataset: dict[str, Any], label_map: str | Path | None
) -> tuple[LabelMap, str, str]:
    """The label map of a plain folder, where it comes from, and its file."""
    dataset_path = results / "dataset.json"
    outputs = model_output_values(dataset, dataset_path)
    if label_map is None:
        lmap = label_map_from_names(dataset["labels"], dataset_path)
        log.info(
            "output values named by the label names of %s: %s",
            dataset_path,
            ", ".join(f"{e.value} = {e.name}" for e in lmap.labels),
        )
        return lmap, "dataset.json label names", str(dataset_path)
    lmap = label_maps.load_label_map(label_map)
    missing = [v for v in outputs if lmap.entry(v) is None]
    if missing:
        log.warning(
            "label map %s does not list value(s) %s that the model can write (%s); a patient whose mask holds "
            "one fails",
            lmap.name,
            ", ".join(map(str, missing)),
            dataset_path,
        )
    if str(label_map) in label_maps.available():  # a shipped map: its file in the package
        path = str(resources.files(label_maps.MAPS_PACKAGE).joinpath(f"{label_map}.yaml"))
    else:
        path = str(Path(label_map).resolve())
    return lmap, f"--label-map {label_map}", path


def model_output_values(dataset: dict[str, Any], path: Path) -> list[int]:
    """The non-zero values an nnU-Net model writes, from its dataset.json (``regions_class_order`` for a
    region-based model; the ``ignore`` label is never predicted)."""
    names = dataset.get("labels")
    if not isinstance(names, dict) or not names:
        raise CdegError("dataset.json has no labels", path=path)
    if dataset.get("regions_class_order"):
        return sorted({int(v) for v in dataset["regions_class_order"] if int(v) != 0})
    return sorted({int(v) for k, v in names.items() if k != "ignore" and isinstance(v, int) and v != 0})


def label_map_from_names(names: dict[str, Any], path: str | Path) -> LabelMap:
    """A label map from dataset.json ``labels`` (name -> value) whose names are all cdeg level names.

    Raises
    ------
    CdegError
        A name that is not a cdeg level name (listing them all), or a region-based model.
    """
    entries, unknown = [], []
    for name, value in names.items():
        if name == "ignore" or value == 0:
            continue
        if not isinstance(value, int):
            raise CdegError(
                "a region-based model (labels given as lists); name its output values with --label-map",
                path=path,
            )
        if name in labels.VERTEBRA_NAMES:
            entries.append(LabelEntry(value=value, name=name, vertebra=name))
        elif name in labels.DISC_NAMES:
            entries.append(LabelEntry(value=value, name=name, disc=name))
        else:
            unknown.append(name)
    if unknown:
        raise CdegError(
            f"label name(s) {', '.join(unknown)} are not cdeg level names ({labels.VERTEBRA_NAMES[0]}, "
            f"{labels.DISC_NAMES[0]}, ..., {labels.VERTEBRA_NAMES[-1]}); say what the model's values are with "
            "--label-map NAME|FILE (`cdeg labels --map` lists the shipped maps)",
            path=path,
        )
    return LabelMap(
        name="dataset.json",
        description="the model's dataset.json label names",
        source=str(path),
        labels=tuple(entries),
    )


def label_map_from_training(mapping: dict[str, int] | dict[int, int]) -> LabelMap:
    """The label map of a cdeg model: its manifest's convention -> training label mapping, reversed."""
    entries = []
    for conv, train in sorted(mapping.items(), key=lambda kv: int(kv[1])):
        name = labels.name_of(int(conv))
        kind = {"disc": name} if labels.is_disc(int(conv)) else {"vertebra": name}
        entries.append(LabelEntry(value=int(train), name=name, **kind))
    return LabelMap(
        name="cdeg_model",
        description="cdeg model training labels",
        source=MANIFEST,
        labels=tuple(entries),
    )


def _folds_present(results: Path) -> list[str]:
    found = [p.name.removeprefix("fold_") for p in results.glob("fold_*") if p.is_dir()]
    return sorted(found, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def _default_folds(results: Path, checkpoint: str) -> tuple[str, ...]:
    """nnU-Net's choice without ``-f`` (``auto_detect_available_folds``, nnunetv2 2.8.1): every numbered fold
    holding the checkpoint; cdeg adds fold_all when there is no numbered fold."""
    present = _folds_present(results)
    with_checkpoint = [f for f in present if (results / f"fold_{f}" / CHECKPOINTS[checkpoint]).is_file()]
    numbered = tuple(f for f in with_checkpoint if f != "all")
    if numbered:
        return numbered
    if with_checkpoint:
        return ("all",)
    if present:
        _check_folds(results, (present[0],), checkpoint)  # raises, naming the checkpoint file
    raise CdegError("no fold_N folder in the nnU-Net results folder", path=results)


def _check_folds(results: Path, folds: tuple[str, ...], checkpoint: str) -> tuple[str, ...]:
    """`folds`, after checking each holds the checkpoint; else CdegError naming the folder or file."""
    name = CHECKPOINTS[checkpoint]
    for fold in folds:
        folder = results / f"fold_{fold}"
        if not folder.is_dir():
            present = ", ".join(_folds_present(results)) or "none"
            raise CdegError(f"fold {fold} is not in the model (folds present: {present})", path=folder)
        if not (folder / name).is_file():
            has = ", ".join(sorted(p.name for p in folder.glob("checkpoint_*.pth"))) or "no checkpoint"
            raise CdegError(
                f"checkpoint missing (--checkpoint {checkpoint}); this fold has {has}", path=folder / name
            )
    return folds


def _user_ext_trainers() -> tuple[str, ...]:
    return tuple(p for p in os.environ.get(EXT_TRAINER_ENV, "").split(os.pathsep) if p.strip())


@contextlib.contextmanager
def _trainer_search_path(spec: ModelSpec) -> Any:
    """The ``nnUNet_extTrainer`` value for the block: cdeg's trainer shim, then the user's folders."""
    from cdeg.segmentation.trainers import write_trainer_shim

    with tempfile.TemporaryDirectory(prefix="cdeg_nnunet_ext_") as ext:
        write_trainer_shim(ext)
        yield os.pathsep.join([ext, *spec.ext_trainer])


def _check_trainer(spec: ModelSpec) -> None:
    """Stop before anything is loaded when nnU-Net cannot find the trainer class a plain folder names."""
    from cdeg.segmentation.presets import TRAINER_NAMES

    if spec.trainer in TRAINER_NAMES:
        return
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with _trainer_search_path(spec) as ext, nnunet_environment(ext_trainer=ext), quiet_stdout():
        try:
            recursive_find_trainer_class_by_name(spec.trainer)
        except Exception as e:  # not found: RuntimeError; a broken module of the user's: anything
            raise CdegError(
                f"nnU-Net cannot find the trainer class {spec.trainer} this model was trained with "
                f"({type(e).__name__}); add the folder of the module defining it to {EXT_TRAINER_ENV}",
                path=spec.results,
            ) from None


def predict(
    cohort: str | Path,
    modality: str,
    model: str | Path,
    out: str | Path,
    device: str = "auto",
    config: str | Path | Mapping[str, Any] | SegmentConfig | None = None,
    devices: str | None = None,
    strict: bool = False,
    label_map: str | Path | None = None,
    folds: str | tuple[str, ...] | None = None,
    checkpoint: str = "final",
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Segment every `modality` image of `cohort` with a trained model and name its levels.

    Parameters
    ----------
    cohort : Path
        Cohort folder (images are read, never written).
    modality : {"mri", "xray"}
        Which images to segment; must match the model.
    model : Path
        Model folder written by :func:`cdeg.segmentation.train.train`, or a plain nnU-Net results folder
        (``DatasetXXX_Name/Trainer__Plans__Configuration``; see the module docstring).
    out : Path
        Mask folder (created); see the module docstring for its contents.
    device : {"auto", "cpu", "cuda"}
        Where to run the network.
    config : Path, mapping or SegmentConfig, optional
        YAML overriding keys of configs/segment.yaml (predict and postprocess sections), those keys as a
        mapping, or a resolved :class:`~cdeg.segmentation.presets.SegmentConfig`.
    devices : str, optional
        Split the patients over several worker processes, one per device: CUDA indices ``"0,1"`` (or
        ``"cuda:0,cuda:1"``), or ``"cpu:N"`` for N CPU processes sharing the cores. Instead of `device`.
    strict : bool
        Stop (CdegError) at the first problem with an input image instead of skipping the patient.
    label_map : str or Path, optional
        Plain nnU-Net folder only: what its output values are, a shipped label map name
        (``cdeg_nnunet``, ...) or a YAML file (:func:`cdeg.label_maps.load_label_map`). Default: the
        dataset.json label names, when every one is a cdeg level name (C2, C2-C3, ...).
    folds : str or tuple of str, optional
        Folds to load (``"0,1"``, ``"all"``), any subset of those present; several are ensembled as nnU-Net
        does (mean logits). Default: the cdeg model's fold; for a plain folder every numbered fold that
        holds the checkpoint (nnU-Net's default), else fold_all.
    checkpoint : {"final", "best"}
        nnU-Net's ``checkpoint_final.pth`` or ``checkpoint_best.pth``.
    progress : bool, callable or None
        Progress over the patients (:mod:`cdeg.progress`), task ``"segment <modality>"``: None or False
        shows nothing, True draws a bar, a callable is called after each patient (with `devices`, after
        each worker's share).

    Returns
    -------
    dict
        The manifest written to ``out/segment_predict_<modality>.json``.
    """
    check_modality(modality)
    if devices is not None and device != "auto":
        raise ValueError("give --device (one process) or --devices (one process per device), not both")
    workers = parse_devices(devices) if devices is not None else None
    cfg = load_segment_config(config)
    spec = resolve_model(model, modality, label_map=label_map, folds=folds, checkpoint=checkpoint)
    coh = Cohort.open(cohort)
    out = Path(out)
    check_output_folder(out, coh)
    if out.resolve() == Path(model).resolve():
        raise ValueError("the mask folder must differ from the model folder")
    # Left by a killed run: only this modality's files (the other modality may be predicted into `out` now).
    remove_stale_temporaries(out, f"*/.{modality}[._]*.tmp*")
    device_kind = resolve_device(device) if workers is None else workers[0].split(":")[0]

    from cdeg.check import check_stage_cohort

    check = check_stage_cohort(
        f"segment predict {modality}", coh, modalities=(modality,), use_masks=False, strict=strict
    )
    problems: list[Problem] = [Problem(f.patient, modality, f.check, check.line(f)) for f in check.errors]
    todo: list[str] = []
    for pid in coh.patient_ids():
        if check.problems(pid, modality):
            continue
        path = coh.image_path(pid, modality)
        if path.is_file():
            todo.append(pid)
        else:  # a missing modality is normal: a qc row, no error
            problems.append(Problem(pid, modality, "missing_image", f"no {modality} image ({path})"))
    qc_rows = [p.row() for p in problems]
    status: dict[str, dict[str, Any]] = {}
    for p in problems:  # one entry per patient, every reason in it
        entry = status.setdefault(p.patient, {"status": "skipped", "reason": p.detail})
        if p.detail not in entry["reason"]:
            entry["reason"] += "; " + p.detail
    if not todo:
        _write_qc(out, modality, qc_rows)
        raise CohortError(
            f"no patient has a usable {modality} image ({len(problems)} with problems, see qc.csv)",
            path=coh.root,
        )

    job = _Job(coh, modality, str(out), spec, cfg)
    report = as_progress(progress)
    if workers is None or workers == ["cpu"]:
        done, loaded = _run_shard(job, todo, device_kind, report=report)
    else:
        done, loaded = _run_sharded(job, todo, workers, report)
    doubt_rows: list[dict[str, Any]] = []
    for pid in todo:  # cohort order, whichever worker segmented the patient
        rows, status[pid], doubt = done[pid]
        qc_rows.extend(rows)
        doubt_rows.extend(doubt)
    _write_tables(out, modality, qc_rows, doubt_rows)
    secs = [s["seconds"] for s in status.values() if "seconds" in s]
    summary = {
        "modality": modality,
        "cohort": str(coh.root.resolve()),
        "model": str(Path(model).resolve()),
        "model_manifest": {
            k: spec.manifest.get(k)
            for k in ("preset", "configuration", "trainer", "fold", "device", "versions")
        }
        if spec.kind == "cdeg"
        else None,
        "nnunet": {**spec.describe(), "parameter_sets": loaded.parameter_sets},
        "device": device_kind,
        "devices": workers,
        "options": {"predict": cfg.predict.__dict__, "postprocess": cfg.postprocess.__dict__},
        "versions": versions("segment"),
        "model_load_s": round(loaded.seconds, 2),
        "seconds_per_case_mean": round(float(np.mean(secs)), 3) if secs else None,
        "counts": {
            s: sum(1 for v in status.values() if v["status"] == s)
            for s in ("ok", "flagged", "empty", "failed", "skipped")
        },
        "patients": status,
        "input_check": check.summary(),
    }
    write_manifest(MaskFolder(out).predict_manifest(modality), summary)
    c = summary["counts"]
    log.info(
        "%s: %d ok, %d flagged, %d empty, %d failed, %d skipped; masks in %s",
        modality,
        c["ok"],
        c["flagged"],
        c["empty"],
        c["failed"],
        c["skipped"],
        out,
    )
    return summary


def parse_devices(devices: str) -> list[str]:
    """Worker devices from ``--devices``: ``"0,1"`` / ``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``;
    ``"cpu:N"`` -> N x ``"cpu"``; ``"cpu"`` -> ``["cpu"]``.

    Raises
    ------
    ValueError
        Malformed, repeated or mixed devices, or a CUDA index that is not visible.
    """
    text = str(devices).strip().lower()
    if text == "cpu" or text.startswith("cpu:"):
        n = text.partition(":")[2] or "1"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"--devices {devices!r}: expected cpu:N with N >= 1 processes")
        return ["cpu"] * int(n)
    items = [x.strip().removeprefix("cuda:") for x in text.split(",")]
    if not items or not all(x.isdigit() for x in items):
        raise ValueError(
            f"--devices {devices!r}: expected CUDA indices (0,1 or cuda:0,cuda:1) or cpu:N; CPU and GPU "
            "workers cannot be mixed"
        )
    if len(set(items)) != len(items):
        raise ValueError(f"--devices {devices!r}: a device is listed twice")
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    missing = [i for i in items if int(i) >= visible]
    if missing:
        raise ValueError(
            f"--devices {devices!r}: CUDA device {missing[0]} does not exist ({visible} visible); "
            "use cpu:N to split over CPU processes"
        )
    return [f"cuda:{i}" for i in items]


@dataclass(frozen=True)
class _Job:
    """What every worker needs to segment its patients (picklable: sent to worker processes)."""

    cohort: Cohort
    modality: str
    out: str
    spec: ModelSpec
    cfg: SegmentConfig


@dataclass(frozen=True)
class _Loaded:
    """What loading the model took: seconds, and the parameter sets (folds) nnU-Net loaded."""

    seconds: float
    parameter_sets: int


#: patient -> (qc rows, status, uncertainty rows).
_Done = dict[str, tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]]


def _run_shard(
    job: _Job, todo: list[str], device_kind: str, threads: int | None = None, report: Progress | None = None
) -> tuple[_Done, _Loaded]:
    """Load the model once and segment `todo`; per patient its qc rows and status, and what loading took.

    `report` (in the calling process only) is told each patient done."""
    t0 = time.time()
    spec = job.spec
    # A plain folder gets no nnUNet_results: the predictor is given its folder, and the user's stays as it is.
    results_root = spec.folder / RESULTS_DIR if spec.kind == "cdeg" else None
    with (
        _trainer_search_path(spec) as ext,
        nnunet_environment(results=results_root, ext_trainer=ext, extra={"nnUNet_compile": "f"}),
        torch_threads(device_kind),
        quiet_stdout(),
    ):
        if threads is not None:  # CPU workers share the cores instead of each taking all of them
            import torch

            torch.set_num_threads(threads)
        predictor = _load_predictor(spec, device_kind, job.cfg)
        loaded = _Loaded(time.time() - t0, len(predictor.list_of_parameters))
        log.info(
            "model loaded from %s on %s (%.1f s; %d parameter set(s): fold(s) %s, %s%s); segmenting %d %s image(s)",
            spec.folder,
            device_kind,
            loaded.seconds,
            loaded.parameter_sets,
            ", ".join(spec.folds),
            spec.checkpoint,
            ", ensembled (mean logits)" if loaded.parameter_sets > 1 else "",
            len(todo),
            job.modality,
        )
        return _segment_patients(predictor, job, todo, report), loaded


def _segment_patients(predictor: Any, job: _Job, todo: list[str], report: Progress | None = None) -> _Done:
    """Segment `todo` one by one; a patient's failure is its qc row and status, the others go on."""
    done: _Done = {}
    task = _progress_task(job.modality)
    if report is not None:
        report(task, 0, len(todo))
    for i, pid in enumerate(todo, 1):
        done[pid] = _segment_patient(predictor, job, pid, i, len(todo))
        if report is not None:
            report(task, i, len(todo))
    return done


def _progress_task(modality: str) -> str:
    """The task name under which :func:`predict` reports its patients."""
    return f"segment {modality}"


def _segment_patient(
    predictor: Any, job: _Job, pid: str, i: int, n: int
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Segment patient `i` of `n`: its qc rows, status and uncertainty rows (a failure is a row and a status,
    never raised)."""
    t_case = time.time()
    try:
        findings, written, doubt = _predict_case(
            predictor, job.cohort, pid, job.modality, Path(job.out), job.spec, job.cfg
        )
    except CdegError as e:
        log.error("%s", e.one_line())
        row = Problem(pid, job.modality, "failed", e.message).row()
        return [row], {"status": "failed", "reason": e.message}, []
    except Exception as e:  # one bad image must not stop the cohort; the traceback is logged
        log.exception("patient %s / %s: segmentation failed", pid, job.modality)
        reason = f"{type(e).__name__}: {e}"[:300]
        row = Problem(pid, job.modality, "failed", reason).row()
        return [row], {"status": "failed", "reason": reason}, []
    seconds = round(time.time() - t_case, 2)
    rows = [{ID_COLUMN: pid, "modality": job.modality, **f.__dict__} for f in findings]
    flagged = [f for f in findings if not f.repaired]
    st = {
        "status": "ok" if written and not flagged else ("flagged" if written else "empty"),
        "seconds": seconds,
        "findings": len(findings),
    }
    log.info(
        "[%d/%d] patient %s: %s (%.1f s)%s",
        i,
        n,
        pid,
        st["status"],
        seconds,
        "".join(f"; {f.check}: {f.detail}" for f in findings if f.check != "fragments_removed"),
    )
    doubt_rows = [{ID_COLUMN: pid, "modality": job.modality, **r} for r in doubt]
    return rows, st, doubt_rows


def _shard_worker(job: _Job, todo: list[str], device: str, threads: int | None) -> Any:
    """Entry point of one worker process: pin it to its GPU (before CUDA starts), then segment its shard."""
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2]
    return _run_shard(job, todo, "cuda" if device.startswith("cuda") else "cpu", threads)


def _run_sharded(
    job: _Job, todo: list[str], workers: list[str], report: Progress | None = None
) -> tuple[_Done, _Loaded]:
    """Deal `todo` round-robin over `workers`, one fresh process each (spawned: CUDA cannot be forked).

    `report` is told the patients done as each worker's share comes back (workers cannot call it)."""
    n = len(workers)
    shards = [todo[i::n] for i in range(n)]
    threads = max(1, (os.cpu_count() or 1) // n) if workers[0] == "cpu" else None
    log.info("segmenting %d patients on %d workers (%s)", len(todo), n, ", ".join(workers))
    ctx = multiprocessing.get_context("spawn")
    done: _Done = {}
    loaded = _Loaded(0.0, 0)
    task = _progress_task(job.modality)
    if report is not None:
        report(task, 0, len(todo))
    with contextlib.ExitStack() as stack:
        # One single-process pool per device, so a worker never picks up another device's shard.
        futures = {}
        for device, shard in zip(workers, shards, strict=True):
            if shard:
                pool = stack.enter_context(cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx))
                futures[pool.submit(_shard_worker, job, shard, device, threads)] = (device, shard)
        for fut in cf.as_completed(futures):
            device, shard = futures[fut]
            part, worker_loaded = fut.result()
            for pid in shard:
                part[pid][1]["device"] = device
            done.update(part)
            loaded = _Loaded(max(loaded.seconds, worker_loaded.seconds), worker_loaded.parameter_sets)
            log.info("%s: %d patients segmented", device, len(shard))
            if report is not None:
                report(task, len(done), len(todo))
    return done, loaded


def _load_predictor(spec: ModelSpec, device_kind: str, cfg: SegmentConfig) -> Any:
    """nnU-Net's predictor with the folds of `spec` (several: nnU-Net's own ensemble, mean logits)."""
    import pickle

    import torch
    from cdeg.segmentation.trainers import register_with_nnunet

    register_with_nnunet()  # the trainer lookup inside initialize_from_trained_model_folder ends at once
    predictor = _batched_predictor_class()(
        batch_tiles=cfg.predict.batch_tiles,
        cpu_bf16=cfg.predict.cpu_bf16 and device_kind == "cpu",
        tile_step_size=cfg.predict.tile_step_size,
        use_gaussian=True,
        use_mirroring=cfg.predict.use_mirroring,
        perform_everything_on_device=device_kind == "cuda",
        device=torch.device(device_kind),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    use_folds = tuple(f if f == "all" else int(f) for f in spec.folds)
    try:
        predictor.initialize_from_trained_model_folder(
            str(spec.results), use_folds=use_folds, checkpoint_name=spec.checkpoint
        )
    except (RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
        # A truncated checkpoint, or one whose weights do not fit the plans: a problem with the model files.
        raise CdegError(
            f"nnU-Net could not load fold(s) {', '.join(spec.folds)} ({spec.checkpoint}): "
            f"{type(e).__name__}: {str(e)[:200]}",
            path=spec.results,
        ) from None
    if cfg.predict.torch_resampling:
        _use_torch_resampling(predictor)
    return predictor


def _use_torch_resampling(predictor: Any) -> None:
    """Export the logits with nnU-Net's torch resampling instead of the plans' function.

    nnU-Net's default export (``resample_data_or_seg``) resizes one class of one slice at a time with
    scikit-image on one core: half of an MRI's prediction time on a CPU. nnU-Net ships
    ``resample_torch_fornnunet`` (nnunetv2/preprocessing/resampling/resample_torch.py, the function its
    ``nnUNetPlannerResEnc*_torchres`` planners put in the plans), the same linear interpolation (in-plane,
    nearest along an anisotropic axis, decided as the default one decides) run by torch on all threads. The
    plans name the function, so the configuration is rebuilt with that name; the model files are not touched.
    """
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    conf = dict(predictor.configuration_manager.configuration)
    conf["resampling_fn_probabilities"] = "resample_torch_fornnunet"
    conf["resampling_fn_probabilities_kwargs"] = {
        "is_seg": False,
        "force_separate_z": None,  # decide per image, as the default resampling does
        "num_threads": torch.get_num_threads(),
    }
    predictor.configuration_manager = ConfigurationManager(conf)


@functools.cache
def _batched_predictor_class() -> type:
    """nnU-Net's predictor whose sliding window runs `batch_tiles` tiles per network call (optionally in bfloat16
    on the CPU). Built on first use so that importing this module does not import torch."""
    import torch
    from cdeg.segmentation.trainers import channels_last
    from nnunetv2.inference.predict_from_raw_data import compute_gaussian, nnUNetPredictor

    class BatchedPredictor(nnUNetPredictor):
        """Same tiles, Gaussian weights, accumulation (float16, as nnU-Net) and mirroring as
        ``nnUNetPredictor._internal_predict_sliding_window_return_logits`` (nnunetv2 2.8.1,
        nnunetv2/inference/predict_from_raw_data.py), but the tiles go through the network in batches: a 2D
        model on a 3D volume otherwise runs one slice at a time, which leaves a CPU's vector units mostly idle.
        """

        def __init__(self, *args: Any, batch_tiles: int = 1, cpu_bf16: bool = False, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.batch_tiles = int(batch_tiles)
            self.cpu_bf16 = bool(cpu_bf16)

        def _network_on(self, x: Any) -> Any:
            if not self.cpu_bf16:
                return self._internal_maybe_mirror_and_predict(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = self._internal_maybe_mirror_and_predict(x.contiguous(memory_format=self._format()))
            return out.float()

        def _format(self) -> Any:
            return channels_last(len(self.configuration_manager.patch_size))

        @torch.inference_mode()
        def _internal_predict_sliding_window_return_logits(self, data, slicers, do_on_device: bool = True):
            # 2D models only: a batch of 3D patches (sized by nnU-Net for a training batch of 2) can exhaust memory.
            batch = self.batch_tiles if len(self.configuration_manager.patch_size) == 2 else 1
            if batch <= 1 and not self.cpu_bf16:
                return super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)
            if self.cpu_bf16:
                self.network = self.network.to(memory_format=self._format())
            results_device = self.device if do_on_device else torch.device("cpu")
            data = data.to(results_device)
            logits = torch.zeros(
                (self.label_manager.num_segmentation_heads, *data.shape[1:]),
                dtype=torch.half,
                device=results_device,
            )
            n_pred = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            gaussian = (
                compute_gaussian(
                    tuple(self.configuration_manager.patch_size),
                    sigma_scale=1.0 / 8,
                    value_scaling_factor=10,
                    device=results_device,
                )
                if self.use_gaussian
                else 1
            )
            for start in range(0, len(slicers), batch):
                tiles = slicers[start : start + batch]
                x = torch.stack([data[sl] for sl in tiles]).to(self.device)
                pred = self._network_on(x).to(results_device)
                for k, sl in enumerate(tiles):
                    p = pred[k]
                    if self.use_gaussian:
                        p = p * gaussian
                    logits[sl] += p
                    n_pred[sl[1:]] += gaussian
            torch.div(logits, n_pred, out=logits)
            if torch.any(torch.isinf(logits)):
                raise RuntimeError("Encountered inf in predicted array (nnU-Net's check)")
            return logits

    return BatchedPredictor


def segment_array(predictor: Any, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Training-label segmentation and per-voxel confidence of one canonical image, on its own grid.

    nnU-Net's own export path (``predict_single_npy_array`` with probabilities) resamples every class
    probability to full resolution; only the winning probability is needed here (as the anchor weight
    of the level repair), so the softmax maximum is taken at network resolution and that one channel is
    resampled, cropped back and transposed back exactly as nnU-Net does for the segmentation.
    """
    dct = _preprocess(predictor, image)
    logits = predictor.predict_logits_from_preprocessed_data(dct["data"]).cpu()
    return _export(predictor, logits, dct["data_properties"], image)


def segment_array_passes(
    predictor: Any, image: Any
) -> tuple[np.ndarray, np.ndarray, dict[str, list[np.ndarray]]]:
    """:func:`segment_array`, and the segmentations of the passes nnU-Net averages, to measure their disagreement.

    The folds and the mirrored inputs are run as separate passes (:func:`_pass_logits`); the segmentation and
    confidence come from their mean logits as in :func:`segment_array`. Returns the segmentation, the
    confidence and ``{"fold": [one per fold, if several], "flip": [unmirrored, mirrored mean, if the model
    allows mirroring and it is on]}``, each a training-label segmentation on the image's grid.
    """
    dct = _preprocess(predictor, image)
    props = dct["data_properties"]
    mean, passes = _pass_logits(predictor, dct["data"])
    seg, conf = _export(predictor, mean, props, image)
    return seg, conf, {k: [_export_seg(predictor, lg, props, image) for lg in v] for k, v in passes.items()}


def _preprocess(predictor: Any, image: Any) -> dict[str, Any]:
    """nnU-Net's preprocessing of one canonical image (``data``, ``data_properties``)."""
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy

    ppa = PreprocessAdapterFromNpy(
        [geometry.nnunet_array(image)],
        [None],
        [{"spacing": geometry.nnunet_spacing(image)}],
        [None],
        predictor.plans_manager,
        predictor.dataset_json,
        predictor.configuration_manager,
        num_threads_in_multithreaded=1,
        verbose=False,
    )
    return next(ppa)


def _pass_logits(predictor: Any, data: Any) -> tuple[Any, dict[str, list[Any]]]:
    """Mean logits over folds and mirrorings, as ``predict_logits_from_preprocessed_data`` and
    ``_internal_maybe_mirror_and_predict`` make them (nnunetv2 2.8.1: per fold, the network on the input and
    on each combination of the allowed mirror axes, flipped back, averaged; then averaged over folds), and the
    passes kept apart: per fold its mean logits (several folds), the unmirrored and the mirrored means.

    Mirroring is applied to the whole input here instead of to each tile; the tiles of a mirrored input are
    the mirrored tiles (nnU-Net spaces them evenly between both ends), so the mean is the same up to rounding.
    """
    import itertools

    import torch

    mirror = predictor.allowed_mirroring_axes if predictor.use_mirroring else None
    # Mirror axes count the network's spatial axes; the data's spatial axes that the patch covers are its last.
    offset = data.ndim - len(predictor.configuration_manager.patch_size)
    axes = [m + offset for m in mirror or ()]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    folds, plain, flipped = [], None, None
    predictor.use_mirroring = False  # the passes are run here, one by one
    try:
        for params in predictor.list_of_parameters:
            net = getattr(predictor.network, "_orig_mod", predictor.network)
            net.load_state_dict(params)
            a = predictor.predict_sliding_window_return_logits(data).to("cpu")
            b = [
                torch.flip(predictor.predict_sliding_window_return_logits(torch.flip(data, c)).to("cpu"), c)
                for c in combos
            ]
            plain = a if plain is None else plain + a
            if b:
                fb = torch.stack(b).mean(0)
                flipped = fb if flipped is None else flipped + fb
            folds.append((a + sum(b)) / (1 + len(b)))
    finally:
        predictor.use_mirroring = mirror is not None
    mean = torch.stack(folds).mean(0)
    passes: dict[str, list[Any]] = {}
    if len(folds) > 1:
        passes["fold"] = folds
    if flipped is not None:
        passes["flip"] = [plain, flipped]
    return mean, passes


def _export_seg(predictor: Any, logits: Any, props: dict[str, Any], image: Any) -> np.ndarray:
    """The segmentation of `logits` on the image's grid, as nnU-Net exports it."""
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    pm, cm, lm = predictor.plans_manager, predictor.configuration_manager, predictor.label_manager
    seg = np.asarray(
        convert_predicted_logits_to_segmentation_with_correct_shape(logits, pm, cm, lm, props, False)
    )
    return seg[0] if image.GetDimension() == 2 else seg


def _export(predictor: Any, logits: Any, props: dict[str, Any], image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation and confidence (softmax maximum) of `logits` on the image's grid (see :func:`segment_array`)."""
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    pm, cm = predictor.plans_manager, predictor.configuration_manager
    conf_low = torch.softmax(logits.float(), 0).max(0).values.numpy()
    seg = _export_seg(predictor, logits, props, image)
    target_spacing = [props["spacing"][i] for i in pm.transpose_forward]
    shape = props["shape_after_cropping_and_before_resampling"]
    current_spacing = cm.spacing if len(cm.spacing) == len(shape) else [target_spacing[0], *cm.spacing]
    conf = np.asarray(cm.resampling_fn_probabilities(conf_low[None], shape, current_spacing, target_spacing))[
        0
    ]
    full = np.zeros(props["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, conf.astype(np.float32), props["bbox_used_for_cropping"])
    conf = np.asarray(full).transpose(pm.transpose_backward)
    return seg, (conf[0] if image.GetDimension() == 2 else conf)


def structure_doubt(
    final: np.ndarray,
    raw: np.ndarray,
    conf: np.ndarray,
    passes: Mapping[str, list[np.ndarray]],
    low_confidence: float,
) -> list[dict[str, Any]]:
    """Per structure of the final mask: voxels, mean confidence, low-confidence share, flip and fold Dice.

    `raw` is the network's segmentation in training labels (before naming and repair) and `passes` the
    segmentations of :func:`segment_array_passes`. A structure renamed by the repair is compared under the
    training label most of its voxels had, so that its disagreement follows it to its new name.
    """
    from cdeg.segmentation.evaluate import dice

    flip, folds = passes.get("flip"), passes.get("fold")
    rows = []
    for lab in labels.sort_labels(int(v) for v in np.unique(final) if v != 0):
        inside = final == lab
        c = conf[inside]
        values, counts = np.unique(raw[inside], return_counts=True)
        own = values[np.argmax(counts)]
        rows.append(
            {
                "structure": labels.name_of(lab),
                "voxels": int(inside.sum()),
                "mean_confidence": round(float(c.mean()), 4),
                "low_confidence_share": round(float((c < low_confidence).mean()), 4),
                "flip_dice": round(dice(flip[0] == own, flip[1] == own), 4) if flip else None,
                "fold_dice": round(float(np.mean([dice(f == own, raw == own) for f in folds])), 4)
                if folds
                else None,
            }
        )
    return rows


def _predict_case(
    predictor: Any,
    coh: Cohort,
    pid: str,
    modality: str,
    out: Path,
    spec: ModelSpec,
    cfg: SegmentConfig,
) -> tuple[list[Finding], bool, list[dict[str, Any]]]:
    """Segment one image; returns its QC findings, whether a mask was written and the rows of
    uncertainty.csv (:func:`structure_doubt`) of the written mask."""
    import SimpleITK as sitk

    path = coh.image_path(pid, modality)
    image = read_image(path, patient=pid)
    if image.GetDimension() != MODALITIES[modality]:  # checked with the cohort; the file may have changed
        raise CdegError(
            f"{modality} must be {MODALITIES[modality]}D, this image is {image.GetDimension()}D",
            patient=pid,
            path=path,
        )
    findings: list[Finding] = []
    image_c, plan = geometry.to_canonical(image, modality)
    if not plan.is_identity or plan.oblique_deg > 0.5:
        findings.append(
            Finding(
                "orientation",
                f"not in the canonical orientation (axes {plan.axes}, flips {plan.flips}, "
                f"oblique {plan.oblique_deg:.1f} deg); reoriented for the network and back",
                True,
            )
        )
    if plan.oblique_deg > OBLIQUE_WARN_DEG:
        findings.append(
            Finding("oblique", f"image axes are {plan.oblique_deg:.0f} deg off the canonical ones", False)
        )
    if cfg.predict.disagreement:
        raw, conf, passes = segment_array_passes(predictor, image_c)
    else:
        (raw, conf), passes = segment_array(predictor, image_c), {}
    seg, named = name_outputs(raw, spec, pid)
    findings.extend(named)
    spacing = tuple(float(s) for s in image_c.GetSpacing()[::-1])
    fixed, post = check_levels(seg, spacing, geometry.si_axis(modality), conf, cfg.postprocess)
    findings.extend(post)
    if not np.any(fixed):
        log.warning("patient %s / %s: the model found no structure; no mask written", pid, modality)
        return findings, False, []
    mask_c = sitk.GetImageFromArray(fixed.astype(np.uint8))
    mask_c.CopyInformation(image_c)
    write_image(mask_path(out, pid, modality), geometry.from_canonical(mask_c, plan, image))
    if cfg.predict.qc_png:
        write_qc_overlay(
            MaskFolder(out).qc_png(pid, modality), image_c, mask_c, modality, f"{pid} {modality}"
        )
    return findings, True, structure_doubt(fixed, raw, conf, passes, cfg.predict.low_confidence)


def name_outputs(seg: np.ndarray, spec: ModelSpec, pid: str) -> tuple[np.ndarray, list[Finding]]:
    """The model's output values in the cdeg convention (:func:`cdeg.label_maps.convert` with the model's
    label map), and a finding per disc component the map's ``disc: any`` could not name.

    Raises
    ------
    CdegError
        The output holds a value the label map does not list (naming the patient and the map's file).
    """
    try:
        conversion = label_maps.convert(seg, spec.label_map)
    except LabelMapError as e:
        raise CdegError(f"model output: {e.message}", patient=pid, path=spec.label_map_path) from None
    return conversion.mask, [Finding("label_map", r["detail"], False) for r in conversion.flagged]


def _write_qc(out: Path, modality: str, rows: list[dict[str, Any]]) -> None:
    """Replace this modality's rows of qc.csv, keeping the other modality's."""
    import pandas as pd

    path = out / QC_CSV
    new = pd.DataFrame(rows, columns=QC_COLUMNS)
    if path.is_file():
        # qc.csv of earlier versions named the id column "patient".
        old = read_table(path, dtype={ID_COLUMN: str, "patient": str}).rename(columns={"patient": ID_COLUMN})
        old = old[old["modality"] != modality] if "modality" in old.columns else old.iloc[0:0]
        new = pd.concat([old[[c for c in QC_COLUMNS if c in old.columns]], new], ignore_index=True)
    write_table(path, new)


def _write_tables(out: Path, modality: str, qc_rows: list, doubt_rows: list[dict[str, Any]]) -> None:
    """qc.csv, uncertainty.csv and the label files (names and colours for Slicer and ITK-SNAP)."""
    _write_qc(out, modality, qc_rows)
    write_label_files(out)
    _write_uncertainty(out, modality, doubt_rows)


def _write_uncertainty(out: Path, modality: str, rows: list[dict[str, Any]]) -> None:
    """Replace this modality's rows of uncertainty.csv, keeping the other modality's."""
    import pandas as pd

    path = MaskFolder(out).uncertainty_csv
    new = pd.DataFrame(rows, columns=UNCERTAINTY_COLUMNS)
    if path.is_file():
        old = read_table(path, dtype={ID_COLUMN: str})
        new = pd.concat([old[old["modality"] != modality], new], ignore_index=True)
    write_table(path, new)
