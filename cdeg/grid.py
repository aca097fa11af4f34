"""Whether a mask lies on its image's grid, and putting it there: the rule every stage that reads masks shares.

A mask made from an image has the image's size, spacing, origin and direction. Tools that write their own
files (other segmenters, resampling viewers) may round them or crop the field of view slightly; within a
tolerance the mask is resampled nearest-neighbour onto the image grid with a warning, beyond it the mask is
refused, because it was most likely made from another image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdeg.errors import CdegError

#: Largest difference in direction cosines between an image and its mask that is treated as rounding.
DIRECTION_TOLERANCE = 1e-3


def _corners(img: Any) -> np.ndarray:
    """Physical positions of the outer corners of an image grid (all 2^d of them)."""
    d = img.GetDimension()
    size = np.array(img.GetSize(), dtype=float)
    out = []
    for bits in range(2**d):
        idx = [(-0.5 if not (bits >> i) & 1 else size[i] - 0.5) for i in range(d)]
        out.append(img.TransformContinuousIndexToPhysicalPoint(idx))
    return np.array(out)


def _header_corners(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Direction cosines and grid corners (as :func:`_corners`) from a file's header, no voxel read."""
    import SimpleITK as sitk

    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.ReadImageInformation()
    d = r.GetDimension()
    direction = np.array(r.GetDirection()).reshape(d, d)
    size, spacing, origin = np.array(r.GetSize(), float), np.array(r.GetSpacing()), np.array(r.GetOrigin())
    corners = [
        origin + direction @ (spacing * [(-0.5 if not (bits >> i) & 1 else size[i] - 0.5) for i in range(d)])
        for bits in range(2**d)
    ]
    return direction.ravel(), np.array(corners)


def within_tolerance(image: Path, mask: Path, tolerance_mm: float) -> bool:
    """Whether :func:`conform_mask` would accept this mask (same grid, or resampled within `tolerance_mm`).

    Header-only, for the cohort check: a mask whose grid is off by less than the tolerance is not a
    problem for extraction, which resamples it with a warning.
    """
    try:
        (di, ci), (dm, cm) = _header_corners(image), _header_corners(mask)
    except RuntimeError:
        return False
    if di.shape != dm.shape:
        return False
    d_dir = float(np.max(np.abs(di - dm)))
    return d_dir <= DIRECTION_TOLERANCE and float(np.max(np.linalg.norm(ci - cm, axis=1))) <= tolerance_mm


def conform_mask(
    image: Any, mask: Any, tolerance_mm: float, patient: str, path: Path
) -> tuple[Any, str | None]:
    """Put `mask` on `image`'s grid.

    Identical grids (up to rounding) are used as they are. A mask covering the same field of view within
    `tolerance_mm` (largest distance between corresponding grid corners) and the same orientation is
    resampled nearest-neighbour onto the image grid, with a warning. Anything else raises CdegError.
    """
    import SimpleITK as sitk

    same_size = tuple(image.GetSize()) == tuple(mask.GetSize())
    d_dir = float(np.max(np.abs(np.subtract(image.GetDirection(), mask.GetDirection()))))
    corner_mm = float(np.max(np.linalg.norm(_corners(image) - _corners(mask), axis=1)))
    if same_size and d_dir < 1e-6 and corner_mm < 1e-4:
        if not (image.GetOrigin() == mask.GetOrigin() and image.GetSpacing() == mask.GetSpacing()):
            mask = sitk.Image(mask)
            mask.CopyInformation(image)
        return mask, None
    if d_dir > DIRECTION_TOLERANCE or corner_mm > tolerance_mm:
        why = (
            f"orientation differs by {d_dir:.3f} (direction cosines)"
            if d_dir > DIRECTION_TOLERANCE
            else f"field of view differs by {corner_mm:.2f} mm"
        )
        raise CdegError(
            f"mask geometry does not match the image: {why}, beyond the {tolerance_mm:g} mm tolerance; "
            "was the mask made from this image?",
            patient=patient,
            path=path,
        )
    resampled = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    msg = (
        f"mask grid differs from the image (size {mask.GetSize()} vs {image.GetSize()}, field of view off by "
        f"{corner_mm:.2f} mm <= {tolerance_mm:g} mm): resampled nearest-neighbour onto the image grid"
    )
    return resampled, msg
