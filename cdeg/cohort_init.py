"""`cdeg cohort init`: a cohort folder from a plain folder of NIfTI files or a BIDS dataset.

A real study starts with scans, not with cdeg's layout. :func:`init_cohort` finds each patient's MRI and
radiograph by a pattern, writes them in the cohort layout (:mod:`cdeg.cohort`), and writes ``cohort.json``
(``synthetic: false``) and a ``clinical.csv`` (the given table, or ids only: segment and extract need no
clinical value). Patterns are globs relative to the image folder with ``{id}`` where the patient id stands
(``**/`` = any folders); without ``{id}`` the first ``*`` is the id:

=========  ======================================================  ===============================
layout     MRI                                                     radiograph
=========  ======================================================  ===============================
flat       ``{id}_T2w.nii*``                                       ``{id}_xray.nii*``
BIDS       ``{id}/**/anat/{id}_*T2w.nii*`` (id = ``sub-<label>``)  ``{id}/**/{id}_*xray.nii*``
=========  ======================================================  ===============================

BIDS names a sagittal T2 ``_T2w`` (the anatomical suffix, BIDS specification "Magnetic Resonance Imaging",
anat datatype); it has no suffix for a projection radiograph, so cdeg looks for ``_xray`` (change it with a
pattern). The BIDS subject name (``sub-01``) is the patient id, as in BIDS' ``participants.tsv``, which can be
given as the clinical table (its ``participant_id`` column is read as ``patient_id``).

Every image is written once in the canonical orientation (:data:`cdeg.cohort.CANONICAL_DIRECTION`): an exact
axis permutation (no interpolation), with a line in ``sources.csv``; oblique images are mapped to their
closest axes and flagged. ``--link`` symlinks files that are already canonical (nothing is copied) and writes
reoriented copies of the others. A radiograph stored as a 3D file with one slice is written as 2D. The input
folder is never written. ``sources.csv`` (patient_id, modality, source, action, detail) lets
``cdeg segment import-masks`` find another tool's mask made from the original file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdeg.cohort import (
    CLINICAL_CSV,
    ID_COLUMN,
    IMAGE_SUFFIX,
    MODALITIES,
    SOURCES_CSV,
    CohortMeta,
    check_modality,
    check_patient_id,
    image_path,
    write_cohort_json,
)
from cdeg.errors import CdegError, CohortError
from cdeg.io import atomic_path, read_image, read_table, write_image, write_table

log = logging.getLogger(__name__)

SOURCE_COLUMNS = (ID_COLUMN, "modality", "source", "action", "detail")
DEFAULT_PATTERNS: dict[str, dict[str, str]] = {
    "flat": {"mri": "{id}_T2w.nii*", "xray": "{id}_xray.nii*"},
    "bids": {"mri": "{id}/**/anat/{id}_*T2w.nii*", "xray": "{id}/**/{id}_*xray.nii*"},
}
#: What `{id}` may match: a flat file name part, or a BIDS subject folder (BIDS labels are alphanumeric).
_ID_REGEX = {"flat": r"[A-Za-z0-9][A-Za-z0-9_.\-]*?", "bids": r"sub-[A-Za-z0-9]+"}
#: Id columns accepted in a given clinical table (BIDS' participants.tsv uses participant_id).
ID_ALIASES = (ID_COLUMN, "participant_id")
#: Obliquity (degrees) above which an image is flagged in sources.csv.
OBLIQUE_WARN_DEG = 10.0


@dataclass(frozen=True)
class Found:
    """One image file matched to a patient and a modality."""

    patient_id: str
    modality: str
    path: Path
    source: (
        str  # relative to the image folder: no absolute path of the user's machine travels with the cohort
    )


def pattern_regex(pattern: str, layout: str = "flat", id_regex: str | None = None) -> re.Pattern[str]:
    """A glob with ``{id}`` as a regular expression over relative POSIX paths (group ``id``)."""
    if "{id}" not in pattern:
        single = re.search(r"(?<!\*)\*(?!\*)", pattern)  # the first * that is not part of **
        if single is None:
            raise ValueError(f"pattern {pattern!r} has no {{id}} and no * to take the patient id from")
        pattern = pattern[: single.start()] + "{id}" + pattern[single.end() :]
    if re.search(r"\{id\}[*?]", pattern):
        raise ValueError(
            f"pattern {pattern!r}: {{id}} directly followed by a wildcard is ambiguous (where does the id end?); "
            "put a fixed character between them, e.g. {id}_*.nii.gz"
        )
    out, i, seen_id = [], 0, False
    while i < len(pattern):
        if pattern.startswith("{id}", i):
            out.append("(?P=id)" if seen_id else f"(?P<id>{id_regex or _ID_REGEX[layout]})")
            seen_id, i = True, i + 4
        elif pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def find_images(images: Path, patterns: dict[str, str], layout: str) -> tuple[list[Found], list[str]]:
    """Every file matching a modality's pattern, and one problem line per ambiguous patient x modality."""
    regexes = {m: pattern_regex(p, layout) for m, p in patterns.items()}
    # The same patterns with any name as the id: files they match and the strict ones do not have an id that
    # cannot be a patient id (a space, an accent); they are reported, not silently left out.
    loose = {m: pattern_regex(p, layout, id_regex=r"[^/]+?") for m, p in patterns.items()}
    files = sorted(
        p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file() or p.is_symlink()
    )
    hits: dict[tuple[str, str], list[str]] = {}
    found, problems = [], []
    for rel in files:
        for modality, rx in regexes.items():
            m = rx.match(rel)
            if m:
                hits.setdefault((m.group("id"), modality), []).append(rel)
            elif (bad := loose[modality].match(rel)) is not None:
                problems.append(
                    f"{images / rel}: {bad.group('id')!r} cannot be a patient id (letters, digits, _ - . only); "
                    "rename the file or give a --pattern"
                )
    for (pid, modality), rels in sorted(hits.items()):
        if len(rels) > 1:
            problems.append(
                f"patient {pid} / {modality}: {len(rels)} files match ({', '.join(rels[:4])}); "
                f"narrow the pattern (--pattern {modality}=...)"
            )
            continue
        found.append(Found(pid, modality, images / rels[0], rels[0]))
    return found, problems


def init_cohort(
    images: str | Path,
    out: str | Path,
    *,
    bids: bool = False,
    patterns: dict[str, str] | None = None,
    clinical: str | Path | None = None,
    link: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Build a cohort folder from a folder of NIfTI files or a BIDS dataset.

    Parameters
    ----------
    images : Path
        The folder holding the scans (read only).
    out : Path
        The cohort folder to create (must not exist or be empty).
    bids : bool
        `images` is a BIDS dataset: patient ids are subject names (``sub-01``), MRI is ``anat/*_T2w``.
    patterns : dict, optional
        Modality -> glob with ``{id}``, replacing that modality's default (see the module docstring).
    clinical : Path, optional
        A clinical table (CSV, TSV or Parquet) with a ``patient_id`` (or ``participant_id``) column; its
        rows are kept for the patients found. Default: ``clinical.csv`` with ids only.
    link : bool
        Symlink images that are already in the canonical orientation instead of copying them.
    name : str, optional
        Cohort name (default: the folder name of `out`).

    Returns
    -------
    dict
        Counts (patients, images per modality, reoriented, linked) and the problems skipped.
    """
    images, out = Path(images), Path(out)
    layout = "bids" if bids else "flat"
    chosen = dict(DEFAULT_PATTERNS[layout])
    for modality, pattern in (patterns or {}).items():
        chosen[check_modality(modality)] = pattern
    _check_paths(images, out)
    found, problems = find_images(images, chosen, layout)
    table = _clinical_table(clinical) if clinical is not None else None
    rows, written = [], []
    for f in found:
        try:
            check_patient_id(f.patient_id)
            rows.append(_write_patient_image(f, out, link))
            written.append(f)
        except CdegError as e:
            problems.append(CdegError(e.message, patient=f.patient_id, path=f.path).one_line())
    for line in problems:
        log.warning("%s", line)
    ids = sorted({f.patient_id for f in written})
    if not ids:
        raise CohortError(
            f"no image matches the patterns {chosen} ({len(problems)} problem(s)); give --pattern MODALITY=GLOB",
            path=images,
        )
    write_table(out / SOURCES_CSV, _frame(rows, SOURCE_COLUMNS))
    write_table(out / CLINICAL_CSV, _clinical_rows(table, ids, clinical))
    meta = CohortMeta(
        name=name or out.name,
        profile="external",
        n_patients=len(ids),
        synthetic=False,
        extra={"source": "cdeg cohort init", "layout": layout, "patterns": chosen},
    )
    write_cohort_json(out, meta)
    summary = {
        "patients": len(ids),
        "images": {m: sum(f.modality == m for f in written) for m in MODALITIES},
        "reoriented": sum(r["action"] == "reoriented" for r in rows),
        "linked": sum(r["action"] == "linked" for r in rows),
        "problems": problems,
    }
    log.info(
        "cohort %s: %d patients (%s), %d reoriented, %d problem(s)",
        out,
        summary["patients"],
        ", ".join(f"{n} {m}" for m, n in summary["images"].items()),
        summary["reoriented"],
        len(problems),
    )
    return summary


def _check_paths(images: Path, out: Path) -> None:
    if not images.is_dir():
        raise CohortError("image folder does not exist", path=images)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CohortError("the cohort folder exists and is not empty; choose a new folder", path=out)
    if out.resolve().is_relative_to(images.resolve()):
        raise ValueError("the cohort folder may not lie inside the image folder (inputs are never written)")


def _write_patient_image(f: Found, out: Path, link: bool) -> dict[str, str]:
    """Write one image into the cohort, canonical; return its sources.csv row."""
    from cdeg.segmentation.geometry import to_canonical

    image = read_image(f.path, patient=f.patient_id)
    detail: list[str] = []
    image = _fix_dimension(image, f.modality, detail)
    converted = bool(detail)  # a one-slice 3D radiograph: the file itself cannot be used
    canonical, plan = to_canonical(image, f.modality)
    target = image_path(out, f.patient_id, f.modality)
    target.parent.mkdir(parents=True, exist_ok=True)
    if plan.oblique_deg > OBLIQUE_WARN_DEG:  # flagged; its voxels need no change when no axis is swapped
        detail.append(
            f"oblique: axes {plan.oblique_deg:.0f} deg off the canonical ones, mapped to the closest"
        )
    as_is = plan.is_identity and not converted
    if as_is and link:
        with atomic_path(target) as tmp:
            tmp.unlink()  # atomic_path made an empty file; the link takes its name
            os.symlink(f.path.resolve(), tmp)
        action = "linked"
    elif as_is and f.path.name.endswith(IMAGE_SUFFIX):
        with atomic_path(target) as tmp:
            shutil.copyfile(f.path, tmp)
        action = "copied"
    else:
        if not plan.is_identity:
            detail.insert(
                0, f"reoriented to the canonical orientation (axes {plan.axes}, flips {plan.flips})"
            )
        write_image(target, canonical)
        action = "reoriented" if not plan.is_identity else "converted"
    if detail:
        log.info("patient %s / %s: %s", f.patient_id, f.path, "; ".join(detail))
    return {
        ID_COLUMN: f.patient_id,
        "modality": f.modality,
        "source": f.source,
        "action": action,
        "detail": "; ".join(detail),
    }


def _fix_dimension(image: Any, modality: str, detail: list[str]) -> Any:
    """A radiograph stored as a one-slice 3D file becomes 2D; any other dimension mismatch is an error."""
    import SimpleITK as sitk

    want, got = MODALITIES[modality], image.GetDimension()
    if got == want:
        return image
    if modality == "xray" and got == 3 and 1 in image.GetSize():
        axis = list(image.GetSize()).index(1)
        extractor = sitk.ExtractImageFilter()
        extractor.SetSize([s if i != axis else 0 for i, s in enumerate(image.GetSize())])
        extractor.SetIndex([0, 0, 0])
        flat = extractor.Execute(image)
        detail.append("one-slice 3D radiograph written as 2D")
        return flat
    raise CdegError(f"{modality} must be {want}D, this image is {got}D (size {image.GetSize()})")


def _clinical_table(path: str | Path) -> Any:
    """The given clinical table, its id column renamed patient_id; unique, non-empty ids."""
    path = Path(path)
    df = read_table(path, dtype=str) if path.suffix != ".parquet" else read_table(path)
    column = next((c for c in ID_ALIASES if c in df.columns), None)
    if column is None:
        raise CohortError(f"no {' or '.join(ID_ALIASES)} column", path=path)
    df = df.rename(columns={column: ID_COLUMN})
    df[ID_COLUMN] = df[ID_COLUMN].astype(str).str.strip()
    dup = sorted(set(df[ID_COLUMN][df[ID_COLUMN].duplicated()]))
    if dup:
        raise CohortError(f"{ID_COLUMN} repeated: {', '.join(dup[:10])}", path=path)
    return df[[ID_COLUMN, *[c for c in df.columns if c != ID_COLUMN]]]


def _clinical_rows(table: Any, ids: list[str], path: str | Path | None) -> Any:
    """clinical.csv: the table's rows of the patients found (ids only without a table)."""
    import pandas as pd

    if table is None:
        return pd.DataFrame({ID_COLUMN: ids})
    missing = sorted(set(ids) - set(table[ID_COLUMN]))
    extra = sorted(set(table[ID_COLUMN]) - set(ids))
    if missing:
        log.warning("%s: no clinical row for %d patient(s): %s", path, len(missing), ", ".join(missing[:10]))
    if extra:
        log.warning("%s: %d row(s) without images left out: %s", path, len(extra), ", ".join(extra[:10]))
    rows = table[table[ID_COLUMN].isin(ids)]
    return pd.concat([rows, pd.DataFrame({ID_COLUMN: missing})], ignore_index=True)


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


def read_sources(cohort: str | Path) -> dict[tuple[str, str], Path]:
    """(patient_id, modality) -> the original file of each image (relative to the image folder it was
    found in), from ``sources.csv``; empty for cohorts that did not come from `cdeg cohort init`."""
    path = Path(cohort) / SOURCES_CSV
    if not path.is_file():
        return {}
    df = read_table(path, dtype=str)
    return {(r[ID_COLUMN], r["modality"]): Path(r["source"]) for r in df.to_dict("records")}


def nifti_stem(path: str | Path) -> str:
    """A NIfTI file's name without ``.nii.gz`` / ``.nii``."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name
