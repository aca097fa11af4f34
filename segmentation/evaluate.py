"""`cdeg segment evaluate`: Dice, surface distances and level identification of predicted masks.

Metrics, per patient, modality and label present in the reference or the prediction:

* Dice = 2 |P n R| / (|P| + |R|); 0 when the label is in only one of the two.
* Surface distances (mm, voxel spacing applied; null when either mask lacks the label). The surface of a
  mask is its voxels minus its erosion by the face-connected cross (MedPy's and MONAI's voxel surface);
  every surface voxel of P gets its distance to the surface of R and vice versa (two distance transforms
  per label, shared by the three metrics):

  - ``hd95_mm`` (JSON) / ``hd95_pooled_mm`` (CSV): the 95th percentile of the two directed sets pooled
    (MedPy's ``hd95``);
  - ``hd95_max_directed_mm`` (JSON) / ``hd95_mm`` (CSV): the larger of the two directed 95th percentiles
    (MONAI's and DeepMind surface-distance's robust Hausdorff distance, what other tools' papers report);
  - ``assd_mm``: the mean of all pooled surface distances (MONAI's symmetric average surface distance;
    MedPy's ``assd`` averages the two directed means instead).

  The written JSON repeats these definitions under ``"definitions"``.
* Level identification: a patient's mask is correctly named when every predicted structure lies
  mostly on the reference structure of the same name: for each predicted label L, the reference label
  covering most of L's foreground-overlapping voxels is L. A predicted structure lying on no
  reference structure at all is a naming error too. Levels the prediction misses entirely are counted
  separately, as detection (``levels_missed``), not as naming errors.
* Identification rate (VerSe's definition, per structure): the fraction of reference structures whose
  predicted centroid lies within 20 mm of theirs and closer to theirs than to any other reference
  structure of the same kind. It judges position, not outline, and is what published spine segmenters
  report, so it allows comparison with them; the patient-level naming rule above is stricter.

Summary per modality: mean Dice over vertebrae and over discs (over all patient-label pairs of the
evaluated patients where the reference has the label; a missed structure counts with Dice 0), means of
the three distances over *detected* structures only (in both masks), and next to them, per kind and per
level, the count of reference structures with no predicted structure (``n_missed``: those of evaluated
patients and all structures of reference masks without a usable prediction) and of predicted structures
with no reference one (``n_false_positive``); the fraction of patients correctly named; the number of
reference masks without a prediction (counted as not correctly named, excluded from Dice means).

Besides the JSON, a tidy CSV with the same stem (``evaluation.json`` -> ``evaluation.csv``): one row per
patient, modality and structure in the reference or the prediction (:data:`CSV_COLUMNS`), including the
reference structures of masks without a prediction (``present_in_pred`` False, Dice 0, no distances).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation.geometry import same_grid

from cdeg import labels
from cdeg.cohort import COHORT_JSON, MASKS_DIR, MODALITIES, mask_path, parse_modalities
from cdeg.errors import CdegError
from cdeg.io import read_image, write_table
from cdeg.outputs import write_manifest
from cdeg.progress import ProgressArg, track

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


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances in mm: (P's surface to R's, R's surface to P's); None when either is empty.

    One Euclidean distance transform per surface, cropped to the joint bounding box; every distance
    metric (:func:`distance_metrics`) is computed from these two arrays.
    """
    from scipy import ndimage

    if not pred.any() or not ref.any():
        return None
    # Crop to the joint bounding box (plus a margin) so that the distance transforms stay small.
    idx = np.nonzero(pred | ref)
    sl = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    sp, sr = _surface(pred[sl]), _surface(ref[sl])
    dt_r = ndimage.distance_transform_edt(~sr, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dt_r[sp], dt_p[sr]


#: The distance keys of a per-label result, in the order they are written.
DISTANCE_KEYS = ("hd95_mm", "hd95_max_directed_mm", "assd_mm")


def distance_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, float | None]:
    """HD95 in both definitions and ASSD (mm) of two boolean masks; all None when either mask is empty.

    Returns
    -------
    dict
        ``hd95_mm``: 95th percentile of the pooled directed distances; ``hd95_max_directed_mm``: the larger
        of the two directed 95th percentiles; ``assd_mm``: mean of the pooled distances.
    """
    d = surface_distances(pred, ref, spacing)
    if d is None:
        return dict.fromkeys(DISTANCE_KEYS)
    p_to_r, r_to_p = d
    pooled = np.concatenate([p_to_r, r_to_p])
    return {
        # MedPy medpy/metric/binary.py hd95 (loli/medpy@00ebacb4): numpy.percentile(numpy.hstack((hd1, hd2)), 95)
        # over the directed surface distances result->reference and reference->result.
        "hd95_mm": float(np.percentile(pooled, 95)),
        # MONAI monai/metrics/hausdorff_distance.py compute_hausdorff_distance (Project-MONAI/MONAI@003f71c2):
        # max(distance_1, distance_2), each np.percentile(directed surface distances, percentile); DeepMind
        # surface_distance/metrics.py compute_robust_hausdorff (google-deepmind/surface-distance@ee651c80):
        # max(perc_distance_gt_to_pred, perc_distance_pred_to_gt). DeepMind weights surface elements by area and
        # takes no interpolated percentile, so its values differ slightly from this voxel-surface (MONAI) one.
        "hd95_max_directed_mm": float(max(np.percentile(p_to_r, 95), np.percentile(r_to_p, 95))),
        # MONAI monai/metrics/surface_distance.py compute_average_surface_distance(symmetric=True)
        # (Project-MONAI/MONAI@91e6a881): mean of np.concatenate([surface_distance, surface_distance_2]).
        # MedPy's assd (medpy/metric/binary.py, loli/medpy@1809369b) is numpy.mean((asd(a, b), asd(b, a))), the mean
        # of the two directed means; it agrees with this one only when both surfaces have as many voxels.
        "assd_mm": float(pooled.mean()),
    }


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float | None:
    """95th percentile of the pooled symmetric surface distances in mm, MedPy's HD95 (None when a mask is empty)."""
    return distance_metrics(pred, ref, spacing)["hd95_mm"]


def _boxes(mask: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every label present in `mask` (one pass over the array)."""
    from scipy import ndimage

    found = ndimage.find_objects(mask.astype(np.int32, copy=False))
    return {lab: box for lab, box in enumerate(found, 1) if box is not None}


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...]:
    boxes = [x for x in (a, b) if x is not None]
    return tuple(
        slice(min(x[d].start for x in boxes), max(x[d].stop for x in boxes)) for d in range(len(boxes[0]))
    )


def _centroids_mm(
    mask: np.ndarray, spacing: tuple[float, ...], boxes: dict[int, tuple[slice, ...]] | None = None
) -> dict[int, np.ndarray]:
    """Centroid (mm) of every label of `mask`, each computed inside its bounding box."""
    boxes = _boxes(mask) if boxes is None else boxes
    out = {}
    for lab, box in boxes.items():
        idx = np.nonzero(mask[box] == lab)
        centre = [i.mean() + sl.start for i, sl in zip(idx, box, strict=True)]
        out[lab] = np.asarray(centre) * np.asarray(spacing)
    return out


def identification(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    boxes: tuple[dict[int, tuple[slice, ...]], dict[int, tuple[slice, ...]]] | None = None,
) -> dict[str, Any]:
    """VerSe's identification of each reference structure (Sekuboyina et al., Med Image Anal 2021).

    A reference structure is identified when the prediction has its label, the predicted centroid lies
    within :data:`ID_MAX_DISTANCE_MM` of the reference centroid, and of all reference structures of the same
    kind (vertebra or disc) that one's centroid is the closest. Unlike :func:`naming` it judges where a
    structure is, not how well it is outlined: a disc in the right place but drawn a few mm too thick or too
    low is identified.
    """
    pred_boxes, ref_boxes = boxes if boxes is not None else (None, None)
    cp, cr = _centroids_mm(pred, spacing, pred_boxes), _centroids_mm(ref, spacing, ref_boxes)
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


def naming(
    pred: np.ndarray,
    ref: np.ndarray,
    boxes: tuple[dict[int, tuple[slice, ...]], dict[int, tuple[slice, ...]]] | None = None,
) -> dict[str, Any]:
    """Level identification of one mask: misnamed predicted labels (with what they lie on) and missed levels.

    `boxes`: the :func:`_boxes` of `pred` and `ref` when the caller has them; each label is looked at inside
    its box, not over the whole image."""
    misnamed = []
    pred_boxes, ref_boxes = boxes if boxes is not None else (_boxes(pred), _boxes(ref))
    pred_labels = sorted(pred_boxes)
    ref_labels = set(ref_boxes)
    for lab in pred_labels:
        box = pred_boxes[lab]
        under = ref[box][pred[box] == lab]
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


def _label_values(arr: np.ndarray) -> set[int]:
    return {int(v) for v in np.unique(arr) if v and v != labels.IGNORE}


def _leave_out_unannotated(pred: np.ndarray, ref: np.ndarray) -> None:
    """Set the pixels the reference leaves unannotated (:data:`cdeg.labels.IGNORE`) to background in both.

    Nobody said what lies there (a mask drawn from corner points leaves the posterior elements open), so a
    prediction there is neither right nor wrong: those pixels count for no structure, as nnU-Net's own
    validation leaves ignore-label pixels out. A prediction never holds the value: one that does is refused.
    """
    if np.any(pred == labels.IGNORE):
        raise CdegError(
            f"the prediction holds the 'not annotated' value {labels.IGNORE}; only references may"
        )
    unannotated = ref == labels.IGNORE
    pred[unannotated] = labels.BACKGROUND
    ref[unannotated] = labels.BACKGROUND


def _check_labels(values: set[int]) -> None:
    bad = labels.invalid_labels(values)
    if bad:
        raise CdegError(f"labels {bad} are outside the {labels.CONVENTION_NAME} convention")


def evaluate_case(pred_img: Any, ref_img: Any) -> dict[str, Any]:
    """Per-label Dice, HD95 (both definitions), ASSD and naming of one predicted mask (SimpleITK images)."""
    import SimpleITK as sitk

    problem = same_grid(pred_img, ref_img)
    if problem is not None:
        raise CdegError(f"prediction and reference are on different grids ({problem})")
    pred = sitk.GetArrayFromImage(pred_img)
    ref = sitk.GetArrayFromImage(ref_img)
    _leave_out_unannotated(pred, ref)
    spacing = tuple(float(s) for s in pred_img.GetSpacing()[::-1])
    # One pass per mask finds every label's bounding box (no 'not annotated' value is left in either); each
    # label is then compared inside the union of its two boxes: the same Dice and distances (both masks lie
    # inside, and the box edge is surface either way) at a fraction of the whole-image cost.
    boxes = _boxes(pred), _boxes(ref)
    in_pred, in_ref = set(boxes[0]), set(boxes[1])
    _check_labels(in_pred | in_ref)
    per_label = {}
    for lab in labels.sort_labels(in_pred | in_ref):
        box = _union_box(boxes[0].get(lab), boxes[1].get(lab))
        p, r = pred[box] == lab, ref[box] == lab
        dist = distance_metrics(p, r, spacing)
        per_label[labels.name_of(lab)] = {
            "dice": round(dice(p, r), 5),
            **{k: None if v is None else round(v, 3) for k, v in dist.items()},
            "in_reference": lab in in_ref,
            "in_prediction": lab in in_pred,
        }
    return {"labels": per_label, **naming(pred, ref, boxes), **identification(pred, ref, spacing, boxes)}


def _missed_labels(ref: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per-label results of a reference mask that has no usable prediction: every structure missed."""
    return {
        labels.name_of(lab): {
            "dice": 0.0,
            **dict.fromkeys(DISTANCE_KEYS),
            "in_reference": True,
            "in_prediction": False,
        }
        for lab in labels.sort_labels(_label_values(ref))
    }


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(vals)), 5) if vals else None


#: Per-label keys whose means the summary reports.
_MEAN_KEYS = ("dice", *DISTANCE_KEYS)


def _tally() -> dict[str, Any]:
    return {**{k: [] for k in _MEAN_KEYS}, "n_reference": 0, "n_missed": 0, "n_false_positive": 0}


def _add(acc: dict[str, Any], m: dict[str, Any], evaluated: bool = True) -> None:
    """Count one per-label result; distances are None unless both masks have the label (detected only)."""
    if not m["in_reference"]:
        acc["n_false_positive"] += 1
        return
    acc["n_reference"] += 1
    acc["n_missed"] += not m["in_prediction"]
    if evaluated:  # a mask without prediction counts as missed, but not in the Dice means (as before)
        for k in _MEAN_KEYS:
            acc[k].append(m[k])


def _level_summary(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "dice_mean": _mean(v["dice"]),
        "hd95_mean_mm": _mean(v["hd95_mm"]),
        "hd95_max_directed_mean_mm": _mean(v["hd95_max_directed_mm"]),
        "assd_mean_mm": _mean(v["assd_mm"]),
        "n": len(v["dice"]),
        "n_reference": v["n_reference"],
        "n_missed": v["n_missed"],
        "n_false_positive": v["n_false_positive"],
    }


def _kind_summary(by_kind: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, plural in (("vertebra", "vertebrae"), ("disc", "discs")):
        v = by_kind[kind]
        out[f"dice_{plural}_mean"] = _mean(v["dice"])
        out[f"hd95_{plural}_mean_mm"] = _mean(v["hd95_mm"])
        out[f"hd95_max_directed_{plural}_mean_mm"] = _mean(v["hd95_max_directed_mm"])
        out[f"assd_{plural}_mean_mm"] = _mean(v["assd_mm"])
        out[f"n_reference_{plural}"] = v["n_reference"]
        out[f"n_missed_{plural}"] = v["n_missed"]
        out[f"n_false_positive_{plural}"] = v["n_false_positive"]
    out["n_missed"] = sum(v["n_missed"] for v in by_kind.values())
    out["n_false_positive"] = sum(v["n_false_positive"] for v in by_kind.values())
    return out


def summarise(
    cases: dict[str, dict[str, Any]],
    n_missing: int,
    unpredicted: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Means and counts over vertebrae, discs and per level, and the level-identification rate, for one modality.

    Dice means are over the reference structures of the evaluated patients (0 for a missed one). HD95 and
    ASSD means are over detected structures only (in both the reference and the prediction): a missed
    structure has no distance, so it is counted separately, in ``n_missed`` (per kind, per level and in
    total), next to ``n_false_positive`` (predicted structures with no reference one).

    Parameters
    ----------
    cases : dict
        Evaluated patients: ``{patient_id: evaluate_case(...)}``.
    n_missing : int
        Reference masks without a usable prediction.
    unpredicted : dict, optional
        ``{patient_id: per-label results}`` of those reference masks (see :func:`_missed_labels`); their
        structures count in ``n_reference`` and ``n_missed``, not in the means.
    """
    by_kind = {k: _tally() for k in ("vertebra", "disc")}
    by_level: dict[str, dict[str, Any]] = {}
    sources = [(c["labels"], True) for c in cases.values()]
    sources += [(per_label, False) for per_label in (unpredicted or {}).values()]
    for per_label, evaluated in sources:
        for name, m in per_label.items():
            _add(by_kind[labels.structure(name).kind], m, evaluated)
            _add(by_level.setdefault(name, _tally()), m, evaluated)
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
        **_kind_summary(by_kind),
        "per_level": {
            name: _level_summary(v)
            for name, v in sorted(by_level.items(), key=lambda kv: labels.label_of(kv[0]))
        },
    }


#: Columns of the tidy per-structure CSV, in order. Its ``hd95_mm`` is the JSON's ``hd95_max_directed_mm``
#: (what other tools' papers report), its ``hd95_pooled_mm`` the JSON's ``hd95_mm``.
CSV_COLUMNS = (
    "patient_id",
    "modality",
    "structure",
    "level",
    "dice",
    "hd95_mm",
    "assd_mm",
    "present_in_ref",
    "present_in_pred",
    "hd95_pooled_mm",
)

#: The definitions written into the JSON, so that a reader of the numbers need not guess which HD95 it is.
DEFINITIONS = {
    "surface": "voxels of a mask minus its erosion by the face-connected cross; distances in mm with the voxel "
    "spacing, from every surface voxel of one mask to the nearest surface voxel of the other",
    "hd95_mm": "95th percentile of the pooled surface distances pred->ref together with ref->pred (MedPy hd95); "
    "in the CSV: column hd95_pooled_mm",
    "hd95_max_directed_mm": "larger of the two directed 95th percentiles, pred->ref and ref->pred (MONAI "
    "compute_hausdorff_distance(percentile=95), DeepMind surface-distance compute_robust_hausdorff(.., 95)); "
    "what other tools' papers report; in the CSV: column hd95_mm",
    "assd_mm": "mean of the pooled surface distances pred->ref and ref->pred (MONAI "
    "compute_average_surface_distance(symmetric=True); MedPy assd averages the two directed means instead)",
    "dice": "2|P n R| / (|P| + |R|); 0 for a structure in only one mask",
    "means": "Dice means over the evaluated patients' reference structures; HD95 and ASSD means over detected "
    "structures only (in reference and prediction); missed ones are counted in n_missed",
    "n_missed": "reference structures with no predicted structure of that name, including every structure of "
    "reference masks without a usable prediction (as in the CSV)",
    "n_false_positive": "predicted structures with no reference structure of that name",
}


def _csv_rows(pid: str, mod: str, per_label: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "patient_id": pid,
            "modality": mod,
            "structure": labels.structure(name).kind,
            "level": name,
            "dice": m["dice"],
            "hd95_mm": m["hd95_max_directed_mm"],
            "assd_mm": m["assd_mm"],
            "present_in_ref": m["in_reference"],
            "present_in_pred": m["in_prediction"],
            "hd95_pooled_mm": m["hd95_mm"],
        }
        for name, m in per_label.items()
    ]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the tidy per-structure table, sorted by patient, modality and cranio-caudal level."""
    import pandas as pd

    rows = sorted(rows, key=lambda r: (r["patient_id"], r["modality"], labels.structure(r["level"]).order))
    write_table(path, pd.DataFrame(rows, columns=list(CSV_COLUMNS)))


def reference_root(ref: str | Path) -> Path:
    """A cohort folder's masks/ folder, or `ref` itself when it is a mask folder."""
    ref = Path(ref)
    if not ref.is_dir():
        raise CdegError("reference folder does not exist", path=ref)
    return ref / MASKS_DIR if (ref / COHORT_JSON).is_file() else ref


def _problem(e: CdegError, path: Path) -> str:
    """A problem as ``FILE: reason`` (the caller puts the patient and modality in front)."""
    return f"{e.path or path}: {' '.join(e.message.split())}"


def _one_case(rpath: Path, ppath: Path, pid: str, mod: str) -> tuple[dict | None, dict | None, str | None]:
    """Evaluate one mask pair: ``(case, None, None)``, or ``(None, missed, problem)`` without a usable prediction.

    ``missed`` holds the reference structures, all missed (:func:`_missed_labels`); it is None when the
    reference itself cannot be used. ``problem`` names the file and the reason.
    """
    import SimpleITK as sitk

    try:
        ref_img = read_image(rpath, patient=pid)
        ref = sitk.GetArrayFromImage(ref_img)
        _check_labels(_label_values(ref))
    except CdegError as e:
        return None, None, _problem(e, rpath)
    if not ppath.is_file():
        return None, _missed_labels(ref), f"{ppath}: no predicted mask"
    try:
        pred_img = read_image(ppath, patient=pid)
        if pred_img.GetDimension() != MODALITIES[mod]:
            raise CdegError(f"predicted mask is {pred_img.GetDimension()}D", path=ppath)
        return evaluate_case(pred_img, ref_img), None, None
    except CdegError as e:
        return None, _missed_labels(ref), _problem(e, ppath)


def _evaluate_modality(
    pred_root: Path, ref_root: Path, ref_ids: list[str], mod: str, progress: ProgressArg = None, jobs: int = 1
) -> tuple[dict[str, Any], dict[str, Any], int, list[str]]:
    """Cases, reference structures without a usable prediction, their count, and problem lines of one modality."""
    cases: dict[str, Any] = {}
    unpredicted: dict[str, Any] = {}
    n_missing = 0
    problems: list[str] = []
    todo = [pid for pid in ref_ids if mask_path(ref_root, pid, mod).is_file()]
    args = [(mask_path(ref_root, pid, mod), mask_path(pred_root, pid, mod), pid, mod) for pid in todo]
    for pid, (case, missed, problem) in zip(todo, _cases(args, jobs, progress, mod), strict=True):
        if case is not None:
            cases[pid] = case
            continue
        n_missing += 1
        problems.append(f"patient {pid} / {mod}: {problem}")
        if missed is not None:
            unpredicted[pid] = missed
    return cases, unpredicted, n_missing, problems


def _cases(
    args: list[tuple[Path, Path, str, str]], jobs: int, progress: ProgressArg, mod: str
) -> Iterator[Any]:
    """:func:`_one_case` of each argument tuple, in order; in `jobs` processes when more than one."""
    workers = min((os.cpu_count() or 1) if jobs == 0 else jobs, len(args))
    if workers <= 1:
        yield from track((_one_case(*a) for a in args), progress, f"evaluate {mod}", total=len(args))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked process that inherited started BLAS threads can deadlock.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        results = ex.map(_one_case, *zip(*args, strict=True), chunksize=4)
        yield from track(results, progress, f"evaluate {mod}", total=len(args))


def _import_foreign(
    pred: Path, cohort: Path, out: Path, label_map: str | Path, modalities: tuple[str, ...]
) -> tuple[Path, tuple[str, ...]]:
    """Convert another tool's masks into ``<out stem>_masks/`` for every modality it has masks of."""
    from cdeg.segmentation.import_masks import import_masks

    from cdeg.errors import CohortError

    if not (cohort / COHORT_JSON).is_file():
        raise ValueError(
            "--label-map needs --ref to be a cohort folder: masks are checked against its images"
        )
    dest = out.parent / f"{out.stem}_masks"
    imported = []
    for mod in modalities:
        try:
            import_masks(cohort, pred, dest, label_map, modality=mod)
            imported.append(mod)
        except CohortError as e:  # no mask of this modality: counted as missing predictions if asked for
            log.warning("%s: %s", mod, e.one_line())
    return dest, tuple(imported)


def evaluate(
    pred: str | Path,
    ref: str | Path,
    out: str | Path,
    modality: str | None = None,
    label_map: str | Path | None = None,
    progress: ProgressArg = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Compare predicted masks with reference masks; write and return the metrics.

    Parameters
    ----------
    pred : Path
        Mask folder written by `cdeg segment predict` (``<patient_id>/<modality>.nii.gz``).
    ref : Path
        A cohort folder (its masks/) or a mask folder in the same layout.
    out : Path
        JSON file to write; the tidy per-structure CSV goes next to it with the same stem and ``.csv``.
    modality : str, optional
        "mri", "xray" or "mri,xray"; default: every modality with reference masks.
    label_map : str or Path, optional
        `pred` is another tool's output in its own layout and labels (``spineps``, ``totalspineseg``, ... or a
        label map file; :mod:`cdeg.label_maps`). `ref` must then be a cohort folder (the masks are checked
        against its images): they are converted with :func:`cdeg.segmentation.import_masks.import_masks`
        into ``<out stem>_masks/`` next to `out` (kept for review, with import_masks.csv and QC overlays) and
        evaluated from there.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).
    jobs : int
        Worker processes comparing patients at once (0 = all cores); the results do not depend on it.

    Returns
    -------
    dict
        ``{"definitions": {...}, "summary": {modality: summary}, "patients": {pid: {modality: case}},
        "problems": [...], "csv": path}``. Summary HD95/ASSD means are over detected structures only; the
        missed ones are counted in ``n_missed`` (see :func:`summarise`).
    """
    out = Path(out)
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise ValueError(f"--out {out} is the JSON file; the CSV is written next to it (give a .json name)")
    modalities = parse_modalities(modality)
    pred_root, ref_root = Path(pred), reference_root(ref)
    if not pred_root.is_dir():
        raise CdegError("prediction folder does not exist", path=pred_root)
    if not ref_root.is_dir():
        raise CdegError("no reference masks to compare with (the cohort has no masks/ folder)", path=ref_root)
    if label_map is not None:
        pred_root, imported = _import_foreign(pred_root, Path(ref), out, label_map, modalities)
        # Without --modality, evaluate what the tool segmented, not the modalities it never saw.
        modalities = modalities if modality is not None else (imported or modalities)
    patients: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    ref_ids = sorted(p.name for p in ref_root.iterdir() if p.is_dir())
    for mod in modalities:
        cases, unpredicted, n_missing, mod_problems = _evaluate_modality(
            pred_root, ref_root, ref_ids, mod, progress, jobs
        )
        problems += mod_problems
        for pid, case in cases.items():
            patients.setdefault(pid, {})[mod] = case
            rows += _csv_rows(pid, mod, case["labels"])
        for pid, missed in unpredicted.items():
            rows += _csv_rows(pid, mod, missed)
        if cases or n_missing:
            summary[mod] = summarise(cases, n_missing, unpredicted)
    for p in problems:
        log.warning("%s", p)
    if not summary:
        raise CdegError(f"no reference mask of {', '.join(modalities)} found", path=ref_root)
    report = {
        "pred": str(pred_root.resolve()),
        "ref": str(ref_root.resolve()),
        "csv": str(csv_path.resolve()),
        "definitions": dict(DEFINITIONS),
        "summary": summary,
        "patients": patients,
        "problems": problems,
    }
    write_csv(csv_path, rows)
    write_manifest(out, report, stage="segment")
    for mod, s in summary.items():
        log.info(
            "%s: %d evaluated, level identification %s, Dice vertebrae %s discs %s, HD95 vertebrae %s mm "
            "(max directed; detected only), %d structures missed, %d spurious",
            mod,
            s["n_evaluated"],
            s["level_identification"],
            s["dice_vertebrae_mean"],
            s["dice_discs_mean"],
            s["hd95_max_directed_vertebrae_mean_mm"],
            s["n_missed"],
            s["n_false_positive"],
        )
    return report
