"""`cdeg segment train`: plan, preprocess and train nnU-Net v2 on a cohort's reference masks.

The model folder is self-contained::

    MODEL_DIR/
      cdeg_model.json                 manifest: modality, preset, resolved settings, label mapping,
                                      nnU-Net configuration and trainer, versions, device, timings, status
      nnUNet_results/<dataset>/<trainer>__nnUNetPlans__<configuration>/
          plans.json, dataset.json, dataset_fingerprint.json, fold_<f>/checkpoint_final.pth, logs
      nnunet_ext/cdeg_nnunet_trainers.py   lets plain nnU-Net tools find the cdeg trainers
      NNUNET.md                       the exact ``nnUNetv2_predict`` command for this model (written when
                                      training completes)
      work/                           nnUNet_raw and nnUNet_preprocessed while training (removed when
                                      training completes, unless keep_work)

Running `train` again on a folder whose training was interrupted resumes from nnU-Net's latest
checkpoint (nnU-Net's ``--c``); on a completed folder it does nothing. Checkpoints are written every
``save_every`` epochs (nnU-Net: 50) and at the end.

Presets (configs/segment.yaml) per device kind and modality: ``full`` is nnU-Net's default schedule
(1000 epochs x 250 iterations, planned configuration) for real studies; ``fast`` is the best model that
fits in about ten minutes on the device it runs on; ``smoke`` is a seconds-long run for tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdeg.segmentation import labelmap
from cdeg.segmentation.dataset import check_output_folder, check_training_cases, write_dataset
from cdeg.segmentation.nnunet_env import (
    dataset_id,
    dataset_name,
    nnunet_environment,
    quiet_stdout,
    resolve_device,
    torch_threads,
)
from cdeg.segmentation.presets import FOLDS, PRESETS, SegmentConfig, TrainSettings, load_segment_config

from cdeg import labels
from cdeg.cohort import CANONICAL_DIRECTION, Cohort, check_modality
from cdeg.config import to_dict
from cdeg.errors import CdegError, CohortError
from cdeg.io import read_json, remove_stale_temporaries, write_json, write_text
from cdeg.outputs import SegmentationModel, versions, write_manifest
from cdeg.progress import ProgressArg, is_shown

log = logging.getLogger(__name__)

MANIFEST = SegmentationModel.MANIFEST
MANIFEST_FORMAT = "cdeg-segmentation-model"
MANIFEST_VERSION = 1
PLANS_IDENTIFIER = "nnUNetPlans"
RESULTS_DIR = SegmentationModel.RESULTS_DIR
WORK_DIR = SegmentationModel.WORK_DIR
EXT_DIR = SegmentationModel.EXT_DIR
#: How to run the model with plain ``nnUNetv2_predict`` (written when training completes).
NNUNET_DOC = SegmentationModel.NNUNET_DOC


def train(
    cohort: str | Path,
    modality: str,
    out: str | Path,
    preset: str = "fast",
    device: str = "auto",
    fold: str | int = "all",
    config: str | Path | Mapping[str, Any] | SegmentConfig | None = None,
    keep_work: bool = False,
    progress: ProgressArg = None,
    strict: bool = False,
    masks: str | Path | None = None,
) -> dict[str, Any]:
    """Train an nnU-Net model for one modality on the cohort's images that have reference masks.

    The cohort is checked once before anything else (:func:`cdeg.segmentation.dataset.check_training_cases`):
    a patient whose image or reference mask is unusable (unreadable or truncated file, wrong dimension,
    mask grid or labels not matching the image) is left out with one log line naming the file, and listed
    in the manifest (``cohort.skipped``); cohort.json, clinical.csv or id problems stop the stage.

    Parameters
    ----------
    cohort : Path
        Cohort folder; patients with an image and a reference mask of `modality` are used.
    modality : {"mri", "xray"}
        Which images to train on (one model per modality).
    out : Path
        Model folder (created; an interrupted training there is resumed).
    preset : {"full", "fast", "smoke"}
        Training schedule (see module docstring and configs/segment.yaml).
    device : {"auto", "cpu", "cuda"}
        Where to train; "auto" takes CUDA when available.
    fold : {"all", 0, 1, 2, 3, 4}
        nnU-Net fold: "all" trains on every case; 0-4 hold out a fifth (needs >= 5 cases).
    config : Path, mapping or SegmentConfig, optional
        YAML overriding keys of configs/segment.yaml, those keys as a mapping, or a resolved
        :class:`~cdeg.segmentation.presets.SegmentConfig` (see
        :func:`~cdeg.segmentation.presets.load_segment_config`).
    keep_work : bool
        Keep the raw and preprocessed nnU-Net data in ``out/work`` after training completes.
    progress : bool, callable or None
        Whether nnU-Net shows its progress bars during planning and preprocessing (:mod:`cdeg.progress`:
        any value but None or False shows them; nnU-Net draws its own).
    strict : bool
        Stop (CdegError) at the first problem with an input file instead of leaving the patient out;
        nothing is written.
    masks : Path, optional
        Mask folder to train on instead of the cohort's reference ``masks/`` (masks corrected in an editor
        and read back with `cdeg segment import-masks --from slicer|itksnap`); recorded as ``cohort.masks``.

    Returns
    -------
    dict
        The manifest written to ``out/cdeg_model.json``.
    """
    t_start = time.time()
    check_modality(modality)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    fold = str(fold)
    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {', '.join(FOLDS)}, got {fold!r}")
    cfg = load_segment_config(config)
    out = Path(out)
    coh = Cohort.open(cohort)
    check_output_folder(out, coh)
    previous = _check_model_folder(out, modality, preset, fold)
    if previous is not None and previous.get("status") == "complete":
        log.info("%s already holds a complete %s model (preset %s); nothing to do", out, modality, preset)
        if not (out / NNUNET_DOC).is_file():  # a folder trained before cdeg wrote it
            write_nnunet_instructions(out, previous)
        return previous

    usable, problems, unlabelled = check_training_cases(
        coh, modality, strict=strict, stage="segment train", masks=masks
    )
    if not usable:
        raise CohortError(f"no patient has a usable {modality} image with a reference mask", path=coh.root)
    if fold != "all" and len(usable) < 5:
        raise ValueError(
            f"fold {fold} needs at least 5 labelled cases for nnU-Net's 5-fold split; got {len(usable)}"
        )
    device_kind = resolve_device(device)
    settings = cfg.settings(preset, device_kind, modality)
    log.info(
        "training %s model: preset %s on %s, %d labelled case(s), fold %s, trainer %s, configuration %s%s",
        modality,
        preset,
        device_kind,
        len(usable),
        fold,
        settings.trainer,
        settings.configuration,
        " (reduced)" if settings.reduced else "",
    )

    manifest = previous or _new_manifest(coh, modality, preset, device_kind, fold, settings, usable)
    manifest.update(status="training", device=device_kind, settings=to_dict(settings))
    manifest["cohort"] |= {
        "skipped": {p.patient: p.detail for p in problems},
        "masks": str(Path(masks).resolve()) if masks is not None else None,
    }
    write_manifest(out / MANIFEST, manifest)
    work, results, ext = out / WORK_DIR, out / RESULTS_DIR, out / EXT_DIR
    from cdeg.segmentation.trainers import write_trainer_shim

    write_trainer_shim(ext)
    env = {
        "nnUNet_compile": "t" if (device_kind == "cuda" and settings.torch_compile) else "f",
        "nnUNet_def_n_proc": str(max(1, min(8, os.cpu_count() or 1))),
    }
    timings = dict(manifest.get("timings_s", {}))
    with nnunet_environment(work=work, results=results, ext_trainer=ext, extra=env), quiet_stdout():
        t0 = time.time()
        configuration = _plan_and_preprocess(
            coh, modality, work, settings, is_shown(progress), (usable, problems, unlabelled), masks
        )
        timings["prepare_plan_preprocess"] = round(
            timings.get("prepare_plan_preprocess", 0) + time.time() - t0, 1
        )
        manifest["configuration"] = configuration
        manifest["results_folder"] = str(
            Path(RESULTS_DIR)
            / dataset_name(modality)
            / f"{settings.trainer}__{PLANS_IDENTIFIER}__{configuration}"
        )
        write_manifest(out / MANIFEST, manifest)
        t0 = time.time()
        epochs = _run_training(
            modality, configuration, fold, settings, device_kind, t_start, out / manifest["results_folder"]
        )
        timings["train"] = round(timings.get("train", 0) + time.time() - t0, 1)

    manifest.update(
        status="complete",
        epochs_completed=epochs,
        timings_s=timings,
        finished=_now(),
        versions=versions("segment"),
    )
    write_manifest(out / MANIFEST, manifest)
    write_nnunet_instructions(out, manifest)
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    log.info("model written to %s (%.0f s)", out, time.time() - t_start)
    return manifest


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _new_manifest(
    coh: Cohort,
    modality: str,
    preset: str,
    device_kind: str,
    fold: str,
    settings: TrainSettings,
    cases: list[str],
) -> dict[str, Any]:
    mapping = labelmap.training_labels()
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "status": "training",
        "modality": modality,
        "preset": preset,
        "device": device_kind,
        "fold": fold,
        "trainer": settings.trainer,
        "plans_identifier": PLANS_IDENTIFIER,
        "dataset_name": dataset_name(modality),
        "settings": to_dict(settings),
        "labels": {
            "convention": labels.CONVENTION_NAME,
            "convention_to_training": {str(k): v for k, v in mapping.items()},
            "names": {str(s.label): s.name for s in labels.STRUCTURES},
        },
        "cohort": {
            "root": str(coh.root.resolve()),
            "name": coh.meta.name,
            "n_cases": len(cases),
            "cases_sha256": hashlib.sha256("\n".join(cases).encode()).hexdigest(),
        },
        "created": _now(),
        "versions": versions("segment"),
        "timings_s": {},
    }


def nnunet_predict_command(out: str | Path, manifest: dict[str, Any]) -> str:
    """The shell lines that run the model of folder `out` with nnU-Net's own ``nnUNetv2_predict``.

    ``IN`` and ``OUT`` are the placeholders for the input and output folders. nnU-Net finds the trained model
    through ``nnUNet_results`` and the cdeg trainer class through ``nnUNet_extTrainer`` (pointed at the
    model's ``nnunet_ext/`` shim, see :mod:`cdeg.segmentation.trainers`); the options are those of
    ``predict_entry_point`` in nnunetv2/inference/predict_from_raw_data.py (nnunetv2 2.8.1).
    """
    model_dir = shlex.quote(str(Path(out).resolve()))
    fold = str(manifest["fold"])
    return (
        f"MODEL_DIR={model_dir}\n"
        f'nnUNet_results="$MODEL_DIR/{RESULTS_DIR}" nnUNet_extTrainer="$MODEL_DIR/{EXT_DIR}" \\\n'
        f"  nnUNetv2_predict -i IN -o OUT -d {manifest['dataset_name']} -c {manifest['configuration']} "
        f"-tr {manifest['trainer']} -p {manifest.get('plans_identifier', PLANS_IDENTIFIER)} -f {fold} "
        "-chk checkpoint_final.pth\n"
    )


def write_nnunet_instructions(out: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``out/NNUNET.md``: how to run this model with plain nnU-Net (atomically); returns its path."""
    modality = manifest["modality"]
    channel = "2D NIfTI radiograph" if modality == "xray" else "3D NIfTI volume"
    path = Path(out) / NNUNET_DOC
    text = f"""# Running this model with nnU-Net's own tools

`cdeg segment predict --model {Path(out).resolve()}` is the usual way: it reorients each image, names and
checks the levels, and writes masks in cdeg's label convention. The same network runs without cdeg's
pipeline through `nnUNetv2_predict` (nnunetv2 {manifest.get("versions", {}).get("nnunetv2")}, in a Python
environment where cdeg is installed: the trainer class {manifest["trainer"]} is imported from
`cdeg.segmentation.trainers` by `{EXT_DIR}/`):

```bash
{nnunet_predict_command(out, manifest)}```

Change `MODEL_DIR` if this folder was moved; without a GPU add `-device cpu` (nnU-Net's default is cuda).

- `IN` holds one {channel} per case, named `<patient_id>_0000.nii.gz` (nnU-Net's channel suffix; this
  model has one channel).
- Images must be in cdeg's canonical orientation (`cdeg.cohort.CANONICAL_DIRECTION["{modality}"]` =
  `{CANONICAL_DIRECTION[modality]}`): nnU-Net's SimpleITKIO (set in dataset.json) reads the voxel array as
  stored and does not reorient. The `images/` of a cohort written by `cdeg cohort init` or `cdeg synth`
  are canonical; other images must be reoriented first.
- `OUT/<patient_id>.nii.gz` holds nnU-Net's raw output in this model's *training labels* (C2 = 1,
  C2-C3 = 2, ..., T1 = 13; `cdeg labels --map cdeg_nnunet`), not in cdeg's convention, and without cdeg's
  level check and repair. Convert them with
  `cdeg segment import-masks --from cdeg_nnunet --masks OUT --cohort COHORT --modality {modality} --out MASK_DIR`.
"""
    write_text(path, text)
    return path


def _check_model_folder(out: Path, modality: str, preset: str, fold: str) -> dict[str, Any] | None:
    """The manifest of an existing model folder compatible with this call, None for a new/empty folder."""
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        if out.exists() and any(out.iterdir()):
            raise ValueError(
                f"{out} exists, is not empty and holds no {MANIFEST}; choose a new or empty model folder"
            )
        return None
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CdegError("not a cdeg segmentation model manifest", path=manifest_path)
    for key, value in (("modality", modality), ("preset", preset), ("fold", fold)):
        if str(manifest.get(key)) != value:
            raise ValueError(
                f"{out} holds a model with {key} {manifest.get(key)!r}, not {value!r}; use the same options to "
                "resume it or choose another model folder"
            )
    return manifest


def _plan_and_preprocess(
    coh: Cohort,
    modality: str,
    work: Path,
    s: TrainSettings,
    show_progress: bool,
    cases: tuple[list[str], list[Any], list[str]],
    masks: str | Path | None = None,
) -> str:
    """Prepare the raw dataset from the checked `cases`, plan and preprocess (skipped when a previous run
    finished them)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiments,
        preprocess,
    )

    name = dataset_name(modality)
    ds_id = dataset_id(modality)
    pre = work / "nnUNet_preprocessed" / name
    plans_file = pre / f"{PLANS_IDENTIFIER}.json"
    configuration = f"{s.configuration}_cdeg" if s.reduced else s.configuration
    done_marker = pre / f".preprocessed_{configuration}"
    if done_marker.is_file() and plans_file.is_file():
        log.info("reusing the preprocessed data of the interrupted run in %s", pre)
        return configuration
    write_dataset(coh, modality, work / "nnUNet_raw" / name, *cases, masks=masks)
    n_proc = max(1, min(4, os.cpu_count() or 1))
    extract_fingerprint_dataset(
        ds_id,
        _fingerprint_extractor(),
        num_processes=n_proc,
        # nnU-Net's own check (off by default in its API, ``--verify_dataset_integrity`` in its CLI) reads every
        # case again in a process pool: 2.6-2.9 s per modality of the demo's training budgets. Every case written
        # here already passed check_training_cases (headers, dimensions, mask grid and labels).
        check_dataset_integrity=False,
        clean=True,
        verbose=False,
        show_progress_bar=show_progress,
    )
    plan_experiments([ds_id])
    if s.reduced:
        plans = json.loads(plans_file.read_text())
        plans["configurations"][configuration] = reduced_configuration(plans, s, configuration)
        write_json(plans_file, plans)
    elif configuration not in json.loads(plans_file.read_text())["configurations"]:
        raise CdegError(
            f"nnU-Net planned no {configuration} configuration for this data (2D images?)", path=plans_file
        )
    preprocess(
        [ds_id],
        PLANS_IDENTIFIER,
        configurations=(configuration,),
        num_processes=(n_proc,),
        verbose=False,
        show_progress_bar=show_progress,
    )
    done_marker.write_text(_now() + "\n")
    return configuration


#: Foreground intensities the dataset fingerprint samples (nnU-Net: 10e7 over all cases).
FINGERPRINT_INTENSITY_SAMPLES = 100_000


def _fingerprint_extractor() -> type:
    """nnU-Net's dataset fingerprint extractor, sampling :data:`FINGERPRINT_INTENSITY_SAMPLES` foreground
    intensities instead of 10^8.

    The samples give only the plans' foreground intensity statistics, which nnU-Net's CT normalisation reads;
    cdeg's channels (T2 MRI, radiograph) get its z-score normalisation, per image, which does not. With 10^8
    samples (0.4 GB, pickled back from the workers) the statistics alone took 2.7 s of a demo training budget.
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )

    class CdegFingerprintExtractor(DatasetFingerprintExtractor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = FINGERPRINT_INTENSITY_SAMPLES

    return CdegFingerprintExtractor


def reduced_configuration(plans: dict[str, Any], s: TrainSettings, name: str) -> dict[str, Any]:
    """A smaller, faster configuration derived from nnU-Net's planned one (for the fast and smoke presets).

    In-plane spacing coarsened to ``target_spacing_mm`` (never finer than planned), patch covering the
    median image up to ``max_patch_size``, topology recomputed with nnU-Net's own rule
    (``get_pool_and_conv_props``), then features, stages, convolutions and batch size from the settings.
    """
    import numpy as np
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    cfg = copy.deepcopy(plans["configurations"][s.configuration])
    cfg.pop("inherits_from", None)
    spacing = [float(v) for v in cfg["spacing"]]
    median = [float(v) for v in cfg["median_image_size_in_voxels"]]
    dim = len(spacing)
    if s.target_spacing_mm is not None:
        for ax in range(dim - 2, dim):  # in-plane axes are the last two in nnU-Net's array order
            new = max(spacing[ax], s.target_spacing_mm)
            median[ax] *= spacing[ax] / new
            spacing[ax] = new
    patch = [int(np.ceil(m)) for m in median]
    if dim == 3:
        patch[0] = min(patch[0], int(cfg["patch_size"][0]))
    if s.max_patch_size is not None:
        for i, cap in enumerate(s.max_patch_size):
            patch[dim - 2 + i] = min(patch[dim - 2 + i], int(cap))
    _, strides, kernels, patch, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    strides, kernels = [list(map(int, x)) for x in strides], [list(map(int, x)) for x in kernels]
    if s.max_stages is not None and len(strides) > s.max_stages:
        strides, kernels = strides[: s.max_stages], kernels[: s.max_stages]
    n = len(strides)
    arch = cfg["architecture"]["arch_kwargs"]
    base = s.base_features or int(arch["features_per_stage"][0])
    cap = s.max_features or int(max(arch["features_per_stage"]))
    n_conv = s.n_conv_per_stage
    arch.update(
        n_stages=n,
        features_per_stage=[min(cap, base * 2**i) for i in range(n)],
        kernel_sizes=kernels,
        strides=strides,
        n_conv_per_stage=[n_conv or 2] * n,
        n_conv_per_stage_decoder=[n_conv or 2] * (n - 1),
    )
    cfg.update(
        data_identifier=f"{plans['plans_name']}_{name}",
        spacing=spacing,
        patch_size=[int(p) for p in patch],
        median_image_size_in_voxels=[float(m) for m in median],
    )
    if s.batch_size is not None:
        cfg["batch_size"] = int(s.batch_size)
    return cfg


def _run_training(
    modality: str,
    configuration: str,
    fold: str,
    s: TrainSettings,
    device_kind: str,
    t_start: float,
    results: Path,
) -> int:
    """Instantiate the trainer, resume from a checkpoint when there is one, train; returns epochs done."""
    import torch
    from cdeg.segmentation.trainers import CHECKPOINT_TEMPORARIES, SETTINGS_ENV, register_with_nnunet
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    register_with_nnunet()

    fold_dir = results / f"fold_{fold}"
    remove_stale_temporaries(fold_dir, CHECKPOINT_TEMPORARIES)  # a checkpoint write cut short by a kill
    resume = any((fold_dir / f).is_file() for f in ("checkpoint_latest.pth", "checkpoint_best.pth"))
    trainer_settings: dict[str, Any] = {
        "epochs": s.epochs,
        "iterations_per_epoch": s.iterations_per_epoch,
        "val_iterations_per_epoch": s.val_iterations_per_epoch,
        "save_every": s.save_every,
        "initial_lr": s.initial_lr,
        "optimizer": s.optimizer,
        "cpu_bf16": s.cpu_bf16,  # the trainer applies it on a CPU device only
        "deadline_unix": t_start + s.time_budget_s if s.time_budget_s is not None else None,
    }
    env = {SETTINGS_ENV: json.dumps(trainer_settings), "nnUNet_n_proc_DA": str(s.n_proc_da)}
    with nnunet_environment(extra=env), torch_threads(device_kind):
        trainer = get_trainer_from_args(
            dataset_name(modality),
            configuration,
            "all" if fold == "all" else int(fold),
            s.trainer,
            PLANS_IDENTIFIER,
            continue_training=resume,
            device=torch.device(device_kind),
        )
        if resume:
            log.info("resuming the interrupted training in %s", fold_dir)
        maybe_load_checkpoint(trainer, resume, False)
        log.info("nnU-Net training log: %s", trainer.log_file)
        trainer.run_training()
        if s.final_validation and fold != "all":
            trainer.perform_actual_validation(False)
    return int(trainer.current_epoch)


def read_manifest(model: str | Path) -> dict[str, Any]:
    """The manifest of a model folder; a folder without one raises CdegError."""
    path = Path(model) / MANIFEST
    if not path.is_file():
        raise CdegError(f"not a cdeg segmentation model folder ({MANIFEST} is missing)", path=model)
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CdegError("not a cdeg segmentation model manifest", path=path)
    return manifest
