"""`cdeg segment suggest`: which masks of a mask folder to correct first, worst first, with the reasons in words.

Evidence per patient and modality, each from a file the folder already holds:

* QC findings (qc.csv of `cdeg segment predict`): levels renamed, duplicates, fragments removed, a patient
  that could not be segmented (the manifest's status ``failed``/``empty``, or skipped for a bad image).
* The network's doubt (uncertainty.csv of `cdeg segment predict`): the worst structure's mean confidence,
  the largest share of low-confidence voxels, and, where predict ran with ``predict.disagreement``, the
  worst Dice between unmirrored and mirrored passes and between each fold and the ensemble.
* Anatomical plausibility of the mask itself, with no network (so folders of `cdeg segment import-masks` or
  a cohort's reference masks are ranked too): levels missing between the top and bottom structure (or at
  an end where most masks of the folder have that level), a level found twice far apart or with stray
  fragments (:func:`cdeg.segmentation.postprocess.find_instances`, the components predict's repair looks
  at), structures out of cranio-caudal order (by the anterior column, as the repair orders them), and
  structure volumes far from their level's median over the folder.

Score (weights in the ``suggest`` section of configs/segment.yaml, :class:`SuggestOptions`)::

    score = sum over the mask's findings of their weight
          + sum over components c of weight_c * z_c

Findings are the QC rows (weight by check), each missing level, duplicate, fragmented level, order
inversion and volume outlier. The components are the confidence, low-confidence, flip and fold
disagreement values, each a robust z over the folder's patients of the same modality,
``(x - median) / MAD_normal`` (:func:`robust_z`), oriented so that larger is worse, and ``volume``: the mean
|robust z| of the mask's structure volumes against their levels. A component a mask lacks (no
uncertainty.csv, one fold) adds 0. A mask as doubtful as the folder's typical one scores about 0 from the
components; a mask more confident than typical scores below.

Volumes are corrected for the patient's size (:func:`_volume_z`), so that a tall patient's levels are not
outliers, and the robust SD of each level is floored at ``volume_min_rel_sd`` of its median.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation import geometry
from cdeg.segmentation.postprocess import find_instances
from cdeg.segmentation.presets import PostprocessOptions, SegmentConfig, SuggestOptions, load_segment_config

from cdeg import labels
from cdeg.cohort import ID_COLUMN, MODALITIES, check_modality, mask_path
from cdeg.errors import CdegError
from cdeg.io import read_image, read_table, write_table
from cdeg.outputs import MaskFolder

log = logging.getLogger(__name__)

#: Continuous components: name -> (uncertainty.csv column, whether low values are bad, SuggestOptions weight).
COMPONENTS: dict[str, tuple[str, bool, str]] = {
    "confidence": ("mean_confidence", True, "confidence_weight"),
    "low_confidence": ("low_confidence_share", False, "low_confidence_weight"),
    "flips": ("flip_dice", True, "flip_weight"),
    "folds": ("fold_dice", True, "fold_weight"),
}
#: How a component's worst structure is named among the reasons.
_COMPONENT_WORDS = {
    "confidence": "low confidence ({v:.2f})",
    "low_confidence": "{v:.0%} of voxels below the confidence threshold",
    "flips": "mirrored input disagrees (Dice {v:.2f})",
    "folds": "folds disagree (Dice {v:.2f})",
}
#: Manifest statuses of a patient without a usable mask.
NO_MASK = ("failed", "empty")
#: qc.csv check of a modality the patient simply lacks: not a mask to correct.
MISSING_IMAGE = "missing_image"
#: The fragments finding of postprocess: "small extra components removed: C3 (40 voxels), C4 (2 voxels)".
_FRAGMENT = re.compile(r"(C\d(?:-[CT]\d)?|T1) \((\d+) voxels\)")
#: Extra columns of the written table: the score's parts.
PART_COLUMNS = ("findings", "volume", *COMPONENTS)


@dataclass
class Evidence:
    """What speaks against one patient's mask of one modality."""

    patient_id: str
    modality: str
    findings: list[tuple[float, str]] = field(default_factory=list)  # (weight, words)
    worst: dict[str, tuple[float, str]] = field(default_factory=dict)  # component -> (value, structure)
    volumes: dict[str, float] = field(default_factory=dict)  # structure -> mm3 (2D: mm2)


def robust_z(x: np.ndarray, floor: float | np.ndarray = 0.0) -> np.ndarray:
    """``(x - median) / MAD_normal``, NaN kept; 0 everywhere when all values are equal.

    MAD_normal is the median absolute deviation divided by the standard normal quantile at 0.75 (about
    0.67449), which makes it estimate the standard deviation of normal data (scipy.stats.median_abs_deviation,
    ``scale="normal"``).
    """
    from scipy.stats import median_abs_deviation

    x = np.asarray(x, dtype=float)
    med = np.nanmedian(x) if np.isfinite(x).any() else np.nan
    scale = np.maximum(median_abs_deviation(x, scale="normal", nan_policy="omit"), floor)
    if np.isfinite(scale) and scale <= 0:
        # More than half the values equal: the MAD is 0 and would hide the rest. The mean absolute deviation
        # from the median, times sqrt(pi / 2) (E|X - mu| = sigma sqrt(2 / pi) for normal data), still sees them.
        scale = np.sqrt(np.pi / 2) * np.nanmean(np.abs(x - med))
    if not np.isfinite(scale) or scale <= 0:
        return np.where(np.isfinite(x), 0.0, np.nan)
    return (x - med) / scale


def _structure_words(name: str) -> str:
    return f"{name} disc" if labels.is_disc(labels.label_of(name)) else name


def _read_uncertainty(folder: MaskFolder) -> Any:
    path = folder.uncertainty_csv
    return read_table(path, dtype={ID_COLUMN: str}) if path.is_file() else None


def _qc_evidence(ev: Evidence, qc: Any, opts: SuggestOptions) -> None:
    """The patient's qc.csv rows as findings (weight by check)."""
    if qc is None:
        return
    rows = qc[(qc[ID_COLUMN] == ev.patient_id) & (qc["modality"] == ev.modality)]
    for check, detail in zip(rows["check"], rows["detail"], strict=True):
        w = opts.qc_weights.get(str(check), opts.qc_default_weight)
        if w > 0:
            ev.findings.append((w, f"QC {check}: {str(detail)[:160]}"))


def _uncertainty_evidence(ev: Evidence, table: Any) -> None:
    """Per component, the patient's worst structure value from uncertainty.csv."""
    if table is None:
        return
    rows = table[(table[ID_COLUMN] == ev.patient_id) & (table["modality"] == ev.modality)]
    for comp, (column, low_is_bad, _) in COMPONENTS.items():
        if column not in rows:
            continue
        values = rows[column].astype(float)
        if values.notna().any():
            i = values.idxmin() if low_is_bad else values.idxmax()
            ev.worst[comp] = (float(values[i]), str(rows.loc[i, "structure"]))


def _mask_evidence(ev: Evidence, path: Path, post: PostprocessOptions, opts: SuggestOptions) -> set[str]:
    """Duplicates, fragments and order of the mask's structures; their relative volumes. Returns the levels
    present (missing levels need the whole folder: :func:`_missing_levels`)."""
    arr, spacing = _canonical_mask(path, ev)
    si = geometry.si_axis(ev.modality)
    instances, fragments = find_instances(arr, spacing, si, None, post)
    for f in fragments:
        for name, n in _FRAGMENT.findall(f.detail):
            if int(n) >= post.min_voxels:  # fewer voxels: rasterisation noise, as for the repair
                words = f"{_structure_words(name)}: stray fragment ({n} voxels)"
                ev.findings.append((opts.fragment_weight, words))
    voxel = float(np.prod(spacing))
    for inst in instances:
        name = labels.name_of(inst.label)
        ev.volumes[name] = ev.volumes.get(name, 0.0) + inst.size * voxel
    for lab in sorted({i.label for i in instances if i.duplicate_of is not None}):
        copies = sorted(i.si_center for i in instances if i.label == lab)
        ev.findings.append(
            (
                opts.duplicate_weight,
                f"{labels.name_of(lab)} found {len(copies)} times ({copies[-1] - copies[0]:.0f} mm apart)",
            )
        )
    main = [i for i in instances if i.duplicate_of is None]  # sorted by the anterior column, top first
    for above, below in itertools.pairwise(main):
        if above.order > below.order:
            ev.findings.append(
                (
                    opts.order_weight,
                    f"{labels.name_of(above.label)} lies above {labels.name_of(below.label)}",
                )
            )
    return set(ev.volumes)


def _canonical_mask(path: Path, ev: Evidence) -> tuple[np.ndarray, tuple[float, ...]]:
    import SimpleITK as sitk

    image = read_image(path, patient=ev.patient_id)
    if image.GetDimension() != MODALITIES[ev.modality]:
        raise CdegError(
            f"{ev.modality} masks are {MODALITIES[ev.modality]}D", patient=ev.patient_id, path=path
        )
    canon, _ = geometry.to_canonical(image, ev.modality)
    arr = sitk.GetArrayFromImage(canon).astype(np.int32)
    bad = labels.invalid_labels(np.unique(arr))
    if bad:
        raise CdegError(f"values {bad} are not in the label convention", patient=ev.patient_id, path=path)
    return arr, tuple(float(s) for s in canon.GetSpacing()[::-1])


def _missing_levels(present: Mapping[str, set[str]], opts: SuggestOptions) -> dict[str, list[str]]:
    """Per patient, the levels missing between its top and bottom structure, and at the ends those that at
    least ``expected_share`` of the folder's masks have."""
    orders = {pid: sorted(labels.structure(n).order for n in names) for pid, names in present.items()}
    share = {
        s.order: sum(s.name in names for names in present.values()) / max(len(present), 1)
        for s in labels.STRUCTURES
    }
    out = {}
    for pid, o in orders.items():
        if not o:
            continue
        inner = set(range(o[0], o[-1] + 1))
        ends = {k for k, v in share.items() if v >= opts.expected_share}
        missing = sorted((inner | ends) - set(o))
        out[pid] = [labels.STRUCTURES[k].name for k in missing]
    return out


def _volume_z(evidence: list[Evidence], opts: SuggestOptions) -> dict[str, dict[str, float]]:
    """patient -> structure -> robust z of its size-corrected volume against the same level over the folder.

    A patient's size factor (per kind) is the median over its structures of volume / the level's median
    volume; a structure's corrected volume is volume / (level median x size factor). Medians, so that one
    damaged structure changes neither its patient's factor nor its level's centre.
    """
    level_median = {
        s.name: float(np.median([ev.volumes[s.name] for ev in evidence if s.name in ev.volumes]))
        for s in labels.STRUCTURES
        if sum(s.name in ev.volumes for ev in evidence) >= opts.min_patients
    }
    corrected: dict[str, dict[str, float]] = {}
    for ev in evidence:
        corrected[ev.patient_id] = {}
        for kind in ("vertebra", "disc"):
            ratio = {
                k: v / level_median[k]
                for k, v in ev.volumes.items()
                if k in level_median and labels.structure(k).kind == kind
            }
            if ratio:
                factor = float(np.median(list(ratio.values())))
                corrected[ev.patient_id].update({k: r / factor for k, r in ratio.items()})
    out: dict[str, dict[str, float]] = {ev.patient_id: {} for ev in evidence}
    for name in level_median:
        have = [pid for pid, c in corrected.items() if name in c]
        x = np.array([corrected[pid][name] for pid in have])
        z = robust_z(x, floor=opts.volume_min_rel_sd * float(np.median(x)))
        for pid, v in zip(have, z, strict=True):
            out[pid][name] = float(v)
    return out


def _score_modality(
    evidence: list[Evidence], present: dict[str, set[str]], opts: SuggestOptions
) -> list[dict]:
    """The rows of one modality: score, its parts and the reasons, worst reason first."""
    for pid, missing in _missing_levels(present, opts).items():
        ev = next(e for e in evidence if e.patient_id == pid)
        ev.findings += [(opts.missing_level_weight, f"{name} missing") for name in missing]
    vz = _volume_z(evidence, opts)
    comp_z: dict[str, np.ndarray] = {}
    for comp, (_, low_is_bad, _) in COMPONENTS.items():
        x = np.array([ev.worst.get(comp, (np.nan, ""))[0] for ev in evidence])
        x = -x if low_is_bad else x  # larger = worse
        enough = np.isfinite(x).sum() >= opts.min_patients
        comp_z[comp] = np.nan_to_num(robust_z(x), nan=0.0) if enough else np.zeros(len(evidence))
    rows = []
    for i, ev in enumerate(evidence):
        reasons = list(ev.findings)
        for name, z in vz.get(ev.patient_id, {}).items():
            if abs(z) >= opts.volume_z:
                side = "above" if z > 0 else "below"
                words = f"{_structure_words(name)} volume {abs(z):.1f} robust SD {side} the median"
                reasons.append((opts.volume_outlier_weight, words))
        volume = float(np.mean(np.abs(list(vz[ev.patient_id].values())))) if vz.get(ev.patient_id) else 0.0
        parts = {"findings": sum(w for w, _ in reasons), "volume": opts.volume_weight * volume}
        for comp, (_, _, weight) in COMPONENTS.items():
            z = float(comp_z[comp][i])
            parts[comp] = getattr(opts, weight) * z
            if z >= opts.reason_z and comp in ev.worst:
                value, structure = ev.worst[comp]
                words = _COMPONENT_WORDS[comp].format(v=value)
                reasons.append((parts[comp], f"{_structure_words(structure)}: {words}"))
        reasons.sort(key=lambda r: -r[0])
        rows.append(
            {
                ID_COLUMN: ev.patient_id,
                "modality": ev.modality,
                "score": round(sum(parts.values()), 3),
                "reasons": "; ".join(words for _, words in reasons),
                **{k: round(v, 3) for k, v in parts.items()},
            }
        )
    return rows


def _folder_modalities(root: Path, modality: str | None, manifests: Mapping[str, Any]) -> list[str]:
    if modality is not None:
        return [check_modality(modality)]
    found = [m for m in MODALITIES if m in manifests or any(root.glob(f"*/{m}.nii.gz"))]
    if not found:
        raise CdegError("no masks (<patient_id>/<modality>.nii.gz) in the folder", path=root)
    return found


def _patients(
    root: Path, modality: str, manifest: Mapping[str, Any] | None, qc: Any
) -> dict[str, str | None]:
    """patient -> why it has no mask (None: it has one) for every patient with a mask or a failed one."""
    out: dict[str, str | None] = {
        p.name: None
        for p in sorted(root.iterdir())
        if p.is_dir() and mask_path(root, p.name, modality).is_file()
    }
    for pid, st in (manifest or {}).get("patients", {}).items():
        pid = str(pid)
        if pid in out or st.get("status") not in (*NO_MASK, "skipped"):
            continue
        if st.get("status") == "skipped" and qc is not None:
            checks = set(qc.loc[(qc[ID_COLUMN] == pid) & (qc["modality"] == modality), "check"])
            if checks <= {MISSING_IMAGE}:
                continue  # the patient has no image of this modality: nothing to correct
        out[pid] = str(st.get("reason") or st.get("status"))
    return out


def suggest(
    masks: str | Path,
    n: int | None = None,
    modality: str | None = None,
    out: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | SegmentConfig | None = None,
) -> Any:
    """Rank the masks of a mask folder by how likely they are wrong; write the `n` worst as a CSV.

    Parameters
    ----------
    masks : Path
        A mask folder of `cdeg segment predict` or `cdeg segment import-masks`, or any folder of
        ``<patient_id>/<modality>.nii.gz`` masks in the label convention (a cohort's ``masks/``).
    n : int, optional
        Rows to write (the worst `n`); None writes every mask.
    modality : {"mri", "xray"}, optional
        Rank one modality; default every modality with masks in the folder.
    out : Path, optional
        CSV to write; default ``suggest.csv`` in the mask folder.
    config : path, mapping or SegmentConfig, optional
        Keys of configs/segment.yaml overriding the shipped ``suggest`` (and ``postprocess``) sections.

    Returns
    -------
    pandas.DataFrame
        The written table: rank, patient_id, modality, score, reasons, then the score's parts (findings,
        volume, confidence, low_confidence, flips, folds), worst first.

    Raises
    ------
    ValueError
        `n` below 1.
    CdegError
        Not a folder, no masks in it, or a mask that is unreadable or holds values outside the convention.
    """
    import pandas as pd

    if n is not None and n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    cfg = load_segment_config(config)
    root = Path(masks)
    if not root.is_dir():
        raise CdegError("mask folder does not exist", path=root)
    folder = MaskFolder(root)
    content = folder.read()
    qc, table = content["qc"], _read_uncertainty(folder)
    rows: list[dict[str, Any]] = []
    for mod in _folder_modalities(root, modality, content["manifests"]):
        rows += _rank_modality(root, mod, content["manifests"].get(mod), qc, table, cfg)
    if not rows:
        raise CdegError(f"no {modality or ''} masks to rank in the folder".replace("  ", " "), path=root)
    ranked = pd.DataFrame(rows).sort_values(["score", ID_COLUMN], ascending=[False, True], kind="stable")
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked = ranked[[*MaskFolder.SUGGEST_COLUMNS, *PART_COLUMNS]].head(n).reset_index(drop=True)
    target = Path(out) if out is not None else folder.suggest_csv
    write_table(target, ranked)
    log.info("%d mask(s) ranked; the worst %d in %s", len(rows), len(ranked), target)
    return ranked


def _rank_modality(
    root: Path, modality: str, manifest: Mapping[str, Any] | None, qc: Any, table: Any, cfg: SegmentConfig
) -> list[dict[str, Any]]:
    """Evidence and scores of every mask of one modality (patients without a mask score ``no_mask_weight``)."""
    opts = cfg.suggest
    evidence: list[Evidence] = []
    present: dict[str, set[str]] = {}
    for pid, why in _patients(root, modality, manifest, qc).items():
        ev = Evidence(pid, modality)
        _qc_evidence(ev, qc, opts)
        if why is not None:
            ev.findings.append((opts.no_mask_weight, f"no mask: {why}"))
        else:
            present[pid] = _mask_evidence(ev, mask_path(root, pid, modality), cfg.postprocess, opts)
            _uncertainty_evidence(ev, table)
        evidence.append(ev)
    return _score_modality(evidence, present, opts) if evidence else []
