"""`cdeg segment predict`: segment and name the levels of every image of one modality in a cohort.

Output (``MASK_DIR``, the layout of :func:`cdeg.cohort.mask_path`)::

    <patient_id>/<modality>.nii.gz      mask in the label convention, same grid as the input image
    <patient_id>/<modality>_qc.png      overlay of the mid-sagittal slice with level names
    qc.csv                              patient, modality, check, detail, repaired (rows of this
                                        modality are replaced, other modalities' rows kept)
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
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation import geometry, labelmap
from cdeg.segmentation.dataset import Problem, check_output_folder
from cdeg.segmentation.nnunet_env import (
    nnunet_environment,
    quiet_stdout,
    resolve_device,
    torch_threads,
    versions,
)
from cdeg.segmentation.postprocess import Finding, check_levels
from cdeg.segmentation.presets import SegmentConfig, load_segment_config
from cdeg.segmentation.qc import mid_slice, qc_path, write_qc_png
from cdeg.segmentation.train import RESULTS_DIR, read_manifest

from cdeg.cohort import MODALITIES, Cohort, check_modality, mask_path
from cdeg.errors import CdegError, CohortError
from cdeg.io import read_image, read_table, remove_stale_temporaries, write_image, write_json, write_table

log = logging.getLogger(__name__)

QC_CSV = "qc.csv"
QC_COLUMNS = ["patient", "modality", "check", "detail", "repaired"]
#: Obliquity (degrees) above which a reoriented image is flagged for review.
OBLIQUE_WARN_DEG = 10.0


def check_model(model: str | Path, modality: str) -> tuple[dict[str, Any], Path]:
    """The model's manifest and nnU-Net results folder, after checking it can segment `modality`.

    Raises
    ------
    ValueError
        The model was trained on the other modality.
    CdegError
        Not a model folder, training not completed, or no final checkpoint.
    """
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
    results = Path(model) / manifest["results_folder"]
    checkpoint = results / f"fold_{manifest['fold']}" / "checkpoint_final.pth"
    if not checkpoint.is_file():
        raise CdegError("the model's final checkpoint is missing", path=checkpoint)
    return manifest, results


def predict(
    cohort: str | Path,
    modality: str,
    model: str | Path,
    out: str | Path,
    device: str = "auto",
    config: str | Path | None = None,
    devices: str | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Segment every `modality` image of `cohort` with a trained model and name its levels.

    Parameters
    ----------
    cohort : Path
        Cohort folder (images are read, never written).
    modality : {"mri", "xray"}
        Which images to segment; must match the model.
    model : Path
        Model folder written by :func:`cdeg.segmentation.train.train`.
    out : Path
        Mask folder (created); see the module docstring for its contents.
    device : {"auto", "cpu", "cuda"}
        Where to run the network.
    config : Path, optional
        YAML overriding keys of configs/segment.yaml (predict and postprocess sections).
    devices : str, optional
        Split the patients over several worker processes, one per device: CUDA indices ``"0,1"`` (or
        ``"cuda:0,cuda:1"``), or ``"cpu:N"`` for N CPU processes sharing the cores. Instead of `device`.
    strict : bool
        Stop (CdegError) at the first problem with an input image instead of skipping the patient.

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
    manifest, results = check_model(model, modality)
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

    mapping = {int(k): int(v) for k, v in manifest["labels"]["convention_to_training"].items()}
    job = _Job(coh, modality, str(model), str(out), str(manifest["fold"]), results, mapping, cfg)
    if workers is None or workers == ["cpu"]:
        done, load_s = _run_shard(job, todo, device_kind)
    else:
        done, load_s = _run_sharded(job, todo, workers)
    for pid in todo:  # cohort order, whichever worker segmented the patient
        rows, status[pid] = done[pid]
        qc_rows.extend(rows)
    _write_qc(out, modality, qc_rows)
    secs = [s["seconds"] for s in status.values() if "seconds" in s]
    summary = {
        "modality": modality,
        "cohort": str(coh.root.resolve()),
        "model": str(Path(model).resolve()),
        "model_manifest": {
            k: manifest.get(k) for k in ("preset", "configuration", "trainer", "fold", "device", "versions")
        },
        "device": device_kind,
        "devices": workers,
        "options": {"predict": cfg.predict.__dict__, "postprocess": cfg.postprocess.__dict__},
        "versions": versions(),
        "model_load_s": round(load_s, 2),
        "seconds_per_case_mean": round(float(np.mean(secs)), 3) if secs else None,
        "counts": {
            s: sum(1 for v in status.values() if v["status"] == s)
            for s in ("ok", "flagged", "empty", "failed", "skipped")
        },
        "patients": status,
        "input_check": check.summary(),
    }
    write_json(out / f"segment_predict_{modality}.json", summary)
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
    model: str
    out: str
    fold: str
    results: Path
    mapping: dict[int, int]
    cfg: SegmentConfig


def _run_shard(
    job: _Job, todo: list[str], device_kind: str, threads: int | None = None
) -> tuple[dict[str, tuple[list[dict[str, Any]], dict[str, Any]]], float]:
    """Load the model once and segment `todo`; per patient its qc rows and status, and the load time."""
    from cdeg.segmentation.trainers import write_trainer_shim

    t0 = time.time()
    done: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    out = Path(job.out)
    with tempfile.TemporaryDirectory(prefix="cdeg_nnunet_ext_") as ext:
        write_trainer_shim(ext)
        with (
            nnunet_environment(
                results=Path(job.model) / RESULTS_DIR, ext_trainer=ext, extra={"nnUNet_compile": "f"}
            ),
            torch_threads(device_kind),
            quiet_stdout(),
        ):
            if threads is not None:  # CPU workers share the cores instead of each taking all of them
                import torch

                torch.set_num_threads(threads)
            predictor = _load_predictor(job.results, job.fold, device_kind, job.cfg)
            load_s = time.time() - t0
            log.info(
                "model loaded from %s on %s (%.1f s); segmenting %d %s image(s)",
                job.model,
                device_kind,
                load_s,
                len(todo),
                job.modality,
            )
            for i, pid in enumerate(todo, 1):
                t_case = time.time()
                try:
                    findings, written = _predict_case(
                        predictor, job.cohort, pid, job.modality, out, job.mapping, job.cfg
                    )
                except CdegError as e:
                    log.error("%s", e.one_line())
                    row = Problem(pid, job.modality, "failed", e.message).row()
                    done[pid] = ([row], {"status": "failed", "reason": e.message})
                    continue
                except Exception as e:  # one bad image must not stop the cohort; the traceback is logged
                    log.exception("patient %s / %s: segmentation failed", pid, job.modality)
                    reason = f"{type(e).__name__}: {e}"[:300]
                    row = Problem(pid, job.modality, "failed", reason).row()
                    done[pid] = ([row], {"status": "failed", "reason": reason})
                    continue
                seconds = round(time.time() - t_case, 2)
                rows = [{"patient": pid, "modality": job.modality, **f.__dict__} for f in findings]
                flagged = [f for f in findings if not f.repaired]
                st = {
                    "status": "ok" if written and not flagged else ("flagged" if written else "empty"),
                    "seconds": seconds,
                    "findings": len(findings),
                }
                done[pid] = (rows, st)
                log.info(
                    "[%d/%d] patient %s: %s (%.1f s)%s",
                    i,
                    len(todo),
                    pid,
                    st["status"],
                    seconds,
                    "".join(f"; {f.check}: {f.detail}" for f in findings if f.check != "fragments_removed"),
                )
    return done, load_s


def _shard_worker(job: _Job, todo: list[str], device: str, threads: int | None) -> Any:
    """Entry point of one worker process: pin it to its GPU (before CUDA starts), then segment its shard."""
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.partition(":")[2]
    return _run_shard(job, todo, "cuda" if device.startswith("cuda") else "cpu", threads)


def _run_sharded(
    job: _Job, todo: list[str], workers: list[str]
) -> tuple[dict[str, tuple[list[dict[str, Any]], dict[str, Any]]], float]:
    """Deal `todo` round-robin over `workers`, one fresh process each (spawned: CUDA cannot be forked)."""
    n = len(workers)
    shards = [todo[i::n] for i in range(n)]
    threads = max(1, (os.cpu_count() or 1) // n) if workers[0] == "cpu" else None
    log.info("segmenting %d patients on %d workers (%s)", len(todo), n, ", ".join(workers))
    ctx = multiprocessing.get_context("spawn")
    done: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    load_s = 0.0
    with contextlib.ExitStack() as stack:
        # One single-process pool per device, so a worker never picks up another device's shard.
        futures = {}
        for device, shard in zip(workers, shards, strict=True):
            if shard:
                pool = stack.enter_context(cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx))
                futures[pool.submit(_shard_worker, job, shard, device, threads)] = (device, shard)
        for fut in cf.as_completed(futures):
            device, shard = futures[fut]
            part, seconds = fut.result()
            for pid in shard:
                part[pid][1]["device"] = device
            done.update(part)
            load_s = max(load_s, seconds)
            log.info("%s: %d patients segmented", device, len(shard))
    return done, load_s


def _load_predictor(results: Path, fold: str, device_kind: str, cfg: SegmentConfig) -> Any:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=cfg.predict.tile_step_size,
        use_gaussian=True,
        use_mirroring=cfg.predict.use_mirroring,
        perform_everything_on_device=device_kind == "cuda",
        device=torch.device(device_kind),
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(
        str(results), use_folds=(fold,), checkpoint_name="checkpoint_final.pth"
    )
    return predictor


def segment_array(predictor: Any, image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Training-label segmentation and per-voxel confidence of one canonical image, on its own grid.

    nnU-Net's own export path (``predict_single_npy_array`` with probabilities) resamples all 14 class
    probabilities to full resolution; only the winning probability is needed here (as the anchor weight
    of the level repair), so the softmax maximum is taken at network resolution and that one channel is
    resampled, cropped back and transposed back exactly as nnU-Net does for the segmentation.
    """
    import torch
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape,
    )

    pm, cm, lm = predictor.plans_manager, predictor.configuration_manager, predictor.label_manager
    props_in = {"spacing": geometry.nnunet_spacing(image)}
    ppa = PreprocessAdapterFromNpy(
        [geometry.nnunet_array(image)],
        [None],
        [props_in],
        [None],
        pm,
        predictor.dataset_json,
        cm,
        num_threads_in_multithreaded=1,
        verbose=False,
    )
    dct = next(ppa)
    logits = predictor.predict_logits_from_preprocessed_data(dct["data"]).cpu()
    props = dct["data_properties"]
    conf_low = torch.softmax(logits.float(), 0).max(0).values.numpy()
    seg = convert_predicted_logits_to_segmentation_with_correct_shape(logits, pm, cm, lm, props, False)
    target_spacing = [props["spacing"][i] for i in pm.transpose_forward]
    shape = props["shape_after_cropping_and_before_resampling"]
    current_spacing = cm.spacing if len(cm.spacing) == len(shape) else [target_spacing[0], *cm.spacing]
    conf = np.asarray(cm.resampling_fn_probabilities(conf_low[None], shape, current_spacing, target_spacing))[
        0
    ]
    full = np.zeros(props["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, conf.astype(np.float32), props["bbox_used_for_cropping"])
    conf = np.asarray(full).transpose(pm.transpose_backward)
    seg = np.asarray(seg)
    if image.GetDimension() == 2:
        seg, conf = seg[0], conf[0]
    return seg, conf


def _predict_case(
    predictor: Any,
    coh: Cohort,
    pid: str,
    modality: str,
    out: Path,
    mapping: dict[int, int],
    cfg: SegmentConfig,
) -> tuple[list[Finding], bool]:
    """Segment one image; returns its QC findings and whether a mask was written."""
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
    seg, conf = segment_array(predictor, image_c)
    seg = labelmap.from_training(seg, mapping)
    spacing = tuple(float(s) for s in image_c.GetSpacing()[::-1])
    fixed, post = check_levels(seg, spacing, geometry.si_axis(modality), conf, cfg.postprocess)
    findings.extend(post)
    if not np.any(fixed):
        log.warning("patient %s / %s: the model found no structure; no mask written", pid, modality)
        return findings, False
    mask_c = sitk.GetImageFromArray(fixed.astype(np.uint8))
    mask_c.CopyInformation(image_c)
    write_image(mask_path(out, pid, modality), geometry.from_canonical(mask_c, plan, image))
    if cfg.predict.qc_png:
        arr = sitk.GetArrayViewFromImage(image_c)
        if arr.ndim == 3:
            k = mid_slice(fixed)
            img2, msk2, sp2 = arr[k], fixed[k], spacing[1:]
        else:
            img2, msk2, sp2 = arr, fixed, spacing
        write_qc_png(qc_path(out, pid, modality), img2, msk2, (sp2[0], sp2[1]), f"{pid} {modality}")
    return findings, True


def _write_qc(out: Path, modality: str, rows: list[dict[str, Any]]) -> None:
    """Replace this modality's rows of qc.csv, keeping the other modality's."""
    import pandas as pd

    path = out / QC_CSV
    new = pd.DataFrame(rows, columns=QC_COLUMNS)
    if path.is_file():
        old = read_table(path, dtype={"patient": str})
        old = old[old["modality"] != modality] if "modality" in old.columns else old.iloc[0:0]
        new = pd.concat([old[[c for c in QC_COLUMNS if c in old.columns]], new], ignore_index=True)
    write_table(path, new)
