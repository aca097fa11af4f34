"""Write a NIfTI cohort as a DICOM tree that looks like a hospital export: the importer's test bed.

For each patient of the cohort the tree holds, nested like a PACS export
(``<LAST>_<FIRST>_<PatientID>/<StudyDate>_<study>/S<nnn>_<series>/<file>``):

* an MR study with the sagittal T2 series (one file per slice, ``IM00001``..., no extension), a decoy
  sagittal T1 series, a decoy axial T2 series and a Basic Text SR report (a DICOM file without pixels);
* a radiograph study with the lateral cervical radiograph (CR with ImagerPixelSpacing only for even
  patients, DX with PixelSpacing and ImagerPixelSpacing for odd ones) and a decoy AP radiograph.

The root also holds ``clinical.csv`` keyed by the hospital PatientID (what a clinic hands over with the
images) and a plain-text ``README.TXT``: two files an importer must skip as "not DICOM".

Identifying tags (PatientName, PatientID, PatientBirthDate, AccessionNumber, InstitutionName,
ReferringPhysicianName) are drawn from `seed`, so tests can check none of them leaks through an import.
UIDs come from :func:`pydicom.uid.generate_uid` with a deterministic entropy source: the same cohort and
seed give the same UIDs. Files are written with a file meta header, Explicit VR Little Endian.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdeg.cohort import CLINICAL_CSV, ID_COLUMN, Cohort
from cdeg.errors import CdegError
from cdeg.io import atomic_path, read_image, write_table, write_text

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"

# Fictional and deliberately unusual names, so a leak test searching for them cannot hit ordinary words.
_LAST_NAMES = (
    "Quarendon",
    "Vellacott",
    "Brzezinska",
    "Oyelaran",
    "Tschirnhaus",
    "Mbeki-Vance",
    "Haldorsen",
    "Ferreirinha",
    "Szczygiel",
    "Okonkwo-Lind",
    "Abernathy",
    "Kristiansund",
    "Delacroix-Ng",
    "Pomeroyce",
    "Wachtendonk",
    "Ilunga",
)
_FIRST_NAMES = (
    "Ottoline",
    "Bartholomew",
    "Ysolde",
    "Leocadia",
    "Thaddeus",
    "Wilhelmina",
    "Cosimo",
    "Perpetua",
    "Evander",
    "Hildegunn",
    "Zebulon",
    "Marisol",
    "Ignatius",
    "Rosalind",
)
_INSTITUTIONS = (
    "St. Quillon Spine Hospital",
    "Ravensmoor University Clinic",
    "Halvergate Orthopaedic Centre",
)


@dataclass(frozen=True)
class Identity:
    """The identifying tags written for one patient (all fictional, drawn from the seed).

    Parameters
    ----------
    patient_id : str
        DICOM PatientID (hospital id, ``H`` + 7 digits).
    patient_name : str
        DICOM PatientName, ``LAST^FIRST``.
    birth_date : str
        PatientBirthDate, ``YYYYMMDD``.
    sex : str
        PatientSex, ``M`` or ``F``.
    accession_numbers : tuple of str
        AccessionNumber of the MR study and of the radiograph study.
    institution : str
        InstitutionName.
    referring_physician : str
        ReferringPhysicianName, ``LAST^FIRST``.
    study_date : str
        StudyDate of both studies, ``YYYYMMDD``.
    """

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    accession_numbers: tuple[str, str]
    institution: str
    referring_physician: str
    study_date: str

    def identifying_values(self) -> list[str]:
        """Every identifying string written for this patient (name parts included), for leak tests."""
        parts = [
            self.patient_id,
            self.patient_name,
            self.birth_date,
            *self.accession_numbers,
            self.institution,
            self.referring_physician,
        ]
        parts += self.patient_name.split("^") + self.referring_physician.split("^")
        return sorted(set(parts))


@dataclass(frozen=True)
class DicomExport:
    """What :func:`write_cohort_dicom` wrote.

    Parameters
    ----------
    root : Path
        The DICOM tree.
    identities : dict
        Cohort patient id -> :class:`Identity` written into that patient's files.
    n_files : int
        Number of files written (DICOM and others).
    """

    root: Path
    identities: dict[str, Identity]
    n_files: int


def write_cohort_dicom(
    cohort_dir: str | Path, out_dir: str | Path, seed: int = 0, overwrite: bool = False
) -> DicomExport:
    """Write an existing NIfTI cohort as a DICOM tree with identifying tags, decoys and non-image files.

    Parameters
    ----------
    cohort_dir : path
        A cohort (``cdeg synth`` output or any cohort with integer-valued images).
    out_dir : path
        Folder to create; must be new or empty unless `overwrite`.
    seed : int
        Seed for the fictional identities, dates and UIDs.
    overwrite : bool
        Write into a non-empty `out_dir` (files with the same names are replaced).

    Returns
    -------
    DicomExport
        The folder, the identity written for each patient and the number of files.
    """
    cohort = Cohort.open(cohort_dir)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose a new folder or pass overwrite")
    if out.resolve().is_relative_to(cohort.root.resolve()):
        raise ValueError("the DICOM folder must not be inside the cohort folder")
    clinical = cohort.clinical()
    pids = list(clinical[ID_COLUMN])
    identities = _draw_identities(len(pids), seed)
    n_files = 0
    for i, pid in enumerate(pids):
        ident = identities[i]
        writer = _PatientWriter(out, ident, seed, pid, i)
        if cohort.has_image(pid, "mri"):
            n_files += writer.mr_study(read_image(cohort.image_path(pid, "mri"), patient=pid))
        if cohort.has_image(pid, "xray"):
            n_files += writer.xray_study(read_image(cohort.image_path(pid, "xray"), patient=pid))
    hospital = clinical.copy()
    hospital[ID_COLUMN] = [identities[i].patient_id for i in range(len(pids))]
    write_table(out / CLINICAL_CSV, hospital)
    write_text(out / "README.TXT", "Export from the radiology archive. Open with a DICOM viewer.\n")
    log.info("wrote %d patients as DICOM (%d files)", len(pids), n_files + 2)
    return DicomExport(out, {pid: identities[i] for i, pid in enumerate(pids)}, n_files + 2)


def _draw_identities(n: int, seed: int) -> list[Identity]:
    """Distinct fictional identities for n patients (names unique while n <= 224, then numbered)."""
    rng = np.random.default_rng([seed, 0xD1C0])
    grid = len(_LAST_NAMES) * len(_FIRST_NAMES)
    combos = rng.permutation(grid)
    ids = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    out = []
    for i in range(n):
        c = int(combos[i % grid])
        last, first = _LAST_NAMES[c // len(_FIRST_NAMES)], _FIRST_NAMES[c % len(_FIRST_NAMES)]
        if i >= grid:
            last = f"{last}{i // grid}"
        ref = int(rng.integers(grid))
        born = np.datetime64("1940-01-01") + np.timedelta64(int(rng.integers(0, 60 * 365)), "D")
        study = np.datetime64("2015-01-01") + np.timedelta64(int(rng.integers(0, 9 * 365)), "D")
        acc = rng.choice(90_000_000, size=2, replace=False) + 10_000_000
        out.append(
            Identity(
                patient_id=f"H{int(ids[i]):07d}",
                patient_name=f"{last.upper()}^{first.upper()}",
                birth_date=str(born).replace("-", ""),
                sex="F" if rng.random() < 0.5 else "M",
                accession_numbers=(f"A{int(acc[0])}", f"A{int(acc[1])}"),
                institution=_INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))],
                referring_physician=(
                    f"{_LAST_NAMES[ref // len(_FIRST_NAMES)].upper()}^"
                    f"{_FIRST_NAMES[ref % len(_FIRST_NAMES)].upper()}"
                ),
                study_date=str(study).replace("-", ""),
            )
        )
    return out


def _stored(array: np.ndarray, pid: str, what: str) -> tuple[np.ndarray, int]:
    """The array as little-endian int16 or uint16 and its PixelRepresentation (1 = signed)."""
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise CdegError(
                f"{what} has non-integer voxels; DICOM export writes integer images only", patient=pid
            )
    lo, hi = float(array.min()), float(array.max())
    # Keep the source's signedness when it fits, so the importer gives back the same voxel type.
    if array.dtype.kind == "i" and lo >= -32768 and hi <= 32767:
        return np.ascontiguousarray(array, dtype="<i2"), 1
    if lo >= 0 and hi <= 65535:
        return np.ascontiguousarray(array, dtype="<u2"), 0
    if lo >= -32768 and hi <= 32767:
        return np.ascontiguousarray(array, dtype="<i2"), 1
    raise CdegError(f"{what} values {lo:g}..{hi:g} do not fit 16 bits", patient=pid)


class _PatientWriter:
    """Writes one patient's studies; holds the identity and the deterministic UID source."""

    def __init__(self, root: Path, ident: Identity, seed: int, pid: str, index: int):
        last, first = ident.patient_name.split("^")
        self.folder = root / f"{last}_{first}_{ident.patient_id}"
        self.ident = ident
        self.entropy = [str(seed), str(index), pid]

    def uid(self, *parts: object) -> str:
        from pydicom.uid import generate_uid

        return str(generate_uid(entropy_srcs=[*self.entropy, *map(str, parts)]))

    # -- studies -------------------------------------------------------------------------------
    def mr_study(self, image: Any) -> int:
        """T2 SAG (the target), T1 SAG and T2 AX (decoys) and an SR report; returns the file count."""
        study = self._study("mr", "MR C-SPINE", self.ident.accession_numbers[0])
        array = np.asarray(_array(image))
        spacing, origin, direction = image.GetSpacing(), image.GetOrigin(), image.GetDirection()
        n = self._mr_series(study, 3, "T2 SAG", array, spacing, origin, direction, te=102.0, tr=3500.0)
        # Decoy 1: same plane, T1 weighting (short TE/TR), half the in-plane resolution.
        t1 = np.clip(3000 - array[:, ::2, ::2].astype(np.int32), 0, 4095).astype(np.int16)
        n += self._mr_series(
            study,
            2,
            "T1 SAG",
            t1,
            (spacing[0] * 2, spacing[1] * 2, spacing[2]),
            origin,
            direction,
            te=11.0,
            tr=550.0,
        )
        # Decoy 2: axial T2 through the mid cervical spine (a few small slices).
        ax = (np.arange(4 * 48 * 48, dtype=np.int16).reshape(4, 48, 48) % 997).astype(np.int16)
        n += self._mr_series(
            study,
            4,
            "T2 AX",
            ax,
            (0.9, 0.9, 4.0),
            (-20.0, -20.0, 40.0),
            (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0),
            te=96.0,
            tr=4200.0,
        )
        n += self._sr(study, 99)
        return n

    def xray_study(self, image: Any) -> int:
        """The lateral radiograph (CR or DX) and a decoy AP radiograph; returns the file count."""
        study = self._study("xr", "XR C-SPINE 2 VIEWS", self.ident.accession_numbers[1])
        dx = int(self.entropy[1]) % 2 == 1
        array = np.asarray(_array(image))
        sx, sy = image.GetSpacing()
        self._radiograph(study, 1, "C-SPINE LAT", array, (sy, sx), "LL", ("P", "F"), dx)
        ap = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) * 3 % 4000).astype(np.uint16)
        self._radiograph(study, 2, "C-SPINE AP", ap, (0.3, 0.3), "AP", ("L", "F"), dx)
        return 2

    def _study(self, key: str, description: str, accession: str) -> dict[str, Any]:
        date = self.ident.study_date
        return {
            "uid": self.uid("study", key),
            "description": description,
            "accession": accession,
            "frame": self.uid("frame", key),
            "folder": self.folder / f"{date}_{description.replace(' ', '_')}",
        }

    # -- series --------------------------------------------------------------------------------
    def _mr_series(
        self,
        study: dict,
        number: int,
        description: str,
        array: np.ndarray,
        spacing,
        origin,
        direction,
        te: float,
        tr: float,
    ) -> int:
        stored, signed = _stored(array, self.entropy[2], "MRI")
        d = np.asarray(direction, dtype=float).reshape(3, 3)
        row, col, normal = d[:, 0], d[:, 1], d[:, 2]
        series_uid = self.uid("series", study["uid"], number)
        folder = study["folder"] / f"S{number:03d}_{description.replace(' ', '_')}"
        for k in range(stored.shape[0]):
            ds = self._dataset(study, "MR", MR_IMAGE_STORAGE, series_uid, number, description, k)
            ipp = np.asarray(origin, dtype=float) + normal * spacing[2] * k
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "SK", "2D"
            ds.SequenceName = "*tse2d1_17" if "T2" in description else "*tse2d1_3"
            ds.ProtocolName = description.lower().replace(" ", "_")
            ds.EchoTime, ds.RepetitionTime = _ds(te), _ds(tr)
            ds.MagneticFieldStrength = "1.5"
            ds.SliceThickness = _ds(spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.ImagePositionPatient = [_ds(v) for v in ipp]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
            ds.SliceLocation = _ds(float(ipp @ np.cross(row, col)))
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows), column spacing
            _set_pixels(ds, stored[k], signed, 16)
            _save(ds, folder / f"IM{k + 1:05d}")
        return stored.shape[0]

    def _radiograph(
        self,
        study: dict,
        number: int,
        description: str,
        array: np.ndarray,
        pixel_spacing: tuple[float, float],
        view: str,
        orientation: tuple[str, str],
        dx: bool,
    ) -> None:
        stored, signed = _stored(array, self.entropy[2], "radiograph")
        bits = 12 if not signed and int(stored.max()) < 4096 else 16
        series_uid = self.uid("series", study["uid"], number)
        sop_class = DX_IMAGE_STORAGE if dx else CR_IMAGE_STORAGE
        ds = self._dataset(study, "DX" if dx else "CR", sop_class, series_uid, number, description, 0)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.BodyPartExamined = "CSPINE"
        ds.ViewPosition = view
        ds.PatientOrientation = list(orientation)
        ds.ImagerPixelSpacing = [_ds(v) for v in pixel_spacing]
        if dx:  # DX "for presentation" carries the calibrated PixelSpacing as well; CR usually does not.
            ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
            ds.PresentationIntentType = "FOR PRESENTATION"
        _set_pixels(ds, stored, signed, bits)
        _save(ds, study["folder"] / f"S{number:03d}_{description.replace(' ', '_')}" / f"{number:03d}.dcm")

    def _sr(self, study: dict, number: int) -> int:
        from pydicom.dataset import Dataset

        ds = self._dataset(
            study, "SR", BASIC_TEXT_SR_STORAGE, self.uid("series", study["uid"], number), number, "REPORT", 0
        )
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = (
            "18748-4",
            "LN",
            "Diagnostic Imaging Report",
        )
        ds.ConceptNameCodeSequence = [concept]
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
        item.TextValue = (
            f"Patient {self.ident.patient_name.replace('^', ' ')}: mild degenerative changes "
            "C5-C6. No cord compression."
        )
        ds.ContentSequence = [item]
        ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
        _save(ds, study["folder"] / f"S{number:03d}_REPORT" / "SR00001")
        return 1

    def _dataset(
        self,
        study: dict,
        modality: str,
        sop_class: str,
        series_uid: str,
        number: int,
        description: str,
        index: int,
    ) -> Any:
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        sop_uid = self.uid("sop", series_uid, index)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study["uid"], series_uid
        ds.FrameOfReferenceUID = study["frame"]
        ds.Modality = modality
        ds.PatientName, ds.PatientID = self.ident.patient_name, self.ident.patient_id
        ds.PatientBirthDate, ds.PatientSex = self.ident.birth_date, self.ident.sex
        ds.AccessionNumber = study["accession"]
        ds.InstitutionName = self.ident.institution
        ds.ReferringPhysicianName = self.ident.referring_physician
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = self.ident.study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.StudyID = "1"
        ds.StudyDescription = study["description"]
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        ds.InstanceNumber = index + 1
        ds.Manufacturer = "cdeg"
        return ds


def _array(image: Any) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image)


def _ds(value: float) -> str:
    """A decimal string (DS) with as many digits as DICOM's 16 characters allow."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def _set_pixels(ds: Any, stored: np.ndarray, signed: int, bits: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = signed
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


def _save(ds: Any, path: Path) -> None:
    with atomic_path(path, suffix="") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
