"""Text burned into a radiograph's pixels: the DICOM attribute, a band heuristic, and masking.

A DICOM header can be de-identified completely while the pixels still show the patient's name, birth
date or accession number: modalities and PACS viewers "burn" such text into the image. Two signals:

* the attribute Burned In Annotation (0028,0301), read in :mod:`cdeg.dicom.scan` (often absent, and
  not always true);
* :func:`find_text_regions`, a heuristic that looks where radiograph burn-ins sit (:data:`REGIONS`: the
  four corners and the top and bottom bands) for what text is made of: thin strokes a few pixels wide,
  usually at the extreme grey level (white, or black), with a sharp edge on both sides, in clusters of
  connected pixels, far denser than in the central region of the same image.

Stroke pixel: a pixel brighter (darker) than the pixels :data:`STROKE_OFFSETS_PX` away on *both* sides,
along rows or along columns, the step averaged over :data:`ALONG_STROKE_PX` pixels along the stroke
(quantum noise is independent from pixel to pixel, a stroke is not), by at least
:data:`STROKE_CONTRAST` of the image's robust range for a pixel within :data:`EXTREME_MARGIN` of the
image's maximum (minimum), the grey level text is drawn at, and by :data:`STRONG_STROKE_CONTRAST` at any
grey level. Anatomy's edges are one-sided steps, blurred over several pixels; isolated noise pixels are
dropped by :data:`MIN_COMPONENT_PX`.

A region is flagged when it holds at least :func:`min_stroke_pixels` stroke pixels and its stroke
density is :data:`CENTRE_FACTOR` times the central region's (an image sharp or noisy everywhere is not
text). Corners are decided first; a band is flagged only by the stroke pixels outside flagged corners,
so a corner label does not blank a whole band.

Calibration, on 108 synthetic lateral radiographs (:mod:`cdeg.synth`: neck profile seeds 5 and 23,
population profile seed 7): without text, no region of any image holds a single stroke pixel (the
threshold is 14 or more), so none is flagged. Text drawn with PIL (its default TrueType font, 2-4 % of
the image height) was found wherever it was readable (differing from the pixels under it by a quarter
of the range): a white "L" in the top-left corner in 107 of 107 images, a white name and date line along
the top in 107 of 107, a black accession number along the bottom in 108 of 108, a three-line block in
the corner in 107 of 107; after masking no readable text was left. Grey text (at 0.6-0.95 of the
maximum) in the corner: 119 of 120. These are synthetic images: real radiographs (edge enhancement,
metal implants, collimation edges in a corner) may need other thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Where radiograph burn-ins sit, as fractions of the image (row_start, row_stop, col_start, col_stop),
#: row 0 at the top of the cohort image (head). No standard fixes where text goes; these are design
#: choices, sized for the usual layouts. Corners: a block of 3-5 text lines (name, id, birth date,
#: study date, institution) at 2-3 % of the height per line fills about 15 % of the height, and a
#: name line about a third of the width; side markers ("L"/"R") sit in the corners too. Bands: one line
#: across the image (name and date, accession number, exposure values) of 2-4 % of the height; 8 %
#: leaves room for the margin above it. Widen them here if a site's layout differs.
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "top_left": (0.0, 0.15, 0.0, 0.35),
    "top_right": (0.0, 0.15, 0.65, 1.0),
    "bottom_left": (0.85, 1.0, 0.0, 0.35),
    "bottom_right": (0.85, 1.0, 0.65, 1.0),
    "top": (0.0, 0.08, 0.0, 1.0),
    "bottom": (0.92, 1.0, 0.0, 1.0),
}
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
BANDS = ("top", "bottom")
#: The reference region: the middle half of the image in both directions (anatomy, never text).
CENTRE = (0.25, 0.75, 0.25, 0.75)
#: Distances (pixels) to the two sides of a stroke: strokes of 1-5 pixels (fonts of 10-40 pixels).
STROKE_OFFSETS_PX = (2, 3)
#: Least step from a stroke to both sides, as a fraction of the image's 0.5-99.5 percentile range, for
#: a pixel near the extreme grey level. Without averaging along the stroke, the noise of the synthetic
#: radiographs makes such steps up to 0.29 of the range; with it (and the extreme-level condition) no
#: pixel of a clean image's corners or bands qualifies (module doc).
STROKE_CONTRAST = 0.12
#: Least step for a stroke at any grey level (text drawn grey, not at the extreme), about twice the
#: above: averaged noise stays below it in the corners and bands of every clean synthetic image.
STRONG_STROKE_CONTRAST = 0.25
#: Pixels averaged along the stroke direction (noise is independent between pixels, a stroke is not).
ALONG_STROKE_PX = 3
#: A stroke pixel lies within this fraction of the range of the image's maximum (minimum).
EXTREME_MARGIN = 0.10
#: Connected stroke pixels (8-neighbourhood) fewer than this are noise.
MIN_COMPONENT_PX = 4
#: Least stroke pixels in a region per pixel of image height (a letter at 2.5 % of the height has
#: strokes of about that length): 0.02 -> 12 pixels in a 600-row image; never fewer than 8.
MIN_STROKE_PX_PER_ROW = 0.02
MIN_STROKE_PX = 8
#: A region's stroke density must exceed the central region's by this factor.
CENTRE_FACTOR = 4.0
#: Images with fewer rows or columns are not searched (no diagnostic radiograph is that small): their
#: corners hold too few pixels to tell text from noise. Uniform noise over the whole grey range, the
#: worst case, was flagged in 4 of 100 draws of 64 x 64 pixels and in none of 400 from 128 x 128 up.
MIN_IMAGE_PX = 128


@dataclass(frozen=True)
class TextRegions:
    """What :func:`find_text_regions` found.

    Parameters
    ----------
    regions : tuple of str
        Names from :data:`REGIONS` holding burned-in text, in :data:`REGIONS` order.
    counts : dict
        Stroke pixels per region (and ``"centre"``), for the report and for calibration.
    """

    regions: tuple[str, ...]
    counts: dict[str, int]


def region_slices(shape: tuple[int, int], name: str) -> tuple[slice, slice]:
    """Row and column slices of a region (:data:`REGIONS` or ``"centre"``) in an image of `shape`."""
    r0, r1, c0, c1 = CENTRE if name == "centre" else REGIONS[name]
    h, w = shape
    return slice(round(r0 * h), round(r1 * h)), slice(round(c0 * w), round(c1 * w))


def min_stroke_pixels(shape: tuple[int, int]) -> int:
    """Least stroke pixels for a region to count as text in an image of `shape`."""
    return max(MIN_STROKE_PX, round(MIN_STROKE_PX_PER_ROW * shape[0]))


def _shifted(a: np.ndarray, axis: int, offset: int) -> np.ndarray:
    """`a` moved by `offset` pixels along `axis`, edges repeated (out[i] = a[i + offset])."""
    pad = [(abs(offset), abs(offset)) if k == axis else (0, 0) for k in range(2)]
    p = np.pad(a, pad, mode="edge")
    index = [slice(None), slice(None)]
    index[axis] = slice(abs(offset) + offset, abs(offset) + offset + a.shape[axis])
    return p[tuple(index)]


def stroke_pixels(array: np.ndarray) -> np.ndarray:
    """Boolean mask of the stroke pixels of a 2D image (see the module doc)."""
    from scipy import ndimage

    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    span = float(hi - lo)
    if a.ndim != 2 or min(a.shape) < MIN_IMAGE_PX or span <= 0:
        return np.zeros(a.shape, bool)
    bright = np.zeros_like(a)
    dark = np.zeros_like(a)
    for axis in (0, 1):
        along = [ALONG_STROKE_PX, ALONG_STROKE_PX]
        along[axis] = 1  # a stroke across `axis` runs along the other axis
        for w in STROKE_OFFSETS_PX:
            before, after = _shifted(a, axis, -w), _shifted(a, axis, w)
            b = ndimage.uniform_filter(np.minimum(a - before, a - after), along, mode="nearest")
            d = ndimage.uniform_filter(np.minimum(before - a, after - a), along, mode="nearest")
            np.maximum(bright, b, out=bright)
            np.maximum(dark, d, out=dark)
    step, margin = STROKE_CONTRAST * span, EXTREME_MARGIN * span
    mask = ((bright >= step) & (a >= a.max() - margin)) | ((dark >= step) & (a <= a.min() + margin))
    mask |= np.maximum(bright, dark) >= STRONG_STROKE_CONTRAST * span
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= MIN_COMPONENT_PX
    keep[0] = False
    return keep[labels]


def find_text_regions(array: np.ndarray) -> TextRegions:
    """Regions of a 2D radiograph (cohort orientation) that hold burned-in text (see the module doc)."""
    a = np.asarray(array)
    strokes = stroke_pixels(a)
    need = min_stroke_pixels(a.shape)
    centre = region_slices(a.shape, "centre")
    centre_density = strokes[centre].mean() if strokes[centre].size else 0.0
    counts = {"centre": int(strokes[centre].sum())}
    found: list[str] = []
    for name in (*CORNERS, *BANDS):
        region = region_slices(a.shape, name)
        inside = strokes[region].copy()
        if name in BANDS:  # text of a flagged corner does not count again for the band
            for corner in found:
                inside &= ~_in_region(a.shape, corner)[region]
        counts[name] = int(inside.sum())
        density = counts[name] / max(inside.size, 1)
        if counts[name] >= need and density > CENTRE_FACTOR * centre_density:
            found.append(name)
    return TextRegions(tuple(n for n in REGIONS if n in found), counts)


def _in_region(shape: tuple[int, int], name: str) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[region_slices(shape, name)] = True
    return m


def mask_regions(array: np.ndarray, regions: tuple[str, ...] | list[str]) -> np.ndarray:
    """A copy of `array` with the regions set to their background: the median of their pixels (all regions
    together, before masking).

    The median, not the minimum: text covers a small part of a region, so the median is a background
    grey level, and a fill at that level leaves no stroke and a weaker artificial edge against the
    anatomy around it than black would. One value for all regions, so overlapping ones (a corner and a
    band) form one uniform area. The dtype is kept (the median rounded for integer images).
    """
    a = np.asarray(array)
    out = a.copy()
    if not regions:
        return out
    inside = np.zeros(a.shape, bool)
    for name in regions:
        inside[region_slices(a.shape, name)] = True
    value = np.median(a[inside])
    if a.dtype.kind in "iu":
        value = np.round(value)
    out[inside] = np.asarray(value).astype(a.dtype)
    return out
