"""`cdeg segment import-masks`: masks made by another segmenter, in cdeg's convention and layout.

SPINEPS, TotalSpineSeg and TotalSegmentator segment real MRI well; this stage lets their masks into cdeg.
It finds each patient's mask where the tool writes it (the label map's ``files`` globs: SPINEPS'
``derivatives*/**/*_seg-vert_msk.nii.gz``, TotalSpineSeg's ``step2_output/*.nii.gz``, TotalSegmentator's
file or folder of class files), converts its values with :func:`cdeg.label_maps.convert`, checks its grid
against the cohort image, and writes::

    MASK_DIR/<patient_id>/<modality>.nii.gz      mask in the cdeg convention, on the image's grid
    MASK_DIR/<patient_id>/<modality>_qc.png      overlay in the sagittal plane with level names
    MASK_DIR/import_masks.csv                    per patient and source value: what was mapped, merged,
                                                 named, dropped or flagged, and problems (tidy)
    MASK_DIR/import_masks_<modality>.json        manifest: label map, counts, per-patient status

Masks corrected in 3D Slicer or ITK-SNAP after `cdeg segment export` come back the same way (``--from slicer``
or ``itksnap``, :mod:`cdeg.segmentation.editors`): each file's segment or label names are its label map.

A mask file belongs to a patient when its name (less the tool's suffix), a folder above it, or its BIDS
subject equals the patient id, or its name equals the original file the cohort image came from
(``sources.csv`` of ``cdeg cohort init``). A mask stored on the axes of that original file is permuted onto
the cohort image's axes (cohort init writes images in the canonical orientation); a grid that then differs
by at most `geometry_tolerance_mm` is resampled nearest-neighbour with a warning, beyond it the patient is
refused, as in ``cdeg extract`` (:func:`cdeg.grid.conform_mask`). A problem with one patient (no mask,
ambiguous files, values the map does not list, a grid that does not fit) skips that patient with one log
line naming the patient and the file; the others are imported.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cdeg.segmentation import editors, geometry
from cdeg.segmentation.dataset import check_output_folder
from cdeg.segmentation.qc import write_qc_overlay

from cdeg import __version__, label_maps
from cdeg.cohort import ID_COLUMN, MODALITIES, Cohort, check_modality, mask_path
from cdeg.cohort_init import nifti_stem, read_sources
from cdeg.errors import CdegError, CohortError
from cdeg.grid import conform_mask
from cdeg.io import read_image, remove_stale_temporaries, write_image, write_table
from cdeg.outputs import MaskFolder, write_manifest
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

IMPORT_COLUMNS = (ID_COLUMN, "modality", "source", "value", "class", "action", "target", "voxels", "detail")
_BIDS_SUBJECT = re.compile(r"^(sub-[A-Za-z0-9]+)")
#: SPINEPS names its outputs <input entities>_mod-<input suffix>_seg-..._msk (spineps/seg_run.py).
_MOD_ENTITY = re.compile(r"_mod-([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Source:
    """Where one patient's foreign mask is: a label file, a folder of one file per class, or a file corrected
    in a segmentation editor (`editor`: ``slicer``, ``itksnap``; its own names decide the labels)."""

    path: Path
    per_class: bool = False
    editor: str | None = None


# --- finding the tool's files --------------------------------------------------------------------------------


def _globs(root: Path, lmap: label_maps.LabelMap, modality: str) -> list[str]:
    """The tool's globs for `modality`, also when `root` is the tool's own output folder (step2_output/)."""
    # A map without `files` for the modality reads cdeg's own layout; an empty list means class folders only.
    globs = list(lmap.files[modality]) if modality in lmap.files else [f"*/{modality}.nii.gz"]
    for g in list(globs):
        head, sep, rest = g.removeprefix("**/").partition("/")
        if sep and g.startswith("**/") and head == root.name and "*" not in head:
            globs.append(rest)  # --masks points at step2_output/ itself
    return globs


def _dimension(path: Path) -> int | None:
    """Image dimension from the header (None when unreadable: reading it later names the problem)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    # A radiograph stored as a one-slice 3D file is a 2D image.
    return 2 if len(size) == 3 and 1 in size else len(size)


def _candidates(root: Path, lmap: label_maps.LabelMap, modality: str) -> list[Source]:
    """Every mask of `modality` in the tool's layout under `root` (class-file folders count as one).

    Files of another dimension than the modality's are left out: an MRI mask is never a radiograph's.
    """
    files = sorted({p for g in _globs(root, lmap, modality) for p in root.glob(g) if p.is_file()})
    names = set(lmap.by_name())
    # TotalSegmentator without --ml writes a folder per case with one <class>.nii.gz per class.
    dirs = {p.parent for p in root.rglob("*.nii*") if p.is_file() and nifti_stem(p) in names}
    per_class_dirs = sorted(d for d in dirs if _class_files(d, names) >= 2)
    sources = [Source(d, per_class=True) for d in per_class_dirs]
    sources += [Source(f) for f in files if f.parent not in per_class_dirs]
    want = MODALITIES[modality]
    return [s for s in sources if _dimension(_first_file(s, names)) in (want, None)]


def _first_file(source: Source, names: set[str]) -> Path:
    if not source.per_class:
        return source.path
    return next(p for p in sorted(source.path.iterdir()) if p.is_file() and nifti_stem(p) in names)


def _class_files(folder: Path, names: set[str]) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and nifti_stem(p) in names)


def _with_variants(names: set[str]) -> set[str]:
    """Names plus their BIDS-subject and SPINEPS forms (sub-01_mod-T2w_seg-vert_msk came from sub-01_T2w)."""
    out = set(names)
    for k in names:
        out.add(_MOD_ENTITY.sub(r"_\1", k))
    return out


def _subjects(names: set[str]) -> set[str]:
    return {m.group(1) for k in names if (m := _BIDS_SUBJECT.match(k))}


def _keys(source: Source, root: Path, lmap: label_maps.LabelMap) -> tuple[set[str], set[str], set[str]]:
    """Names under which a mask may refer to its patient, most specific first.

    (file names, file names and their BIDS subject, folders above it and their BIDS subjects): the original
    image's name matches the first, a patient id the second, then the third.
    """
    rel = source.path.relative_to(root)
    folders = set(rel.parts[:-1]) | ({rel.parts[-1]} if source.per_class else set())
    stems: set[str] = set()
    if not source.per_class:
        stem = nifti_stem(source.path)
        stems = {stem} | {stem[: -len(x)] for x in lmap.strip_suffixes if stem.endswith(x)}
        stems = _with_variants(stems)
    return stems, stems | _subjects(stems), folders | _subjects(folders)


def locate(
    root: str | Path,
    lmap: label_maps.LabelMap,
    modality: str,
    patients: list[str],
    originals: dict[str, str] | None = None,
) -> tuple[dict[str, Source], dict[str, str], list[str]]:
    """Match the tool's mask files to patients.

    A patient's mask is the one file whose name is the patient's original image name (``sources.csv`` of
    ``cdeg cohort init``; names shared by several patients are not used), else whose name (less the tool's
    suffix) or BIDS subject is the patient id, else that lies in a folder named after the patient. At each
    step exactly one file must match; several are reported, never chosen between.

    Returns
    -------
    found : dict
        Patient id -> its mask.
    problems : dict
        Patient id -> why it has none (no file, several files).
    unmatched : list of str
        Mask files that belong to no patient (relative to `root`).
    """
    root = Path(root)
    originals = originals or {}
    shared = {o for o in originals.values() if list(originals.values()).count(o) > 1}
    sources = _candidates(root, lmap, modality)
    keyed = [(s, _keys(s, root, lmap)) for s in sources]
    found: dict[str, Source] = {}
    problems: dict[str, str] = {}
    used: set[Path] = set()
    for pid in patients:
        original = originals.get(pid)
        wanted = [{original} if original and original not in shared else set(), {pid}, {pid}]
        hits: list[Source] = []
        for tier, names in enumerate(wanted):
            hits = [s for s, keys in keyed if keys[tier] & names]
            if hits:
                break
        used.update(s.path for s in hits)
        if len(hits) == 1:
            found[pid] = hits[0]
        elif hits:
            shown = ", ".join(str(s.path.relative_to(root)) for s in hits[:4])
            problems[pid] = f"{len(hits)} masks match this patient ({shown}); keep one per patient"
        else:
            problems[pid] = (
                f"no {lmap.name} {modality} mask under {root} ({', '.join(_globs(root, lmap, modality))})"
            )
    unmatched = [str(s.path.relative_to(root)) for s in sources if s.path not in used]
    return found, problems, unmatched


# --- one patient ---------------------------------------------------------------------------------------------


def read_foreign(source: Source, lmap: label_maps.LabelMap, patient: str) -> Any:
    """The foreign mask as one SimpleITK label image (class files are combined by their map values)."""
    import SimpleITK as sitk

    if not source.per_class:
        return read_image(source.path, patient=patient)
    # Dropped classes are not read (other organs, the all-levels "vertebrae" class of total_mr): the
    # structures cdeg uses are what the combined mask needs, and no dropped class can cover them.
    by_name = {n: e for n, e in lmap.by_name().items() if not e.drop}
    parts = sorted(p for p in source.path.iterdir() if p.is_file() and nifti_stem(p) in by_name)
    if not parts:
        raise CdegError(
            f"no class file of a structure cdeg uses ({lmap.name})", patient=patient, path=source.path
        )
    first = read_image(parts[0], patient=patient)
    out = np.zeros(sitk.GetArrayViewFromImage(first).shape, dtype=np.uint16)
    for p in parts:
        img = first if p == parts[0] else read_image(p, patient=patient)
        arr = sitk.GetArrayViewFromImage(img)
        if arr.shape != out.shape:
            raise CdegError(
                f"class file {p.name} has another size than {parts[0].name}", patient=patient, path=p
            )
        out[arr > 0] = by_name[nifti_stem(p)].value
    combined = sitk.GetImageFromArray(out)
    combined.CopyInformation(first)
    return combined


def import_case(
    image: Any, foreign: Any, lmap: label_maps.LabelMap, tolerance_mm: float, patient: str, path: Path
) -> tuple[Any, label_maps.Conversion, list[str]]:
    """Convert one foreign mask onto its image's grid; returns the mask, the conversion and notes."""
    import SimpleITK as sitk

    notes = []
    if foreign.GetDimension() != image.GetDimension():
        raise CdegError(
            f"the mask is {foreign.GetDimension()}D and the image {image.GetDimension()}D: not this image's mask",
            patient=patient,
            path=path,
        )
    foreign, plan = geometry.reorient_like(foreign, image)
    if not plan.is_identity:
        notes.append(f"mask permuted onto the image axes (axes {plan.axes}, flips {plan.flips})")
    foreign, warning = conform_mask(image, foreign, tolerance_mm, patient, path)
    if warning:
        log.warning("import-masks: patient %s / %s: %s", patient, path, warning)
        notes.append(warning)
    try:
        conversion = label_maps.convert(sitk.GetArrayViewFromImage(foreign), lmap)
    except label_maps.LabelMapError as e:
        raise CdegError(e.message, patient=patient, path=path) from None
    mask = sitk.GetImageFromArray(conversion.mask)
    mask.CopyInformation(image)
    return mask, conversion, notes


# --- the stage -----------------------------------------------------------------------------------------------


def import_masks(
    cohort: str | Path,
    masks: str | Path,
    out: str | Path,
    label_map: str | Path | label_maps.LabelMap,
    modality: str = "mri",
    geometry_tolerance_mm: float = 1.0,
    qc_png: bool = True,
    strict: bool = False,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Convert another tool's masks of a cohort into cdeg's convention and layout.

    Parameters
    ----------
    cohort : Path
        The cohort whose images the masks were made from (read only).
    masks : Path
        The tool's output folder, in its own layout.
    out : Path
        Mask folder to write (``<patient_id>/<modality>.nii.gz``); may not lie inside the cohort.
    label_map : str or Path
        ``spineps``, ``totalspineseg``, ``totalsegmentator_total_mr``, ... (``cdeg labels --map``) or a file;
        or ``slicer`` / ``itksnap``: files corrected in that editor, as `cdeg segment export` wrote them
        (:class:`cdeg.outputs.EditorExport` names), whose segment or label names decide the labels.
    modality : {"mri", "xray"}
        Which images the masks belong to.
    geometry_tolerance_mm : float
        Largest grid difference resampled with a warning; beyond it the patient is refused.
    qc_png : bool
        Write an overlay PNG per patient.
    strict : bool
        Stop at the first problem (before writing anything) instead of skipping the patient.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).

    Returns
    -------
    dict
        The manifest written to ``out/import_masks_<modality>.json``.
    """
    check_modality(modality)
    if geometry_tolerance_mm < 0:
        raise ValueError("geometry_tolerance_mm must be >= 0")
    editor = label_map if isinstance(label_map, str) and label_map in editors.EDITORS else None
    lmap = editors.editor_label_map(editor) if editor else label_maps.load_label_map(label_map)
    coh = Cohort.open(cohort)
    masks, out = Path(masks), Path(out)
    if not masks.is_dir():
        raise CohortError("mask folder does not exist", path=masks)
    check_output_folder(out, coh)
    if out.resolve() == masks.resolve() or out.resolve().is_relative_to(masks.resolve()):
        raise ValueError(
            f"--out {out} lies in the tool's folder {masks}: write the converted masks elsewhere "
            "(inputs are never written, and a second run would take them for the tool's masks)"
        )

    from cdeg.check import check_stage_cohort

    check = check_stage_cohort(
        f"import-masks {modality}", coh, modalities=(modality,), use_masks=False, strict=strict
    )
    patients = [
        p for p in coh.patient_ids() if coh.has_image(p, modality) and not check.problems(p, modality)
    ]
    found, missing, unmatched = _locate_sources(coh, masks, lmap, editor, modality, patients)
    if strict and missing:
        pid, why = next(iter(missing.items()))
        raise CdegError(f"{why} (strict: stopped before any work)", patient=pid, path=masks)
    if not found:
        for pid, why in list(missing.items())[:5]:
            log.warning("import-masks: patient %s: %s", pid, why)
        raise CohortError(
            f"no {lmap.name} {modality} mask matches a patient of {coh.root} ({len(unmatched)} file(s) "
            f"unmatched; searched {_searched(masks, lmap, editor, modality)})",
            path=masks,
        )
    remove_stale_temporaries(out, f"*/.{modality}[._]*.tmp*")
    rows: list[dict[str, Any]] = []
    status: dict[str, dict[str, Any]] = {
        p: {"status": "skipped", "reason": why} for p, why in missing.items()
    }
    for pid, source in track(list(found.items()), progress, f"import {modality} masks"):
        status[pid] = _import_patient(
            coh, pid, modality, source, masks, out, lmap, geometry_tolerance_mm, qc_png, rows
        )
        if strict and status[pid]["status"] == "failed":
            raise CdegError(status[pid]["reason"], patient=pid, path=source.path)
    for pid, why in missing.items():
        rows.append(_problem_row(pid, modality, "", "missing", why))
        log.warning("import-masks: patient %s: %s", pid, why)
    for pid, st in status.items():  # a mask left by an earlier run must not stand in for a failed import
        if st["status"] in ("failed", "skipped"):
            for old in (mask_path(out, pid, modality), MaskFolder(out).qc_png(pid, modality)):
                old.unlink(missing_ok=True)
    if unmatched:
        log.warning(
            "import-masks: %d mask file(s) match no patient: %s", len(unmatched), ", ".join(unmatched[:5])
        )
    write_table(MaskFolder(out).import_csv, _merge_rows(MaskFolder(out).import_csv, modality, rows))
    editors.write_label_files(out)
    manifest = _manifest(coh, masks, lmap, modality, geometry_tolerance_mm, status, unmatched, check)
    write_manifest(MaskFolder(out).import_manifest(modality), manifest)
    c = manifest["counts"]
    log.info(
        "import-masks %s: %d imported (%d flagged), %d failed, %d without a mask; masks in %s",
        modality,
        c["ok"] + c["flagged"],
        c["flagged"],
        c["failed"],
        c["skipped"],
        out,
    )
    return manifest


def _locate_sources(
    coh: Cohort,
    masks: Path,
    lmap: label_maps.LabelMap,
    editor: str | None,
    modality: str,
    patients: list[str],
) -> tuple[dict[str, Source], dict[str, str], list[str]]:
    """:func:`locate` for a tool's layout, :func:`cdeg.segmentation.editors.locate_edited` for an editor's."""
    if editor is not None:
        paths, missing, unmatched = editors.locate_edited(masks, editor, modality, patients)
        return {p: Source(path, editor=editor) for p, path in paths.items()}, missing, unmatched
    originals = {
        pid: nifti_stem(src) for (pid, mod), src in read_sources(coh.root).items() if mod == modality
    }
    return locate(masks, lmap, modality, patients, originals)


def _searched(masks: Path, lmap: label_maps.LabelMap, editor: str | None, modality: str) -> str:
    if editor is not None:
        return editors.file_pattern(editor, modality)
    return ", ".join(_globs(masks, lmap, modality)) or "class-file folders"


def _import_patient(
    coh: Cohort,
    pid: str,
    modality: str,
    source: Source,
    root: Path,
    out: Path,
    lmap: label_maps.LabelMap,
    tolerance_mm: float,
    qc_png: bool,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    rel = str(source.path.relative_to(root))
    try:
        image = read_image(coh.image_path(pid, modality), patient=pid)
        if source.editor is not None:  # the file's own segment or label names are its label map
            foreign, lmap = editors.read_edited(source.path, source.editor, image, pid)
        else:
            foreign = read_foreign(source, lmap, pid)
        mask, conversion, notes = import_case(image, foreign, lmap, tolerance_mm, pid, source.path)
    except CdegError as e:
        log.warning("import-masks: %s", e.one_line())
        rows.append(_problem_row(pid, modality, rel, "error", e.message))
        return {"status": "failed", "reason": e.message, "source": rel}
    rows += [{ID_COLUMN: pid, "modality": modality, "source": rel, **r} for r in conversion.rows]
    rows += [_problem_row(pid, modality, rel, "geometry", n) for n in notes]
    for r in conversion.flagged:
        log.warning("import-masks: patient %s / %s: %s", pid, source.path, r["detail"])
    write_image(mask_path(out, pid, modality), mask)
    if qc_png:
        write_qc_overlay(
            MaskFolder(out).qc_png(pid, modality), image, mask, modality, f"{pid} {modality} ({lmap.name})"
        )
    return {
        "status": "flagged" if conversion.flagged else "ok",
        "source": rel,
        "voxels": {a: conversion.count(a) for a in label_maps.ACTIONS},
        "structures": sorted({r["target"] for r in conversion.rows if r["target"]}),
        "notes": notes,
    }


def _problem_row(pid: str, modality: str, source: str, action: str, detail: str) -> dict[str, Any]:
    return {
        ID_COLUMN: pid,
        "modality": modality,
        "source": source,
        "value": None,
        "class": "",
        "action": action,
        "target": "",
        "voxels": 0,
        "detail": detail,
    }


def _merge_rows(path: Path, modality: str, rows: list[dict[str, Any]]) -> Any:
    """This modality's rows replace its old ones; the other modality's rows are kept."""
    import pandas as pd

    from cdeg.io import read_table

    new = pd.DataFrame(rows, columns=list(IMPORT_COLUMNS)).astype({"value": "Int64", "voxels": "Int64"})
    if path.is_file():
        old = read_table(path, dtype={ID_COLUMN: str})
        new = pd.concat([old[old["modality"] != modality], new], ignore_index=True)
    return new


def _manifest(
    coh: Cohort,
    masks: Path,
    lmap: label_maps.LabelMap,
    modality: str,
    tolerance_mm: float,
    status: dict[str, dict[str, Any]],
    unmatched: list[str],
    check: Any,
) -> dict[str, Any]:
    return {
        "modality": modality,
        "cohort": str(coh.root.resolve()),
        "masks": str(masks.resolve()),
        "label_map": {"name": lmap.name, "description": lmap.description, "source": lmap.source},
        "geometry_tolerance_mm": tolerance_mm,
        "cdeg_version": __version__,
        "counts": {
            s: sum(1 for v in status.values() if v["status"] == s)
            for s in ("ok", "flagged", "failed", "skipped")
        },
        "patients": dict(sorted(status.items())),
        "unmatched_files": unmatched,
        "input_check": check.summary(),
    }
