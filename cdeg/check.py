"""`cdeg check`: validate a cohort before anything runs, and list every problem at once.

:func:`check_cohort` returns :class:`Finding` rows (patient, file, check, severity, message). It reads image
headers only (SimpleITK ``ReadImageInformation``) plus the gzip trailer of each ``.nii.gz`` to catch
truncated files; mask voxels are read only to check label values.

Every stage runs the same checks on its inputs, once, before any work: the imaging stages (``segment
prepare/train/predict``, ``extract``) through :func:`check_stage_cohort`, the modelling stages (``fit``,
``predict``, ``validate``) on their clinical table through :func:`check_stage_table`. The rule
(:class:`StageCheck`): an error that makes the whole input unusable (:data:`STOP_CHECKS`: cohort.json,
clinical.csv missing, unreadable or without ``patient_id``; for the imaging stages also an id that cannot be a
folder name) stops the stage with one line; an error in a file or value the stage reads skips that patient
(x modality), logged on one line naming the patient and the file, and the rest is processed; warnings are
logged; findings about what the stage does not read are ignored. A bad clinical row (:data:`ROW_CHECKS`)
costs only its patient: a row with an empty id is left out with a warning; an id on several rows is a
warning for the imaging stages (they read no clinical value: the patient is processed once) and skips the
patient, all its rows, in the modelling stages (which row is right is unknown); what is read follows
:func:`cdeg.cohort.read_clinical`. With ``strict`` the first error, bad rows included, stops the stage
before anything is written. The checks:

========================  ========  ================================================================
check                     severity  what
========================  ========  ================================================================
cohort_json               error     cohort.json missing or invalid
clinical                  error     clinical.csv missing, unreadable or without ``patient_id``
patient_id                error     empty id, or an id that cannot be a folder name
duplicate_id              error     the same id on several rows
image_without_clinical    error     a folder under images/ with no clinical row
clinical_without_images   warning   a clinical row with no image (the imaging stages skip it)
non_numeric               error     a text value in a numeric column (declared, or mostly numbers)
out_of_range              error     a value outside the range declared in configs/check.yaml
unknown_category          warning   a categorical value not listed in configs/check.yaml
missing_image             warning   a patient without one of the modalities
unreadable                error     an image or mask whose header cannot be read
truncated                 error     a NIfTI file shorter than its header says (interrupted copy)
dimensions                error     MRI not 3D, radiograph not 2D (cdeg.cohort.MODALITIES)
geometry                  error     mask and image differ in size, spacing, origin or direction
labels                    error     mask values outside the label convention (cdeg.labels)
mask_type                 warning   a mask stored as floating point
mask_without_image        warning   a mask with no image next to it
unknown_file              warning   a file under images/<patient>/ that no stage reads
========================  ========  ================================================================

Ranges, categories and tolerances are data: ``configs/check.yaml``.
"""

# ruff: noqa: RUF009 - _f returns a dataclasses.field with its help text

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.cohort import (
    CLINICAL_CSV,
    COHORT_JSON,
    ID_COLUMN,
    IMAGE_SUFFIX,
    IMAGES_DIR,
    MASKS_DIR,
    MODALITIES,
    Cohort,
    check_patient_id,
    value_text,
)
from cdeg.config import deep_merge, from_dict, load_yaml, shipped_config
from cdeg.errors import CdegError, CohortError
from cdeg.io import nifti_truncation, read_table

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning")
#: Columns of the findings table (``cdeg check --format csv``); the id column is named as in every cdeg table.
FINDING_COLUMNS = (ID_COLUMN, "file", "check", "severity", "message")


@dataclass(frozen=True)
class Finding:
    """One problem found in a cohort.

    Parameters
    ----------
    patient : str
        Patient id ("" when the problem is not a patient's).
    file : str
        File concerned, relative to the cohort (or the mask folder's path); "" when none.
    check : str
        Name of the check (see the module table).
    severity : {"error", "warning"}
        Errors fail ``cdeg check`` and skip the patient in a stage (or stop it, see :class:`StageCheck`);
        warnings are reported (and fail ``cdeg check --strict``).
    message : str
        What is wrong, on one line.
    column : str
        The clinical column of a value check ("" otherwise); lets a stage tell whether it uses the value.
    """

    patient: str
    file: str
    check: str
    severity: str
    message: str
    column: str = ""

    @property
    def patient_id(self) -> str:
        """The patient, under the name of the id column of the findings table (:data:`FINDING_COLUMNS`)."""
        return self.patient

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


def _f(default: Any, help_: str, **meta: Any) -> Any:
    """A dataclass field with its help text (mutable defaults copied per instance)."""
    if isinstance(default, (dict, list, tuple)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help_, **meta})
    return field(default=default, metadata={"help": help_, **meta})


@dataclass(frozen=True)
class CheckConfig:
    """What a valid cohort looks like (shipped values: ``configs/check.yaml``)."""

    ranges: dict[str, tuple[float, float]] = _f({}, "column or pattern -> inclusive plausible range")
    numeric: tuple[str, ...] = _f((), "columns or patterns that must be numeric")
    choices: dict[str, tuple[str, ...]] = _f({}, "categorical column or pattern -> allowed values")
    mostly_numeric_fraction: float = _f(0.8, "fraction of numbers making a column numeric", range=(0.0, 1.0))
    spacing_rel_tol: float = _f(1e-4, "relative tolerance on image/mask spacing", range=(0.0, 1.0))
    origin_tol_mm: float = _f(1e-3, "tolerance on image/mask origin, mm", range=(0.0, 100.0))
    direction_tol: float = _f(1e-4, "tolerance on image/mask direction cosines", range=(0.0, 1.0))
    check_labels: bool = _f(True, "read mask voxels to check label values")

    def __post_init__(self) -> None:
        for key, (lo, hi) in self.ranges.items():
            if lo > hi:
                raise ValueError(f"ranges.{key}: low {lo} is above high {hi}")


def load_check_config(path: str | Path | None = None) -> CheckConfig:
    """Resolve the check configuration: shipped ``configs/check.yaml`` < the user's YAML `path`."""
    data = load_yaml(shipped_config("check.yaml"))
    if path is not None:
        data = deep_merge(data, load_yaml(path))
    return from_dict(CheckConfig, data, source=path or shipped_config("check.yaml"))


def check_cohort(
    cohort: str | Path | Cohort,
    masks: str | Path | None = None,
    config: CheckConfig | str | Path | None = None,
    *,
    modalities: str | list[str] | tuple[str, ...] | None = None,
    use_masks: bool = True,
) -> list[Finding]:
    """Check a cohort folder (layout, images, masks, clinical table) and return every problem found.

    Parameters
    ----------
    cohort : path or Cohort
        The cohort folder.
    masks : path, optional
        A mask folder in the ``<patient>/<modality>.nii.gz`` layout (e.g. ``cdeg segment predict``
        output); default: the cohort's own ``masks/`` when it exists.
    config : CheckConfig or path, optional
        The configuration, or a YAML file overriding ``configs/check.yaml``.
    modalities : "mri,xray" or list, optional
        Check only the images and masks of these modalities (default: all); a stage that reads one
        modality does not pay for the other.
    use_masks : bool
        False: check the images only, not any mask folder (a stage that reads no mask).

    Returns
    -------
    list of Finding
        Sorted by patient, file and check; empty when the cohort is clean.
    """
    from cdeg.cohort import parse_modalities

    root = Path(cohort.root if isinstance(cohort, Cohort) else cohort)
    cfg = config if isinstance(config, CheckConfig) else load_check_config(config)
    mods = parse_modalities(modalities)
    if masks is not None and not use_masks:
        raise ValueError("a mask folder was given but use_masks is False")
    if not root.is_dir():
        raise CohortError("cohort folder does not exist", path=root)
    mask_root = Path(masks) if masks is not None else root / MASKS_DIR
    if masks is not None and not mask_root.is_dir():
        raise CohortError("mask folder does not exist", path=mask_root)
    mask_dir = mask_root if use_masks and mask_root.is_dir() else None
    findings: list[Finding] = []
    findings += _check_meta(root)
    ids, clinical_findings = _check_clinical(root / CLINICAL_CSV, cfg)
    findings += clinical_findings
    images = root / IMAGES_DIR
    folders = sorted(p.name for p in images.iterdir() if p.is_dir()) if images.is_dir() else []
    for pid in folders:
        if ids is not None and pid not in ids:
            findings.append(
                Finding(
                    pid,
                    f"{IMAGES_DIR}/{pid}",
                    "image_without_clinical",
                    "error",
                    f"image folder {pid} has no row in {CLINICAL_CSV}",
                )
            )
    for pid in sorted(set(ids or ()) - set(folders)):
        findings.append(
            Finding(
                pid,
                "",
                "clinical_without_images",
                "warning",
                f"no folder {IMAGES_DIR}/{pid}: the imaging stages skip this patient",
            )
        )
    mask_label = _label(mask_dir, root) if mask_dir is not None else ""
    for pid in folders:
        findings += _check_patient(root, mask_dir, mask_label, pid, cfg, mods)
    if mask_dir is not None:
        for p in sorted(q for q in mask_dir.iterdir() if q.is_dir() and q.name not in folders):
            findings.append(
                Finding(
                    p.name,
                    f"{mask_label}/{p.name}",
                    "mask_without_image",
                    "warning",
                    "mask folder of a patient without images",
                )
            )
    findings.sort(key=lambda f: (f.patient, f.file, f.check, f.message))
    n_err = sum(f.severity == "error" for f in findings)
    log.debug("checked %s: %d errors, %d warnings", root, n_err, len(findings) - n_err)
    return findings


def _label(mask_root: Path, root: Path) -> str:
    try:
        return mask_root.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(mask_root)


# --- cohort.json and clinical.csv ----------------------------------------------------------------


def _check_meta(root: Path) -> list[Finding]:
    try:
        Cohort.open(root)
    except CdegError as e:
        return [Finding("", COHORT_JSON, "cohort_json", "error", e.message)]
    return []


def check_clinical(
    path: str | Path,
    config: CheckConfig | str | Path | None = None,
    *,
    id_column: str = ID_COLUMN,
    label: str | None = None,
) -> list[Finding]:
    """Check a clinical table alone (ids, numeric columns, ranges, categories), as :func:`check_cohort` does.

    For the stages that read a table rather than a cohort folder (``cdeg fit``, ``predict``,
    ``validate``). `label` names the file in the findings (default: the path as given).
    """
    cfg = config if isinstance(config, CheckConfig) else load_check_config(config)
    findings = _check_clinical(Path(path), cfg, id_column, label if label is not None else str(path))[1]
    findings.sort(key=lambda f: (f.patient, f.file, f.check, f.message))
    return findings


def _read_as_text(path: Path) -> Any:
    """The table with every value as text (None where empty); Parquet ids 7.0 read as "7", like read_clinical."""
    if path.suffix != ".parquet":
        return read_table(path, dtype=str)
    df = read_table(path)
    return df.astype(object).map(
        lambda v: None if v is None or (isinstance(v, float) and v != v) else value_text(v)
    )


def _check_clinical(
    path: Path, cfg: CheckConfig, id_column: str = ID_COLUMN, label: str = CLINICAL_CSV
) -> tuple[set[str] | None, list[Finding]]:
    """(ids found, findings); ids is None when the table cannot be read at all."""
    if not path.is_file():
        return None, [Finding("", label, "clinical", "error", f"{path.name} is missing")]
    try:
        df = _read_as_text(path)
    except CdegError as e:
        return None, [Finding("", label, "clinical", "error", e.message)]
    if id_column not in df.columns:
        return None, [Finding("", label, "clinical", "error", f"no {id_column!r} column")]
    findings: list[Finding] = []
    ids = [(str(v).strip() if isinstance(v, str) else "") for v in df[id_column]]
    lines: dict[str, list[int]] = {}
    valid: set[str] = set()
    for i, pid in enumerate(ids):
        line = i + 2  # header line, 1-based
        if not pid:
            findings.append(Finding("", label, "patient_id", "error", f"empty {id_column} on line {line}"))
            continue
        # Repeats are counted whatever the id: read_clinical leaves them out by the id's text alone.
        lines.setdefault(pid, []).append(line)
        try:
            valid.add(check_patient_id(pid))
        except CohortError as e:
            findings.append(Finding(_safe(pid), label, "patient_id", "error", f"line {line}: {e.message}"))
    for pid, where in lines.items():
        if len(where) > 1:
            findings.append(
                Finding(
                    pid if pid in valid else _safe(pid),
                    label,
                    "duplicate_id",
                    "error",
                    f"{id_column} {pid if pid in valid else _safe(pid)} appears on lines "
                    f"{', '.join(map(str, where))}",
                )
            )
    for column in df.columns:
        if column != id_column:
            findings += _check_column(df[column], str(column), ids, cfg, label)
    return valid, findings


def _matches(column: str, patterns: Any) -> Any:
    """The first pattern (key) matching the column name, else None."""
    return next((p for p in patterns if fnmatch.fnmatchcase(column, p)), None)


def _safe(value: Any, width: int = 40) -> str:
    """A value as it can appear in a one-line message."""
    text = repr(value) if not isinstance(value, str) else repr(value.strip())
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_column(
    values: Any, column: str, ids: list[str], cfg: CheckConfig, label: str = CLINICAL_CSV
) -> list[Finding]:
    import pandas as pd

    findings: list[Finding] = []
    text = values.astype("string").str.strip()
    present = text.notna() & (text != "")
    if not present.any():
        return findings
    numbers = pd.to_numeric(text.where(present), errors="coerce")
    is_number = numbers.notna() & present
    range_key = _matches(column, cfg.ranges)
    declared = range_key is not None or _matches(column, cfg.numeric) is not None
    frac = is_number.sum() / present.sum()
    if declared or (is_number.any() and frac >= cfg.mostly_numeric_fraction):
        for i in np.flatnonzero((present & ~is_number).to_numpy()):
            findings.append(
                Finding(
                    ids[i],
                    label,
                    "non_numeric",
                    "error",
                    f"{column} = {_safe(values.iloc[i])} is not a number (line {i + 2})",
                    column,
                )
            )
        if range_key is not None:
            lo, hi = cfg.ranges[range_key]
            bad = is_number & ((numbers < lo) | (numbers > hi) | numbers.isna())
            for i in np.flatnonzero(bad.to_numpy()):
                findings.append(
                    Finding(
                        ids[i],
                        label,
                        "out_of_range",
                        "error",
                        f"{column} = {numbers.iloc[i]:g} is outside [{lo:g}, {hi:g}] (line {i + 2})",
                        column,
                    )
                )
        return findings
    choice_key = _matches(column, cfg.choices)
    if choice_key is not None:
        allowed = set(cfg.choices[choice_key])
        for i in np.flatnonzero((present & ~text.isin(allowed)).fillna(False).to_numpy()):
            findings.append(
                Finding(
                    ids[i],
                    label,
                    "unknown_category",
                    "warning",
                    f"{column} = {_safe(values.iloc[i])} is not one of "
                    f"{', '.join(sorted(allowed))} (line {i + 2})",
                    column,
                )
            )
    return findings


# --- images and masks ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    dimension: int
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_type: str


def _check_patient(
    root: Path,
    mask_root: Path | None,
    mask_label: str,
    pid: str,
    cfg: CheckConfig,
    modalities: tuple[str, ...] = tuple(MODALITIES),
) -> list[Finding]:
    findings: list[Finding] = []
    folder = root / IMAGES_DIR / pid
    expected = {f"{m}{IMAGE_SUFFIX}" for m in MODALITIES}
    for p in sorted(folder.iterdir()):
        if p.name not in expected and not p.name.startswith("."):
            findings.append(
                Finding(
                    pid,
                    f"{IMAGES_DIR}/{pid}/{p.name}",
                    "unknown_file",
                    "warning",
                    f"no stage reads {p.name}; expected {', '.join(sorted(expected))}",
                )
            )
    for modality in modalities:
        ndim = MODALITIES[modality]
        rel = f"{IMAGES_DIR}/{pid}/{modality}{IMAGE_SUFFIX}"
        image = root / rel
        mask = mask_root / pid / f"{modality}{IMAGE_SUFFIX}" if mask_root is not None else None
        mrel = f"{mask_label}/{pid}/{modality}{IMAGE_SUFFIX}"
        if not image.is_file():
            findings.append(Finding(pid, rel, "missing_image", "warning", f"no {modality} image"))
            if mask is not None and mask.is_file():
                findings.append(
                    Finding(pid, mrel, "mask_without_image", "warning", f"{modality} mask without image")
                )
            continue
        header, problems = _read_header(image, pid, rel)
        findings += problems
        if header is not None:
            findings += _check_dimension(header, pid, rel, modality, ndim)
        if mask is None or not mask.is_file():
            continue
        mheader, problems = _read_header(mask, pid, mrel)
        findings += problems
        if header is not None and mheader is not None:
            findings += _compare_geometry(header, mheader, pid, mrel, cfg)
        if mheader is not None and cfg.check_labels and not problems:
            findings += _check_labels(mask, mheader, pid, mrel)
    return findings


def _read_header(path: Path, pid: str, rel: str) -> tuple[_Header | None, list[Finding]]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "ERROR" in ln or "Exception" in ln), lines[-1] if lines else "")
        return None, [Finding(pid, rel, "unreadable", "error", f"cannot read the header ({reason[:120]})")]
    header = _Header(
        reader.GetDimension(),
        tuple(reader.GetSize()),
        tuple(reader.GetSpacing()),
        tuple(reader.GetOrigin()),
        tuple(reader.GetDirection()),
        sitk.GetPixelIDValueAsString(reader.GetPixelID()),
    )
    problem = nifti_truncation(path)
    if problem:
        return header, [Finding(pid, rel, "truncated", "error", problem)]
    return header, []


def _check_dimension(h: _Header, pid: str, rel: str, modality: str, ndim: int) -> list[Finding]:
    if h.dimension == ndim:
        if ndim == 3 and min(h.size) < 2:
            return [
                Finding(pid, rel, "dimensions", "error", f"{modality} has a single slice (size {h.size})")
            ]
        return []
    hint = ""
    if h.dimension == 3 and ndim == 2 and h.size[2] == 1:
        hint = "; it is a 2D image stored with one slice: drop the third axis"
    return [
        Finding(
            pid,
            rel,
            "dimensions",
            "error",
            f"{modality} must be {ndim}D, this image is {h.dimension}D (size {h.size}){hint}",
        )
    ]


def _compare_geometry(img: _Header, mask: _Header, pid: str, rel: str, cfg: CheckConfig) -> list[Finding]:
    if img.dimension != mask.dimension or img.size != mask.size:
        return [
            Finding(
                pid, rel, "geometry", "error", f"mask size {mask.size} differs from image size {img.size}"
            )
        ]
    out = []
    sp_i, sp_m = np.asarray(img.spacing), np.asarray(mask.spacing)
    if np.any(np.abs(sp_i - sp_m) > cfg.spacing_rel_tol * np.abs(sp_i)):
        out.append(f"spacing {_vec(mask.spacing)} differs from the image's {_vec(img.spacing)}")
    if np.max(np.abs(np.subtract(img.origin, mask.origin))) > cfg.origin_tol_mm:
        out.append(f"origin {_vec(mask.origin)} differs from the image's {_vec(img.origin)}")
    if np.max(np.abs(np.subtract(img.direction, mask.direction))) > cfg.direction_tol:
        out.append("direction differs from the image's")
    return [Finding(pid, rel, "geometry", "error", "mask " + "; ".join(out))] if out else []


def _vec(v: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


def _check_labels(path: Path, header: _Header, pid: str, rel: str) -> list[Finding]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
        arr = sitk.GetArrayViewFromImage(image)  # a view: `image` must stay alive while it is used
    except RuntimeError:
        return [Finding(pid, rel, "unreadable", "error", "cannot read the mask voxels")]
    out = []
    if arr.dtype.kind == "f":
        out.append(
            Finding(
                pid, rel, "mask_type", "warning", f"mask stored as {header.pixel_type}; use an integer type"
            )
        )
        if not np.array_equal(arr, np.round(arr)):
            return [*out, Finding(pid, rel, "labels", "error", "mask holds non-integer values")]
    values = np.flatnonzero(np.bincount(arr.ravel())) if arr.dtype == np.uint8 else np.unique(arr)
    bad = labels.invalid_labels(int(v) for v in values)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        out.append(
            Finding(
                pid,
                rel,
                "labels",
                "error",
                f"label value(s) {shown} are not in the {labels.CONVENTION_NAME} convention "
                "(see `cdeg labels`)",
            )
        )
    return out


def finding_modality(f: Finding) -> str | None:
    """The modality of the image or mask a finding is about; None when it concerns the whole patient."""
    name = f.file.rsplit("/", 1)[-1]
    return next((m for m in MODALITIES if name == f"{m}{IMAGE_SUFFIX}"), None)


@dataclass(frozen=True)
class StageCheck:
    """A stage's reading of the findings on its inputs: what skips a patient and what is only reported.

    Built by :func:`check_stage_cohort` (imaging stages) or :func:`check_stage_table` (modelling stages),
    which have already stopped the stage for errors that make the whole input unusable, and for any
    error under `strict`.

    Attributes
    ----------
    stage : str
        The stage, as named in log lines (``extract``, ``segment predict xray``).
    root : Path or None
        Folder the findings' files are relative to (the cohort); None when they are paths as given.
    errors : tuple of Finding
        Errors this stage acts on: each skips its patient, or its patient x modality (file checks).
    warnings : tuple of Finding
        Reported only.
    ignored : tuple of Finding
        Findings that do not concern this stage (e.g. clinical values for segmentation).
    """

    stage: str
    root: Path | None
    errors: tuple[Finding, ...] = ()
    warnings: tuple[Finding, ...] = ()
    ignored: tuple[Finding, ...] = ()

    def path(self, f: Finding) -> str:
        """The file of a finding, as a path the user can open."""
        if not f.file:
            return str(self.root) if self.root is not None else ""
        return str(self.root / f.file) if self.root is not None else f.file

    def line(self, f: Finding) -> str:
        """One line naming the patient and the file: ``patient P1 / <path>: <message>``."""
        return CdegError(f.message, patient=f.patient or None, path=self.path(f) or None).one_line()

    def problems(self, patient: str, modality: str | None = None) -> list[Finding]:
        """Errors that skip `patient` (for `modality`: those of its files and those of the whole patient)."""
        return [
            f
            for f in self.errors
            if f.patient == patient and (modality is None or finding_modality(f) in (None, modality))
        ]

    def reason(self, patient: str, modality: str | None = None) -> str | None:
        """Why `patient` (x `modality`) is skipped, on one line; None when it is not."""
        found = self.problems(patient, modality)
        return "; ".join(self.line(f) for f in found) if found else None

    @property
    def skipped(self) -> dict[str, list[str]]:
        """Patient -> one line per error, for manifests and QC tables."""
        out: dict[str, list[str]] = {}
        for f in self.errors:
            out.setdefault(f.patient, []).append(self.line(f))
        return out

    def summary(self) -> dict[str, Any]:
        """What a stage manifest records: counts, and the lines of the skipped patients."""
        return {
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "skipped": self.skipped,
        }


def _stage_check(
    stage: str,
    findings: list[Finding],
    root: Path | None,
    *,
    stops: Any,
    acts_on: Any,
    strict: bool,
    copes: Any = None,
) -> StageCheck:
    """Sort findings for a stage: stop on `stops` (or any error when strict), log the rest, one line each.

    `copes(finding) -> str | None`: for an error the stage copes with by itself (a bad clinical row it leaves
    out), what it does; unless `strict`, such an error is logged as a warning saying so and skips no patient.
    """
    probe = StageCheck(stage, root)
    fatal = [f for f in findings if f.severity == "error" and stops(f)]
    if fatal:
        first = fatal[0]
        more = f" ({len(fatal) - 1} more such problems; `cdeg check` lists them)" if len(fatal) > 1 else ""
        raise CohortError(first.message + more, patient=first.patient or None, path=probe.path(first) or None)
    if copes is not None and not strict:
        findings = [_coped(f, copes(f) if f.severity == "error" and acts_on(f) else None) for f in findings]
    errors = tuple(f for f in findings if f.severity == "error" and acts_on(f))
    warnings = tuple(f for f in findings if f.severity == "warning" and acts_on(f))
    ignored = tuple(f for f in findings if not acts_on(f))
    check = StageCheck(stage, root, errors, warnings, ignored)
    patients = sorted({f.patient for f in errors if f.patient})
    if strict and errors:
        first = errors[0]
        no_id = sum(not f.patient for f in errors)  # rows without an id are no patient
        what = f"{len(patients)} patient(s)" + (f" and {no_id} row(s) without an id" if no_id else "")
        raise CdegError(
            f"{first.message} (strict: stopped before any work; {what} with problems, `cdeg check` lists them)",
            patient=first.patient or None,
            path=check.path(first) or None,
        )
    if errors:
        log.warning(
            "%s: %d patient%s with problems, skipped (the rest is processed; --strict stops instead):",
            stage,
            len(patients),
            "" if len(patients) == 1 else "s",
        )
        for f in errors:
            log.warning("  %s", check.line(f))
    # Bad clinical rows are few and cost a patient: never hidden behind the cap on other warnings.
    rows = [f for f in warnings if f.check in ROW_CHECKS]
    others = [f for f in warnings if f.check not in ROW_CHECKS]
    for f in rows + others[:MAX_WARNING_LINES]:
        log.warning("%s: %s", stage, check.line(f))
    if len(others) > MAX_WARNING_LINES:
        log.warning(
            "%s: %d more warnings; `cdeg check` lists them all", stage, len(others) - MAX_WARNING_LINES
        )
    if ignored:
        log.debug("%s: %d findings that do not concern this stage", stage, len(ignored))
    return check


def _coped(f: Finding, note: str | None) -> Finding:
    """`f` as a warning saying what the stage does about it, when it copes (`note`); else `f` unchanged."""
    return replace(f, severity="warning", message=f"{f.message} ({note})") if note else f


def _empty_id(f: Finding) -> bool:
    """A clinical row without an id: it names no patient, so no stage can use it."""
    return f.check == "patient_id" and not f.patient


def check_stage_cohort(
    stage: str,
    cohort: str | Path | Cohort,
    *,
    masks: str | Path | None = None,
    modalities: str | list[str] | tuple[str, ...] | None = None,
    use_masks: bool = True,
    strict: bool = False,
    tolerated: Any = None,
    config: CheckConfig | str | Path | None = None,
) -> StageCheck:
    """Check an imaging stage's input cohort once, before any work, with :func:`check_cohort`.

    The rule: errors of :data:`STOP_CHECKS`, and ids that cannot be folder names, stop the stage
    (CohortError, one line); errors of the image and mask files (:data:`FILE_CHECKS`) and image folders
    without a clinical row skip that patient (x modality), each logged on one line naming the patient and
    the file; warnings are logged; clinical values are not an imaging stage's concern, so bad clinical rows
    (:data:`ROW_CHECKS`) are warnings: a row with an empty id is left out, a patient on several rows is
    processed once (:meth:`cdeg.cohort.Cohort.patient_ids`). With `strict`, the first error, bad rows
    included, stops the stage instead (CdegError).

    Parameters
    ----------
    stage : str
        Name used in the log lines.
    cohort : path or Cohort
        The cohort folder.
    masks : path, optional
        Mask folder the stage reads (default: the cohort's masks/ when `use_masks`).
    modalities : "mri,xray" or list, optional
        The modalities the stage reads; the others are not checked.
    use_masks : bool
        False for a stage that reads images only (segment predict).
    strict : bool
        Stop at the first error instead of skipping the patient.
    tolerated : callable, optional
        ``tolerated(finding) -> bool``: errors the stage copes with itself (extract resamples a mask whose
        grid is off by less than its tolerance); they are not counted.
    config : CheckConfig or path, optional
        Overrides of configs/check.yaml.
    """
    root = Path(cohort.root if isinstance(cohort, Cohort) else cohort)
    # An absolute mask folder makes the findings' mask files absolute too: log lines name openable paths.
    mask_arg = Path(masks).absolute() if masks is not None else None
    findings = check_cohort(root, mask_arg, config, modalities=modalities, use_masks=use_masks)

    def stops(f: Finding) -> bool:
        # An id that cannot be a folder name cannot be matched with its images, nor used as a path.
        return f.check in STOP_CHECKS or (f.check == "patient_id" and bool(f.patient))

    def acts_on(f: Finding) -> bool:
        if f.check in ROW_CHECKS:
            return True
        if f.check not in IMAGING_CHECKS:
            return False
        return not (f.severity == "error" and tolerated is not None and tolerated(f))

    def copes(f: Finding) -> str | None:
        if f.check == "duplicate_id":
            return "its images are processed once; fit, predict and validate leave the patient out"
        return "row left out" if _empty_id(f) else None

    return _stage_check(stage, findings, root, stops=stops, acts_on=acts_on, strict=strict, copes=copes)


def check_stage_table(
    stage: str,
    path: str | Path,
    *,
    id_column: str = ID_COLUMN,
    uses: Any = None,
    strict: bool = False,
    config: CheckConfig | str | Path | None = None,
) -> StageCheck:
    """Check a modelling stage's clinical table once, before any work, with :func:`check_clinical`.

    The rule: a missing or unreadable table or a missing id column stop the stage (CohortError); an id on
    several rows, or a bad value (text in a numeric column, a value outside its plausible range) in a
    column the stage uses, skips that patient (every row of a repeated id), logged on one line naming the
    patient, the file and the line(s); a row with an empty id is left out with a warning (it names no
    patient); bad values in columns it does not use, and ids that could not be folder names, are not its
    concern. What is then read follows :func:`cdeg.cohort.read_clinical` with ``bad_ids="drop"``. With
    `strict`, the first error stops the stage instead (CdegError).

    Parameters
    ----------
    uses : callable, optional
        ``uses(column) -> bool``: the columns the stage reads (default: all).
    """

    def acts_on(f: Finding) -> bool:
        if f.check == "duplicate_id" or _empty_id(f):
            return True
        return f.check in VALUE_CHECKS and (uses is None or uses(f.column))

    # The values of a row without an id belong to no patient: the row is left out whole.
    findings = [f for f in check_clinical(path, config, id_column=id_column) if f.patient or f.column == ""]
    return _stage_check(
        stage,
        findings,
        None,
        stops=lambda f: f.check == "clinical",
        acts_on=acts_on,
        strict=strict,
        copes=lambda f: "row left out" if _empty_id(f) else None,
    )


# --- using the findings --------------------------------------------------------------------------


# --- the same checks in every stage --------------------------------------------------------------

#: Errors that make a cohort unusable as a whole: a stage stops with one line, strict or not.
STOP_CHECKS = frozenset({"cohort_json", "clinical"})
#: Errors of one clinical row: an id that is empty, not a valid folder name, or on several rows. An empty or
#: repeated id costs only its row's patient; an invalid id stops the imaging stages (it cannot be matched
#: with its images, nor used as a path) and is no concern of the modelling stages. See
#: :func:`check_stage_cohort` and :func:`check_stage_table`.
ROW_CHECKS = frozenset({"patient_id", "duplicate_id"})
#: Checks of one image or mask file; an error skips that patient x modality.
FILE_CHECKS = frozenset({"unreadable", "truncated", "dimensions", "geometry", "labels"})
#: Checks of clinical values; an error skips the patient in a stage that uses the column.
VALUE_CHECKS = frozenset({"non_numeric", "out_of_range", "unknown_category"})
#: What the imaging stages (segment, extract) act on: files and folders, not clinical values.
IMAGING_CHECKS = FILE_CHECKS | {
    "image_without_clinical",
    "clinical_without_images",
    "missing_image",
    "mask_type",
    "mask_without_image",
    "unknown_file",
}
#: At most this many warnings are logged one per line; `cdeg check` lists them all.
MAX_WARNING_LINES = 20


def raise_on_errors(findings: list[Finding], strict: bool = False) -> None:
    """Raise CohortError summarising the findings when there are errors (or warnings, when `strict`)."""
    bad = [f for f in findings if f.severity == "error" or strict]
    if not bad:
        return
    patients = sorted({f.patient for f in bad if f.patient})
    first = bad[0]
    where = " / ".join(x for x in (first.patient and f"patient {first.patient}", first.file) if x)
    raise CohortError(
        f"{len(patients)} patients with problems ({len(bad)} findings; first: {where}: "
        f"{first.message}); run `cdeg check` for the full list"
    )


def format_table(findings: list[Finding]) -> str:
    """Findings as an aligned text table (patient_id, file, check, severity, message)."""
    rows = [FINDING_COLUMNS] + [tuple(getattr(f, c) or "-" for c in FINDING_COLUMNS) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(len(FINDING_COLUMNS) - 1)]
    return "\n".join(
        "  ".join([*(r[i].ljust(widths[i]) for i in range(len(widths))), r[-1]]).rstrip() for r in rows
    )


def summary_line(findings: list[Finding]) -> str:
    """One line: counts of errors and warnings and how many patients they touch."""
    n_err = sum(f.severity == "error" for f in findings)
    n_warn = len(findings) - n_err
    patients = len({f.patient for f in findings if f.patient})
    if not findings:
        return "no problems found"
    return f"{n_err} errors, {n_warn} warnings; {patients} patients with problems"
