"""Corner points of the vertebral bodies on lateral radiographs: the formats annotation tools write, read
into one validated table.

Clinicians measure a lateral radiograph from the four corners of each vertebral body: anterior-superior
(AS), posterior-superior (PS), posterior-inferior (PI) and anterior-inferior (AI), where the body's walls
meet its endplates (:mod:`cdeg.measures`). A point is named ``<level>_<corner>`` (``C5_AS``); levels are
those of :mod:`cdeg.labels` (C2..T1). Four formats are read:

* **3D Slicer markups** (``*.mrk.json``): ``markups[].controlPoints[]`` with ``label`` and ``position``
  (x, y, z) in the ``coordinateSystem`` of its markup, "LPS" or "RAS" (Slicer/Slicer
  Docs/developer_guide/modules/markups.md, "Markups json file format"; schema
  Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json). Millimetres of the scanner frame: the
  same physical space as the cohort's ``xray.nii.gz`` once RAS is turned into LPS (x and y negated), which
  is what ITK, and therefore cdeg, uses. One file per patient.
* **CSV** (``*.csv``): columns ``patient_id, level, corner, x_mm, y_mm``, physical (LPS) millimetres of the
  cohort's radiograph; any number of patients.
* **labelme** (``*.json``): ``shapes[]`` with ``shape_type`` "point", ``label`` and ``points`` [[x, y]] in
  pixels of the annotated image, ``imageWidth``/``imageHeight`` its size. One file per patient.
* **CVAT for images 1.1** (``*.xml``, CVAT's own export; docs.cvat.ai "XML annotation format", version 1.1):
  ``<image name=... width=... height=...>`` elements holding ``<points label="C5_AS" points="x,y"/>`` in
  pixels. Any number of images, one per patient.

Pixel coordinates (labelme, CVAT) place the image's top-left corner at (0, 0), so the centre of pixel
(i, j) is at (i + 0.5, j + 0.5) (CVAT: the bottom-right corner of a 1920 x 1080 image is (1920, 1080),
cvat-ai/cvat#9973). The annotated image must be the cohort's radiograph as stored: columns are the
first index of ``xray.nii.gz``, rows the second; its spacing, origin and direction turn pixels into mm.

The patient of a Slicer, labelme or CVAT annotation is its file (or image) name without extensions; a
name that is only a modality (``P001/xray.mrk.json``) takes its folder's name.

:func:`load_corners` reads a file or a folder of them, converts everything to millimetres and checks it
against the cohort's radiographs: every level needs its four corners, no corner may be given twice, every
point must lie in its image and every name must be a known level and corner. Each problem is one
:class:`cdeg.errors.CdegError` naming the patient and the file; a patient with one is left out.
"""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.cohort import ID_COLUMN, MODALITIES, Cohort
from cdeg.errors import CdegError

log = logging.getLogger(__name__)

#: The four corners of a vertebral body, in the order that walks around it (a polygon).
CORNERS: tuple[str, ...] = ("AS", "PS", "PI", "AI")
CORNER_WORDS: dict[str, str] = {
    "AS": "anterior-superior",
    "PS": "posterior-superior",
    "PI": "posterior-inferior",
    "AI": "anterior-inferior",
}
#: The tidy corner table: one row per patient, level and corner; physical (LPS) mm of the radiograph.
COLUMNS: tuple[str, ...] = (ID_COLUMN, "level", "corner", "x_mm", "y_mm")
#: The modality corner points are read for.
MODALITY = "xray"
#: How each format's files are recognised (checked in this order).
FORMATS: dict[str, str] = {
    "slicer": ".mrk.json",
    "csv": ".csv",
    "labelme": ".json",
    "cvat": ".xml",
}
# Levels and corners from their owners (cdeg.labels, CORNERS), so the names are spelled in one place.
_NAME = re.compile(
    rf"^\s*({'|'.join(labels.VERTEBRA_NAMES)})\s*[_\- ]\s*({'|'.join(CORNERS)})\s*$", re.IGNORECASE
)


def parse_name(name: str) -> tuple[str, str]:
    """(level, corner) of a point name such as ``C5_AS`` (also ``c5-as``, ``C5 AS``).

    Raises
    ------
    ValueError
        When the name is not ``<level>_<corner>`` with a level C2..T1 and a corner AS, PS, PI, AI.
    """
    m = _NAME.match(str(name))
    if m is None:
        raise ValueError(
            f"unknown point name {name!r}: expected <level>_<corner>, level one of "
            f"{', '.join(labels.VERTEBRA_NAMES)}, corner one of {', '.join(CORNERS)} (e.g. C5_AS)"
        )
    return m.group(1).upper(), m.group(2).upper()


def patient_from_name(name: str | Path) -> str:
    """The patient a file or image name stands for: the name without extensions, or its folder's name when
    that is only a modality (``P001/xray.png`` -> ``P001``)."""
    p = Path(str(name).replace("\\", "/"))
    stem = p.name.split(".")[0]
    if stem.lower() in MODALITIES and p.parent.name:
        return p.parent.name
    return stem


# --- reading: raw points --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawPoint:
    """One point as a file gives it, before conversion and checks.

    ``unit`` is "mm" (physical LPS) or "px" (pixel coordinates, top-left corner of the image at 0, 0);
    ``image_size`` is the annotated image's (width, height) in pixels when the file records it.
    """

    patient: str
    name: str
    x: float
    y: float
    unit: str
    path: str
    image_size: tuple[int, int] | None = None
    level: str | None = None
    corner: str | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CdegError(f"cannot read JSON: {e}", path=path) from None


def read_slicer(path: str | Path) -> list[RawPoint]:
    """Points of a 3D Slicer markups file (``.mrk.json``), in LPS mm (RAS positions are converted)."""
    path = Path(path)
    data = _read_json(path)
    pid = patient_from_name(path)
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list):
        raise CdegError("not a Slicer markups file: no 'markups' list", patient=pid, path=path)
    out = []
    for mk in markups:
        system = str(mk.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise CdegError(
                f"unknown coordinateSystem {system!r}; expected LPS or RAS", patient=pid, path=path
            )
        sign = -1.0 if system == "RAS" else 1.0  # RAS -> LPS: x and y change sign
        for cp in mk.get("controlPoints") or []:
            pos = cp.get("position") or []
            if len(pos) < 2:
                raise CdegError(f"control point {cp.get('label')!r} has no position", patient=pid, path=path)
            out.append(
                RawPoint(
                    pid, str(cp.get("label", "")), sign * float(pos[0]), sign * float(pos[1]), "mm", str(path)
                )
            )
    return out


def read_labelme(path: str | Path) -> list[RawPoint]:
    """Point shapes of a labelme file, in pixels; other shape types are left out."""
    path = Path(path)
    data = _read_json(path)
    pid = patient_from_name(path)
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise CdegError("not a labelme file: no 'shapes' list", patient=pid, path=path)
    size = None
    if data.get("imageWidth") and data.get("imageHeight"):
        size = (int(data["imageWidth"]), int(data["imageHeight"]))
    out = []
    for shape in data["shapes"]:
        if shape.get("shape_type", "point") != "point":
            continue
        pts = shape.get("points") or []
        if len(pts) != 1 or len(pts[0]) != 2:
            raise CdegError(f"point {shape.get('label')!r} must have one (x, y)", patient=pid, path=path)
        out.append(
            RawPoint(
                pid, str(shape.get("label", "")), float(pts[0][0]), float(pts[0][1]), "px", str(path), size
            )
        )
    return out


def read_cvat(path: str | Path) -> list[RawPoint]:
    """``<points>`` of a CVAT for images 1.1 XML export, in pixels; one patient per ``<image>``."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise CdegError(f"cannot read CVAT XML: {e}", path=path) from None
    out = []
    for image in root.iter("image"):
        pid = patient_from_name(image.get("name", ""))
        size = None
        if image.get("width") and image.get("height"):
            size = (int(float(image.get("width"))), int(float(image.get("height"))))
        for el in image.iter("points"):
            name = el.get("label", "")
            coords = [c for c in el.get("points", "").split(";") if c.strip()]
            if len(coords) != 1:
                raise CdegError(
                    f"points {name!r} must hold one point, got {len(coords)}", patient=pid, path=path
                )
            x, y = (float(v) for v in coords[0].split(","))
            out.append(RawPoint(pid, name, x, y, "px", str(path), size))
    return out


def read_csv(path: str | Path) -> list[RawPoint]:
    """Rows of a corner table (:data:`COLUMNS`), in mm."""
    from cdeg.io import read_table

    path = Path(path)
    df = read_table(path, dtype={ID_COLUMN: str, "level": str, "corner": str})  # CdegError naming the file
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise CdegError(
            f"corner table lacks column(s) {', '.join(missing)}; needs {', '.join(COLUMNS)}", path=path
        )
    return [
        RawPoint(str(r[0]).strip(), f"{r[1]}_{r[2]}", float(r[3]), float(r[4]), "mm", str(path))
        for r in df[list(COLUMNS)].itertuples(index=False, name=None)
    ]


_READERS = {"slicer": read_slicer, "csv": read_csv, "labelme": read_labelme, "cvat": read_cvat}


def format_of(path: str | Path) -> str | None:
    """The format of a file from its name (:data:`FORMATS`), None when it is none of them."""
    name = Path(path).name.lower()
    return next((f for f, suffix in FORMATS.items() if name.endswith(suffix)), None)


def read_points(path: str | Path) -> tuple[list[RawPoint], list[CdegError]]:
    """Raw points of a file, or of every file of a known format under a folder (recursively).

    Returns the points and the files that could not be read (one error each).
    """
    path = Path(path)
    if not path.exists():
        raise CdegError("corner file or folder does not exist", path=path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and format_of(p)) if path.is_dir() else [path]
    if not files:
        raise CdegError(f"no corner files ({', '.join(FORMATS.values())}) in the folder", path=path)
    points: list[RawPoint] = []
    problems: list[CdegError] = []
    for f in files:
        fmt = format_of(f)
        if fmt is None:
            raise CdegError(
                f"unknown corner file format; expected one of {', '.join(FORMATS.values())}", path=f
            )
        try:
            points.extend(_READERS[fmt](f))
        except CdegError as e:
            problems.append(e)
    return points, problems


# --- checks and conversion ------------------------------------------------------------------------------------


def _named(points: list[RawPoint]) -> list[RawPoint]:
    """Points with level and corner parsed; an unknown name raises CdegError."""
    out = []
    for p in points:
        try:
            level, corner = parse_name(p.name)
        except ValueError as e:
            raise CdegError(str(e), patient=p.patient, path=p.path) from None
        out.append(RawPoint(p.patient, p.name, p.x, p.y, p.unit, p.path, p.image_size, level, corner))
    return out


def _check_complete(points: list[RawPoint]) -> None:
    """Each corner once, each level with all four corners; the first problem raises CdegError."""
    seen: dict[tuple[str, str], RawPoint] = {}
    for p in points:
        key = (p.level or "", p.corner or "")
        if key in seen:
            where = p.path if p.path == seen[key].path else f"{seen[key].path} and {p.path}"
            raise CdegError(
                f"{p.level}_{p.corner} is given twice ({where}): each corner of a level once",
                patient=p.patient,
                path=p.path,
            )
        seen[key] = p
    for level in sorted({p.level for p in points}, key=lambda v: labels.structure(v).order):
        lacking = [c for c in CORNERS if (level, c) not in seen]
        if lacking:
            path = next(p.path for p in points if p.level == level)
            raise CdegError(
                f"level {level} lacks corner(s) {', '.join(f'{level}_{c}' for c in lacking)}; each level "
                f"needs all four ({', '.join(CORNERS)})",
                patient=points[0].patient,
                path=path,
            )


def _to_mm(points: list[RawPoint], image: Any) -> list[tuple[RawPoint, float, float]]:
    """Each point with its physical (x, y) mm; points outside the image raise CdegError.

    Pixel coordinates put the image's top-left corner at 0 (see the module docstring), so continuous
    index = pixel - 0.5; a point is inside while its continuous index is within half a pixel of the grid.
    """
    size = image.GetSize()
    out = []
    for p in points:
        if p.unit == "px":
            if p.image_size is not None and tuple(p.image_size) != tuple(size):
                raise CdegError(
                    f"the annotated image is {p.image_size[0]} x {p.image_size[1]} pixels, the cohort's "
                    f"radiograph {size[0]} x {size[1]}: annotate the radiograph as stored",
                    patient=p.patient,
                    path=p.path,
                )
            index = (p.x - 0.5, p.y - 0.5)
            x, y = image.TransformContinuousIndexToPhysicalPoint(index)
        else:
            x, y = p.x, p.y
            index = image.TransformPhysicalPointToContinuousIndex((x, y))
        if not all(-0.5 <= i <= n - 0.5 for i, n in zip(index, size, strict=True)):
            raise CdegError(
                f"{p.level}_{p.corner} at ({x:.1f}, {y:.1f}) mm lies outside the image "
                f"({size[0]} x {size[1]} pixels)",
                patient=p.patient,
                path=p.path,
            )
        out.append((p, float(x), float(y)))
    return out


@dataclass(frozen=True)
class CornerSet:
    """Validated corner points: every level complete, each corner once, every point inside its radiograph.

    Attributes
    ----------
    table : pandas.DataFrame
        :data:`COLUMNS`, physical (LPS) mm of each patient's ``xray.nii.gz``; patients in the order read,
        levels cranio-caudal, corners in :data:`CORNERS` order.
    sources : dict
        patient -> the file(s) its points came from.
    """

    table: Any
    sources: dict[str, str]

    @property
    def patients(self) -> list[str]:
        return list(dict.fromkeys(self.table[ID_COLUMN]))

    def points(self, patient: str) -> dict[str, dict[str, np.ndarray]]:
        """level -> corner -> (x, y) mm of one patient, levels cranio-caudal."""
        rows = self.table[self.table[ID_COLUMN] == patient]
        out: dict[str, dict[str, np.ndarray]] = {}
        for level, corner, x, y in rows[["level", "corner", "x_mm", "y_mm"]].itertuples(
            index=False, name=None
        ):
            out.setdefault(level, {})[corner] = np.array([x, y], dtype=float)
        return out


def corner_table(rows: Iterable[tuple[str, str, str, float, float]]) -> Any:
    """A tidy corner table (:data:`COLUMNS`) sorted by patient (first seen), level and corner."""
    import pandas as pd

    df = pd.DataFrame(list(rows), columns=list(COLUMNS)).astype({ID_COLUMN: str, "level": str, "corner": str})
    order = {pid: i for i, pid in enumerate(dict.fromkeys(df[ID_COLUMN]))}
    key = (
        df[ID_COLUMN].map(order) * 10_000
        + df["level"].map(lambda v: labels.structure(v).order) * 10
        + df["corner"].map(CORNERS.index)
    )
    return df.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def _patient_rows(
    cohort: Cohort, ids: set[str], pid: str, points: list[RawPoint]
) -> list[tuple[str, str, str, float, float]]:
    """Checked rows of one patient; the first problem raises CdegError naming the patient and file."""
    from cdeg.io import read_image

    if pid not in ids:
        raise CdegError("patient is not in the cohort's clinical.csv", patient=pid, path=points[0].path)
    if not cohort.has_image(pid, MODALITY):
        raise CdegError("the cohort has no radiograph of this patient", patient=pid, path=points[0].path)
    named = _named(points)
    _check_complete(named)
    image = read_image(cohort.image_path(pid, MODALITY), patient=pid)
    if image.GetDimension() != 2:
        raise CdegError(
            "corner points need a 2D radiograph", patient=pid, path=cohort.image_path(pid, MODALITY)
        )
    return [(pid, p.level, p.corner, x, y) for p, x, y in _to_mm(named, image)]


def load_corners(
    path: str | Path, cohort: str | Path | Cohort, strict: bool = False
) -> tuple[CornerSet, list[CdegError]]:
    """Read corner points (a file or a folder of files in any of the four formats) and check them.

    Parameters
    ----------
    path : path
        A corner file, or a folder searched recursively for ``.mrk.json``, ``.csv``, ``.json`` and ``.xml``.
    cohort : path or Cohort
        The cohort whose radiographs the points were placed on (pixel spacing, origin, size).
    strict : bool
        Raise the first problem instead of leaving that patient out.

    Returns
    -------
    corners : CornerSet
        The patients whose points passed every check.
    problems : list of CdegError
        One per patient (or unreadable file) left out, naming the patient and the file.

    Raises
    ------
    CdegError
        The path does not exist or holds no corner file; no patient passed; with `strict`, any problem.
    """
    coh = cohort if isinstance(cohort, Cohort) else Cohort.open(cohort)
    raw, problems = read_points(path)
    by_patient: dict[str, list[RawPoint]] = {}
    for p in raw:
        by_patient.setdefault(p.patient, []).append(p)
    rows: list[tuple[str, str, str, float, float]] = []
    sources: dict[str, str] = {}
    ids = set(coh.patient_ids())
    for pid, pts in by_patient.items():
        try:
            rows.extend(_patient_rows(coh, ids, pid, pts))
        except CdegError as e:
            problems.append(e)
            continue
        sources[pid] = ", ".join(dict.fromkeys(p.path for p in pts))
    if strict and problems:
        raise problems[0]
    for e in problems:
        log.warning("%s; left out", e.one_line())
    if not rows:
        raise CdegError("no patient has usable corner points", path=path)
    return CornerSet(corner_table(rows), sources), problems
