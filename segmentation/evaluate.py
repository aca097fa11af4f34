"""`cdeg segment evaluate`: Dice, HD95 and level identification of predicted masks against references.

Metrics, per patient, modality and label present in the reference or the prediction:

* Dice = 2 |P n R| / (|P| + |R|); 0 when the label is in only one of the two.
* HD95 (mm): the 95th percentile of the symmetric surface distances, i.e. of the distances from every
  surface voxel of P to the surface of R together with those from R to P (the MedPy definition),
  computed with the voxel spacing; undefined (null) when either mask lacks the label.
* Level identification: a patient's mask is correctly named when every predicted structure lies
  mostly on the reference structure of the same name: for each predicted label L, the reference label
  covering most of L's foreground-overlapping voxels is L. A predicted structure lying on no
  reference structure at all is a naming error too. Levels the prediction misses entirely are counted
  separately, as detection (``levels_missed``), not as naming errors.
* Identification rate (VerSe's definition, per structure): the fraction of reference structures whose
  predicted centroid lies within 20 mm of theirs and closer to theirs than to any other reference
  structure of the same kind. It judges position, not outline, and is what published spine segmenters
  report, so it allows comparison with them; the patient-level naming rule above is stricter.

Summary per modality: mean Dice and HD95 over vertebrae and over discs (over all patient-label pairs
where the reference has the label), per level, the fraction of patients correctly named, and the number
of reference masks without a prediction (counted as not correctly named, excluded from Dice means).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation.geometry import same_grid

from cdeg import labels
from cdeg.cohort import COHORT_JSON, MASKS_DIR, MODALITIES, mask_path, parse_modalities
from cdeg.errors import CdegError
from cdeg.io import read_image, write_json

log = logging.getLogger(__name__)

#: VerSe's identification radius: a predicted centroid further than this from the reference one is not identified.
ID_MAX_DISTANCE_MM = 20.0


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    a, b = int(pred.sum()), int(ref.sum())
    if a + b == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / (a + b)


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float | None:
    """95th percentile symmetric surface distance in mm (None when either mask is empty)."""
    from scipy import ndimage

    if not pred.any() or not ref.any():
        return None
    # Crop to the joint bounding box (plus a margin) so that the distance transforms stay small.
    both = pred | ref
    idx = np.nonzero(both)
    sl = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    p, r = pred[sl], ref[sl]
    sp, sr = _surface(p), _surface(r)
    dt_r = ndimage.distance_transform_edt(~sr, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    d = np.concatenate([dt_r[sp], dt_p[sr]])
    return float(np.percentile(d, 95))


def _centroids_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> dict[int, np.ndarray]:
    from scipy import ndimage

    present = [int(v) for v in np.unique(mask) if v]
    centres = ndimage.center_of_mass(np.ones(mask.shape, np.uint8), mask, present)
    return {lab: np.asarray(c) * np.asarray(spacing) for lab, c in zip(present, centres, strict=True)}


def identification(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, Any]:
    """VerSe's identification of each reference structure (Sekuboyina et al., Med Image Anal 2021).

    A reference structure is identified when the prediction has its label, the predicted centroid lies
    within :data:`ID_MAX_DISTANCE_MM` of the reference centroid, and of all reference structures of the same
    kind (vertebra or disc) that one's centroid is the closest. Unlike :func:`naming` it judges where a
    structure is, not how well it is outlined: a disc in the right place but drawn a few mm too thick or too
    low is identified.
    """
    cp, cr = _centroids_mm(pred, spacing), _centroids_mm(ref, spacing)
    not_identified = []
    for lab in labels.sort_labels(set(cr)):
        ok = False
        if lab in cp:
            same_kind = [r for r in cr if labels.is_disc(r) == labels.is_disc(lab)]
            dist = {r: float(np.linalg.norm(cp[lab] - cr[r])) for r in same_kind}
            ok = dist[lab] <= ID_MAX_DISTANCE_MM and min(dist, key=dist.__getitem__) == lab
        if not ok:
            not_identified.append(labels.name_of(lab))
    return {"n_reference_structures": len(cr), "not_identified": not_identified}


def naming(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Level identification of one mask: misnamed predicted labels (with what they lie on) and missed levels."""
    misnamed = []
    pred_labels = [int(v) for v in np.unique(pred) if v]
    ref_labels = {int(v) for v in np.unique(ref) if v}
    for lab in pred_labels:
        under = ref[pred == lab]
        under = under[under > 0]
        if under.size == 0:
            misnamed.append({"predicted": labels.name_of(lab), "lies_on": None})
            continue
        values, counts = np.unique(under, return_counts=True)
        best = int(values[np.argmax(counts)])
        if best != lab:
            misnamed.append({"predicted": labels.name_of(lab), "lies_on": labels.name_of(best)})
    missed = [labels.name_of(v) for v in labels.sort_labels(ref_labels - set(pred_labels))]
    return {"correct": not misnamed, "misnamed": misnamed, "levels_missed": missed}


def evaluate_case(pred_img: Any, ref_img: Any) -> dict[str, Any]:
    """Per-label Dice/HD95 and naming of one predicted mask against its reference (SimpleITK images)."""
    import SimpleITK as sitk

    problem = same_grid(pred_img, ref_img)
    if problem is not None:
        raise CdegError(f"prediction and reference are on different grids ({problem})")
    pred = sitk.GetArrayFromImage(pred_img)
    ref = sitk.GetArrayFromImage(ref_img)
    spacing = tuple(float(s) for s in pred_img.GetSpacing()[::-1])
    bad = labels.invalid_labels(np.unique(pred).tolist()) + labels.invalid_labels(np.unique(ref).tolist())
    if bad:
        raise CdegError(f"labels {sorted(set(bad))} are outside the {labels.CONVENTION_NAME} convention")
    per_label = {}
    for lab in labels.sort_labels(
        {int(v) for v in np.unique(pred) if v} | {int(v) for v in np.unique(ref) if v}
    ):
        p, r = pred == lab, ref == lab
        per_label[labels.name_of(lab)] = {
            "dice": round(dice(p, r), 5),
            "hd95_mm": None if (h := hd95(p, r, spacing)) is None else round(h, 3),
            "in_reference": bool(r.any()),
            "in_prediction": bool(p.any()),
        }
    return {"labels": per_label, **naming(pred, ref), **identification(pred, ref, spacing)}


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(vals)), 5) if vals else None


def summarise(cases: dict[str, dict[str, Any]], n_missing: int) -> dict[str, Any]:
    """Means over vertebrae, discs and per level, and the level-identification rate, for one modality."""
    by_kind: dict[str, dict[str, list[float]]] = {
        k: {"dice": [], "hd95_mm": []} for k in ("vertebra", "disc")
    }
    by_level: dict[str, dict[str, list[float]]] = {}
    for case in cases.values():
        for name, m in case["labels"].items():
            if not m["in_reference"]:
                continue
            kind = labels.structure(name).kind
            by_kind[kind]["dice"].append(m["dice"])
            by_kind[kind]["hd95_mm"].append(m["hd95_mm"])
            lv = by_level.setdefault(name, {"dice": [], "hd95_mm": []})
            lv["dice"].append(m["dice"])
            lv["hd95_mm"].append(m["hd95_mm"])
    n_eval = len(cases)
    n_correct = sum(1 for c in cases.values() if c["correct"])
    n_structures = sum(c["n_reference_structures"] for c in cases.values())
    n_identified = n_structures - sum(len(c["not_identified"]) for c in cases.values())
    return {
        "n_evaluated": n_eval,
        "n_missing_prediction": n_missing,
        "level_identification": round(n_correct / (n_eval + n_missing), 5) if n_eval + n_missing else None,
        "n_correctly_named": n_correct,
        "n_levels_missed": sum(len(c["levels_missed"]) for c in cases.values()),
        "identification_rate_verse": round(n_identified / n_structures, 5) if n_structures else None,
        "n_structures_identified": n_identified,
        "n_reference_structures": n_structures,
        "dice_vertebrae_mean": _mean(by_kind["vertebra"]["dice"]),
        "dice_discs_mean": _mean(by_kind["disc"]["dice"]),
        "hd95_vertebrae_mean_mm": _mean(by_kind["vertebra"]["hd95_mm"]),
        "hd95_discs_mean_mm": _mean(by_kind["disc"]["hd95_mm"]),
        "per_level": {
            name: {"dice_mean": _mean(v["dice"]), "hd95_mean_mm": _mean(v["hd95_mm"]), "n": len(v["dice"])}
            for name, v in sorted(by_level.items(), key=lambda kv: labels.label_of(kv[0]))
        },
    }


def reference_root(ref: str | Path) -> Path:
    """A cohort folder's masks/ folder, or `ref` itself when it is a mask folder."""
    ref = Path(ref)
    if not ref.is_dir():
        raise CdegError("reference folder does not exist", path=ref)
    return ref / MASKS_DIR if (ref / COHORT_JSON).is_file() else ref


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path,
    modality: str | None = None,
) -> dict[str, Any]:
    """Compare predicted masks with reference masks; write and return the metrics.

    Parameters
    ----------
    pred : Path
        Mask folder written by `cdeg segment predict` (``<patient_id>/<modality>.nii.gz``).
    ref : Path
        A cohort folder (its masks/ are used) or a mask folder in the same layout.
    out : Path
        JSON file to write.
    modality : str, optional
        "mri", "xray" or "mri,xray"; default: every modality with reference masks.

    Returns
    -------
    dict
        ``{"patients": {pid: {modality: case}}, "summary": {modality: summary}, "problems": [...]}``.
    """
    modalities = parse_modalities(modality)
    pred_root, ref_root = Path(pred), reference_root(ref)
    if not pred_root.is_dir():
        raise CdegError("prediction folder does not exist", path=pred_root)
    patients: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    problems: list[str] = []
    ref_ids = sorted(p.name for p in ref_root.iterdir() if p.is_dir())
    for mod in modalities:
        cases: dict[str, dict[str, Any]] = {}
        n_missing = 0
        for pid in ref_ids:
            rpath = mask_path(ref_root, pid, mod)
            if not rpath.is_file():
                continue
            ppath = mask_path(pred_root, pid, mod)
            if not ppath.is_file():
                n_missing += 1
                problems.append(f"patient {pid} / {mod}: no predicted mask")
                continue
            try:
                ref_img, pred_img = read_image(rpath, patient=pid), read_image(ppath, patient=pid)
                if pred_img.GetDimension() != MODALITIES[mod]:
                    raise CdegError(f"predicted mask is {pred_img.GetDimension()}D", patient=pid, path=ppath)
                cases[pid] = evaluate_case(pred_img, ref_img)
            except CdegError as e:
                n_missing += 1
                problems.append(f"patient {pid} / {mod}: {e.one_line()}")
                continue
            patients.setdefault(pid, {})[mod] = cases[pid]
        if cases or n_missing:
            summary[mod] = summarise(cases, n_missing)
    for p in problems:
        log.warning("%s", p)
    if not summary:
        raise CdegError(f"no reference mask of {', '.join(modalities)} found", path=ref_root)
    report = {
        "pred": str(pred_root.resolve()),
        "ref": str(ref_root.resolve()),
        "summary": summary,
        "patients": patients,
        "problems": problems,
    }
    write_json(Path(out), report)
    for mod, s in summary.items():
        log.info(
            "%s: %d evaluated, level identification %s, Dice vertebrae %s discs %s, HD95 vertebrae %s mm",
            mod,
            s["n_evaluated"],
            s["level_identification"],
            s["dice_vertebrae_mean"],
            s["dice_discs_mean"],
            s["hd95_vertebrae_mean_mm"],
        )
    return report
