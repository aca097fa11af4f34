"""Turn a picked DICOM series into a SimpleITK image with its geometry, then into canonical orientation.

Why pydicom + numpy rather than SimpleITK's ImageSeriesReader (GDCM):

* the importer already reads every header with pydicom to group and pick series, and the same parsed
  values give the geometry, so there is one reading of the tags, not two that could disagree;
* each check names its failure (mixed orientations, a missing slice, repeated positions, a slice of
  another size) and the rest of the cohort goes on, where GDCM sorts silently or fails as a whole;
* the NIfTI is built from a bare numpy array, so no DICOM tag can travel into the output header
  (SimpleITK copies a series' metadata dictionary into the image it returns);
* which compressed transfer syntaxes work is known per file before decoding (pydicom's decoders).

Geometry: in-plane spacing from PixelSpacing (row spacing first in DICOM, so x = PixelSpacing[1]),
slice spacing from the sorted ImagePositionPatient projected on the slice normal (never from
SliceThickness, which ignores gaps and overlaps), direction cosines from ImageOrientationPatient and the
normal, origin = position of the first slice along the normal. Radiographs: PixelSpacing, else
ImagerPixelSpacing divided by EstimatedRadiographicMagnificationFactor when that is given (spacing at
the detector otherwise; README "DICOM import"); origin 0 and identity direction, flipped to the canonical
view (patient facing image left, head up) when PatientOrientation says otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdeg.dicom.scan import Instance, slice_normal

#: Tolerances for "the same" orientation / spacing across the files of one series.
IOP_TOL = 1e-3
SPACING_REL_TOL = 1e-3
#: Largest allowed deviation of one slice gap from the mean gap, as a fraction of the mean gap.
GAP_REL_TOL = 0.05


class SeriesProblem(Exception):
    """A series that cannot become an image: reason key (scan.REASONS) and a non-identifying detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def read_pixels(inst: Instance) -> np.ndarray:
    """Decode one file's pixels as stored values (modality rescale applied, MONOCHROME1 inverted)."""
    import pydicom

    try:
        ds = pydicom.dcmread(inst.path)
        arr = ds.pixel_array
    except Exception as e:
        raise SeriesProblem("unreadable", f"pixel data ({type(e).__name__})") from None
    if arr.ndim != 2 or arr.shape != (inst.rows, inst.columns):
        raise SeriesProblem(
            "bad_geometry", f"pixel array of shape {arr.shape}, expected one grey-level plane"
        )
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        # MONOCHROME1 shows the minimum as white; cdeg images are MONOCHROME2 (bright = high).
        bits = int(ds.get("BitsStored", 16))
        arr = (((1 << bits) - 1) - arr.astype(np.int64)).astype(arr.dtype) if arr.dtype.kind == "u" else -arr
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1.0 or intercept != 0.0:
        arr = arr.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    return arr


def mr_volume(instances: tuple[Instance, ...] | list[Instance]) -> Any:
    """Stack a sagittal series into a 3D SimpleITK image with spacing, origin and direction."""
    from cdeg.io import image_from_array

    first = instances[0]
    if any(i.iop is None or len(i.iop) != 6 or i.ipp is None or len(i.ipp) != 3 for i in instances):
        raise SeriesProblem("bad_geometry", "a file lacks ImageOrientationPatient or ImagePositionPatient")
    if any(np.max(np.abs(np.subtract(i.iop, first.iop))) > IOP_TOL for i in instances):
        raise SeriesProblem(
            "bad_geometry", "files with different orientations (localizer or multi-plane series)"
        )
    if any((i.rows, i.columns) != (first.rows, first.columns) for i in instances):
        raise SeriesProblem("bad_geometry", "files with different matrix sizes")
    ps = first.pixel_spacing
    if ps is None or len(ps) != 2 or min(ps) <= 0:
        raise SeriesProblem("bad_geometry", "no valid PixelSpacing")
    if any(
        i.pixel_spacing is None or not np.allclose(i.pixel_spacing, ps, rtol=SPACING_REL_TOL)
        for i in instances
    ):
        raise SeriesProblem("bad_geometry", "files with different PixelSpacing")
    row = np.asarray(first.iop[:3], float)
    col = np.asarray(first.iop[3:], float)
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = slice_normal(first.iop)
    pos = np.array([i.ipp for i in instances], float)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    proj, pos = proj[order], pos[order]
    gaps = np.diff(proj)
    if len(gaps) == 0:
        raise SeriesProblem("bad_geometry", "a single slice")
    mean_gap = (proj[-1] - proj[0]) / (len(proj) - 1)
    if np.min(gaps) < 1e-3 * max(mean_gap, 1e-6):
        raise SeriesProblem(
            "bad_geometry", "repeated slice positions (multi-echo, multi-phase or duplicated files)"
        )
    if np.max(np.abs(gaps - mean_gap)) > GAP_REL_TOL * mean_gap:
        raise SeriesProblem(
            "bad_geometry",
            f"uneven slice spacing ({np.min(gaps):.2f}-{np.max(gaps):.2f} mm: a missing slice?)",
        )
    in_plane = (pos - pos[0]) - np.outer(proj - proj[0], normal)
    if np.max(np.linalg.norm(in_plane, axis=1)) > 0.5 * min(ps):
        raise SeriesProblem("bad_geometry", "slices shifted in plane (gantry tilt or sheared stack)")
    arrays = [read_pixels(instances[k]) for k in order]
    volume = np.stack(arrays) if len({a.dtype for a in arrays}) == 1 else np.stack(arrays).astype(np.float32)
    direction = np.column_stack([row, col, normal]).ravel()
    image = image_from_array(volume, (ps[1], ps[0], mean_gap), tuple(pos[0]), tuple(direction))
    return image


def radiograph(inst: Instance) -> tuple[Any, str]:
    """A 2D SimpleITK image of one radiograph and where its spacing came from."""
    from cdeg.io import image_from_array

    if inst.samples_per_pixel != 1:
        raise SeriesProblem("bad_geometry", "colour image (SamplesPerPixel > 1)")
    if inst.pixel_spacing is not None and len(inst.pixel_spacing) == 2 and min(inst.pixel_spacing) > 0:
        spacing, source = inst.pixel_spacing, "PixelSpacing"
    elif (
        inst.imager_pixel_spacing is not None
        and len(inst.imager_pixel_spacing) == 2
        and min(inst.imager_pixel_spacing) > 0
    ):
        spacing, source = inst.imager_pixel_spacing, "ImagerPixelSpacing"
        if inst.magnification and inst.magnification > 0 and inst.magnification != 1:
            spacing = tuple(s / inst.magnification for s in spacing)
            source += " / EstimatedRadiographicMagnificationFactor"
    else:
        raise SeriesProblem("bad_geometry", "no PixelSpacing or ImagerPixelSpacing: distances in mm unknown")
    arr = read_pixels(inst)
    orient = inst.patient_orientation
    if len(orient) == 2:
        # Canonical: columns run anterior -> posterior ("P"), rows superior -> inferior ("F").
        if orient[0][:1] == "A":
            arr = arr[:, ::-1]
        if orient[1][:1] == "H":
            arr = arr[::-1, :]
    else:
        source += ", orientation assumed (no PatientOrientation)"
    image = image_from_array(
        np.ascontiguousarray(arr), (spacing[1], spacing[0]), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0)
    )
    return image, source


def reorient(image: Any, canonical: tuple[float, ...]) -> Any:
    """Permute and flip the index axes so the direction is nearest `canonical`; physical positions unchanged.

    Each canonical axis takes the index axis whose direction cosine is most parallel to it, flipped when
    anti-parallel. Oblique acquisitions keep their true (slightly oblique) cosines.
    """
    import SimpleITK as sitk

    from cdeg.io import image_from_array

    dim = image.GetDimension()
    d = np.asarray(image.GetDirection(), float).reshape(dim, dim)
    c = np.asarray(canonical, float).reshape(dim, dim)
    score = c.T @ d  # score[new, old] = cos(angle between canonical axis new and index axis old)
    order = [-1] * dim  # order[new] = the old index axis that becomes axis `new`
    for new in sorted(range(dim), key=lambda n: -np.max(np.abs(score[n]))):  # most certain axis first
        order[new] = max((o for o in range(dim) if o not in order), key=lambda o: abs(score[new, o]))
    flips = [score[new, order[new]] < 0 for new in range(dim)]
    if order == list(range(dim)) and not any(flips):
        return image
    arr = sitk.GetArrayFromImage(image)  # numpy axes are index axes reversed
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    origin = np.asarray(image.GetOrigin(), float)
    for old in range(dim):
        if any(flips[new] and order[new] == old for new in range(dim)):
            origin = origin + d[:, old] * spacing[old] * (size[old] - 1)
    np_axes = [dim - 1 - order[new] for new in reversed(range(dim))]
    arr = np.transpose(arr, np_axes)
    for new in range(dim):
        if flips[new]:
            arr = np.flip(arr, axis=dim - 1 - new)
    new_dir = np.column_stack([d[:, order[new]] * (-1 if flips[new] else 1) for new in range(dim)])
    return image_from_array(
        np.ascontiguousarray(arr), tuple(spacing[order]), tuple(origin), tuple(new_dir.ravel())
    )
