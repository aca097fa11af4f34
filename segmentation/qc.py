"""QC overlay PNGs: the mid-sagittal slice (MRI) or the radiograph with coloured, named levels.

One PNG per patient and modality, ``MASK_DIR/<patient_id>/<modality>_qc.png``, for visual review of
level names: each structure is filled in its colour and labelled with its level name at its centre.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.io import atomic_path


def write_qc_overlay(path: str | Path, image: Any, mask: Any, modality: str, title: str) -> Path:
    """Overlay of a mask on its image, in the sagittal plane whatever orientation the files have.

    Both are brought to :data:`cdeg.cohort.CANONICAL_DIRECTION` first (an exact axis permutation; an oblique
    image goes to its closest axes), so an MRI shows its mid-sagittal slice and a radiograph stands upright
    with the face to the left, for a file stored RAS, PSR or any other way.

    Parameters
    ----------
    path : Path
        PNG to write.
    image, mask : SimpleITK.Image
        The image and its mask in the cdeg label convention, on the same grid.
    modality : {"mri", "xray"}
        Which canonical orientation applies.
    title : str
        Shown above the picture.
    """
    import SimpleITK as sitk
    from cdeg.segmentation.geometry import to_canonical

    image_c, _ = to_canonical(image, modality)
    mask_c, _ = to_canonical(mask, modality)
    arr, seg = sitk.GetArrayViewFromImage(image_c), sitk.GetArrayFromImage(mask_c)
    spacing = tuple(float(s) for s in image_c.GetSpacing()[::-1])
    if arr.ndim == 3:
        k = mid_slice(seg)
        arr, seg, spacing = arr[k], seg[k], spacing[1:]
    return write_qc_png(path, np.asarray(arr), seg, (spacing[0], spacing[1]), title)


def _colour(label: int) -> tuple[float, float, float]:
    r, g, b = labels.colour(label)  # one colour table for QC, Slicer and ITK-SNAP (cdeg.labels.COLOURS)
    return (r / 255, g / 255, b / 255)


def mid_slice(mask: np.ndarray) -> int:
    """Index along axis 0 of the sagittal slice with most labelled voxels (the midline), else the middle."""
    counts = (mask > 0).reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)) if counts.any() else mask.shape[0] // 2


#: Width of a QC picture (px) and the size of its words: what the earlier matplotlib figure had (4.5 in at 110
#: dpi; level names 7 pt bold, title 8 pt).
QC_WIDTH_PX = 495
_NAME_PX = 11
_TITLE_PX = 12


@functools.cache
def _font(bold: bool, size: int) -> Any:
    """DejaVu Sans from matplotlib's own fonts (a dependency), so the pictures look the same on every machine."""
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def write_qc_png(
    path: str | Path,
    image: np.ndarray,
    mask: np.ndarray,
    spacing: tuple[float, float],
    title: str,
) -> Path:
    """Write an overlay of a 2D `mask` on a 2D `image` (rows superior->inferior, columns anterior->posterior).

    The picture is :data:`QC_WIDTH_PX` wide with the true aspect ratio, each structure tinted in its colour and
    named beside it (vertebrae to the right, discs to the left, so that the names do not collide), the title
    above. Drawn with Pillow: about half the time a matplotlib figure took, and every patient gets one per
    modality.

    Parameters
    ----------
    path : Path
        PNG to write (atomically).
    image, mask : ndarray
        2D arrays of the same shape (for MRI pass the slice chosen with :func:`mid_slice`).
    spacing : (float, float)
        Row and column spacing in mm, so the picture has the true aspect ratio.
    title : str
        Shown above the picture.
    """
    from PIL import Image, ImageDraw

    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(img[..., None], 3, axis=2)
    present = [int(v) for v in np.unique(mask) if v and int(v) in labels.ALL_LABELS]
    where = {}  # label -> (rows, cols) of its pixels, for its name
    for lab in present:
        sel = mask == lab
        rgb[sel] = 0.45 * rgb[sel] + 0.55 * np.asarray(_colour(lab))
        where[lab] = np.nonzero(sel)
    h_mm, w_mm = mask.shape[0] * spacing[0], mask.shape[1] * spacing[1]
    width = QC_WIDTH_PX
    height = max(1, round(width * h_mm / max(w_mm, 1e-6)))
    band = _TITLE_PX + 8  # the title's band above the picture
    picture = Image.fromarray(np.round(rgb * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    canvas = Image.new("RGB", (width, height + band), "white")
    canvas.paste(picture, (0, band))
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, band / 2), title, fill="black", font=_font(False, _TITLE_PX), anchor="mm")
    px_per_mm = width / max(w_mm, 1e-6)
    for lab, (rows, cols) in where.items():
        s = labels.structure(lab)
        x_mm = (cols.max() + 2) * spacing[1] if s.kind == "vertebra" else max(cols.min() - 2, 0) * spacing[1]
        xy = (x_mm * px_per_mm, band + rows.mean() * spacing[0] * px_per_mm)
        anchor = "lm" if s.kind == "vertebra" else "rm"
        draw.text(xy, s.name, fill=labels.colour(lab), font=_font(True, _NAME_PX), anchor=anchor)
    path = Path(path)
    with atomic_path(path) as tmp:
        # zlib level 1: a third of level 6's encoding time for a file about a third larger.
        canvas.save(tmp, format="PNG", compress_level=1)
    return path
