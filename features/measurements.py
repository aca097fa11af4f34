"""Clinical measurements per level from the masks (and the MRI, for signal ratios), with sub-pixel accuracy.

The quantities are those defined in :mod:`cdeg.measures` (the same definitions the synthetic truth uses):
disc heights at t = 0.1 / 0.5 / 0.9 of the disc's AP extent, disc height index, disc and segmental
angles, vertebral body heights, depth and wedge angle, the C2-C7 Cobb angle and the disc-to-CSF T2
signal ratio. Everything is measured in the sagittal plane, in millimetres of physical space.

Method
------
Masks have in-plane pixels of 0.5-0.8 mm (MRI) or 0.3-0.4 mm (radiograph) while disc heights are
5-6 mm, so counting pixels would be off by a pixel or more. Instead:

1. **Sub-pixel boundaries.** Each label's indicator (1 inside, 0 outside) is smoothed lightly (Gaussian,
   ``smooth_px``) and sampled with bilinear interpolation along straight lines; a boundary is where the
   interpolated indicator crosses 0.5, which places it between pixel centres rather than at them.
2. **Vertebral bodies first.** A vertebra label includes posterior elements and osteophytes (and, on a
   radiograph, pedicles and pillars in projection). The body is found under/over the adjacent discs. Its
   anterior and posterior walls are the innermost boundary points on lines across the central 70% of its
   height (osteophytes sit at the endplates, pedicles join the upper half), perpendicular to the inferior
   endplate chord; the depth is their distance at mid-height. The superior and inferior endplate surfaces
   are then sampled on lines between the walls and fitted, so the fits' ends are the endplate corners
   (where the walls meet the endplates; not the tips of osteophytes or the rounded corners). The frame is
   re-aligned to the inferior chord (:mod:`cdeg.measures`: heights perpendicular to it) and everything
   repeated. C2 has no superior endplate of its own (the dens rises from it): its mid-height is taken half
   a body height above its inferior endplate, using the columns in front of the dens, and no heights are
   reported for it.
3. **Discs.** In a frame aligned with the disc's lower chord (the superior endplate chord of the vertebra
   below), lines across the disc find the inferior endplate of the vertebra above (first crossing into it
   going up from the disc) and the superior endplate of the vertebra below. A low-order polynomial
   (``poly_degree``) is fitted to each surface over the inner part of the extent (``trim`` left out at each
   rounded edge), robustly: a local mask defect at one end is left out instead of bending the curve. The
   endplate corners are where each body's walls meet its fitted surface; the disc's AP extent runs from the
   mean of the two anterior to the mean of the two posterior corners, so posterior bulges and anterior
   osteophytes do not stretch it. Disc height at ``t`` = lower - upper surface at
   ``s = s_ant + t (s_post - s_ant)``.
4. **Angles** are between endplate chords, each from its own body's anterior to its posterior corner on
   the fitted surface (not a line fitted to the concave endplate, which tilts with any asymmetry of the
   concavity). Disc angle: inferior chord of the vertebra above vs superior chord of the vertebra below.
   Segmental and Cobb angles: differences of inferior endplate chord directions; the inferior chord of a
   vertebra comes from the disc below it, else from its body. Body wedge: from the body's height profile,
   ``atan((h(0.1) - h(0.9)) / (0.8 D))``, exact for the quadratic profile of
   :func:`cdeg.measures.quadratic_profile` and steadier than two extrapolated chords. Positive = lordotic /
   taller anteriorly.
5. **MRI** is 3D with thick sagittal slices, and a body or disc is shorter (AP) away from its left-right
   middle. Each level is measured on the slice(s) nearest its LR centre (the area-weighted mean position of
   the slices where the disc(s) are large): those within half a slice spacing plus ``slice_margin_mm``
   of it, one or two slices; their values are averaged.
6. **Disc-to-CSF signal ratio** (MRI): mean image value of the disc's central third (AP), eroded by one
   pixel against partial volume, over the patient's CSF signal: the median of the bright (above an Otsu
   threshold) unlabelled pixels in the canal behind each disc (from 0.5 mm behind the disc, bulge included,
   over ``canal_depth_mm``, at the height of the disc), pooled over all discs. ``csf_reference="level"``
   divides by the mean of the bright pixels behind the disc itself instead (the earlier definition).

Orientation: masks follow :data:`cdeg.cohort.CANONICAL_DIRECTION`. For 3D images the plane coordinates
come from the image direction (LPS: AP = +y, SI = -z), so any sagittal-ish acquisition works; radiographs
are taken as columns = anterior to posterior, rows = superior to inferior.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdeg import labels, measures

log = logging.getLogger(__name__)

#: Name of the patient-level pseudo-level that carries the C2-C7 Cobb angle.
COBB_LEVEL = "C2-C7"
_COBB_UPPER, _COBB_LOWER = "C2", "C7"

DISC_FEATURES = (
    "disc_height_anterior_mm",
    "disc_height_middle_mm",
    "disc_height_posterior_mm",
    "disc_height_index",
    "disc_angle_deg",
    "segmental_angle_deg",
    "disc_csf_signal_ratio",
)
VERTEBRA_FEATURES = (
    "body_height_anterior_mm",
    "body_height_middle_mm",
    "body_height_posterior_mm",
    "body_depth_mm",
    "body_wedge_deg",
)
SPINE_FEATURES = ("cobb_c2c7_deg",)


@dataclass(frozen=True)
class MeasureOptions:
    """How the clinical measurements are taken (defaults were checked against synthetic truth)."""

    step_mm: float = field(
        default=0.1, metadata={"help": "spacing of samples along a sampling line (mm)", "range": (0.01, 1)}
    )
    line_step_mm: float = field(
        default=0.2, metadata={"help": "spacing of the sampling lines (mm)", "range": (0.01, 2)}
    )
    smooth_px: float = field(
        default=0.5,
        metadata={"help": "Gaussian sigma applied to each label indicator (pixels)", "range": (0, 3)},
    )
    poly_degree: int = field(
        default=2, metadata={"help": "degree of the endplate surface polynomials", "range": (1, 5)}
    )
    trim: float = field(
        default=0.08,
        metadata={
            "help": "fraction of the AP extent left out of fits at each (rounded) edge",
            "range": (0, 0.3),
        },
    )
    frame_iterations: int = field(
        default=2,
        metadata={"help": "re-alignments of the disc frame to its endplate chords", "range": (0, 5)},
    )
    slice_margin_mm: float = field(
        default=0.25,
        metadata={
            "help": "MRI: slices centred within half a slice spacing plus this of a structure's "
            "left-right centre are averaged (mm)",
            "range": (0, 10),
        },
    )
    canal_depth_mm: float = field(
        default=6.0,
        metadata={
            "help": "MRI: depth of the canal region behind a disc used for CSF signal (mm)",
            "range": (1, 20),
        },
    )
    csf_reference: str = field(
        default="patient",
        metadata={
            "help": "MRI: the CSF signal a disc's signal is divided by: 'patient' = the median of the bright "
            "canal pixels behind all of the patient's discs, 'level' = the mean of those behind the disc itself",
            "choices": ("patient", "level"),
        },
    )
    search_mm: float = field(
        default=30.0,
        metadata={"help": "half-length of sampling lines through a structure (mm)", "range": (5, 100)},
    )


# --- sagittal planes ------------------------------------------------------------------------------


@dataclass
class Plane:
    """One sagittal 2D section: labels (and image) with the map from array index to plane millimetres.

    Plane coordinates are ``(ap, si)`` in mm, AP increasing posteriorly and SI increasing inferiorly:
    ``mm = origin + axes @ (row, col)``.
    """

    labels: np.ndarray
    image: np.ndarray | None
    origin: np.ndarray
    axes: np.ndarray
    smooth_px: float = 0.5
    lr_mm: float = 0.0  # left-right position of the plane (MRI slice centre along the slice axis)
    _ind: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from scipy import ndimage

        self._inv = np.linalg.inv(self.axes)
        self._counts = np.bincount(self.labels.ravel(), minlength=256)
        self._boxes = ndimage.find_objects(self.labels)

    @property
    def pixel_area(self) -> float:
        return float(abs(np.linalg.det(self.axes)))

    def mm_of(self, idx: np.ndarray) -> np.ndarray:
        """Plane mm coordinates of array indices, shape (..., 2)."""
        return self.origin + idx @ self.axes.T

    def index_of(self, mm: np.ndarray) -> np.ndarray:
        """Continuous array indices of plane mm coordinates, shape (..., 2)."""
        return (mm - self.origin) @ self._inv.T

    def box(self, label: int) -> tuple[slice, slice] | None:
        return self._boxes[label - 1] if 0 < label <= len(self._boxes) else None

    def points(self, label: int) -> np.ndarray:
        """mm coordinates of the pixel centres of `label`, shape (N, 2)."""
        box = self.box(label)
        if box is None:
            return np.zeros((0, 2))
        idx = np.argwhere(self.labels[box] == label) + np.array([box[0].start, box[1].start])
        return self.mm_of(idx.astype(float))

    def area(self, label: int) -> float:
        return float(self._counts[label]) * self.pixel_area if label < len(self._counts) else 0.0

    def indicator(self, label: int) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed indicator of `label` on a window around it, and the window's index offset."""
        if label not in self._ind:
            from scipy import ndimage

            box = self.box(label)
            pad = math.ceil(4 * self.smooth_px) + 2
            if box is None:
                lo, hi = np.zeros(2, int), np.ones(2, int)
            else:
                lo = np.maximum(np.array([box[0].start, box[1].start]) - pad, 0)
                hi = np.minimum(np.array([box[0].stop, box[1].stop]) + pad, self.labels.shape)
            win = (self.labels[lo[0] : hi[0], lo[1] : hi[1]] == label).astype(np.float32)
            if self.smooth_px > 0:
                win = ndimage.gaussian_filter(win, self.smooth_px, mode="constant")
            self._ind[label] = (win, lo.astype(float))
        return self._ind[label]

    def sample(self, label: int, mm: np.ndarray) -> np.ndarray:
        """Interpolated (bilinear) indicator of `label` at mm points, shape mm.shape[:-1]."""
        from scipy import ndimage

        win, off = self.indicator(label)
        idx = self.index_of(mm.reshape(-1, 2)) - off
        vals = ndimage.map_coordinates(win, idx.T, order=1, mode="constant", cval=0.0)
        return vals.reshape(mm.shape[:-1])

    def sample_grid(
        self, label: int, centre: np.ndarray, a: np.ndarray, s: np.ndarray, u: np.ndarray
    ) -> np.ndarray:
        """:meth:`sample` at the points of ``_grid(centre, a, s, u)``, shape (len(s), len(u)).

        Those points are an affine image of the index grid when `s` and `u` are evenly spaced (every caller's
        aranges and linspaces), so the window is resampled by ``affine_transform``, the same linear
        interpolation and edge handling as ``map_coordinates``, without building the point and index arrays
        (they were most of the measurement time). Uneven `s` or `u` take :meth:`sample`.
        """
        if not (_even(s) and _even(u)):
            return self.sample(label, _grid(centre, a, s, u))
        from scipy import ndimage

        win, off = self.indicator(label)
        ds = float(s[1] - s[0]) if len(s) > 1 else 0.0
        du = float(u[1] - u[0]) if len(u) > 1 else 0.0
        n = _perp(a)
        # index(i, j) = index_of(centre + s_i a + u_j n) - off, affine in (i, j)
        start = self.index_of(centre + float(s[0]) * a + float(u[0]) * n) - off
        matrix = np.column_stack([self._inv @ a * ds, self._inv @ n * du])
        return ndimage.affine_transform(
            win, matrix, offset=start, output_shape=(len(s), len(u)), order=1, mode="constant", cval=0.0
        )

    def sample_image(self, mm: np.ndarray) -> np.ndarray:
        """Image values (nearest pixel) at mm points; NaN outside the image."""
        assert self.image is not None
        idx = np.rint(self.index_of(mm.reshape(-1, 2))).astype(int)
        ok = (idx >= 0).all(axis=1) & (idx[:, 0] < self.image.shape[0]) & (idx[:, 1] < self.image.shape[1])
        out = np.full(len(idx), np.nan)
        out[ok] = self.image[idx[ok, 0], idx[ok, 1]]
        return out.reshape(mm.shape[:-1])


def sagittal_planes(mask: Any, image: Any | None = None, smooth_px: float = 0.5) -> list[Plane]:
    """Sagittal planes of a mask (and its image, same grid): one for a radiograph, one per slice for MRI.

    Parameters
    ----------
    mask : SimpleITK.Image
        Label mask (2D radiograph or 3D MRI) in the label convention.
    image : SimpleITK.Image, optional
        The image on the same grid (needed for signal ratios only).
    smooth_px : float
        Gaussian sigma (pixels) applied to label indicators before interpolation.
    """
    import SimpleITK as sitk

    lab = sitk.GetArrayViewFromImage(mask)
    img = sitk.GetArrayFromImage(image).astype(np.float32) if image is not None else None
    d = mask.GetDimension()
    direction = np.array(mask.GetDirection(), dtype=float).reshape(d, d)
    per_index = direction @ np.diag(
        mask.GetSpacing()
    )  # physical displacement per index step, columns i, j(, k)
    origin = np.array(mask.GetOrigin(), dtype=float)
    if d == 2:
        # Radiograph: x = anterior -> posterior, y = superior -> inferior (cohort.CANONICAL_DIRECTION).
        axes = np.stack(
            [per_index[:, 1], per_index[:, 0]], axis=1
        )  # numpy axis 0 = index j, axis 1 = index i
        return [Plane(np.asarray(lab), img, origin, axes, smooth_px)]
    if d != 3:
        raise ValueError(f"expected a 2D or 3D mask, got {d}D")
    to_plane = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # LPS -> (ap = +y, si = -z)
    lr_index = int(np.argmax(np.abs(direction[0, :])))  # the index axis closest to left-right
    lr_numpy = 2 - lr_index
    in_plane_numpy = [ax for ax in range(3) if ax != lr_numpy]
    axes = np.stack([to_plane @ per_index[:, 2 - ax] for ax in in_plane_numpy], axis=1)
    planes = []
    for s in range(lab.shape[lr_numpy]):
        sl = np.take(lab, s, axis=lr_numpy)
        im = np.take(img, s, axis=lr_numpy) if img is not None else None
        o = to_plane @ (origin + per_index[:, lr_index] * s)
        planes.append(Plane(sl, im, o, axes, smooth_px, s * float(mask.GetSpacing()[lr_index])))
    return planes


# --- geometry helpers ------------------------------------------------------------------------------


def _perp(a: np.ndarray) -> np.ndarray:
    """The SI axis for AP axis `a` (a points posterior, the result points inferior)."""
    return np.array([-a[1], a[0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _ap_axis_from_points(pts: np.ndarray) -> np.ndarray:
    """Major principal axis of a point cloud, pointing posterior."""
    cov = np.cov((pts - pts.mean(axis=0)).T)
    w, v = np.linalg.eigh(cov)
    a = v[:, int(np.argmax(w))]
    return a if a[0] >= 0 else -a


def _angle_deg(v: np.ndarray) -> float:
    """Direction of a chord in the plane (deg); larger = its posterior end lower (more inferior)."""
    return math.degrees(math.atan2(v[1], v[0]))


def _median(a: np.ndarray) -> float:
    """np.median of a short 1D array (the same value: the middle, or the mean of the two middle values, of
    the sorted values), without np.median's per-call overhead (most of a trimmed fit's time)."""
    a = np.sort(a)
    n = len(a)
    return float((a[(n - 1) // 2] + a[n // 2]) / 2)


def _polyfit(x: np.ndarray, y: np.ndarray, deg: int) -> np.ndarray:
    """Least-squares polynomial coefficients, highest power first (as np.polyfit). The fits here are of
    positions normalised to [0, 1] at degree <= 3, whose normal equations are well conditioned: solved directly,
    they agree with np.polyfit to ~1e-13 in a quarter of its time."""
    v = np.vander(x, deg + 1)
    try:
        return np.linalg.solve(v.T @ v, v.T @ y)
    except np.linalg.LinAlgError:
        return np.polyfit(x, y, deg)  # fewer distinct positions than coefficients: its minimum-norm answer


def _trimmed_fit(x: np.ndarray, y: np.ndarray, deg: int, keep: np.ndarray) -> np.ndarray:
    """Refit without points far off the curve (3 MAD, at least 0.15 mm), starting from `keep`."""
    coef = _polyfit(x[keep], y[keep], deg)
    for _ in range(8):
        r = y - np.polyval(coef, x)
        centre = _median(r[keep])
        mad = 1.4826 * _median(np.abs(r[keep] - centre))
        new = np.abs(r - centre) <= max(3.0 * mad, 0.15)
        if new.sum() < deg + 3 or np.array_equal(new, keep):
            break
        keep = new
        coef = _polyfit(x[keep], y[keep], deg)
    return coef


def _robust_polyfit(x: np.ndarray, y: np.ndarray, deg: int, tol: float = 0.3) -> np.ndarray | None:
    """Polynomial fit robust to local defects of a mask surface (a bulge painted over a corner, a notch).

    Two trimmed fits, one started from all points and one from the central part (defects sit at the
    ends). The central start is preferred unless it leaves clearly fewer points (< 95%) within `tol` mm
    of the curve, which happens when its extrapolation misses a sound end of the surface.
    """
    if len(x) < deg + 3:
        return None
    candidates = [_trimmed_fit(x, y, deg, np.ones(len(x), bool))]
    core = (x >= 0.15) & (x <= 0.65)
    if core.sum() >= deg + 3:
        candidates.append(_trimmed_fit(x, y, deg, core))
    scores = [int(np.sum(np.abs(y - np.polyval(c, x)) <= tol)) for c in candidates]
    if len(candidates) == 2 and scores[1] >= 0.95 * scores[0]:
        return candidates[1]
    return candidates[0]


def _crossing_up(f: np.ndarray, u: np.ndarray, start: np.ndarray, inside: bool) -> np.ndarray:
    """Per row, the u where `f` crosses 0.5, scanning from column `start` towards smaller u.

    inside=False: first sample with f >= 0.5 (entering a structure); inside=True: first with f < 0.5
    (leaving the structure the scan starts in). Linear interpolation between samples; NaN if none.
    """
    j = np.arange(f.shape[1])[None, :]
    hit = (f < 0.5) if inside else (f >= 0.5)
    cand = np.where(hit & (j < start[:, None]), j, -1)
    jj = cand.max(axis=1)
    out = np.full(f.shape[0], np.nan)
    ok = (jj >= 0) & (jj + 1 < f.shape[1])
    r = np.nonzero(ok)[0]
    a, b = f[r, jj[r]], f[r, jj[r] + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(np.abs(b - a) > 1e-9, (0.5 - a) / (b - a), 0.5)
    out[r] = u[jj[r]] + frac * (u[1] - u[0])
    return out


def _crossing_down(f: np.ndarray, u: np.ndarray, start: np.ndarray, inside: bool) -> np.ndarray:
    """As :func:`_crossing_up`, scanning towards larger u."""
    flipped = _crossing_up(f[:, ::-1], u[::-1], f.shape[1] - 1 - start, inside)
    return flipped


def _extent(g: np.ndarray, s: np.ndarray, centre: int) -> tuple[float, float] | None:
    """Sub-sample ends of the run of g >= 0.5 that contains index `centre` (NaN-free 1D profile)."""
    if g[centre] < 0.5:
        ok = np.nonzero(g >= 0.5)[0]
        if not len(ok):
            return None
        centre = int(ok[np.argmin(np.abs(ok - centre))])
    lo = centre
    while lo > 0 and g[lo - 1] >= 0.5:
        lo -= 1
    hi = centre
    while hi < len(g) - 1 and g[hi + 1] >= 0.5:
        hi += 1
    step = s[1] - s[0]
    s_lo = s[lo] - (g[lo] - 0.5) / (g[lo] - g[lo - 1]) * step if lo > 0 and g[lo] != g[lo - 1] else s[lo]
    s_hi = (
        s[hi] + (g[hi] - 0.5) / (g[hi] - g[hi + 1]) * step
        if hi < len(g) - 1 and g[hi] != g[hi + 1]
        else s[hi]
    )
    return float(s_lo), float(s_hi)


@dataclass
class Surfaces:
    """Two fitted surfaces (upper, lower) over an AP extent in a local frame; polynomials in t."""

    centre: np.ndarray
    a: np.ndarray
    s_ant: float
    s_post: float
    upper: np.ndarray  # polynomial coefficients of u(t), t in [0, 1]
    lower: np.ndarray
    # t of each surface's endplate corners (anterior, posterior) when they are not the ends of the extent
    # (a disc's surfaces end at the corners of their own vertebral bodies)
    upper_ends: tuple[float, float] = (0.0, 1.0)
    lower_ends: tuple[float, float] = (0.0, 1.0)

    @property
    def n(self) -> np.ndarray:
        return _perp(self.a)

    def gap(self, t: float) -> float:
        return float(np.polyval(self.lower, t) - np.polyval(self.upper, t))

    def point(self, t: float, which: str) -> np.ndarray:
        s = self.s_ant + t * (self.s_post - self.s_ant)
        u = np.polyval(self.upper if which == "upper" else self.lower, t)
        return self.centre + s * self.a + u * self.n

    def chord(self, which: str) -> np.ndarray:
        """Endplate chord of a surface, anterior corner -> posterior corner, in plane mm."""
        t0, t1 = self.upper_ends if which == "upper" else self.lower_ends
        return self.point(t1, which) - self.point(t0, which)

    def t_of(self, mm: np.ndarray) -> np.ndarray:
        s = (mm - self.centre) @ self.a
        return (s - self.s_ant) / (self.s_post - self.s_ant)


def _even(x: np.ndarray) -> bool:
    """Evenly spaced (1 or 2 values are)."""
    if len(x) < 3:
        return True
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-9, atol=1e-12))


def _grid(centre: np.ndarray, a: np.ndarray, s: np.ndarray, u: np.ndarray) -> np.ndarray:
    n = _perp(a)
    return centre[None, None, :] + s[:, None, None] * a[None, None, :] + u[None, :, None] * n[None, None, :]


def _fit_rows(
    s: np.ndarray, s_ant: float, s_post: float, up: np.ndarray, lo: np.ndarray, opts: MeasureOptions
):
    t = (s - s_ant) / (s_post - s_ant)
    sel = (t >= opts.trim) & (t <= 1 - opts.trim)
    ku = sel & np.isfinite(up)
    kl = sel & np.isfinite(lo)
    cu = _robust_polyfit(t[ku], up[ku], opts.poly_degree)
    cl = _robust_polyfit(t[kl], lo[kl], opts.poly_degree)
    return cu, cl


# --- vertebral bodies ---------------------------------------------------------------------------------


def _runs(mask_1d: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1D boolean array."""
    d = np.diff(np.concatenate([[0], mask_1d.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist(), strict=True))


def _longest(col: np.ndarray) -> tuple[int, int]:
    runs = _runs(col)
    return max(runs, key=lambda r: r[1] - r[0]) if runs else (0, 0)


@dataclass
class Body:
    """A vertebral body in one plane: its endplate surfaces and its anterior and posterior walls."""

    surfaces: Surfaces
    walls: dict[
        str, tuple[np.ndarray, np.ndarray]
    ]  # "anterior"/"posterior" -> (point at mid-height, unit direction)

    @property
    def depth(self) -> float:
        return self.surfaces.s_post - self.surfaces.s_ant


def _innermost(exits: np.ndarray, within: float = 1.0) -> np.ndarray:
    """Keep the exits (larger = further out) within `within` mm of the innermost cluster; others NaN.

    The cluster is located at the 20th percentile, so a stray line cutting a notch does not define it.
    """
    ok = np.isfinite(exits)
    if not ok.any():
        return exits
    ref = float(np.percentile(exits[ok], 20))
    out = exits.copy()
    out[~ok | (np.abs(exits - ref) > within)] = np.nan
    return out


def _wall_fit(s_vals: np.ndarray, u_vals: np.ndarray, k: float) -> tuple[float, float] | None:
    """Wall line s = b + k u of known slope k through boundary points (median offset)."""
    ok = np.isfinite(s_vals)
    if ok.sum() < 2:
        return None
    return float(np.median(s_vals[ok] - k * u_vals[ok])), k


def _centre_column(
    first_run: tuple[int, int],
    s: np.ndarray,
    col_len: np.ndarray,
    centre: np.ndarray,
    a: np.ndarray,
    discs: list[np.ndarray] | None,
    is_c2: bool,
) -> tuple[int, int] | None:
    """Index of a column inside the body and the start of the body's run of columns."""
    r0, r1 = first_run
    if discs:
        # Under/over the adjacent discs: their centre column is inside the body (for C2 a quarter of the
        # disc's depth further forward, clear of the dens).
        cs = [float(np.mean((d - centre) @ a)) for d in discs]
        ext = [float(np.ptp((d - centre) @ a)) for d in discs]
        target = float(np.mean(cs)) - (0.25 * float(np.mean(ext)) if is_c2 else 0.0)
        c_idx = int(np.clip(np.searchsorted(s, target), 0, len(s) - 1))
        if col_len[c_idx] <= 0:
            return None
        run = next((r for r in _runs(col_len > 0) if r[0] <= c_idx < r[1]), first_run)
        return c_idx, run[0]
    if is_c2:
        # The dens rises from the middle of C2: centre on the anterior half, below the dens.
        return r0 + max(1, (r1 - r0) // 4), r0
    return (r0 + r1) // 2, r0


def body_geometry(
    plane: Plane,
    vertebra: int,
    a_init: np.ndarray | None,
    opts: MeasureOptions,
    discs: list[np.ndarray] | None = None,
) -> Body | None:
    """Delimit and measure a vertebral body in one plane (None when it cannot be found).

    The body is found from the adjacent discs (`discs`: their pixel positions), which lie against it, or
    else as the most anterior part of the label that spans a substantial height (posterior elements lie
    behind the canal; anterior osteophytes are short). Its walls are lines fitted to the anterior and
    posterior boundary over the central 40% of its height, where osteophytes and rounded corners do not
    reach; the depth is their distance at mid-height; the endplates are fitted between the walls.
    """
    pts = plane.points(vertebra)
    if len(pts) < 20:
        return None
    is_c2 = labels.name_of(vertebra) == labels.VERTEBRA_NAMES[0]
    a = _unit(a_init) if a_init is not None else np.array([1.0, 0.0])
    centre = pts.mean(axis=0)
    result = None
    for _ in range(4):
        result = _body_in_frame(plane, vertebra, pts, centre, a, opts, discs, is_c2)
        if result is None:
            return None
        # Frame of the body: its inferior endplate chord (cdeg.measures: heights perpendicular to it); the
        # walls are perpendicular to that chord, so in this frame they are lines of constant s and the
        # extent between them ends at the endplate corners.
        new_a = _unit(result.surfaces.chord("lower"))
        if np.allclose(new_a, a, atol=1e-5):
            break
        a = new_a
    return result


# Slope of the body walls in the body's frame: perpendicular to its axis, the inferior endplate chord.
_K_WALL = 0.0


def _body_in_frame(
    plane: Plane,
    vertebra: int,
    pts: np.ndarray,
    centre: np.ndarray,
    a: np.ndarray,
    opts: MeasureOptions,
    discs: list[np.ndarray] | None,
    is_c2: bool,
) -> Body | None:
    """One pass of :func:`body_geometry` in the frame of AP axis `a`: column, mid-height, walls, endplates."""
    n = _perp(a)
    ps, pu = (pts - centre) @ a, (pts - centre) @ n
    s = np.arange(ps.min() - 2.0, ps.max() + 2.0, opts.line_step_mm)
    u = np.arange(pu.min() - 2.0, pu.max() + 2.0, opts.step_mm)
    inside = plane.sample_grid(vertebra, centre, a, s, u) >= 0.5
    column = _body_column(inside, s, opts.step_mm, centre, a, discs, is_c2)
    if column is None:
        return None
    u_mid, h = _body_mid_height(inside, u, opts.step_mm, column, is_c2)
    walls = _body_walls(plane, vertebra, centre, a, s, column[0], u_mid, h)
    if walls is None:
        return None
    surf = _body_endplates(plane, vertebra, centre, a, u, walls, u_mid, opts, is_c2)
    if surf is None:
        return None
    ends = {}
    for side, (b, k) in zip(("anterior", "posterior"), walls, strict=True):
        point = centre + (b + k * u_mid) * a + u_mid * n
        ends[side] = (point, _unit(k * a + n))
    return Body(surf, ends)


def _body_column(
    inside: np.ndarray,
    s: np.ndarray,
    su: float,
    centre: np.ndarray,
    a: np.ndarray,
    discs: list[np.ndarray] | None,
    is_c2: bool,
) -> tuple[int, int, int, int] | None:
    """A column through the body: (its index, start of the body's run of columns, top and bottom rows).

    The body's run is the first (most anterior) run of columns of the label that reaches 30% of the
    tallest column; None when there is none or the column is shorter than 3 rows.
    """
    col_len = inside.sum(axis=1) * su
    tall = col_len >= 0.3 * col_len.max()
    runs = [r for r in _runs(col_len > 0) if tall[r[0] : r[1]].any()]
    if not runs:
        return None
    picked = _centre_column(runs[0], s, col_len, centre, a, discs, is_c2)
    if picked is None:
        return None
    c_idx, r0 = picked
    top, bot = _longest(inside[c_idx])
    if bot - top < 3:
        return None
    return c_idx, r0, top, bot


def _body_mid_height(
    inside: np.ndarray, u: np.ndarray, su: float, column: tuple[int, int, int, int], is_c2: bool
) -> tuple[float, float]:
    """(u of the body's mid-height, body height) from the column of :func:`_body_column`."""
    c_idx, r0, top, bot = column
    u_top, u_bot = u[top], u[bot - 1]
    if is_c2:
        # Mid-height of the C2 body proper: half the body height (from the anterior columns) above
        # its inferior endplate.
        front = [_longest(inside[i]) for i in range(r0, max(r0 + 2, c_idx))]
        h = float(np.median([b - t for t, b in front])) * su
        return u_bot - 0.5 * h, h
    return 0.5 * (u_top + u_bot), u_bot - u_top


def _body_walls(
    plane: Plane,
    vertebra: int,
    centre: np.ndarray,
    a: np.ndarray,
    s: np.ndarray,
    c_idx: int,
    u_mid: float,
    h: float,
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Anterior and posterior wall lines (offset, slope) on AP lines across the body's central 70%.

    Osteophytes (at the endplates, anterior) and pedicles (upper half, posterior; they join the arch in
    projections) push some exits outwards; the walls are the innermost exits.
    """
    band = u_mid + h * np.linspace(-0.35, 0.35, 15)
    # points centre + s_j a + band_i n: the grid of (s, band), transposed to (band, s)
    lines = plane.sample_grid(vertebra, centre, a, s, band).T
    start = np.full(len(band), c_idx)
    wa = _wall_fit(_innermost(-_crossing_up(lines, s, start, inside=True)) * -1, band, _K_WALL)
    wp = _wall_fit(_innermost(_crossing_down(lines, s, start, inside=True)), band, _K_WALL)
    if wa is None or wp is None:
        return None
    return wa, wp


def _body_endplates(
    plane: Plane,
    vertebra: int,
    centre: np.ndarray,
    a: np.ndarray,
    u: np.ndarray,
    walls: tuple[tuple[float, float], tuple[float, float]],
    u_mid: float,
    opts: MeasureOptions,
    is_c2: bool,
) -> Surfaces | None:
    """The endplate surfaces fitted between the walls from the mid-height row (None without a lower one).

    C2 has no superior endplate (the dens rises from the body): its upper surface is NaN.
    """
    (ba, ka), (bp, kp) = walls
    ss = opts.line_step_mm
    sa_mid, sp_mid = ba + ka * u_mid, bp + kp * u_mid
    if sp_mid - sa_mid < 2.0:
        return None
    cols = np.arange(sa_mid, sp_mid + ss / 2, ss)
    fv = plane.sample_grid(vertebra, centre, a, cols, u)
    jm = np.full(len(cols), int(np.argmin(np.abs(u - u_mid))))
    sup = _crossing_up(fv, u, jm, inside=True)
    inf = _crossing_down(fv, u, jm, inside=True)
    ok = fv[np.arange(len(cols)), jm] >= 0.5
    sup[~ok] = np.nan
    inf[~ok] = np.nan
    if is_c2:
        sup[:] = np.nan
    cu, cl = _fit_rows(cols, sa_mid, sp_mid, sup, inf, opts)
    if cl is None:
        return None
    if cu is None:
        cu = np.full(opts.poly_degree + 1, np.nan)
    return Surfaces(centre, a, sa_mid, sp_mid, cu, cl)


# --- discs ------------------------------------------------------------------------------------------


def _corner(
    wall: tuple[np.ndarray, np.ndarray],
    centre: np.ndarray,
    a: np.ndarray,
    surface: Any,
) -> float:
    """s of the point where a body wall meets an endplate surface, in a frame (NaN if they do not meet).

    `surface` maps s to the surface's u (raw samples interpolated, or a fitted polynomial).
    """
    n = _perp(a)
    p, d = wall
    s0, u0 = float((p - centre) @ a), float((p - centre) @ n)
    dn = float(d @ n)
    if abs(dn) < 0.2:
        return math.nan
    k = float(d @ a) / dn  # ds per du along the wall
    sc = s0
    for _ in range(6):
        ue = float(surface(sc))
        if not np.isfinite(ue):
            return math.nan
        sc = s0 + (ue - u0) * k
    return sc


def _sampled(s: np.ndarray, u: np.ndarray) -> Any:
    ok = np.isfinite(u)
    if ok.sum() < 2:
        return lambda x: math.nan
    return lambda x: np.interp(x, s[ok], u[ok])


def disc_surfaces(
    plane: Plane, disc: int, upper: Body | None, lower: Body | None, opts: MeasureOptions
) -> Surfaces | None:
    """Fit the two endplate surfaces bounding `disc` in one plane (None if the disc or a neighbour is absent).

    Frame (:mod:`cdeg.measures`): the AP axis is the disc's lower chord, the superior endplate chord of the
    vertebra below; heights are taken perpendicular to it. The endplate corners are where the walls of the
    adjacent bodies meet the fitted endplate surfaces; the disc's AP extent runs from the mean of the two
    anterior corners to the mean of the two posterior corners, so posterior bulges and anterior osteophytes
    do not stretch it. Each surface's chord runs between its own body's corners. Without a delimited body,
    the disc's own extent is used.
    """
    upper_v, lower_v = labels.vertebrae_of_disc(disc)
    pts = plane.points(disc)
    if len(pts) < 10 or plane.area(upper_v) == 0 or plane.area(lower_v) == 0:
        return None
    centre = pts.mean(axis=0)
    if lower is not None and np.all(np.isfinite(lower.surfaces.upper)):
        a = _unit(lower.surfaces.chord("upper"))
    elif upper is not None:
        a = _unit(upper.surfaces.chord("lower"))
    else:
        a = _ap_axis_from_points(pts)
    result = None
    for _ in range(opts.frame_iterations + 1):
        n = _perp(a)
        ps, pu = (pts - centre) @ a, (pts - centre) @ n
        s = np.arange(ps.min() - 3.0, ps.max() + 3.0, opts.line_step_mm)
        u = np.arange(pu.min() - 4.0, pu.max() + 4.0, opts.step_mm)
        f_d = plane.sample_grid(disc, centre, a, s, u)
        g = f_d.max(axis=1)
        j0 = f_d.argmax(axis=1)
        up = _crossing_up(plane.sample_grid(upper_v, centre, a, s, u), u, j0, inside=False)
        lo = _crossing_down(plane.sample_grid(lower_v, centre, a, s, u), u, j0, inside=False)
        present = g >= 0.5
        up[~present] = np.nan
        lo[~present] = np.nan
        own = _extent(g, s, int(np.argmin(np.abs(s))))
        if own is None:
            return None
        bodies = {"upper": (upper, up), "lower": (lower, lo)}
        corners = {
            (w, side): (_corner(b.walls[side], centre, a, _sampled(s, su)) if b is not None else math.nan)
            for w, (b, su) in bodies.items()
            for side in ("anterior", "posterior")
        }
        for _refine in range(2):
            ends = {}
            for i, side in enumerate(("anterior", "posterior")):
                vals = [corners[(w, side)] for w in bodies if np.isfinite(corners[(w, side)])]
                ends[side] = float(np.mean(vals)) if vals else own[i]
            s_ant, s_post = ends["anterior"], ends["posterior"]
            if s_post - s_ant < 2.0:
                return None
            cu, cl = _fit_rows(s, s_ant, s_post, up, lo, opts)
            if cu is None or cl is None:
                return None
            # Corners again, on the fitted surfaces (raw samples near a rounded corner are unreliable).
            D = s_post - s_ant
            fits = {"upper": cu, "lower": cl}
            corners = {
                (w, side): (
                    _corner(
                        b.walls[side],
                        centre,
                        a,
                        lambda x, c=fits[w], s0=s_ant, d=D: np.polyval(c, (x - s0) / d),
                    )
                    if b is not None
                    else math.nan
                )
                for w, (b, _su) in bodies.items()
                for side in ("anterior", "posterior")
            }

        t_ends = {}
        for w in bodies:
            ca, cp = corners[(w, "anterior")], corners[(w, "posterior")]
            ok = np.isfinite(ca) and np.isfinite(cp) and cp - ca >= 2.0
            t_ends[w] = ((ca - s_ant) / D, (cp - s_ant) / D) if ok else (0.0, 1.0)
        result = Surfaces(centre, a, s_ant, s_post, cu, cl, t_ends["upper"], t_ends["lower"])
        # Re-align the frame to the disc's lower chord (cdeg.measures: heights perpendicular to it).
        new_a = _unit(result.chord("lower") if lower is not None else result.chord("upper"))
        if np.allclose(new_a, a, atol=1e-5):
            break
        a = new_a
    return result


# --- signal ratio -----------------------------------------------------------------------------------


def _otsu(values: np.ndarray) -> float:
    """Otsu threshold of a 1D sample (between-class variance maximised over 64 bins)."""
    hist, edges = np.histogram(values, bins=64)
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0, dtype=float), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0, dtype=float), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(mids[int(np.argmax(between))])


def nucleus_signal(plane: Plane, disc: int, surf: Surfaces) -> float:
    """Mean image value of the disc's central third (AP), eroded by one pixel against partial volume."""
    from scipy import ndimage

    if plane.image is None:
        return math.nan
    core = ndimage.binary_erosion(plane.labels == disc)
    idx = np.argwhere(core)
    if not len(idx):
        return math.nan
    t = surf.t_of(plane.mm_of(idx.astype(float)))
    nucleus = idx[(t >= 1 / 3) & (t <= 2 / 3)]
    if not len(nucleus):
        return math.nan
    return float(plane.image[nucleus[:, 0], nucleus[:, 1]].mean())


def canal_samples(plane: Plane, disc: int, surf: Surfaces, opts: MeasureOptions) -> np.ndarray:
    """Image values of the unlabelled pixels in the canal behind a disc, at the disc's height (may be empty)."""
    if plane.image is None:
        return np.empty(0)
    n = surf.n
    top, bottom = surf.point(1.0, "upper"), surf.point(1.0, "lower")
    post_g = plane.sample_grid(
        disc, surf.centre, surf.a, np.arange(surf.s_post, surf.s_post + 20, 0.2), np.zeros(1)
    )
    leave = np.nonzero(post_g[:, 0] < 0.5)[0]  # the posterior bulge may reach beyond the endplate corners
    s0 = surf.s_post + (leave[0] * 0.2 if len(leave) else 0.0) + 0.5
    s_vals = np.arange(s0, s0 + opts.canal_depth_mm, 0.5 * opts.step_mm + 0.2)
    u_top = (top - surf.centre) @ n
    u_bot = (bottom - surf.centre) @ n
    u_vals = (
        np.linspace(u_top + 0.5, u_bot - 0.5, 7) if u_bot - u_top > 1.5 else np.array([0.5 * (u_top + u_bot)])
    )
    mm = _grid(surf.centre, surf.a, s_vals, u_vals).reshape(-1, 2)
    idx2 = np.rint(plane.index_of(mm)).astype(int)
    ok = (idx2 >= 0).all(axis=1) & (idx2[:, 0] < plane.labels.shape[0]) & (idx2[:, 1] < plane.labels.shape[1])
    idx2 = np.unique(idx2[ok], axis=0)
    if not len(idx2):
        return np.empty(0)
    free = plane.labels[idx2[:, 0], idx2[:, 1]] == labels.BACKGROUND
    return plane.image[idx2[free, 0], idx2[free, 1]].astype(float)


def csf_signal(values: np.ndarray, statistic: str = "mean") -> float:
    """CSF signal from canal samples: the bright pixels (above an Otsu threshold; the cord, ligaments and
    epidural tissue are darker on T2) summarised by `statistic` ("mean" or "median"); NaN with < 5 samples."""
    if len(values) < 5:
        return math.nan
    bright = values[values > _otsu(values)]
    if not len(bright):
        return math.nan
    v = float(np.median(bright) if statistic == "median" else bright.mean())
    return v if v > 0 else math.nan


def disc_csf_ratio(plane: Plane, disc: int, surf: Surfaces, opts: MeasureOptions) -> float:
    """Disc-to-CSF T2 signal ratio in one plane against the CSF behind the disc itself (NaN when no CSF
    region can be found): the ``csf_reference="level"`` definition."""
    return nucleus_signal(plane, disc, surf) / csf_signal(canal_samples(plane, disc, surf, opts))


# --- per image ----------------------------------------------------------------------------------------


def _select_planes(planes: list[Plane], keys: list[int], margin_mm: float) -> list[int]:
    """Indices of the planes through the left-right middle of the given structures.

    A body or disc is shortest (AP) at its lateral edges, so only the planes nearest its LR centre show its
    full depth. The centre is the area-weighted mean LR position of the planes where the structures are
    large (>= half the largest area, so a lateral fragment or an off-centre bulge barely moves it); the
    planes within half a plane spacing plus `margin_mm` of it are kept: one or two, at least the nearest.
    """
    areas = np.array([sum(p.area(k) for k in keys) for p in planes])
    if areas.max() <= 0:
        return []
    if len(planes) == 1:
        return [0]
    x = np.array([p.lr_mm for p in planes])
    big = areas >= 0.5 * areas.max()
    xc = float(np.sum(areas[big] * x[big]) / np.sum(areas[big]))
    dist = np.abs(x - xc)
    spacing = float(np.median(np.abs(np.diff(x)))) if len(x) > 1 else 0.0
    keep = (dist <= 0.5 * spacing + margin_mm) & (areas > 0)
    keep[int(np.argmin(np.where(areas > 0, dist, np.inf)))] = True
    return [int(i) for i in np.nonzero(keep)[0]]


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _mean_vec(vectors: list[np.ndarray]) -> np.ndarray | None:
    v = [_unit(x) for x in vectors if x is not None and np.all(np.isfinite(x))]
    return _unit(np.mean(v, axis=0)) if v else None


@dataclass
class LevelGeometry:
    """Per-level averages over the selected planes (intermediate results of :func:`measure`)."""

    heights: dict[str, float] = field(default_factory=dict)
    upper_chord: np.ndarray | None = None  # disc: inferior chord of the vertebra above; body: superior
    lower_chord: np.ndarray | None = None  # disc: superior chord of the vertebra below; body: inferior
    depth: float = math.nan
    ratio: float = math.nan
    nucleus: float = math.nan  # MRI: mean nucleus signal (the ratio's numerator)


def measure(
    mask: Any, image: Any | None = None, modality: str = "xray", options: MeasureOptions | None = None
) -> tuple[dict[str, dict[str, float]], list[tuple[str, str]]]:
    """All clinical measurements of one mask (and image) per level.

    Parameters
    ----------
    mask : SimpleITK.Image
        Label mask in the :mod:`cdeg.labels` convention, 2D (radiograph) or 3D (sagittal MRI).
    image : SimpleITK.Image, optional
        The image on the same grid; MRI only, for the disc-to-CSF signal ratio.
    modality : {"mri", "xray"}
        The signal ratio is computed for MRI only.
    options : MeasureOptions, optional
        Method settings (defaults suit both modalities).

    Returns
    -------
    values : dict
        level name -> {feature -> value}; disc features on disc levels ("C5-C6"), body features on
        vertebra levels ("C5"), the Cobb angle on :data:`COBB_LEVEL`. Levels or values that cannot be
        measured (structure or neighbour missing) are absent.
    problems : list of (level, message)
        Structures present in the mask that could not be measured.
    """
    opts = options or MeasureOptions()
    planes = sagittal_planes(mask, image if modality == "mri" else None, opts.smooth_px)
    present = {lab for p in planes for lab in np.nonzero(p._counts)[0].tolist()}
    problems: list[tuple[str, str]] = []

    # Rough AP axes of the discs (PCA on the plane with the most disc) seed the body frames.
    seed_axes: dict[int, np.ndarray] = {}
    for disc in labels.DISC_LABELS:
        if disc in present:
            best = max(planes, key=lambda p, d=disc: p.area(d))
            pts = best.points(disc)
            if len(pts) >= 10:
                seed_axes[disc] = _ap_axis_from_points(pts)

    body_cache: dict[tuple[int, int], Body | None] = {}

    def body_in(pi: int, v: int) -> Body | None:
        if (pi, v) not in body_cache:
            adj = [seed_axes[d] for d in _adjacent_discs(v) if d in seed_axes]
            a0 = _mean_vec(adj) if adj else None
            dpts = [planes[pi].points(d) for d in _adjacent_discs(v)]
            dpts = [x for x in dpts if len(x) >= 10]
            body_cache[(pi, v)] = (
                body_geometry(planes[pi], v, a0, opts, dpts) if planes[pi].area(v) > 0 else None
            )
        return body_cache[(pi, v)]

    bodies = _measure_bodies(planes, present, body_in, opts, problems)
    discs = _measure_discs(planes, present, body_in, modality, opts, problems)
    return _assemble(discs, bodies, modality), problems


def _measure_bodies(
    planes: list[Plane], present: set[int], body_in: Any, opts: MeasureOptions, problems: list
) -> dict[int, LevelGeometry]:
    """Per-vertebra averages over the planes through the middle of the adjacent discs."""
    bodies: dict[int, LevelGeometry] = {}
    for v in labels.VERTEBRA_LABELS:
        if v not in present:
            continue
        keys = [d for d in _adjacent_discs(v) if d in present] or [v]
        per: dict[str, list[float]] = {k: [] for k in measures.POSITIONS}
        sups, infs, depths = [], [], []
        for pi in _select_planes(planes, keys, opts.slice_margin_mm):
            b = body_in(pi, v)
            if b is None:
                continue
            for k, t in measures.POSITIONS.items():
                per[k].append(b.surfaces.gap(t))
            sups.append(b.surfaces.chord("upper"))
            infs.append(b.surfaces.chord("lower"))
            depths.append(b.depth)
        if not depths:
            problems.append((labels.name_of(v), "vertebral body could not be delimited"))
            continue
        geo = LevelGeometry(heights={k: _mean(x) for k, x in per.items()}, depth=_mean(depths))
        geo.upper_chord, geo.lower_chord = _mean_vec(sups), _mean_vec(infs)
        bodies[v] = geo

    return bodies


def _measure_discs(
    planes: list[Plane], present: set[int], body_in: Any, modality: str, opts: MeasureOptions, problems: list
) -> dict[int, LevelGeometry]:
    """Per-disc averages over the planes through the middle of the disc."""
    if opts.csf_reference not in ("patient", "level"):
        raise ValueError(f"csf_reference {opts.csf_reference!r}; valid: patient, level")
    discs: dict[int, LevelGeometry] = {}
    canal: list[np.ndarray] = []
    for disc in labels.DISC_LABELS:
        up, lo = labels.vertebrae_of_disc(disc)
        if disc not in present or up not in present or lo not in present:
            continue
        per = {k: [] for k in measures.POSITIONS}
        ups, los, ratios, extents, nuclei = [], [], [], [], []
        for pi in _select_planes(planes, [disc], opts.slice_margin_mm):
            surf = disc_surfaces(planes[pi], disc, body_in(pi, up), body_in(pi, lo), opts)
            if surf is None:
                continue
            for k, t in measures.POSITIONS.items():
                per[k].append(surf.gap(t))
            extents.append(surf.s_post - surf.s_ant)
            ups.append(surf.chord("upper"))
            los.append(surf.chord("lower"))
            if modality == "mri":
                samples = canal_samples(planes[pi], disc, surf, opts)
                nuclei.append(nucleus_signal(planes[pi], disc, surf))
                ratios.append(nuclei[-1] / csf_signal(samples))
                canal.append(samples)
        if not ups:
            problems.append((labels.name_of(disc), "disc endplates could not be found"))
            continue
        geo = LevelGeometry(
            heights={k: _mean(v) for k, v in per.items()}, ratio=_mean(ratios), depth=_mean(extents)
        )
        geo.upper_chord, geo.lower_chord = _mean_vec(ups), _mean_vec(los)
        geo.nucleus = _mean(nuclei)
        discs[disc] = geo
    if modality == "mri" and opts.csf_reference == "patient":
        # One CSF signal for the patient, from the canal behind all discs: one disc's canal sample is a few
        # dozen pixels of a CSF layer 1-3 mm thick, so partial volume with the cord and a bulge narrowing the
        # CSF move its mean (on synthetic MRI the per-disc CSF varied by 26% within a patient, whose true CSF
        # signal is constant); pooled over the levels it does not.
        csf = csf_signal(np.concatenate(canal) if canal else np.empty(0), "median")
        for geo in discs.values():
            geo.ratio = geo.nucleus / csf
    return discs


def _adjacent_discs(v: int) -> list[int]:
    """Labels of the discs above and below vertebra v that exist in the convention."""
    return [d for d in (labels.DISC_OFFSET + v - 1, labels.DISC_OFFSET + v) if d in labels.DISC_LABELS]


def _profile_angle(geo: LevelGeometry) -> float:
    """Angle between the two chords bounding a piece, from its height profile (deg, + = taller anteriorly).

    With heights h(t) measured across the chords, h(0.1) - h(0.9) = 0.8 (h(0) - h(1)) for the quadratic
    profile of :func:`cdeg.measures.quadratic_profile`, so the angle is atan((h(0.1) - h(0.9)) / (0.8 D)).
    The fitted heights at 0.1 and 0.9 are far more robust than chords extrapolated to rounded corners.
    """
    ha, hp, d = geo.heights.get("anterior", math.nan), geo.heights.get("posterior", math.nan), geo.depth
    ta, tp = measures.POSITIONS["anterior"], measures.POSITIONS["posterior"]
    if not (np.isfinite(ha) and np.isfinite(hp) and np.isfinite(d) and d > 0):
        return math.nan
    return math.degrees(math.atan((ha - hp) / ((tp - ta) * d)))


def _assemble(
    discs: dict[int, LevelGeometry], bodies: dict[int, LevelGeometry], modality: str, chord: bool = False
) -> dict[str, dict[str, float]]:
    """Values per level; with `chord`, the heights are chord heights and named so (cdeg.measures)."""

    def h(feature: str) -> str:
        return measures.CHORD_FEATURES[feature] if chord else feature

    out: dict[str, dict[str, float]] = {}
    for v, geo in bodies.items():
        name = labels.name_of(v)
        vals = {"body_depth_mm": geo.depth}
        if name != labels.VERTEBRA_NAMES[0]:  # C2 has no superior endplate (dens): no heights or wedge
            vals.update({h(f"body_height_{k}_mm"): x for k, x in geo.heights.items()})
            vals["body_wedge_deg"] = _profile_angle(geo)
        out[name] = {k: float(x) for k, x in vals.items() if np.isfinite(x)}
    for d, geo in discs.items():
        up, lo = labels.vertebrae_of_disc(d)
        vals = {h(f"disc_height_{k}_mm"): x for k, x in geo.heights.items()}
        if up in bodies and np.isfinite(bodies[up].depth) and bodies[up].depth > 0:
            vals[h("disc_height_index")] = geo.heights["middle"] / bodies[up].depth
        # Disc angle: between the inferior endplate chord of the vertebra above and the superior chord of
        # the vertebra below, each between its own body's corners.
        if geo.upper_chord is not None and geo.lower_chord is not None:
            vals["disc_angle_deg"] = _angle_deg(geo.upper_chord) - _angle_deg(geo.lower_chord)
        # Segmental angle X-Y: between the inferior endplate chords of X and Y.
        c_up, c_lo = _inferior_chord(up, discs, bodies), _inferior_chord(lo, discs, bodies)
        if c_up is not None and c_lo is not None:
            vals["segmental_angle_deg"] = _angle_deg(c_up) - _angle_deg(c_lo)
        if modality == "mri":
            vals["disc_csf_signal_ratio"] = geo.ratio
        out[labels.name_of(d)] = {k: float(x) for k, x in vals.items() if np.isfinite(x)}
    # C2-C7 Cobb: between the inferior endplate chords of C2 and C7.
    c_top = _inferior_chord(labels.label_of(_COBB_UPPER), discs, bodies)
    c_bot = _inferior_chord(labels.label_of(_COBB_LOWER), discs, bodies)
    if c_top is not None and c_bot is not None:
        out[COBB_LEVEL] = {"cobb_c2c7_deg": _angle_deg(c_top) - _angle_deg(c_bot)}
    return {k: v for k, v in out.items() if v}


def _inferior_chord(
    v: int, discs: dict[int, LevelGeometry], bodies: dict[int, LevelGeometry]
) -> np.ndarray | None:
    """Inferior endplate chord of vertebra v: from the disc below if measured, else from the body."""
    d = labels.DISC_OFFSET + v
    if d in discs and discs[d].upper_chord is not None:
        return discs[d].upper_chord
    return bodies[v].lower_chord if v in bodies else None


# --- from corner points ---------------------------------------------------------------------------------


def measure_corners(corners: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """The clinical measurements of one radiograph from the four corners of each vertebral body.

    The same definitions (:mod:`cdeg.measures`) and the same assembly as :func:`measure`, with each endplate
    surface replaced by its chord, the straight line between its two corners, which is all corner points
    show. A body's frame is its inferior chord (AI -> PI), its depth the chord's length (its walls are
    perpendicular to that chord at the corners), its heights the distance to the superior chord (AS -> PS)
    across that frame. A disc's frame is its lower chord (the superior chord of the vertebra below), its
    AP extent runs from the mean of the two anterior to the mean of the two posterior corners, its heights
    are the distances between the two chords (:func:`cdeg.measures.heights_between_chords`). Angles and
    depth are the quantities :func:`measure` gives; the heights are chord heights and carry their own names
    (:data:`cdeg.measures.CHORD_FEATURES`: ``disc_height_middle_chord_mm``...), since they leave out the
    concavity of the endplates that the surface heights include.

    Parameters
    ----------
    corners : dict
        level name ("C5") -> corner ("AS", "PS", "PI", "AI") -> (x, y) in plane mm: x anterior -> posterior,
        y superior -> inferior (a radiograph in :data:`cdeg.cohort.CANONICAL_DIRECTION`, physical mm).
        Levels with a missing corner are left out.

    Returns
    -------
    dict
        level name -> {feature -> value}, as the first value of :func:`measure`.
    """
    names = ("AS", "PS", "PI", "AI")
    full = {lv: c for lv, c in corners.items() if all(k in c for k in names)}
    bodies: dict[int, LevelGeometry] = {}
    for level, c in full.items():
        geo = LevelGeometry(
            heights=measures.heights_between_chords((c["AI"], c["PI"]), (c["AS"], c["PS"]), c["AI"], c["PI"]),
            depth=float(np.linalg.norm(c["PI"] - c["AI"])),
        )
        geo.upper_chord, geo.lower_chord = c["PS"] - c["AS"], c["PI"] - c["AI"]
        bodies[labels.label_of(level)] = geo
    discs: dict[int, LevelGeometry] = {}
    for disc in labels.DISC_LABELS:
        up, lo = (labels.name_of(v) for v in labels.vertebrae_of_disc(disc))
        if up not in full or lo not in full:
            continue
        cu, cl = full[up], full[lo]
        a = _unit(cl["PS"] - cl["AS"])
        ant, post = 0.5 * (cu["AI"] + cl["AS"]), 0.5 * (cu["PI"] + cl["PS"])
        geo = LevelGeometry(
            heights=measures.heights_between_chords((cl["AS"], cl["PS"]), (cu["AI"], cu["PI"]), ant, post),
            depth=float((post - ant) @ a),
        )
        geo.upper_chord, geo.lower_chord = cu["PI"] - cu["AI"], cl["PS"] - cl["AS"]
        discs[disc] = geo
    return _assemble(discs, bodies, "xray", chord=True)
