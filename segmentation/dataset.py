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
from cdeg.cohort import MODALITIES, Cohort, check_modality
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
            "patient": self.patient,
            "modality": self.modality,
            "check": self.check,
            "detail": self.detail,
            "repaired": repaired,
        }


def image_header(path: Path) -> Any:
    """Read only the header of an image (dimension, size, spacing, direction): cheap whole-cohort checks."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def check_image(cohort: Cohort, pid: str, modality: str) -> Problem | None:
    """Problem with a patient's image of `modality` (missing, unreadable, wrong dimension), or None."""
    path = cohort.image_path(pid, modality)
    if not path.is_file():
        return Problem(pid, modality, "missing_image", f"no {modality} image ({path})")
    try:
        header = image_header(path)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1][:120] if str(e).strip() else "unreadable"
        return Problem(pid, modality, "unreadable_image", f"cannot read {path}: {reason}")
    return check_dimension(header.GetDimension(), header.GetSize(), pid, modality, path)


def check_dimension(
    dim: int, size: tuple[int, ...], pid: str, modality: str, path: Path | str
) -> Problem | None:
    """2D/3D confusion: an image whose dimension is not the modality's (e.g. a 2D image for an MRI model)."""
    want = MODALITIES[modality]
    if dim == want:
        return None
    hint = ""
    if dim == 3 and want == 2 and 1 in tuple(size):
        hint = " (a 3D file with a single slice: save the radiograph as a 2D image)"
    return Problem(
        pid,
        modality,
        "dimension",
        f"image is {dim}D with size {tuple(size)} but {modality} images are {want}D{hint} ({path})",
    )


def check_mask_header(cohort: Cohort, pid: str, modality: str) -> Problem | None:
    """Problem with a reference mask's header (grid differs from the image), or None."""
    ipath, mpath = cohort.image_path(pid, modality), cohort.mask_path(pid, modality)
    try:
        ih, mh = image_header(ipath), image_header(mpath)
    except RuntimeError:
        return Problem(pid, modality, "unreadable_mask", f"cannot read {mpath}")
    if mh.GetDimension() != ih.GetDimension() or tuple(mh.GetSize()) != tuple(ih.GetSize()):
        return Problem(
            pid, modality, "mask_grid", f"mask size {mh.GetSize()} differs from image size {ih.GetSize()}"
        )
    if not np.allclose(mh.GetSpacing(), ih.GetSpacing(), rtol=1e-3, atol=1e-4) or not np.allclose(
        mh.GetDirection(), ih.GetDirection(), atol=1e-3
    ):
        return Problem(pid, modality, "mask_grid", "mask spacing or direction differs from the image")
    return None


def log_problems(problems: list[Problem], what: str) -> None:
    """One warning with the count, then one line per problem (the whole cohort, before any work)."""
    if not problems:
        return
    n = len({p.patient for p in problems})
    log.warning("%d patient%s with problems (%s):", n, "" if n == 1 else "s", what)
    for p in problems:
        log.warning("  patient %s / %s: %s", p.patient, p.modality, p.detail)


def check_training_cases(cohort: Cohort, modality: str) -> tuple[list[str], list[Problem], list[str]]:
    """Whole-cohort check for training: (usable patient ids, problems, ids without a reference mask)."""
    usable: list[str] = []
    problems: list[Problem] = []
    unlabelled: list[str] = []
    for pid in cohort.patient_ids():
        problem = check_image(cohort, pid, modality)
        if problem is not None:
            if problem.check != "missing_image":  # a missing modality is normal; anything else is a problem
                problems.append(problem)
            continue
        if not cohort.has_mask(pid, modality):
            unlabelled.append(pid)
            continue
        problem = check_mask_header(cohort, pid, modality)
        if problem is not None:
            problems.append(problem)
            continue
        usable.append(pid)
    return usable, problems, unlabelled


def dataset_json(modality: str, n_cases: int, cohort: Cohort | None, cases: list[str]) -> dict[str, Any]:
    """The dataset.json of a prepared dataset."""
    mapping = labelmap.training_labels()
    return {
        "name": f"cdeg_{modality}",
        "description": f"cdeg {modality} segmentation of cervical vertebrae and discs ({labels.CONVENTION_NAME})",
        "channel_names": {"0": CHANNEL_NAMES[modality]},
        "labels": labelmap.dataset_json_labels(),
        "numTraining": n_cases,
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "cdeg": {
            "modality": modality,
            "label_convention": labels.CONVENTION_NAME,
            "convention_to_training": {str(k): v for k, v in mapping.items()},
            "source_cohort": str(cohort.root) if cohort is not None else None,
            "cases": cases,
        },
    }


def write_case(cohort: Cohort, pid: str, modality: str, out: Path) -> Problem | None:
    """Write one image/label pair in canonical orientation; a bad mask gives a Problem instead."""
    import SimpleITK as sitk

    try:
        image = read_image(cohort.image_path(pid, modality), patient=pid)
        mask = read_image(cohort.mask_path(pid, modality), patient=pid)
    except CdegError as e:
        return Problem(pid, modality, "unreadable", e.one_line())
    arr = sitk.GetArrayViewFromImage(mask)
    bad = labels.invalid_labels(np.unique(arr).tolist())
    if bad:
        return Problem(
            pid,
            modality,
            "mask_labels",
            f"mask has labels {bad} outside the {labels.CONVENTION_NAME} convention",
        )
    if not np.any(arr):
        return Problem(pid, modality, "empty_mask", "reference mask is empty")
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


def prepare_dataset(cohort: str | Path, modality: str, out: str | Path) -> dict[str, Any]:
    """Write an nnU-Net raw dataset from the images of `cohort` that have reference masks.

    Parameters
    ----------
    cohort : Path
        Cohort folder (see :mod:`cdeg.cohort`); patients without a reference mask are skipped.
    modality : {"mri", "xray"}
        Which images to use.
    out : Path
        The dataset folder to write (imagesTr, labelsTr, dataset.json). Files of an earlier run in its
        imagesTr/labelsTr that are not part of this one are removed, so nnU-Net sees exactly this dataset.

    Returns
    -------
    dict
        ``cases`` (patient ids written), ``problems`` (qc rows), ``unlabelled`` (ids without a mask).

    Raises
    ------
    ValueError
        Unknown modality, or `out` inside the cohort.
    CohortError
        No usable case at all.
    """
    check_modality(modality)
    out = Path(out)
    coh = Cohort.open(cohort)
    check_output_folder(out, coh)
    usable, problems, unlabelled = check_training_cases(coh, modality)
    log_problems(problems, f"prepare {modality}")
    if unlabelled:
        log.info(
            "%d patient(s) have a %s image but no reference mask; not used for training",
            len(unlabelled),
            modality,
        )
    if not usable:
        raise CohortError(f"no patient has a usable {modality} image with a reference mask", path=coh.root)
    written: list[str] = []
    for pid in usable:
        problem = write_case(coh, pid, modality, out)
        if problem is None:
            written.append(pid)
        else:
            problems.append(problem)
            log.warning("patient %s / %s: %s; skipped", pid, modality, problem.detail)
    if not written:
        raise CohortError(f"no patient has a usable {modality} reference mask", path=coh.root)
    _remove_stale(out, written)
    write_json(out / "dataset.json", dataset_json(modality, len(written), coh, written))
    log.info("prepared %d %s case(s) in %s", len(written), modality, out)
    return {"cases": written, "problems": [p.row() for p in problems], "unlabelled": unlabelled}


def _remove_stale(out: Path, cases: list[str]) -> None:
    keep = {f"{c}_0000{FILE_ENDING}" for c in cases} | {f"{c}{FILE_ENDING}" for c in cases}
    for sub in ("imagesTr", "labelsTr"):
        for f in (out / sub).glob(f"*{FILE_ENDING}"):
            if f.name not in keep:
                f.unlink()
