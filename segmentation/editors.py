"""Masks that open ready to edit in 3D Slicer and ITK-SNAP, with level names and colours, and back.

Three file formats, all written and read here and nowhere else:

* the **Slicer colour table** (``.ctbl``), Slicer's "Color table file" text format: a ``# Color table file``
  header, then one ``index name R G B A`` line per label, colours 0-255, spaces in names as underscores
  (Slicer/Slicer Docs/developer_guide/modules/colors.md, "Color table file format (.txt, .ctbl)");
* the **ITK-SNAP label description file**, the text ITK-SNAP writes with "Export label descriptions": a
  commented header naming the fields ``IDX -R- -G- -B- -A-- VIS MSH LABEL``, then per label its value,
  colour 0-255, opacity 0-1, visibility and mesh flags (0/1) and the description in double quotes; value 0 is
  the "Clear Label" (the header ITK-SNAP writes, as kept verbatim in nipy/nilabels
  labels_manager/tools/descriptions/manipulate_descriptors.py and Bonelab/Ogo ogo/dat/OgoMasterLabels.py);
* the **Slicer segmentation** (``.seg.nrrd``): a NRRD in ``space: left-posterior-superior`` whose voxels hold
  each segment's ``SegmentN_LabelValue`` in the 3D volume ``SegmentN_Layer`` (a 4D file with a ``list`` axis
  first when segments overlap), with per-segment ``SegmentN_ID``, ``_Name``, ``_Color`` (RGB 0-1),
  ``_Extent`` (``minI maxI minJ maxJ minK maxK``, ``0 -1 0 -1 0 -1`` when empty), and
  ``Segmentation_MasterRepresentation`` / ``Segmentation_SourceRepresentation`` = ``Binary labelmap``,
  ``Segmentation_ContainedRepresentationNames``, ``Segmentation_ReferenceImageExtentOffset``
  (Slicer/Slicer Docs/developer_guide/modules/segmentations.md; Libs/MRML/Core/
  vtkMRMLSegmentationStorageNode.cxx, ReadBinaryLabelmapRepresentation: a file cropped to its content keeps
  the physical position of its first voxel in ``space origin``, so the origin alone places it).

Geometry: SimpleITK holds every image in LPS physical coordinates (ITK converts a NIfTI's RAS affine on
reading), which is the NRRD ``left-posterior-superior`` space, so a NRRD's ``space directions`` are the
columns of the image direction scaled by the spacing and its ``space origin`` is the image origin, with no
sign change; a file in ``right-anterior-superior`` space has its first two coordinates negated on reading.

Reading back, **names decide** the labels (:func:`cdeg.labels.find_name`: ``C5``, ``c5-c6``, ``C5/C6``): the
order of segments and the values an editor stores them under do not matter. A name that is no cdeg level,
on a segment or label that holds voxels, stops that patient with a message naming it, the patient and the
file; empty segments of any name are ignored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import label_maps, labels
from cdeg.cohort import ID_COLUMN, Cohort, check_modality
from cdeg.errors import CdegError, CohortError
from cdeg.io import atomic_path, read_image, read_table, write_image, write_table, write_text
from cdeg.outputs import EditorExport, MaskFolder
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

#: The editors cdeg writes for and reads from (`--format` of export, `--from` of import-masks).
EDITORS: tuple[str, ...] = ("slicer", "itksnap")
_DESCRIPTIONS = {
    "slicer": "3D Slicer segmentation (.seg.nrrd): segment names decide the labels",
    "itksnap": "ITK-SNAP segmentation (.nii.gz) with its label description file: label names decide the labels",
}
_LPS = "left-posterior-superior"
_RAS = "right-anterior-superior"
_SPACES = {_LPS: (1.0, 1.0, 1.0), "LPS": (1.0, 1.0, 1.0), _RAS: (-1.0, -1.0, 1.0), "RAS": (-1.0, -1.0, 1.0)}
_ITKSNAP_LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s+(\d+)\s+(\d+)\s+"(.*)"\s*$')
_ITKSNAP_HEADER = """################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    IDX:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
# cdeg levels (VerSe/SPINEPS numbering): vertebrae C2..T1 = 2..8, discs = 100 + the vertebra above
################################################
"""


def check_editor(editor: str) -> str:
    """`editor` if it is one of :data:`EDITORS`, else ValueError listing them."""
    if editor not in EDITORS:
        raise ValueError(f"unknown editor {editor!r}; valid: {', '.join(EDITORS)}")
    return editor


# --- label files ---------------------------------------------------------------------------------------------


def slicer_color_table(title: str = MaskFolder.SLICER_CTBL) -> str:
    """The cdeg levels as a Slicer colour table (``index name R G B A``, background first)."""
    lines = [f"# Color table file {title}", f"# {len(labels.STRUCTURES) + 1} values", "0 Background 0 0 0 0"]
    for s in labels.STRUCTURES:
        r, g, b = labels.colour(s.label)
        lines.append(f"{s.label} {s.name.replace(' ', '_')} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


def itksnap_label_description() -> str:
    """The cdeg levels as an ITK-SNAP label description file (value, colour, opacity 1, visible, "name")."""
    lines = [f'{0:>5} {0:>5} {0:>4} {0:>4} {0:>8} {0:>2} {0:>2}    "Clear Label"']
    for s in labels.STRUCTURES:
        r, g, b = labels.colour(s.label)
        lines.append(f'{s.label:>5} {r:>5} {g:>4} {b:>4} {1:>8} {1:>2} {1:>2}    "{s.name}"')
    return _ITKSNAP_HEADER + "\n".join(lines) + "\n"


def write_label_files(root: str | Path) -> tuple[Path, Path]:
    """Write the Slicer colour table and the ITK-SNAP label file at the root of a mask folder (atomic)."""
    folder = MaskFolder(Path(root))
    write_text(folder.slicer_ctbl, slicer_color_table())
    write_text(folder.itksnap_labels, itksnap_label_description())
    return folder.slicer_ctbl, folder.itksnap_labels


def read_slicer_color_table(path: str | Path) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """A Slicer colour table: value -> (name, RGBA 0-255). Comment lines (``#``) are skipped."""
    out: dict[int, tuple[str, tuple[int, int, int, int]]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            value, name, rgba = int(parts[0]), parts[1], tuple(int(v) for v in parts[2:6])
        except (ValueError, IndexError):
            raise CdegError(f"line {n} is not 'index name R G B A'", path=path) from None
        out[value] = (name, (*rgba, 255)[:4])  # type: ignore[assignment]
    return out


def read_itksnap_labels(path: str | Path) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """An ITK-SNAP label description file: value -> (description, RGB 0-255)."""
    out: dict[int, tuple[str, tuple[int, int, int]]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _ITKSNAP_LINE.match(line)
        if m is None:
            raise CdegError(
                f"line {n} is not 'IDX R G B A VIS MSH \"LABEL\"' (ITK-SNAP label file)", path=path
            )
        out[int(m.group(1))] = (m.group(8), (int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return out


# --- Slicer .seg.nrrd ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One segment of a .seg.nrrd file: its name, colour (RGB 0-1), value and layer in the file."""

    name: str
    colour: tuple[float, float, float]
    label_value: int
    layer: int = 0
    id: str = ""


def _as_3d(image: Any) -> Any:
    """A 2D image as a one-slice 3D image (Slicer segmentations are always 3D); 3D images unchanged."""
    import SimpleITK as sitk

    return sitk.JoinSeries([image]) if image.GetDimension() == 2 else image


def _extent(array_zyx: np.ndarray) -> str:
    """``minI maxI minJ maxJ minK maxK`` of the non-zero voxels (file index order), or the empty extent."""
    idx = np.nonzero(array_zyx)
    if not idx[0].size:
        return "0 -1 0 -1 0 -1"
    k, j, i = (a for a in idx)
    return f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}"


def write_seg_nrrd(path: str | Path, mask: Any) -> Path:
    """Write a cdeg mask as a Slicer segmentation: one named, coloured segment per level of the convention.

    Every level gets a segment, empty ones too, so a missed level is painted under its right name and
    colour. Label values are the cdeg labels, in one layer (a cdeg mask has one label per voxel).

    Parameters
    ----------
    path : Path
        The ``.seg.nrrd`` to write (atomically).
    mask : SimpleITK.Image
        2D or 3D mask in the cdeg convention, on its image's grid.
    """
    import nrrd
    import SimpleITK as sitk

    mask3 = _as_3d(mask)
    data = sitk.GetArrayFromImage(mask3).astype(np.uint8)  # (k, j, i)
    spacing, direction = np.array(mask3.GetSpacing()), np.array(mask3.GetDirection()).reshape(3, 3)
    header: dict[str, Any] = {
        "space": _LPS,
        # pynrrd takes one row per axis: the direction column of that axis scaled by its spacing.
        "space directions": (direction * spacing).T,
        "space origin": np.array(mask3.GetOrigin()),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_SourceRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for n, s in enumerate(labels.STRUCTURES):
        r, g, b = labels.colour(s.label)
        header |= {
            f"Segment{n}_ID": s.name,
            f"Segment{n}_Name": s.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": f"{r / 255:.6f} {g / 255:.6f} {b / 255:.6f}",
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(s.label),
            f"Segment{n}_Layer": "0",
            f"Segment{n}_Extent": _extent(data == s.label),
        }
    path = Path(path)
    with atomic_path(path) as tmp:
        nrrd.write(str(tmp), data, header, index_order="C")
    return path


def write_nrrd_image(path: str | Path, image: Any) -> Path:
    """Write an image as NRRD for Slicer (2D as one slice, so it shares the segmentation's 3D grid)."""
    write_image(path, _as_3d(image))
    return Path(path)


def read_seg_nrrd(path: str | Path, patient: str | None = None) -> tuple[Any, list[Segment]]:
    """Read a Slicer segmentation.

    Returns
    -------
    image : SimpleITK.Image
        3D image whose voxels hold the 1-based index of the segment they belong to (0: none); where segments
        of several layers overlap, the later segment wins.
    segments : list of Segment
        In file order.
    """
    import nrrd

    path = Path(path)
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, ValueError) as e:
        raise CdegError(f"cannot read the segmentation ({e})", patient=patient, path=path) from None
    segments = _segments(header, patient, path)
    kinds = list(header.get("kinds") or ["domain"] * data.ndim)
    layered = data.ndim == 4
    if layered:  # the list axis is first in the file, hence last in C index order
        list_axis = data.ndim - 1 - kinds.index("list") if "list" in kinds else data.ndim - 1
        data = np.moveaxis(data, list_axis, -1)
    out = np.zeros(data.shape[:3], dtype=np.uint16)
    for n, seg in enumerate(segments, start=1):
        if layered and not 0 <= seg.layer < data.shape[-1]:
            raise CdegError(
                f"segment {seg.name!r} is in layer {seg.layer}, not in the file", patient=patient, path=path
            )
        layer = data[..., seg.layer] if layered else data
        out[layer == seg.label_value] = n
    return _image_from_nrrd(out, header, patient, path), segments


def _segments(header: dict[str, Any], patient: str | None, path: Path) -> list[Segment]:
    segments = []
    n = 0
    while f"Segment{n}_LabelValue" in header or f"Segment{n}_ID" in header:
        try:
            colour = tuple(float(c) for c in str(header.get(f"Segment{n}_Color", "0 0 0")).split()[:3])
            segments.append(
                Segment(
                    name=str(header.get(f"Segment{n}_Name", header.get(f"Segment{n}_ID", ""))),
                    colour=colour,  # type: ignore[arg-type]
                    label_value=int(header.get(f"Segment{n}_LabelValue", 1)),
                    # Without a layer field each segment has its own volume (Slicer's reader does the same).
                    layer=int(header.get(f"Segment{n}_Layer", n)),
                    id=str(header.get(f"Segment{n}_ID", "")),
                )
            )
        except ValueError:
            raise CdegError(
                f"Segment{n} has an unreadable colour, value or layer", patient=patient, path=path
            ) from None
        n += 1
    if not segments:
        raise CdegError(
            "no SegmentN_ fields: not a Slicer segmentation (save it from Slicer as .seg.nrrd)",
            patient=patient,
            path=path,
        )
    return segments


def _image_from_nrrd(array_kji: np.ndarray, header: dict[str, Any], patient: str | None, path: Path) -> Any:
    """A SimpleITK image (LPS) from voxels in C order and a NRRD header's space, directions and origin."""
    import SimpleITK as sitk

    space = str(header.get("space", _LPS)).strip()
    if space not in _SPACES:
        raise CdegError(f"NRRD space {space!r} is not LPS or RAS", patient=patient, path=path)
    flip = np.array(_SPACES[space])
    rows = np.asarray(header["space directions"], dtype=float)
    rows = rows[~np.isnan(rows).any(axis=1)][-3:] * flip  # a list axis has no direction
    spacing = np.linalg.norm(rows, axis=1)
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (rows / spacing[:, None]).T.ravel()))
    image.SetOrigin(tuple(float(v) for v in np.asarray(header["space origin"], dtype=float) * flip))
    return image


# --- reading corrected files back ----------------------------------------------------------------------------


def editor_label_map(editor: str) -> label_maps.LabelMap:
    """What the import manifest records as the label map of an editor's files (their names decide)."""
    check_editor(editor)
    return label_maps.LabelMap(
        name=editor, description=_DESCRIPTIONS[editor], source="cdeg.segmentation.editors", labels=()
    )


def file_pattern(editor: str, modality: str) -> str:
    """Glob of the segmentation files an editor export holds for one modality."""
    ex = EditorExport(Path())
    probe = (
        ex.slicer_segmentation("*", modality)
        if editor == "slicer"
        else ex.itksnap_segmentation("*", modality)
    )
    return probe.name


def _segmentation_path(root: Path, editor: str, patient: str, modality: str) -> Path:
    ex = EditorExport(root)
    if editor == "slicer":
        return ex.slicer_segmentation(patient, modality)
    return ex.itksnap_segmentation(patient, modality)


def locate_edited(
    root: str | Path, editor: str, modality: str, patients: list[str]
) -> tuple[dict[str, Path], dict[str, str], list[str]]:
    """Each patient's segmentation file in an editor export folder (the names `cdeg segment export` wrote).

    Returns (patient -> file, patient -> why none, files of no patient), as
    :func:`cdeg.segmentation.import_masks.locate`.
    """
    root = Path(root)
    found, problems = {}, {}
    for pid in patients:
        path = _segmentation_path(root, editor, pid, modality)
        if path.is_file():
            found[pid] = path
        else:
            problems[pid] = f"no {editor} file {path.name} in {root}"
    used = set(found.values())
    unmatched = sorted(
        str(p.relative_to(root)) for p in root.glob(file_pattern(editor, modality)) if p not in used
    )
    return found, problems, unmatched


def read_edited(path: Path, editor: str, image: Any, patient: str) -> tuple[Any, label_maps.LabelMap]:
    """An edited segmentation on `image`'s grid and the label map its names give.

    The returned image holds the file's own values (Slicer: the segment index + 1); the label map says which
    cdeg level each value is, from its name. A 3D one-slice file of a 2D radiograph becomes 2D; a Slicer
    file cropped to its content is placed back into the image grid.
    """
    check_editor(editor)
    if editor == "slicer":
        foreign, segments = read_seg_nrrd(path, patient)
        names = {n: s.name for n, s in enumerate(segments, start=1)}
    else:
        foreign = read_image(path, patient=patient)
        names = {v: name for v, (name, _) in read_itksnap_labels(_itksnap_labels_for(path, patient)).items()}
    foreign = _on_image_grid(_to_dimension(foreign, image.GetDimension()), image)
    return foreign, names_label_map(foreign, names, editor, patient, path)


def _itksnap_labels_for(seg: Path, patient: str) -> Path:
    """The label file of an ITK-SNAP segmentation: its own ``<stem>_labels.txt``, else the export's shared one."""
    own = seg.with_name(seg.name.replace("_seg.nii.gz", "_labels.txt"))
    shared = EditorExport(seg.parent).itksnap_labels
    for candidate in (own, shared):
        if candidate.is_file():
            return candidate
    raise CdegError(
        f"no ITK-SNAP label file ({own.name} or {shared.name}) beside the mask", patient=patient, path=seg
    )


def _to_dimension(foreign: Any, dimension: int) -> Any:
    """A one-slice 3D file as 2D when the image is 2D (editors store radiographs as one slice)."""
    import SimpleITK as sitk

    if foreign.GetDimension() == 3 and dimension == 2 and foreign.GetSize()[2] == 1:
        size = list(foreign.GetSize())
        return sitk.Extract(foreign, [size[0], size[1], 0], [0, 0, 0])
    return foreign


def _on_image_grid(foreign: Any, image: Any) -> Any:
    """Place a file cropped to a sub-grid of the image (same spacing and axes, whole-voxel offset) into it.

    Anything else is returned as it is, for :func:`cdeg.grid.conform_mask` to accept or refuse.
    """
    import SimpleITK as sitk

    if foreign.GetDimension() != image.GetDimension() or foreign.GetSize() == image.GetSize():
        return foreign
    same_axes = np.allclose(foreign.GetDirection(), image.GetDirection(), atol=1e-6)
    same_spacing = np.allclose(foreign.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    start = np.array(image.TransformPhysicalPointToContinuousIndex(foreign.GetOrigin()))
    whole = np.allclose(start, np.round(start), atol=1e-3)
    inside = np.all(np.round(start) >= 0) and np.all(np.round(start) + foreign.GetSize() <= image.GetSize())
    if not (same_axes and same_spacing and whole and inside):
        return foreign
    return sitk.Resample(foreign, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, foreign.GetPixelID())


def names_label_map(
    foreign: Any, names: dict[int, str], editor: str, patient: str, path: Path
) -> label_maps.LabelMap:
    """The label map of one edited file: each value present, named in the file, becomes that level.

    Raises
    ------
    CdegError
        A value with voxels has no name, or a name that is no cdeg level (naming it, the patient and the file).
    """
    import SimpleITK as sitk

    present = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(foreign)) if v != 0]
    entries = []
    for value in present:
        name = names.get(value)
        if name is None:
            raise CdegError(
                f"value {value} holds voxels but has no name in the {editor} file", patient=patient, path=path
            )
        s = labels.find_name(name)
        if s is None:
            valid = ", ".join(x.name for x in labels.STRUCTURES)
            raise CdegError(
                f"{'segment' if editor == 'slicer' else 'label'} {name!r} is not a cdeg level name "
                f"(valid: {valid}); rename it in {editor} or delete it",
                patient=patient,
                path=path,
            )
        kind = {"vertebra": s.name} if s.kind == "vertebra" else {"disc": s.name}
        entries.append(label_maps.LabelEntry(value=value, name=f"{name} ({value})", **kind))
    return label_maps.LabelMap(
        name=editor, description=_DESCRIPTIONS[editor], source=str(path), labels=tuple(entries)
    )


# --- export --------------------------------------------------------------------------------------------------


def qc_findings(masks: str | Path, modality: str) -> dict[str, list[str]]:
    """Per patient, the QC findings of a mask folder for one modality (qc.csv, and the rows of
    import_masks.csv that were flagged, failed or resampled), as ``check: detail`` strings."""
    folder = MaskFolder(Path(masks))
    out: dict[str, list[str]] = {}
    qc = folder.read()["qc"]
    if qc is not None and len(qc):
        for row in qc[qc["modality"] == modality].itertuples(index=False):
            out.setdefault(str(getattr(row, ID_COLUMN)), []).append(f"{row.check}: {row.detail}")
    if folder.import_csv.is_file():
        imp = read_table(folder.import_csv, dtype={ID_COLUMN: str})
        imp = imp[(imp["modality"] == modality) & imp["action"].isin(["flagged", "error", "geometry"])]
        for row in imp.itertuples(index=False):
            out.setdefault(str(getattr(row, ID_COLUMN)), []).append(f"{row.action}: {row.detail}")
    return out


def export_masks(
    masks: str | Path,
    cohort: str | Path,
    out: str | Path,
    editor: str,
    modality: str = "mri",
    geometry_tolerance_mm: float = 1.0,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Write a mask folder's masks as files an editor opens with level names and colours, worst QC first.

    Parameters
    ----------
    masks : Path
        Mask folder (`cdeg segment predict`, `import-masks`, or a cohort's ``masks/``).
    cohort : Path
        The cohort the masks belong to (its images are exported beside them).
    out : Path
        Folder to write (:class:`cdeg.outputs.EditorExport`); not inside the cohort or the mask folder.
    editor : {"slicer", "itksnap"}
        Slicer: ``<pid>_<modality>.seg.nrrd`` and the image as ``.nrrd``; ITK-SNAP: the image and
        ``<pid>_<modality>_seg.nii.gz``, with the label file beside them.
    modality : {"mri", "xray"}
        Which masks.
    geometry_tolerance_mm : float
        A mask whose grid is off its image's by at most this is resampled onto it; beyond, it is skipped.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).

    Returns
    -------
    dict
        ``editor``, ``modality``, ``order`` (patient ids written, worst QC first), ``skipped`` (id -> why),
        ``csv`` (export.csv).
    """
    check_editor(editor)
    check_modality(modality)
    coh = Cohort.open(cohort)
    masks, out = Path(masks), Path(out)
    if not masks.is_dir():
        raise CohortError("mask folder does not exist", path=masks)
    for inside in (coh.root, masks):
        if out.resolve() == inside.resolve() or out.resolve().is_relative_to(inside.resolve()):
            raise ValueError(
                f"--out {out} lies in {inside}: write the editor files elsewhere (inputs are never written)"
            )
    findings = qc_findings(masks, modality)
    ids = [p for p in coh.patient_ids() if MaskFolder(masks).mask(p, modality).is_file()]
    if not ids:
        raise CohortError(f"no {modality} mask of a patient of {coh.root} in this folder", path=masks)
    # Worst first: most findings, then the cohort's order (a stable sort keeps it among equals).
    ids.sort(key=lambda p: -len(findings.get(p, [])))
    ex = EditorExport(out)
    rows, skipped = [], {}
    for pid in track(ids, progress, f"export {modality} masks for {editor}"):
        try:
            files = _export_patient(coh, MaskFolder(masks), ex, pid, modality, editor, geometry_tolerance_mm)
        except CdegError as e:
            log.warning("segment export: %s; skipped", e.one_line())
            skipped[pid] = e.message
            continue
        found = findings.get(pid, [])
        rows.append(
            {
                "order": len(rows) + 1,
                ID_COLUMN: pid,
                "modality": modality,
                "findings": len(found),
                "reasons": "; ".join(dict.fromkeys(found))[:500],
                "files": " ".join(files),
            }
        )
    write_label_files(out)
    _write_export_csv(ex, modality, rows)
    log.info(
        "segment export: %d %s mask(s) for %s in %s, worst QC first (%s)",
        len(rows),
        modality,
        editor,
        out,
        ex.csv,
    )
    return {
        "editor": editor,
        "modality": modality,
        "order": [r[ID_COLUMN] for r in rows],
        "skipped": skipped,
        "csv": ex.csv,
    }


def _export_patient(
    coh: Cohort,
    folder: MaskFolder,
    ex: EditorExport,
    pid: str,
    modality: str,
    editor: str,
    tolerance_mm: float,
) -> list[str]:
    import SimpleITK as sitk

    from cdeg.grid import conform_mask

    image = read_image(coh.image_path(pid, modality), patient=pid)
    path = folder.mask(pid, modality)
    mask, warning = conform_mask(image, read_image(path, patient=pid), tolerance_mm, pid, path)
    if warning:
        log.warning("segment export: patient %s / %s: %s", pid, path, warning)
    bad = labels.invalid_labels(np.unique(sitk.GetArrayViewFromImage(mask)).tolist())
    if bad:
        raise CdegError(
            f"mask has labels {bad} outside the {labels.CONVENTION_NAME} convention", patient=pid, path=path
        )
    mask = sitk.Cast(mask, sitk.sitkUInt8)
    if editor == "slicer":
        written = [write_seg_nrrd(ex.slicer_segmentation(pid, modality), mask)]
        written.append(write_nrrd_image(ex.slicer_image(pid, modality), image))
    else:
        write_image(ex.itksnap_image(pid, modality), image)
        write_image(ex.itksnap_segmentation(pid, modality), mask)
        written = [ex.itksnap_image(pid, modality), ex.itksnap_segmentation(pid, modality), ex.itksnap_labels]
    return [p.name for p in written]


def _write_export_csv(ex: EditorExport, modality: str, rows: list[dict[str, Any]]) -> None:
    """This modality's rows replace its old ones in export.csv; the other modality's are kept."""
    import pandas as pd

    new = pd.DataFrame(rows, columns=list(EditorExport.CSV_COLUMNS))
    old = ex.read()
    if old is not None:
        new = pd.concat([old[old["modality"] != modality], new], ignore_index=True)
    write_table(ex.csv, new)
