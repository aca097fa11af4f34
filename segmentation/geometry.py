"""Image geometry for segmentation: reorientation to the canonical orientation and back, dimension checks.

nnU-Net learns from voxel arrays, not from physical space: a model trained on sagittal MRI stored as
``[LR slice, SI row, AP col]`` sees a different problem when an image arrives with its rows running
inferior to superior, or with slices and rows swapped. Every image is therefore brought to
:data:`cdeg.cohort.CANONICAL_DIRECTION` before training and prediction, and predicted masks are brought
back onto the input's own grid.

The reorientation is a signed axis permutation (what SimpleITK's ``DICOMOrient`` does for 3D images; it
refuses 2D images, so this module does the same for both with numpy). It never interpolates, so the
round trip is exact. An oblique image (direction cosines that are not a signed permutation of the
canonical ones) is mapped to the closest canonical axes; the residual angle is reported so that QC can
flag it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cdeg.cohort import CANONICAL_DIRECTION, MODALITIES


@dataclass(frozen=True)
class Reorientation:
    """How an image was mapped onto the canonical axes (enough to undo it exactly).

    Parameters
    ----------
    axes : tuple of int
        For each canonical SimpleITK index axis, the index axis of the original image it comes from.
    flips : tuple of bool
        For each canonical index axis, whether it runs opposite to the original axis.
    oblique_deg : float
        Largest angle between a canonical axis and the original axis mapped onto it (0 for images that
        are exactly a signed permutation of the canonical orientation).
    """

    axes: tuple[int, ...]
    flips: tuple[bool, ...]
    oblique_deg: float

    @property
    def is_identity(self) -> bool:
        """True when the image already had the canonical axis order and signs."""
        return self.axes == tuple(range(len(self.axes))) and not any(self.flips)


def direction_matrix(image: Any) -> np.ndarray:
    """SimpleITK direction cosines as an (n, n) matrix whose columns are the index axes."""
    n = image.GetDimension()
    return np.asarray(image.GetDirection(), dtype=float).reshape(n, n)


def canonical_matrix(modality: str) -> np.ndarray:
    """The canonical direction of a modality as an (n, n) matrix (columns = index axes)."""
    n = MODALITIES[modality]
    return np.asarray(CANONICAL_DIRECTION[modality], dtype=float).reshape(n, n)


def plan_reorientation(direction: np.ndarray, target: np.ndarray) -> Reorientation:
    """Signed axis permutation that maps an image with `direction` closest to `target`.

    Each target axis takes the original axis whose direction cosine has the largest absolute dot product
    with it; assignment is greedy on the strongest match first, so each original axis is used once.
    """
    n = direction.shape[0]
    dots = direction.T @ target  # dots[i, j] = original axis i . target axis j
    axes = [-1] * n
    flips = [False] * n
    free_src, free_dst = set(range(n)), set(range(n))
    for flat in np.argsort(-np.abs(dots), axis=None):
        i, j = divmod(int(flat), n)
        if i in free_src and j in free_dst:
            axes[j], flips[j] = i, bool(dots[i, j] < 0)
            free_src.discard(i)
            free_dst.discard(j)
    cosines = [abs(float(dots[axes[j], j])) for j in range(n)]
    oblique = float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))
    return Reorientation(tuple(axes), tuple(flips), round(oblique, 3))


def _apply(image: Any, axes: tuple[int, ...], flips: tuple[bool, ...]) -> Any:
    """New image whose index axis j is original axis ``axes[j]`` (reversed where ``flips[j]``)."""
    import SimpleITK as sitk

    n = image.GetDimension()
    arr = sitk.GetArrayViewFromImage(image)  # numpy axes are the SimpleITK axes reversed
    # numpy axis of the new array at position n-1-j holds SimpleITK axis j -> original numpy axis n-1-axes[j]
    perm = [n - 1 - axes[n - 1 - k] for k in range(n)]
    out = np.transpose(arr, perm)
    flip_np = [n - 1 - j for j in range(n) if flips[j]]
    if flip_np:
        out = np.flip(out, axis=flip_np)
    new = sitk.GetImageFromArray(np.ascontiguousarray(out), isVector=False)
    d = direction_matrix(image)
    spacing = image.GetSpacing()
    size = image.GetSize()
    new_dir = np.stack([d[:, axes[j]] * (-1.0 if flips[j] else 1.0) for j in range(n)], axis=1)
    corner = [0] * n
    for j in range(n):
        if flips[j]:
            corner[axes[j]] = size[axes[j]] - 1
    origin = image.TransformIndexToPhysicalPoint(tuple(int(c) for c in corner))
    new.SetSpacing(tuple(float(spacing[axes[j]]) for j in range(n)))
    new.SetDirection(tuple(float(v) for v in new_dir.ravel()))
    new.SetOrigin(origin)
    return new


def to_canonical(image: Any, modality: str) -> tuple[Any, Reorientation]:
    """Reorient `image` to the canonical orientation of `modality`.

    Returns
    -------
    image : SimpleITK.Image
        The same voxels on permuted/flipped axes (no interpolation).
    reorientation : Reorientation
        What was done; pass it to :func:`from_canonical` to map a mask back.
    """
    plan = plan_reorientation(direction_matrix(image), canonical_matrix(modality))
    if plan.is_identity:
        return image, plan
    return _apply(image, plan.axes, plan.flips), plan


def reorient_like(image: Any, reference: Any) -> tuple[Any, Reorientation]:
    """`image` on the axes of `reference` (signed axis permutation, no interpolation).

    For a mask made by another tool from the original file of an image that was written reoriented into the
    cohort: the same permutation brings the mask onto the cohort image's axes.
    """
    if image.GetDimension() != reference.GetDimension():
        return image, Reorientation(tuple(range(image.GetDimension())), (False,) * image.GetDimension(), 0.0)
    plan = plan_reorientation(direction_matrix(image), direction_matrix(reference))
    if plan.is_identity:
        return image, plan
    return _apply(image, plan.axes, plan.flips), plan


def from_canonical(mask: Any, plan: Reorientation, reference: Any) -> Any:
    """Map a mask computed on the canonical grid back onto the grid of `reference` (the input image).

    The inverse permutation is applied, then the reference's geometry is copied so that the output has
    bit-identical spacing, origin and direction to the input image.
    """
    if not plan.is_identity:
        n = len(plan.axes)
        inv_axes = [0] * n
        inv_flips = [False] * n
        for j, i in enumerate(plan.axes):
            inv_axes[i] = j
            inv_flips[i] = plan.flips[j]
        mask = _apply(mask, tuple(inv_axes), tuple(inv_flips))
    if tuple(mask.GetSize()) != tuple(reference.GetSize()):  # pragma: no cover - would be a bug above
        raise RuntimeError(f"mask size {mask.GetSize()} does not match image size {reference.GetSize()}")
    mask.CopyInformation(reference)
    return mask


def same_grid(a: Any, b: Any, tol: float = 1e-3) -> str | None:
    """None when two images share size, spacing, origin and direction; else what differs."""
    if a.GetDimension() != b.GetDimension():
        return f"{a.GetDimension()}D vs {b.GetDimension()}D"
    if tuple(a.GetSize()) != tuple(b.GetSize()):
        return f"size {a.GetSize()} vs {b.GetSize()}"
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        va, vb = np.asarray(getattr(a, name)()), np.asarray(getattr(b, name)())
        scale = np.maximum(1.0, np.abs(va)) if name == "GetOrigin" else 1.0
        if np.any(np.abs(va - vb) > tol * scale):
            return f"{name[3:].lower()} {tuple(np.round(va, 4))} vs {tuple(np.round(vb, 4))}"
    return None


def nnunet_spacing(image: Any) -> list[float]:
    """Spacing in nnU-Net's array order, as SimpleITKIO reports it (2D gets a large dummy first axis)."""
    sp = list(image.GetSpacing())[::-1]
    if image.GetDimension() == 2:
        return [max(sp) * 999.0, *sp]
    return sp


def nnunet_array(image: Any) -> np.ndarray:
    """Image voxels as nnU-Net's (channel, z, y, x) float32 array (2D gets a singleton z)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr[None]
    return arr[None]


def si_axis(modality: str) -> int:
    """Numpy axis of a canonical array that runs superior to inferior (MRI ``[LR, SI, AP]``, radiograph ``[SI, AP]``)."""
    return 1 if MODALITIES[modality] == 3 else 0
