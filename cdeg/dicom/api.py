"""`cdeg import-dicom`: a hospital DICOM export in, a de-identified cohort out, every skipped file reported.

Outputs in the cohort folder::

    cohort.json          profile "external", synthetic false, seed null
    clinical.csv         one row per imported patient, ids are pseudonyms
    images/<pseudonym>/mri.nii.gz, xray.nii.gz
    import_report.csv    every file or clinical row not imported: file_key, patient_id, modality, reason, detail;
                         and every imported image with burned-in text (reason burned_in_text)
    import_images.csv    what each image came from: patient_id, modality, series_key, n_files, rule, spacing,
                         burned_in (attribute, heuristic), text_regions, masked (regions blanked)

Nothing in these files (nor in the log) holds a name, a birth date, an accession number, an institution, an
original PatientID, a UID or a path of the DICOM export: files are named by a salted key whose table goes
next to the id map, outside the cohort (see :mod:`cdeg.dicom.deid`). The salt of those keys and of the
pseudonym order is random per import unless given, and is stored in the id map only.

Text burned into the pixels (a name in a corner of a radiograph) is found from the attribute
BurnedInAnnotation and a heuristic (:mod:`cdeg.dicom.burned_in`), reported, and blanked with
``mask_burned_in``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdeg import __version__
from cdeg.cohort import (
    CANONICAL_DIRECTION,
    CLINICAL_CSV,
    COHORT_JSON,
    ID_COLUMN,
    MODALITIES,
    CohortMeta,
    image_path,
    write_cohort_json,
)
from cdeg.dicom import deid
from cdeg.dicom.burned_in import REGIONS, find_text_regions, mask_regions
from cdeg.dicom.convert import SeriesProblem, mr_volume, radiograph, reorient
from cdeg.dicom.scan import Choice, Instance, ScanResult, pick_mri, pick_xray, quiet_pydicom, scan
from cdeg.errors import CdegError
from cdeg.io import read_table, write_image, write_table
from cdeg.outputs import DicomImport
from cdeg.progress import ProgressArg

log = logging.getLogger(__name__)

REPORT_CSV = DicomImport.REPORT_CSV
IMAGES_CSV = DicomImport.IMAGES_CSV
REPORT_COLUMNS = ("file_key", ID_COLUMN, "modality", "reason", "detail")
SALT_ENV = "CDEG_ID_SALT"
SERIES_COLUMNS = ("patient", "series_instance_uid", "modality")
IMAGES_COLUMNS = (
    ID_COLUMN,
    "modality",
    "series_key",
    "n_files",
    "rule",
    "spacing",
    "burned_in",
    "text_regions",
    "masked",
)
BURNED_IN = "burned_in_text"
#: Clinical columns dropped on import because their name says they identify a person (lower case,
#: compared after removing "_", "-" and spaces).
IDENTIFYING_COLUMNS = frozenset(
    {
        "name",
        "patientname",
        "firstname",
        "lastname",
        "surname",
        "givenname",
        "familyname",
        "birthdate",
        "dateofbirth",
        "dob",
        "patientbirthdate",
        "mrn",
        "medicalrecordnumber",
        "accession",
        "accessionnumber",
        "address",
        "street",
        "phone",
        "telephone",
        "email",
        "ssn",
        "insurancenumber",
        "hospitalid",
        "originalid",
        "patientidoriginal",
        "institution",
        "institutionname",
        "referringphysician",
    }
)


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_dicom` did (counts only: safe to print).

    Parameters
    ----------
    cohort : Path
        The cohort folder written.
    n_patients, n_mri, n_xray : int
        Patients imported (with at least one image), MRI volumes and radiographs written.
    n_files : int
        Files looked at under the DICOM folder.
    n_reported : int
        Rows of import_report.csv for files and clinical rows not imported.
    n_burned_in, n_masked : int
        Imported images with burned-in text (rows ``burned_in_text`` of import_report.csv), and how
        many of them were masked.
    """

    cohort: Path
    n_patients: int
    n_mri: int
    n_xray: int
    n_files: int
    n_reported: int
    n_burned_in: int = 0
    n_masked: int = 0

    def one_line(self) -> str:
        text = (
            f"imported {self.n_patients} patients ({self.n_mri} MRI, {self.n_xray} radiographs) from "
            f"{self.n_files} files into {self.cohort}; {self.n_reported} files/rows not imported"
        )
        if self.n_burned_in:
            text += f"; {self.n_burned_in} images with burned-in text ({self.n_masked} masked)"
        return text + f", see {REPORT_CSV}"


@dataclass
class _Run:
    """One import's settings and what its patients add to the report and the provenance."""

    out: Path
    salt: str
    mask_burned_in: bool
    rows: list[dict[str, str]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def file_row(self, rel: str, patient: str, modality: str, reason: str, detail: str) -> str:
        """Add a report row naming a file by its key (the key -> path table goes next to the id map)."""
        key = deid.path_key(rel, self.salt)
        self.keys[key] = rel
        self.rows.append(
            {"file_key": key, ID_COLUMN: patient, "modality": modality, "reason": reason, "detail": detail}
        )
        return key


def import_dicom(
    dicom: str | Path,
    out: str | Path,
    clinical: str | Path | None = None,
    id_map: str | Path | None = None,
    series: str | Path | None = None,
    name: str | None = None,
    salt: str | None = None,
    mask_burned_in: bool = False,
    progress: ProgressArg = None,
) -> ImportSummary:
    """Import a DICOM folder tree as a de-identified cohort (sagittal T2 MRI + lateral radiograph).

    Parameters
    ----------
    dicom : path
        Folder of DICOM files, any nesting, several patients and studies.
    out : path
        Cohort folder to create (new or empty).
    clinical : path, optional
        CSV/TSV/Parquet with a ``patient_id`` column holding the DICOM PatientID; ids are replaced by the
        pseudonyms and columns whose name identifies a person (name, birth date, MRN ...) are dropped.
    id_map : path, optional
        CSV ``pseudonym,patient_id`` written here (outside `out` and `dicom`); reused when it exists, so
        later imports keep the pseudonyms. Without it the pseudonyms cannot be traced back.
    series : path, optional
        Override CSV with columns ``patient,series_instance_uid,modality`` (patient: PatientID or
        pseudonym; series: SeriesInstanceUID or the series key of import_report.csv; modality mri/xray).
    name : str, optional
        Cohort name (default: the folder name of `out`).
    salt : str, optional
        Secret for the pseudonym order and report keys. Default: environment ``CDEG_ID_SALT``, else the
        salt stored in an existing `id_map`, else a new random one (:func:`cdeg.dicom.deid.new_salt`).
        It is written into the id map only, never into the cohort or the log.
    mask_burned_in : bool
        Blank the regions of a radiograph that hold burned-in text (found by the attribute
        BurnedInAnnotation or the heuristic of :mod:`cdeg.dicom.burned_in`) before it is written; they
        are reported either way. Input files are never modified.
    progress : bool or callable
        Progress of the scan (:mod:`cdeg.progress`).
    """
    dicom, out = Path(dicom), Path(out)
    _check_paths(dicom, out, id_map, clinical, series)
    salt, salt_source = _resolve_salt(salt, id_map)
    existing = deid.read_id_map(id_map) if id_map is not None and Path(id_map).is_file() else {}
    clinical_df = _read_clinical(clinical) if clinical is not None else None
    overrides = _read_overrides(series) if series is not None else {}
    t0 = time.perf_counter()

    with quiet_pydicom():
        scanned = scan(dicom, progress=progress)
    pseudonyms = deid.assign_pseudonyms(scanned.patients(), salt, existing)
    run = _Run(out, salt, mask_burned_in)
    for s in scanned.skipped:
        run.file_row(s.rel, pseudonyms.get(s.patient_id or "", ""), s.modality, s.reason, s.detail)
    run.rows += _unmatched_overrides(overrides, scanned, pseudonyms)

    imported: dict[str, list[str]] = {}
    for original in sorted(scanned.patients(), key=lambda p: pseudonyms[p]):
        pseudo = pseudonyms[original]
        with quiet_pydicom():
            got = _import_patient(scanned, original, pseudo, overrides, run)
        if got:
            imported[pseudo] = got
        elif any(s.patient_id == original for s in scanned.series.values()):
            run.rows.append(
                {
                    "file_key": "",
                    ID_COLUMN: pseudo,
                    "modality": "",
                    "reason": "no_image",
                    "detail": "no image of this patient could be imported",
                }
            )

    table, clinical_rows = _clinical_table(clinical_df, pseudonyms, sorted(imported))
    run.rows += clinical_rows
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / CLINICAL_CSV, table)
    _write_report(out, run.rows, run.provenance)
    if id_map is not None:
        deid.write_id_map(id_map, pseudonyms, salt)
        deid.write_files_table(id_map, run.keys)
    write_cohort_json(out, _meta(out, name, len(table), salt, salt_source, mask_burned_in))
    n_burned = sum(r["reason"] == BURNED_IN for r in run.rows)
    summary = ImportSummary(
        out,
        len(imported),
        sum("mri" in v for v in imported.values()),
        sum("xray" in v for v in imported.values()),
        scanned.n_files,
        len(run.rows) - n_burned,
        n_burned,
        sum(bool(p["masked"]) for p in run.provenance),
    )
    log.info("%s (%.1f s)", summary.one_line(), time.perf_counter() - t0)
    return summary


def _meta(
    out: Path, name: str | None, n: int, salt: str, salt_source: str, mask_burned_in: bool
) -> CohortMeta:
    """cohort.json: says whether and how the pseudonyms are salted, never the salt."""
    return CohortMeta(
        name=name or out.name,
        profile="external",
        n_patients=n,
        seed=None,
        cdeg_version=__version__,
        synthetic=False,
        extra={
            "source": "dicom",
            "pseudonyms_salted": bool(salt),
            "salt_source": salt_source,
            "mask_burned_in": mask_burned_in,
            "modalities": list(MODALITIES),
            "import_report": REPORT_CSV,
            "import_images": IMAGES_CSV,
        },
    )


def _resolve_salt(salt: str | None, id_map: str | Path | None) -> tuple[str, str]:
    """(salt, where it came from): given or environment, else the id map's, else a new random one.

    Reusing the id map's salt keeps the report keys (files, series) of a later import equal to the
    first one's; the pseudonyms of patients in the map are kept whatever the salt.
    """
    if salt is None:
        salt = os.environ.get(SALT_ENV) or None  # an empty variable counts as unset
    stored = deid.read_salt(id_map) if id_map is not None and Path(id_map).is_file() else None
    if salt is not None:
        if stored is not None and stored != salt:
            log.warning(
                "the salt given differs from the one stored in the id map: patients in the map keep "
                "their pseudonyms, new keys use the salt given, and the map now stores it"
            )
        return salt, "given"
    if stored is not None:
        log.info("pseudonym salt: the one stored in the id map")
        return stored, "id_map"
    if id_map is None:
        log.info("pseudonym salt: random and not kept (no --id-map); a later import numbers patients anew")
    return deid.new_salt(), "random"


# --- validation (before any file is read) --------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_paths(dicom: Path, out: Path, id_map: Any, clinical: Any, series: Any) -> None:
    if not dicom.is_dir():
        raise CdegError("DICOM folder does not exist", path=dicom)
    if (out / COHORT_JSON).exists() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise ValueError(
            f"{out} exists and is not empty; import-dicom writes only into a new or empty folder"
        )
    if _inside(out, dicom) or _inside(dicom, out):
        raise ValueError("the cohort folder and the DICOM folder must not contain each other")
    if id_map is not None:
        id_map = Path(id_map)
        if _inside(id_map, out):
            raise ValueError(
                "refusing to write the id map inside the cohort folder: it would undo the "
                "de-identification; choose a path outside it"
            )
        if _inside(id_map, dicom):
            raise ValueError(
                "refusing to write the id map inside the DICOM folder (inputs are never modified)"
            )
        if id_map.is_dir():
            raise ValueError(f"--id-map {id_map} is a folder; give a file name (CSV)")
    for what, p in (("clinical table", clinical), ("series override file", series)):
        if p is not None and not Path(p).is_file():
            raise CdegError(f"{what} not found", path=p)


def _read_clinical(path: str | Path) -> Any:
    """The hospital's clinical table; problems are reported by line number, never by id."""
    df = read_table(path, dtype={ID_COLUMN: str})
    if ID_COLUMN not in df.columns:
        raise CdegError(f"no {ID_COLUMN!r} column (holding the DICOM PatientID)", path=path)
    ids = df[ID_COLUMN].astype("string").str.strip()
    empty = [int(i) + 2 for i in ids.index[ids.isna() | (ids == "")][:5]]
    if empty:
        raise CdegError(f"empty {ID_COLUMN} on line(s) {empty}", path=path)
    dup = [int(i) + 2 for i in ids.index[ids.duplicated(keep=False)][:10]]
    if dup:
        raise CdegError(f"the same {ID_COLUMN} appears on lines {dup}", path=path)
    df[ID_COLUMN] = ids.astype(str)
    return df


def _read_overrides(path: str | Path) -> dict[tuple[str, str], str]:
    """(patient, modality) -> series uid or key, from the --series CSV."""
    df = read_table(path, dtype=str)
    missing = [c for c in SERIES_COLUMNS if c not in df.columns]
    if missing:
        raise CdegError(
            f"--series file lacks column(s) {', '.join(missing)}; expected {', '.join(SERIES_COLUMNS)}",
            path=path,
        )
    out: dict[tuple[str, str], str] = {}
    for i, r in enumerate(df.itertuples(index=False), start=2):
        pid, uid, modality = (str(getattr(r, c) or "").strip() for c in SERIES_COLUMNS)
        if modality not in MODALITIES:
            raise CdegError(f"line {i}: modality must be one of {', '.join(MODALITIES)}", path=path)
        if not pid or not uid or pid == "nan" or uid == "nan":
            raise CdegError(f"line {i}: patient and series_instance_uid are required", path=path)
        if (pid, modality) in out:
            raise CdegError(f"line {i}: a second {modality} series for the same patient", path=path)
        out[(pid, modality)] = uid
    return out


def _override_for(
    overrides: dict[tuple[str, str], str], original: str, pseudo: str, modality: str
) -> str | None:
    return overrides.get((original, modality)) or overrides.get((pseudo, modality))


def _unmatched_overrides(
    overrides: dict, scanned: ScanResult, pseudonyms: dict[str, str]
) -> list[dict[str, str]]:
    known = set(pseudonyms) | set(pseudonyms.values())
    return [
        {
            "file_key": "",
            ID_COLUMN: "",
            "modality": m,
            "reason": "override_not_found",
            "detail": "a --series row names a patient not found in the DICOM folder",
        }
        for (pid, m) in overrides
        if pid not in known
    ]


# --- per patient ---------------------------------------------------------------------------------


def _import_patient(scanned: ScanResult, original: str, pseudo: str, overrides: dict, run: _Run) -> list[str]:
    """Pick, convert and write one patient's images; report the rest. Returns the modalities written."""
    series = scanned.series_of(original)
    written = []
    for modality, pick in (("mri", pick_mri), ("xray", pick_xray)):
        choice: Choice = pick(series, _override_for(overrides, original, pseudo, modality), run.salt)
        for inst, why in choice.others:
            run.file_row(inst.rel, pseudo, inst.modality, "not_selected", why)
        if not choice.instances:
            run.rows.append(
                {
                    "file_key": "",
                    ID_COLUMN: pseudo,
                    "modality": modality,
                    "reason": choice.problem or "not_found",
                    "detail": choice.detail,
                }
            )
            log.info("patient %s: no %s imported (%s)", pseudo, modality, choice.problem or "not found")
            continue
        try:
            if modality == "mri":
                image, source = mr_volume(choice.instances), "PixelSpacing + ImagePositionPatient"
            else:
                image, source = radiograph(choice.instances[0])
            image = reorient(image, CANONICAL_DIRECTION[modality])
        except SeriesProblem as e:
            for inst in choice.instances:
                run.file_row(inst.rel, pseudo, inst.modality, e.reason, e.detail)
            log.warning("patient %s: %s not imported: %s", pseudo, modality, e.detail)
            continue
        image, burned_in = _burned_in(image, choice.instances, modality, pseudo, run)
        write_image(image_path(run.out, pseudo, modality), image)
        written.append(modality)
        run.provenance.append(
            {
                ID_COLUMN: pseudo,
                "modality": modality,
                "series_key": deid.series_key(choice.instances[0].series_uid, run.salt),
                "n_files": len(choice.instances),
                "rule": choice.rule,
                "spacing": source,
                **burned_in,
            }
        )
    return written


def _burned_in(
    image: Any, instances: tuple[Instance, ...], modality: str, pseudo: str, run: _Run
) -> tuple[Any, dict[str, str]]:
    """Check an image for burned-in text; report it, and mask it when asked. Returns the image to write
    and the provenance columns (burned_in, text_regions, masked; "" when clean)."""
    import SimpleITK as sitk

    flagged = next((i for i in instances if i.burned_in_annotation == "YES"), None)
    # The band heuristic is calibrated on radiographs; MRI is checked by the attribute only.
    found = find_text_regions(sitk.GetArrayViewFromImage(image)).regions if modality == "xray" else ()
    if flagged is None and not found:
        return image, {"burned_in": "", "text_regions": "", "masked": ""}
    signals = ["attribute"] * (flagged is not None) + ["heuristic"] * bool(found)
    # Attribute YES but no text located: blank every region where burn-ins sit.
    masked = (found or tuple(REGIONS)) if run.mask_burned_in and modality == "xray" else ()
    if masked:
        image = _masked(image, masked)
    detail = ("BurnedInAnnotation YES; " if flagged is not None else "") + (
        f"text found in {', '.join(found)}; " if found else "no text located by the heuristic; "
    )
    if masked:
        detail += f"masked: {', '.join(masked)}"
    elif modality == "xray":
        detail += "not masked (use --mask-burned-in)"
    else:
        detail += "not masked (MRI is not masked; review the series)"
    key = run.file_row((flagged or instances[0]).rel, pseudo, modality, BURNED_IN, detail)
    log.warning("patient %s: %s file %s carries burned-in text: %s", pseudo, modality, key, detail)
    return image, {
        "burned_in": "+".join(signals),
        "text_regions": ";".join(found),
        "masked": ";".join(masked),
    }


def _masked(image: Any, regions: tuple[str, ...]) -> Any:
    """The image with `regions` blanked (:func:`cdeg.dicom.burned_in.mask_regions`), same geometry."""
    import SimpleITK as sitk

    masked = sitk.GetImageFromArray(mask_regions(sitk.GetArrayFromImage(image), regions))
    masked.CopyInformation(image)
    return masked


def _clinical_table(
    df: Any, pseudonyms: dict[str, str], imported: list[str]
) -> tuple[Any, list[dict[str, str]]]:
    """The cohort's clinical.csv (pseudonyms, identifying columns dropped) and report rows."""
    import pandas as pd

    rows: list[dict[str, str]] = []
    if df is None:
        return pd.DataFrame({ID_COLUMN: imported}), rows
    drop = [
        c
        for c in df.columns
        if c != ID_COLUMN
        and str(c).lower().replace("_", "").replace("-", "").replace(" ", "") in IDENTIFYING_COLUMNS
    ]
    for c in drop:
        rows.append(
            {
                "file_key": "",
                ID_COLUMN: "",
                "modality": "",
                "reason": "clinical_column_dropped",
                "detail": f"column {c!r} identifies a person",
            }
        )
    df = df.drop(columns=drop)
    mapped = df[ID_COLUMN].map(pseudonyms)
    for i in df.index[mapped.isna() | ~mapped.isin(imported)]:
        rows.append(
            {
                "file_key": "",
                ID_COLUMN: str(mapped[i]) if isinstance(mapped[i], str) else "",
                "modality": "",
                "reason": "clinical_row_without_images",
                "detail": f"clinical table line {int(i) + 2}: no image imported for this id",
            }
        )
    df = df.assign(**{ID_COLUMN: mapped})[mapped.isin(imported)]
    missing = sorted(set(imported) - set(df[ID_COLUMN]))
    for p in missing:
        rows.append(
            {
                "file_key": "",
                ID_COLUMN: p,
                "modality": "",
                "reason": "images_without_clinical_row",
                "detail": "imported images but no clinical row (values left empty)",
            }
        )
    # Concatenate only when needed: an empty frame would turn integer columns into floats.
    table = pd.concat([df, pd.DataFrame({ID_COLUMN: missing})], ignore_index=True) if missing else df
    return table.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True), rows


def _write_report(out: Path, rows: list[dict[str, str]], provenance: list[dict[str, Any]]) -> None:
    import pandas as pd

    write_table(out / REPORT_CSV, pd.DataFrame(rows, columns=list(REPORT_COLUMNS)))
    write_table(
        out / IMAGES_CSV,
        pd.DataFrame(provenance, columns=list(IMAGES_COLUMNS)),
    )
