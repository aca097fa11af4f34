"""Walk a DICOM export, read headers, group files into series and pick each patient's images.

Every file under the folder is looked at once, header only (``stop_before_pixels``); each either joins a
series or becomes a :class:`Skipped` row with a reason from :data:`REASONS`. Series are grouped by
PatientID, StudyInstanceUID and SeriesInstanceUID.

The selection rule (documented in the README, section "DICOM import"):

* **MRI** - a series is a *sagittal T2 candidate* when it is MR, has one ImageOrientationPatient for
  all its files whose slice normal (row x column cosines) is within 30 degrees of the left-right axis,
  has at least 3 slices, and is T2-weighted: its SeriesDescription / ProtocolName / SequenceName say
  T2 (and not T1, PD, STIR, FLAIR, DWI or T2*) and EchoTime/RepetitionTime do not say T1
  (TE <= 30 ms with TR <= 1000 ms), or, when the text names no weighting, TE >= 60 ms and TR >= 1500 ms.
  Exactly one candidate is picked; none or several are reported (several: "ambiguous series").
* **Radiograph** - an image is a *lateral candidate* when Modality is CR, DX or RG, it has one frame,
  and ViewPosition is LAT/LL/RL/LLAT/RLAT, or the series text says LAT/LATERAL, or PatientOrientation
  runs anterior-posterior along the rows. Flexion/extension views (text FLEX/EXT) are not candidates.
  Exactly one candidate image is picked.
* A ``--series`` override (CSV ``patient,series_instance_uid,modality``) replaces the rule for that
  patient and modality; the series must still have a usable geometry.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cdeg.dicom.deid import series_key
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

#: Why a file was not imported (or, for "burned_in_text", imported with a warning): the fixed vocabulary
#: of import_report.csv.
REASONS: dict[str, str] = {
    "not_dicom": "not a DICOM file",
    "unreadable": "DICOM header or pixel data cannot be read",
    "unsupported_transfer_syntax": "pixel data compressed with a transfer syntax no installed decoder handles",
    "not_image": "a DICOM object without an image (report, presentation state, directory ...)",
    "missing_tags": "lacks PatientID, StudyInstanceUID, SeriesInstanceUID or Modality",
    "not_selected": "a series or image the selection rule did not pick (other orientation, weighting, view)",
    "ambiguous_series": "several series or images match the rule; choose one with --series",
    "bad_geometry": "the series cannot be turned into one volume (orientation, spacing, positions, size)",
    "override_not_found": "a --series row matches no series of that patient",
    "not_found": "no series of the patient matches the rule for this modality",
    "no_image": "a patient none of whose images could be imported",
    "clinical_row_without_images": "a clinical row whose id has no imported image (named by line number)",
    "images_without_clinical_row": "a patient with images but no clinical row (values left empty)",
    "clinical_column_dropped": "a clinical column whose name says it identifies a person",
    "burned_in_text": "an imported image with text burned into its pixels (BurnedInAnnotation YES or "
    "text found in a corner or band); masked with --mask-burned-in",
}
MR_MODALITIES = frozenset({"MR"})
XRAY_MODALITIES = frozenset({"CR", "DX", "RG"})
LATERAL_VIEWS = frozenset({"LAT", "LL", "RL", "LLAT", "RLAT", "LATERAL"})
NON_IMAGE_MODALITIES = frozenset({"SR", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "REG", "FID", "AU", "ECG"})
#: Maximum angle between the slice normal and the left-right axis for a series to count as sagittal.
SAGITTAL_MAX_ANGLE_DEG = 30.0
MIN_MR_SLICES = 3
T2_MIN_TE_MS, T2_MIN_TR_MS = 60.0, 1500.0
T1_MAX_TE_MS, T1_MAX_TR_MS = 30.0, 1000.0

_T2 = re.compile(r"T2(?![\*S]|_?STAR|\s*\*)")
_T1 = re.compile(r"T1(?!\d)")
_OTHER_WEIGHTING = re.compile(r"STIR|FLAIR|\bPD\b|PDW|DWI|DIFF|\bADC\b|MEDIC|T2\s*\*|T2STAR|MYELO|TIRM")
_LATERAL = re.compile(r"\bLAT\b|LATERAL|\bLL\b|\bRL\b|SEITL")
_FLEX_EXT = re.compile(r"FLEX|\bEXT\b|EXTENS|INKL|REKL")


@dataclass(frozen=True)
class Instance:
    """What the importer keeps of one image file's header (no identifying values except the ids used
    for grouping, which never leave this package)."""

    path: Path
    rel: str
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    rows: int
    columns: int
    number: int
    frames: int
    samples_per_pixel: int
    ipp: tuple[float, ...] | None
    iop: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    imager_pixel_spacing: tuple[float, ...] | None
    magnification: float | None
    text: str
    echo_time: float | None
    repetition_time: float | None
    view_position: str
    patient_orientation: tuple[str, ...]
    series_number: int | None
    #: Burned In Annotation (0028,0301), "YES" or "NO" ("" when absent or another value). pydicom 3.0.2
    #: src/pydicom/_dicom_dict.py: ``0x00280301: ('CS', '1', "Burned In Annotation", '',
    #: 'BurnedInAnnotation')``; DICOM PS3.3 Table C.7-9 (General Image Module): "Indicates whether or
    #: not image contains sufficient burned in annotation to identify the patient and date the image was
    #: acquired", enumerated values YES, NO.
    burned_in_annotation: str = ""


@dataclass(frozen=True)
class Skipped:
    """A file that was not imported and why (`patient_id` is the original id, translated later)."""

    rel: str
    reason: str
    detail: str
    patient_id: str | None = None
    modality: str = ""


@dataclass
class Series:
    """The files of one SeriesInstanceUID."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def series_number(self) -> int | None:
        return self.instances[0].series_number if self.instances else None


@dataclass
class ScanResult:
    """Series by SeriesInstanceUID, skipped files and the number of files looked at."""

    series: dict[str, Series]
    skipped: list[Skipped]
    n_files: int

    def patients(self) -> list[str]:
        """Every PatientID seen in a readable header."""
        ids = {s.patient_id for s in self.series.values()}
        ids |= {s.patient_id for s in self.skipped if s.patient_id}
        return sorted(ids)

    def series_of(self, patient_id: str) -> list[Series]:
        return sorted(
            (s for s in self.series.values() if s.patient_id == patient_id),
            key=lambda s: (s.series_number or 0, s.series_uid),
        )


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value warnings and log while reading: their messages quote tag values (names)."""
    import pydicom.config

    settings = pydicom.config.settings
    mode = settings.reading_validation_mode
    logger = logging.getLogger("pydicom")
    level = logger.level
    settings.reading_validation_mode = pydicom.config.IGNORE
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = mode
        logger.setLevel(level)


def iter_files(root: Path) -> Iterator[Path]:
    """Every regular file under root, in sorted (deterministic) order; symbolic links are not followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink():
                yield p


def scan(root: str | Path, progress: ProgressArg = None) -> ScanResult:
    """Read the header of every file under `root` and group the images into series."""
    root = Path(root)
    files = list(iter_files(root))
    series: dict[str, Series] = {}
    skipped: list[Skipped] = []
    for path in track(files, progress, "scan DICOM"):
        rel = path.relative_to(root).as_posix()
        result = read_header(path, rel)
        if isinstance(result, Skipped):
            skipped.append(result)
            continue
        s = series.setdefault(
            result.series_uid, Series(result.patient_id, result.study_uid, result.series_uid, result.modality)
        )
        if s.patient_id != result.patient_id:
            skipped.append(
                Skipped(rel, "missing_tags", "SeriesInstanceUID shared by two patients", result.patient_id)
            )
            continue
        s.instances.append(result)
    for s in series.values():
        s.instances.sort(key=lambda i: (i.number, i.rel))
    log.info("scanned %d files: %d series, %d files skipped", len(files), len(series), len(skipped))
    return ScanResult(series, skipped, len(files))


def _looks_like_raw_dicom(path: Path) -> bool:
    """A DICOM stream without the 128-byte preamble starts with a group 0002 or 0008 tag."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] in (b"\x02\x00", b"\x08\x00") and head[2:4] in (
        b"\x00\x00",
        b"\x05\x00",
        b"\x08\x00",
        b"\x10\x00",
        b"\x16\x00",
        b"\x18\x00",
        b"\x12\x00",
    )


def _safe_code(value: Any) -> str:
    """A short code from a header (Modality), kept only if it is letters: free text never reaches a report."""
    text = str(value or "").strip().upper()
    return text if re.fullmatch(r"[A-Z]{1,16}", text) else "?"


def read_header(path: Path, rel: str) -> Instance | Skipped:
    """Read one file's header: an :class:`Instance` for an image we can decode, else a :class:`Skipped`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if not _looks_like_raw_dicom(path):
            return Skipped(rel, "not_dicom", "no DICOM preamble or header")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as e:
            return Skipped(rel, "unreadable", f"header ({type(e).__name__})")
    except Exception as e:
        return Skipped(rel, "unreadable", f"header ({type(e).__name__})")
    try:
        return _instance(ds, path, rel)
    except Exception as e:
        pid = _text(ds, "PatientID") if "PatientID" in ds else None
        return Skipped(rel, "unreadable", f"header value ({type(e).__name__})", pid or None)


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _floats(ds: Any, keyword: str) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    seq = value if _is_multi(value) else [value]
    return tuple(float(v) for v in seq)


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, str))


def _float(ds: Any, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if _is_multi(value):
        value = next(iter(value))
    return float(value)


def _int(ds: Any, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _instance(ds: Any, path: Path, rel: str) -> Instance | Skipped:
    pid = _text(ds, "PatientID")
    modality = _safe_code(ds.get("Modality"))
    study, series = _text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID")
    if "SOPClassUID" not in ds and "Modality" not in ds:
        return Skipped(rel, "not_dicom", "DICOM-like stream without SOP class or modality")
    if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "Columns" not in ds:
        return Skipped(rel, "not_image", f"Modality {modality}", pid or None, modality)
    missing = [
        k
        for k, v in (
            ("PatientID", pid),
            ("StudyInstanceUID", study),
            ("SeriesInstanceUID", series),
            ("Modality", ds.get("Modality")),
        )
        if not v
    ]
    if missing:
        return Skipped(rel, "missing_tags", "no " + ", ".join(missing), pid or None, modality)
    unsupported = _unsupported_syntax(ds)
    if unsupported:
        return Skipped(rel, "unsupported_transfer_syntax", unsupported, pid, modality)
    texts = [_text(ds, k) for k in ("SeriesDescription", "ProtocolName", "SequenceName", "ImageComments")]
    return Instance(
        path=path,
        rel=rel,
        patient_id=pid,
        study_uid=study,
        series_uid=series,
        modality=modality,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        number=_int(ds, "InstanceNumber", 0) or 0,
        frames=_int(ds, "NumberOfFrames", 1) or 1,
        samples_per_pixel=_int(ds, "SamplesPerPixel", 1) or 1,
        ipp=_floats(ds, "ImagePositionPatient"),
        iop=_floats(ds, "ImageOrientationPatient"),
        pixel_spacing=_floats(ds, "PixelSpacing"),
        imager_pixel_spacing=_floats(ds, "ImagerPixelSpacing"),
        magnification=_float(ds, "EstimatedRadiographicMagnificationFactor"),
        text=" ".join(t for t in texts if t).upper(),
        echo_time=_float(ds, "EchoTime"),
        repetition_time=_float(ds, "RepetitionTime"),
        view_position=_text(ds, "ViewPosition").upper(),
        patient_orientation=tuple(str(v).upper() for v in (ds.get("PatientOrientation") or ())),
        series_number=_int(ds, "SeriesNumber", None),
        burned_in_annotation=_yes_no(ds.get("BurnedInAnnotation")),
    )


def _yes_no(value: Any) -> str:
    """'YES' or 'NO' for a CS value with those enumerated values, '' for anything else or absent."""
    text = str(value or "").strip().upper()
    return text if text in ("YES", "NO") else ""


def _unsupported_syntax(ds: Any) -> str:
    """'' when the pixel data can be decoded, else the transfer syntax's name."""
    import pydicom.pixels
    from pydicom.uid import UID, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = (
        UID(str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        if meta is not None
        else ImplicitVRLittleEndian
    )
    if not ts.is_compressed:
        return ""
    try:
        if pydicom.pixels.get_decoder(ts).is_available:
            return ""
    except NotImplementedError:
        pass
    return ts.name if ts.is_valid else "unknown transfer syntax"


# --- classification -----------------------------------------------------------------------------


def slice_normal(iop: tuple[float, ...]) -> np.ndarray:
    """Unit normal (row cosine x column cosine) of an ImageOrientationPatient."""
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:6], float)
    n = np.cross(row, col)
    return n / (np.linalg.norm(n) or 1.0)


def plane_of(iop: tuple[float, ...] | None) -> str:
    """'sagittal', 'coronal' or 'axial' (the LPS axis nearest the slice normal within 30 degrees), else
    'oblique'; 'unknown' without orientation."""
    if iop is None or len(iop) != 6:
        return "unknown"
    n = np.abs(slice_normal(iop))
    axis = int(np.argmax(n))
    if n[axis] < np.cos(np.deg2rad(SAGITTAL_MAX_ANGLE_DEG)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def mr_weighting(text: str, te: float | None, tr: float | None) -> str:
    """'T2', 'T1', 'other' or 'unknown', from the series text first and TE/TR second (see module doc)."""
    says_other = bool(_OTHER_WEIGHTING.search(text))
    says_t2, says_t1 = bool(_T2.search(text)), bool(_T1.search(text))
    timing_t1 = te is not None and tr is not None and te <= T1_MAX_TE_MS and tr <= T1_MAX_TR_MS
    timing_t2 = te is not None and tr is not None and te >= T2_MIN_TE_MS and tr >= T2_MIN_TR_MS
    if says_other:
        return "other"
    if says_t2 and not says_t1:
        return "T1" if timing_t1 else "T2"
    if says_t1 and not says_t2:
        return "T1"
    if timing_t2:
        return "T2"
    if timing_t1:
        return "T1"
    return "unknown"


def describe_mr(series: Series) -> tuple[bool, str]:
    """(is a sagittal T2 candidate, why): the explanation names only plane, weighting, counts and times."""
    first = series.instances[0]
    iops = {tuple(np.round(i.iop, 3)) if i.iop else None for i in series.instances}
    plane = plane_of(first.iop) if len(iops) == 1 else "mixed orientations"
    weighting = mr_weighting(first.text, first.echo_time, first.repetition_time)
    te = f"{first.echo_time:g}" if first.echo_time is not None else "?"
    tr = f"{first.repetition_time:g}" if first.repetition_time is not None else "?"
    why = f"MR {plane} {weighting}, {len(series.instances)} images, TE {te} ms, TR {tr} ms"
    ok = plane == "sagittal" and weighting == "T2" and len(series.instances) >= MIN_MR_SLICES
    return ok, why


def is_lateral(inst: Instance) -> tuple[bool, str]:
    """(is a lateral radiograph candidate, why)."""
    if inst.frames != 1:
        return False, f"{inst.modality} with {inst.frames} frames"
    if _FLEX_EXT.search(inst.text):
        return False, f"{inst.modality} flexion/extension view"
    orient = inst.patient_orientation
    by_orientation = len(orient) == 2 and orient[0][:1] in ("A", "P") and orient[1][:1] in ("F", "H")
    if inst.view_position in LATERAL_VIEWS or _LATERAL.search(inst.text) or by_orientation:
        return True, f"{inst.modality} lateral"
    view = inst.view_position if re.fullmatch(r"[A-Z]{1,8}", inst.view_position or "") else "unknown"
    return False, f"{inst.modality} view {view}"


@dataclass(frozen=True)
class Choice:
    """The outcome of picking one modality for one patient."""

    instances: tuple[Instance, ...]
    rule: str
    problem: str = ""  # reason key when nothing was picked ("ambiguous_series", "" = nothing found)
    detail: str = ""
    others: tuple[tuple[Instance, str], ...] = ()  # files not picked, with why


def pick_mri(series: list[Series], override: str | None = None, salt: str = "") -> Choice:
    """Pick the sagittal T2 series among a patient's series (see the module doc for the rule)."""
    mr = [s for s in series if s.modality in MR_MODALITIES]
    described = [(s, *describe_mr(s)) for s in mr]
    if override is not None:
        chosen = [s for s, _, _ in described if override in (s.series_uid, series_key(s.series_uid, salt))]
        if not chosen:
            return Choice((), "", "override_not_found", "the --series row names no MR series of this patient")
        pick = chosen[0]
        why = next(w for s, _, w in described if s is pick)
        return Choice(tuple(pick.instances), f"override: {why}", others=_others(described, pick))
    cands = [s for s, ok, _ in described if ok]
    if len(cands) == 1:
        pick = cands[0]
        why = next(w for s, _, w in described if s is pick)
        return Choice(tuple(pick.instances), why, others=_others(described, pick))
    if len(cands) > 1:
        listing = "; ".join(
            f"{series_key(s.series_uid, salt)} (series {s.series_number}, {w})"
            for s, ok, w in described
            if ok
        )
        return Choice(
            (),
            "",
            "ambiguous_series",
            f"{len(cands)} sagittal T2 series: {listing}",
            others=_others(described, None),
        )
    seen = "; ".join(w for _, _, w in described) or "no MR series"
    return Choice((), "", "", f"no sagittal T2 series ({seen})", others=_others(described, None))


def pick_xray(series: list[Series], override: str | None = None, salt: str = "") -> Choice:
    """Pick the lateral radiograph among a patient's images (see the module doc for the rule)."""
    xr = [s for s in series if s.modality in XRAY_MODALITIES]
    images = [(i, *is_lateral(i)) for s in xr for i in s.instances]
    if override is not None:
        chosen = [s for s in xr if override in (s.series_uid, series_key(s.series_uid, salt))]
        if not chosen:
            return Choice(
                (), "", "override_not_found", "the --series row names no radiograph series of this patient"
            )
        pick = chosen[0].instances[0]
        extra = f" (first of {len(chosen[0].instances)} images)" if len(chosen[0].instances) > 1 else ""
        return Choice(
            (pick,), f"override{extra}", others=tuple((i, w) for i, _, w in images if i is not pick)
        )
    cands = [i for i, ok, _ in images if ok]
    if len(cands) == 1:
        pick = cands[0]
        why = next(w for i, _, w in images if i is pick)
        return Choice((pick,), why, others=tuple((i, w) for i, _, w in images if i is not pick))
    others = tuple((i, w) for i, _, w in images)
    if len(cands) > 1:
        listing = "; ".join(
            f"{series_key(i.series_uid, salt)} (series {i.series_number}, image {i.number})" for i in cands
        )
        return Choice(
            (), "", "ambiguous_series", f"{len(cands)} lateral radiographs: {listing}", others=others
        )
    return Choice(
        (),
        "",
        "",
        "no lateral radiograph"
        + (" (" + "; ".join(sorted({w for _, _, w in images})) + ")" if images else ""),
        others=others,
    )


def _others(
    described: list[tuple[Series, bool, str]], pick: Series | None
) -> tuple[tuple[Instance, str], ...]:
    return tuple((i, w) for s, _, w in described if s is not pick for i in s.instances)
