"""`cdeg import-dicom`: a hospital DICOM export in, a de-identified cohort out, every skipped file reported.

Outputs in the cohort folder::

    cohort.json          profile "external", synthetic false, seed null
    clinical.csv         one row per imported patient, ids are pseudonyms
    images/<pseudonym>/mri.nii.gz, xray.nii.gz
    import_report.csv    every file or clinical row not imported: file_key, patient, modality, reason, detail
    import_images.csv    what each image came from: patient, modality, series_key, n_files, rule, spacing

Nothing in these files (nor in the log) holds a name, a birth date, an accession number, an institution, an
original PatientID, a UID or a path of the DICOM export: files are named by a salted key whose table goes
next to the id map, outside the cohort (see :mod:`cdeg.dicom.deid`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
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
from cdeg.dicom.convert import SeriesProblem, mr_volume, radiograph, reorient
from cdeg.dicom.scan import Choice, ScanResult, pick_mri, pick_xray, quiet_pydicom, scan
from cdeg.errors import CdegError
from cdeg.io import read_table, write_image, write_table

log = logging.getLogger(__name__)

REPORT_CSV = "import_report.csv"
IMAGES_CSV = "import_images.csv"
REPORT_COLUMNS = ("file_key", "patient", "modality", "reason", "detail")
SALT_ENV = "CDEG_ID_SALT"
SERIES_COLUMNS = ("patient", "series_instance_uid", "modality")
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
        Rows of import_report.csv (files and clinical rows not imported).
    """

    cohort: Path
    n_patients: int
    n_mri: int
    n_xray: int
    n_files: int
    n_reported: int

    def one_line(self) -> str:
        return (
            f"imported {self.n_patients} patients ({self.n_mri} MRI, {self.n_xray} radiographs) from "
            f"{self.n_files} files into {self.cohort}; {self.n_reported} files/rows not imported, see "
            f"{REPORT_CSV}"
        )


def import_dicom(
    dicom: str | Path,
    out: str | Path,
    clinical: str | Path | None = None,
    id_map: str | Path | None = None,
    series: str | Path | None = None,
    name: str | None = None,
    salt: str | None = None,
    progress: bool = True,
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
        Secret for the pseudonym order and report keys (default: environment ``CDEG_ID_SALT``, else none).
    progress : bool
        Show a progress bar.
    """
    dicom, out = Path(dicom), Path(out)
    salt = os.environ.get(SALT_ENV, "") if salt is None else salt
    _check_paths(dicom, out, id_map, clinical, series)
    existing = deid.read_id_map(id_map) if id_map is not None and Path(id_map).is_file() else {}
    clinical_df = _read_clinical(clinical) if clinical is not None else None
    overrides = _read_overrides(series) if series is not None else {}
    t0 = time.perf_counter()

    with quiet_pydicom():
        scanned = scan(dicom, progress=progress)
    pseudonyms = deid.assign_pseudonyms(scanned.patients(), salt, existing)
    rows: list[dict[str, str]] = []
    keys: dict[str, str] = {}
    for s in scanned.skipped:
        rows.append(
            _row(s.rel, pseudonyms.get(s.patient_id or "", ""), s.modality, s.reason, s.detail, salt, keys)
        )
    rows += _unmatched_overrides(overrides, scanned, pseudonyms)

    imported: dict[str, list[str]] = {}
    provenance: list[dict[str, Any]] = []
    for original in sorted(scanned.patients(), key=lambda p: pseudonyms[p]):
        pseudo = pseudonyms[original]
        with quiet_pydicom():
            got = _import_patient(scanned, original, pseudo, overrides, out, salt, rows, keys, provenance)
        if got:
            imported[pseudo] = got
        elif any(s.patient_id == original for s in scanned.series.values()):
            rows.append(
                {
                    "file_key": "",
                    "patient": pseudo,
                    "modality": "",
                    "reason": "no_image",
                    "detail": "no image of this patient could be imported",
                }
            )

    table, clinical_rows = _clinical_table(clinical_df, pseudonyms, sorted(imported))
    rows += clinical_rows
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / CLINICAL_CSV, table)
    _write_report(out, rows, provenance)
    if id_map is not None:
        deid.write_id_map(id_map, pseudonyms)
        deid.write_files_table(id_map, keys)
    meta = CohortMeta(
        name=name or out.name,
        profile="external",
        n_patients=len(table),
        seed=None,
        cdeg_version=__version__,
        synthetic=False,
        extra={
            "source": "dicom",
            "pseudonyms_salted": bool(salt),
            "modalities": list(MODALITIES),
            "import_report": REPORT_CSV,
            "import_images": IMAGES_CSV,
        },
    )
    write_cohort_json(out, meta)
    summary = ImportSummary(
        out,
        len(imported),
        sum("mri" in v for v in imported.values()),
        sum("xray" in v for v in imported.values()),
        scanned.n_files,
        len(rows),
    )
    log.info("%s (%.1f s)", summary.one_line(), time.perf_counter() - t0)
    return summary


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
            "patient": "",
            "modality": m,
            "reason": "override_not_found",
            "detail": "a --series row names a patient not found in the DICOM folder",
        }
        for (pid, m) in overrides
        if pid not in known
    ]


# --- per patient ---------------------------------------------------------------------------------


def _row(
    rel: str, patient: str, modality: str, reason: str, detail: str, salt: str, keys: dict[str, str]
) -> dict[str, str]:
    key = deid.path_key(rel, salt)
    keys[key] = rel
    return {"file_key": key, "patient": patient, "modality": modality, "reason": reason, "detail": detail}


def _import_patient(
    scanned: ScanResult,
    original: str,
    pseudo: str,
    overrides: dict,
    out: Path,
    salt: str,
    rows: list,
    keys: dict,
    provenance: list,
) -> list[str]:
    """Pick, convert and write one patient's images; report the rest. Returns the modalities written."""
    series = scanned.series_of(original)
    written = []
    for modality, pick in (("mri", pick_mri), ("xray", pick_xray)):
        choice: Choice = pick(series, _override_for(overrides, original, pseudo, modality), salt)
        for inst, why in choice.others:
            rows.append(_row(inst.rel, pseudo, inst.modality, "not_selected", why, salt, keys))
        if not choice.instances:
            rows.append(
                {
                    "file_key": "",
                    "patient": pseudo,
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
                rows.append(_row(inst.rel, pseudo, inst.modality, e.reason, e.detail, salt, keys))
            log.warning("patient %s: %s not imported: %s", pseudo, modality, e.detail)
            continue
        write_image(image_path(out, pseudo, modality), image)
        written.append(modality)
        provenance.append(
            {
                "patient": pseudo,
                "modality": modality,
                "series_key": deid.series_key(choice.instances[0].series_uid, salt),
                "n_files": len(choice.instances),
                "rule": choice.rule,
                "spacing": source,
            }
        )
    return written


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
                "patient": "",
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
                "patient": str(mapped[i]) if isinstance(mapped[i], str) else "",
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
                "patient": p,
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
        pd.DataFrame(provenance, columns=["patient", "modality", "series_key", "n_files", "rule", "spacing"]),
    )
