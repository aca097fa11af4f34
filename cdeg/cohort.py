"""The cohort layout: the contract between stages, owned by this module alone.

::

    <cohort>/
      cohort.json                      name, profile, seed, n_patients, label_convention, cdeg_version
      clinical.csv                     one row per patient; first column patient_id
      images/<patient_id>/mri.nii.gz   sagittal T2 MRI, 3D
      images/<patient_id>/xray.nii.gz  lateral cervical radiograph, 2D, pixel spacing in mm
      masks/<patient_id>/mri.nii.gz    reference segmentation, same geometry as the image
      masks/<patient_id>/xray.nii.gz
      truth/levels.csv                 synthetic cohorts only: true per-structure markers
      truth/patients.csv               synthetic cohorts only: predisposition, oracle and ceiling probabilities
      truth/corners.csv                synthetic cohorts only: true vertebral body corners on the radiograph (mm)
      sources.csv                      cohorts from `cdeg cohort init`: original file of each image, action

A mask folder written by `cdeg segment predict` uses the same ``<patient_id>/<modality>.nii.gz``
layout, so every stage finds masks with :func:`mask_path` whatever produced them.
A patient may lack a modality, a mask or a level; readers report that instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cdeg import __version__, labels
from cdeg.errors import CohortError
from cdeg.io import read_json, read_table, write_json

Modality = Literal["mri", "xray"]

#: Modalities and the number of image dimensions each must have.
MODALITIES: dict[str, int] = {"mri": 3, "xray": 2}
MODALITY_DESCRIPTIONS: dict[str, str] = {
    "mri": "sagittal T2-weighted MRI (3D)",
    "xray": "lateral cervical radiograph (2D, pixel spacing in mm)",
}
#: The one word for each modality in user-facing text (reports, plot labels, variable names).
MODALITY_WORDS: dict[str, str] = {"mri": "MRI", "xray": "radiograph"}
ID_COLUMN = "patient_id"
IMAGE_SUFFIX = ".nii.gz"
COHORT_JSON = "cohort.json"
CLINICAL_CSV = "clinical.csv"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
TRUTH_DIR = "truth"
TRUTH_LEVELS = "levels.csv"
TRUTH_PATIENTS = "patients.csv"
TRUTH_CORNERS = "corners.csv"
#: The kinds of ceiling, highest first, and how the report names each.
CEILING_KINDS: dict[str, str] = {
    "latent": "latent oracle (true degeneration, synthetic truth)",
    "observable": "observable ceiling (what images and clinical scores show)",
}
#: Outcomes with a ceiling; the order of their columns in truth/patients.csv.
CEILING_TARGETS: tuple[str, ...] = ("accelerated", "poor_outcome_2y")


def ceiling_column(kind: str, target: str) -> str:
    """The truth/patients.csv column that holds `target`'s `kind` ceiling (``p_observable_accelerated``)."""
    if kind not in CEILING_KINDS:
        raise ValueError(f"unknown ceiling kind {kind!r}; valid: {', '.join(CEILING_KINDS)}")
    return f"p_{kind}_{target}"


#: The two ceilings of an outcome in truth/patients.csv (synthetic cohorts; :mod:`cdeg.synth.ceiling`):
#: "latent", the probability given the true latent degeneration (exact where the generator has a formula:
#: p_oracle for accelerated, the closed form of poor_outcome_2y), which no image can reach; "observable", a
#: model fitted on a large cohort from what the images and the clinical table show, the AUC a study can
#: hope for. An outcome missing here has no known ceiling.
TRUTH_CEILINGS: dict[str, dict[str, str]] = {
    t: {k: ceiling_column(k, t) for k in CEILING_KINDS} for t in CEILING_TARGETS
}
# The exact posterior: the same values as p_latent_accelerated, and also in cohorts written before the
# ceilings existed.
TRUTH_CEILINGS["accelerated"]["latent"] = "p_oracle"
#: Each outcome's latent ceiling column (kept for readers of the single oracle).
TRUTH_ORACLE: dict[str, str] = {t: kinds["latent"] for t, kinds in TRUTH_CEILINGS.items()}
#: Written by `cdeg cohort init`: each image's original file and what was done to it (copied, reoriented, ...).
SOURCES_CSV = "sources.csv"
PROFILES = ("neck", "population", "external")
#: Canonical image orientation written by `cdeg synth` and `cdeg import-dicom`, as SimpleITK direction
#: cosines (row-major, columns = index axes, LPS physical space). MRI: index i (columns) runs anterior to
#: posterior, j (rows) superior to inferior, k (slices) right to left: what a DICOM sagittal series with
#: ImageOrientationPatient [0,1,0, 0,0,-1] gives. Radiograph: 2D, columns anterior to posterior, rows
#: superior to inferior (patient facing image left), identity direction. Numpy arrays from SimpleITK are
#: therefore mri[slice, row, col] = [LR, SI, AP] and xray[row, col] = [SI, AP].
CANONICAL_DIRECTION: dict[str, tuple[float, ...]] = {
    "mri": (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "xray": (1.0, 0.0, 0.0, 1.0),
}
# Patient ids become folder names: keep them to characters that are safe on every file system.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


def check_modality(modality: str) -> str:
    """Return `modality` if it is known, else raise ValueError listing the valid ones."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; valid: {', '.join(MODALITIES)}")
    return modality


def parse_modalities(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Parse "mri,xray" (or a list) into a validated tuple in canonical order; None means all."""
    if value is None:
        return tuple(MODALITIES)
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [m.strip() for m in items if m.strip()]
    for m in items:
        check_modality(m)
    if not items:
        raise ValueError("no modality given; valid: " + ", ".join(MODALITIES))
    return tuple(m for m in MODALITIES if m in items)


def check_patient_id(pid: str) -> str:
    """Return `pid` if it is usable as a folder name, else raise CohortError."""
    if not isinstance(pid, str) or not _ID_PATTERN.match(pid):
        raise CohortError(
            f"patient id {pid!r} must be 1-64 characters of letters, digits, '_', '-', '.', "
            "starting with a letter or digit",
        )
    return pid


def image_path(root: str | Path, patient_id: str, modality: str) -> Path:
    """Path of a patient's image in a cohort."""
    return Path(root) / IMAGES_DIR / patient_id / f"{check_modality(modality)}{IMAGE_SUFFIX}"


def mask_path(mask_root: str | Path, patient_id: str, modality: str) -> Path:
    """Path of a patient's mask inside a mask folder (a cohort's ``masks/`` or a prediction folder)."""
    return Path(mask_root) / patient_id / f"{check_modality(modality)}{IMAGE_SUFFIX}"


@dataclass(frozen=True)
class CohortMeta:
    """The contents of cohort.json.

    Parameters
    ----------
    name : str
        Free-text cohort name.
    profile : str
        "neck" (surgical radiculopathy cohort), "population" (population study) or "external".
    seed : int or None
        Generator seed for synthetic cohorts; None for real data.
    n_patients : int
        Number of patients in clinical.csv.
    label_convention : str
        Name of the mask label convention (see :mod:`cdeg.labels`).
    cdeg_version : str
        Version of cdeg that wrote the cohort.
    synthetic : bool
        True when the cohort comes from `cdeg synth` (truth/ is then present).
    extra : dict
        Anything else (generator config hash, source description).
    """

    name: str
    profile: str
    n_patients: int
    seed: int | None = None
    label_convention: str = labels.CONVENTION_NAME
    cdeg_version: str = __version__
    synthetic: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cohort:
    """A cohort folder on disk; cheap to create, reads files only when asked.

    Use :meth:`open` to check the folder and read its metadata.
    """

    root: Path
    meta: CohortMeta

    @classmethod
    def open(cls, root: str | Path) -> Cohort:
        """Open an existing cohort folder, checking cohort.json and clinical.csv exist."""
        root = Path(root)
        if not root.is_dir():
            raise CohortError("cohort folder does not exist", path=root)
        meta_file = root / COHORT_JSON
        if not meta_file.is_file():
            raise CohortError(f"not a cohort folder: {COHORT_JSON} is missing", path=root)
        raw = read_json(meta_file)
        if not isinstance(raw, dict):
            raise CohortError("cohort.json must hold a JSON object", path=meta_file)
        known = set(CohortMeta.__dataclass_fields__)
        missing = {"name", "profile", "n_patients"} - set(raw)
        if missing:
            raise CohortError(f"cohort.json lacks {', '.join(sorted(missing))}", path=meta_file)
        extra = dict(raw.get("extra", {}))
        extra.update({k: v for k, v in raw.items() if k not in known})
        meta = CohortMeta(**{k: v for k, v in raw.items() if k in known and k != "extra"}, extra=extra)
        if meta.label_convention != labels.CONVENTION_NAME:
            raise CohortError(
                f"label convention {meta.label_convention!r} is not supported (cdeg uses {labels.CONVENTION_NAME!r})",
                path=meta_file,
            )
        return cls(root, meta)

    # -- paths ---------------------------------------------------------------------------------
    @property
    def clinical_path(self) -> Path:
        return self.root / CLINICAL_CSV

    @property
    def masks_root(self) -> Path:
        return self.root / MASKS_DIR

    @property
    def truth_levels_path(self) -> Path:
        return self.root / TRUTH_DIR / TRUTH_LEVELS

    @property
    def truth_patients_path(self) -> Path:
        return self.root / TRUTH_DIR / TRUTH_PATIENTS

    @property
    def truth_corners_path(self) -> Path:
        return self.root / TRUTH_DIR / TRUTH_CORNERS

    def image_path(self, patient_id: str, modality: str) -> Path:
        return image_path(self.root, patient_id, modality)

    def mask_path(self, patient_id: str, modality: str) -> Path:
        return mask_path(self.masks_root, patient_id, modality)

    # -- contents ------------------------------------------------------------------------------
    def clinical(self, bad_ids: Literal["error", "drop", "first"] = "error") -> Any:
        """clinical.csv as a DataFrame indexed by nothing, `patient_id` as first column (str).

        `bad_ids`: what becomes of empty and repeated ids (:func:`read_clinical`)."""
        return read_clinical(self.clinical_path, bad_ids=bad_ids)

    def patient_ids(self) -> list[str]:
        """Patient ids in clinical.csv order, each once; rows with an empty id are left out.

        Listing needs no clinical value: a repeated id lists its patient once, at its first row
        (:func:`read_clinical` with ``bad_ids="first"``); the stages' input checks report such rows.
        """
        return list(read_clinical(self.clinical_path, bad_ids="first")[ID_COLUMN])

    def has_image(self, patient_id: str, modality: str) -> bool:
        return self.image_path(patient_id, modality).is_file()

    def has_mask(self, patient_id: str, modality: str) -> bool:
        return self.mask_path(patient_id, modality).is_file()

    @property
    def is_synthetic(self) -> bool:
        return self.truth_patients_path.is_file()


def write_cohort_json(root: str | Path, meta: CohortMeta) -> None:
    """Write cohort.json atomically."""
    write_json(Path(root) / COHORT_JSON, asdict(meta))


def value_text(value: Any) -> str:
    """A table value as text; Parquet may store numeric ids, and 7.0 is patient "7", not "7.0"."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


#: What :func:`read_clinical` may do with a row whose id is empty or also on another row (see there).
BAD_ID_RULES = ("error", "drop", "first")


def read_clinical(
    path: str | Path, id_column: str = ID_COLUMN, *, bad_ids: Literal["error", "drop", "first"] = "error"
) -> Any:
    """Read a clinical table; ids are read as strings (stripped) and checked for presence and uniqueness.

    The one place that decides what becomes of a row with an empty id or an id on several rows; the
    stages' input checks (:mod:`cdeg.check`) report such rows, one line each, before any work.

    Parameters
    ----------
    path : path
        CSV/TSV/Parquet table.
    id_column : str
        Column of the patient ids.
    bad_ids : {"error", "drop", "first"}
        "error": raise. "drop": leave out the rows with an empty id and every row of a repeated id (stages
        that read clinical values: which of the rows is right is unknown). "first": leave out the rows with
        an empty id and keep the first row of a repeated id (stages that only list the patients: each is
        listed once, in file order). A row with an empty id can be matched to nothing in either case.

    Returns
    -------
    DataFrame
        The rows kept, in file order (index 0..n-1), `id_column` as str.

    Raises
    ------
    CohortError
        When the table cannot be read or has no id column; with ``bad_ids="error"``, when an id is empty or
        repeated. The message names the file and the lines or ids.
    """
    if bad_ids not in BAD_ID_RULES:
        raise ValueError(f"bad_ids must be one of {', '.join(BAD_ID_RULES)}, got {bad_ids!r}")
    # CSV ids are read as text so that "007" stays "007"; Parquet keeps its own column types.
    is_csv = str(path).endswith((".csv", ".tsv", ".txt", ".csv.gz"))
    df = read_table(path, dtype={id_column: str}) if is_csv else read_table(path)
    if id_column not in df.columns:
        raise CohortError(
            f"no {id_column!r} column (columns: {', '.join(map(str, df.columns[:8]))}"
            f"{', ...' if len(df.columns) > 8 else ''})",
            path=path,
        )
    ids = df[id_column]
    # A blank id ("  ") is as empty as a missing one: it names no patient.
    text = ids.where(ids.notna(), "").map(lambda v: value_text(v).strip()).astype(str)
    empty = (text == "").to_numpy()
    df[id_column] = text
    if bad_ids == "error":
        if empty.any():
            rows = [i + 2 for i in empty.nonzero()[0][:5].tolist()]  # +2: header line, 1-based
            raise CohortError(f"empty {id_column} on line(s) {rows}", path=path)
        dup = text[text.duplicated()].unique().tolist()
        if dup:
            raise CohortError(f"duplicate {id_column}: {', '.join(dup[:10])}", path=path)
        return df
    repeated = text.duplicated(keep=False if bad_ids == "drop" else "first").to_numpy()
    return df[~empty & ~repeated].reset_index(drop=True)
