"""`cdeg segment prepare`: an nnU-Net raw dataset from the images of a cohort that have reference masks.

Output (``RAW_DIR``, an nnU-Net ``DatasetXXX_Name`` folder)::

    imagesTr/<patient_id>_0000.nii.gz   image in the canonical orientation (cdeg.cohort.CANONICAL_DIRECTION)
    labelsTr/<patient_id>.nii.gz        mask in consecutive training labels (labelmap.py), same grid
    dataset.json                        nnU-Net's dataset description, plus a "cdeg" entry with the
                                        label mapping, modality and source cohort

Channel names choose nnU-Net's intensity normalisation. MRI: ``"T2"``, which nnU-Net maps to per-image
z-scoring (the right choice for MR, whose grey values have no absolute scale). Radiograph: ``"XR"``,
also per-image z-scoring. Not ``"CT"``: CT normalisation clips to dataset-wide percentiles and scales by
the dataset-wide mean and standard deviation, which assumes calibrated Hounsfield units; radiograph grey
values depend on exposure, detector and post-processing and differ from one image to the next, so each
image is normalised on its own.

Radiographs stay 2D NIfTI files read by nnU-Net's SimpleITKIO (set in dataset.json), so the pixel
spacing in millimetres survives; PNG would lose it and with it the physical scale nnU-Net plans on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation import geometry, labelmap

from cdeg import labels
from cdeg.cohort import ID_COLUMN, Cohort, check_modality, mask_path
from cdeg.errors import CdegError, CohortError
from cdeg.io import read_image, write_image, write_json

log = logging.getLogger(__name__)

CHANNEL_NAMES = {"mri": "T2", "xray": "XR"}
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class Problem:
    """Something wrong with one patient's input, reported instead of stopping the run."""

    patient: str
    modality: str
    check: str
    detail: str

    def row(self, repaired: bool = False) -> dict[str, Any]:
        """As a qc.csv row."""
        return {
            ID_COLUMN: self.patient,
            "modality": self.modality,
            "check": self.check,
            "detail": self.detail,
            "repaired": repaired,
        }


def check_training_cases(
    cohort: Cohort,
    modality: str,
    strict: bool = False,
    stage: str = "segment prepare",
    masks: str | Path | None = None,
) -> tuple[list[str], list[Problem], list[str]]:
    """Whole-cohort check for training, once, with :func:`cdeg.check.check_stage_cohort`.

    The images and reference masks of `modality` are checked (headers, truncation, dimensions, mask
    geometry and labels). A patient with an error is skipped, logged on one line naming the file; a
    cohort-level error (cohort.json, clinical.csv, ids) stops; with `strict` the first error stops. `masks`:
    a mask folder to train on instead of the cohort's reference ``masks/`` (corrected masks, say).

    Returns
    -------
    tuple
        (usable patient ids, problems as :class:`Problem`, ids with an image but no reference mask).
    """
    from cdeg.check import check_stage_cohort

    check = check_stage_cohort(
        f"{stage} {modality}", cohort, masks=masks, modalities=(modality,), strict=strict
    )
    mask_root = Path(masks) if masks is not None else cohort.masks_root
    problems = [Problem(f.patient, modality, f.check, check.line(f)) for f in check.errors]
    usable: list[str] = []
    unlabelled: list[str] = []
    for pid in cohort.patient_ids():
        if check.problems(pid, modality) or not cohort.has_image(pid, modality):
            continue  # a missing modality is normal; a bad file was reported by the check
        if not mask_path(mask_root, pid, modality).is_file():
            unlabelled.append(pid)
            continue
        usable.append(pid)
    return usable, problems, unlabelled


def dataset_json(
    modality: str,
    n_cases: int,
    cohort: Cohort | None,
    cases: list[str],
    skipped: dict[str, str] | None = None,
    masks: str | Path | None = None,
    ignore: bool = False,
) -> dict[str, Any]:
    """The dataset.json of a prepared dataset (``cdeg.skipped``: patients left out for bad input, and why).

    `ignore`: some masks mark pixels :data:`cdeg.labels.IGNORE` (not annotated, e.g. masks drawn from corner
    points); they get nnU-Net's "ignore" label (:func:`labelmap.dataset_json_labels`).
    """
    mapping = labelmap.training_labels()
    return {
        "name": f"cdeg_{modality}",
        "description": f"cdeg {modality} segmentation of cervical vertebrae and discs ({labels.CONVENTION_NAME})",
        "channel_names": {"0": CHANNEL_NAMES[modality]},
        "labels": labelmap.dataset_json_labels(ignore),
        "numTraining": n_cases,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "cdeg": {
            "modality": modality,
            "label_convention": labels.CONVENTION_NAME,
            "convention_to_training": {str(k): v for k, v in mapping.items()},
            "source_cohort": str(cohort.root) if cohort is not None else None,
            "source_masks": str(masks) if masks is not None else None,
            "cases": cases,
            "skipped": skipped or {},
        },
    }


def write_case(
    cohort: Cohort,
    pid: str,
    modality: str,
    out: Path,
    masks: str | Path | None = None,
    values: set[int] | None = None,
) -> Problem | None:
    """Write one image/label pair in canonical orientation (the mask from `masks`, default the cohort's
    reference masks); a bad mask gives a Problem instead.

    `values`, when given, collects the label values of the mask written.
    """
    import SimpleITK as sitk

    try:
        image = read_image(cohort.image_path(pid, modality), patient=pid)
        mask_root = Path(masks) if masks is not None else cohort.masks_root
        mask = read_image(mask_path(mask_root, pid, modality), patient=pid)
    except CdegError as e:
        return Problem(pid, modality, "unreadable", e.one_line())
    arr = sitk.GetArrayViewFromImage(mask)
    present = np.unique(arr).tolist()
    bad = labels.invalid_labels(present)
    if bad:
        return Problem(
            pid,
            modality,
            "mask_labels",
            f"mask has labels {bad} outside the {labels.CONVENTION_NAME} convention",
        )
    if not any(v not in (labels.BACKGROUND, labels.IGNORE) for v in present):
        return Problem(pid, modality, "empty_mask", "reference mask is empty")
    if values is not None:
        values.update(int(v) for v in present)
    mask.CopyInformation(image)  # headers were checked to agree within tolerance; make them identical
    image_c, plan = geometry.to_canonical(image, modality)
    mask_c, _ = geometry.to_canonical(mask, modality)
    train = sitk.GetImageFromArray(labelmap.to_training(sitk.GetArrayViewFromImage(mask_c)))
    train.CopyInformation(mask_c)
    if not plan.is_identity:
        log.info("patient %s: %s reoriented to the canonical orientation (%s)", pid, modality, plan)
    write_image(out / "imagesTr" / f"{pid}_0000{FILE_ENDING}", image_c)
    write_image(out / "labelsTr" / f"{pid}{FILE_ENDING}", train)
    return None


def check_output_folder(out: Path, cohort: Cohort) -> None:
    """Refuse an output folder inside the cohort: inputs are never modified."""
    out_r, root_r = out.resolve(), cohort.root.resolve()
    if out_r == root_r or root_r in out_r.parents:
        raise ValueError(
            f"output folder {out} is inside the cohort {cohort.root}; choose a folder outside it"
        )


def prepare_dataset(
    cohort: str | Path,
    modality: str,
    out: str | Path,
    strict: bool = False,
    masks: str | Path | None = None,
) -> dict[str, Any]:
    """Write an nnU-Net raw dataset from the images of `cohort` that have reference masks.

    The cohort is checked first (:func:`check_training_cases`): a patient whose image or mask is unusable
    (unreadable or truncated file, wrong dimension, mask grid or labels not matching) is skipped with one
    log line naming the file and listed in ``dataset.json`` (``cdeg.skipped``); cohort.json, clinical.csv
    or id problems stop the stage.

    Parameters
    ----------
    cohort : Path
        Cohort folder (see :mod:`cdeg.cohort`); patients without a reference mask are skipped.
    modality : {"mri", "xray"}
        Which images to use.
    out : Path
        The dataset folder to write (imagesTr, labelsTr, dataset.json). Files of an earlier run in its
        imagesTr/labelsTr that are not part of this one are removed, so nnU-Net sees exactly this dataset.
    strict : bool
        Stop (CdegError) at the first problem with an input file instead of skipping the patient; nothing
        is written.
    masks : Path, optional
        Mask folder (``<patient_id>/<modality>.nii.gz``: `segment import-masks`, `segment predict`) whose
        masks are the labels, instead of the cohort's reference ``masks/``.

    Returns
    -------
    dict
        ``cases`` (patient ids written), ``problems`` (qc rows), ``unlabelled`` (ids without a mask).

    Raises
    ------
    ValueError
        Unknown modality, or `out` inside the cohort.
    CohortError
        No usable case at all, a cohort-level problem, or any problem under `strict`.
    """
    check_modality(modality)
    out = Path(out)
    coh = Cohort.open(cohort)
    check_output_folder(out, coh)
    usable, problems, unlabelled = check_training_cases(coh, modality, strict=strict, masks=masks)
    return write_dataset(coh, modality, out, usable, problems, unlabelled, masks=masks)


def write_dataset(
    coh: Cohort,
    modality: str,
    out: Path,
    usable: list[str],
    problems: list[Problem],
    unlabelled: list[str],
    masks: str | Path | None = None,
) -> dict[str, Any]:
    """Write the cases a check found usable (:func:`check_training_cases`); see :func:`prepare_dataset`."""
    if unlabelled:
        log.info(
            "%d patient(s) have a %s image but no reference mask; not used for training",
            len(unlabelled),
            modality,
        )
    if not usable:
        raise CohortError(f"no patient has a usable {modality} image with a reference mask", path=coh.root)
    problems = list(problems)
    written: list[str] = []
    values: set[int] = set()
    for pid in usable:
        problem = write_case(coh, pid, modality, out, masks=masks, values=values)
        if problem is None:
            written.append(pid)
        else:
            problems.append(problem)
            log.warning("patient %s / %s: %s; skipped", pid, modality, problem.detail)
    if not written:
        raise CohortError(f"no patient has a usable {modality} reference mask", path=coh.root)
    _remove_stale(out, written)
    skipped = {p.patient: p.detail for p in problems}
    ignore = labels.IGNORE in values
    write_json(
        out / "dataset.json", dataset_json(modality, len(written), coh, written, skipped, masks, ignore)
    )
    log.info("prepared %d %s case(s) in %s", len(written), modality, out)
    return {"cases": written, "problems": [p.row() for p in problems], "unlabelled": unlabelled}


def _remove_stale(out: Path, cases: list[str]) -> None:
    keep = {f"{c}_0000{FILE_ENDING}" for c in cases} | {f"{c}{FILE_ENDING}" for c in cases}
    for sub in ("imagesTr", "labelsTr"):
        for f in (out / sub).glob(f"*{FILE_ENDING}"):
            if f.name not in keep:
                f.unlink()
