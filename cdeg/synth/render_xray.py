"""Lateral cervical radiograph of a synthetic spine (:mod:`cdeg.synth.anatomy`), with its label mask.

A projection through the left-right extent of every structure: the line integral p = sum(mu * path) uses
path lengths from the 3D shapes (``2 (outer - inner)``), with cortical shells (brighter edges where the beam
runs tangentially), endplate plates and sclerosis bands, soft tissue of the neck, air in the pharynx and
trachea, skull base, mandible (doubled contours: left and right sides project apart) and shoulders over the
cervicothoracic junction. Detector: blur, scatter, quantum noise, a film curve with per-patient exposure,
width and gamma. Output: uint16 12-bit (bone bright) [row=SI, col=AP], identity direction.
The mask is the footprint of each labelled structure (bodies and discs painted last).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cdeg.synth.anatomy import Evaluated, Grid, Part, ShapePart, Spine, place_grid
from cdeg.synth.render_mri import _smooth_field, neck_outline

_WATER_LIKE = {"csf", "cord", "ligament", "epidural", "prevertebral", "vessel", "disc", "disc_bulge"}
# Skull-base bones are drawn as one broad density (see _extras), not part by part.
_SKIP = {"skull"}


def _attenuation(part: Part, ev: Evaluated, cfg: Any, tex: np.ndarray) -> np.ndarray | None:
    """Line-integral contribution of a part relative to the soft tissue it displaces."""
    mw = cfg.mu_water
    if part.tissue in _WATER_LIKE or part.tissue in _SKIP:
        return None
    if part.tissue == "air":
        return -mw * 2 * ev.outer
    c = cfg.cortex_mm
    if part.tissue == "body":
        t, v, h = ev.aux["t"], ev.aux["v"], ev.aux["h"]
        D, W = part.piece.depth, part.piece.width
        To = 2 * ev.outer
        ri = np.abs(2 * t - 1) * D / max(D - 2 * c, 1.0)
        Ti = np.where(ri < 1, (W - 2 * c) * np.cbrt(np.clip(1 - ri**3, 0, 1)), 0.0)
        ep = np.minimum(v, h - v) < c  # endplates seen edge-on: the whole path is cortex
        Ti = np.where(ep, 0.0, np.minimum(Ti, To))
        att = (cfg.mu_marrow - mw) * (1 + 0.35 * tex) * Ti + (cfg.mu_cortex - mw) * (To - Ti)
        info = part.info
        for side, key in ((v, "scl_below"), (h - v, "scl_above")):
            s = float(info.get(key, 0.0))
            if s > 0.05:
                band = np.clip((c + cfg.sclerosis_mm * s - side) / 0.8, 0, 1)
                att = att + (cfg.mu_cortex - cfg.mu_marrow) * 0.8 * s * band * Ti
        return np.where(ev.inside, att, 0.0)
    # posterior elements, C1, skull base, osteophytes: mixed bone with brighter (cortical) edges
    path = np.minimum(2 * (ev.outer - ev.inner), 26.0)
    mu = {"osteophyte": cfg.mu_cortex, "thin_bone": 0.5 * (cfg.mu_bone + cfg.mu_water)}.get(
        part.tissue, cfg.mu_bone
    )
    # a beam tangential to a cortical shell of radius R crosses about sqrt(2 R c) ~ 3-4 mm of cortex
    edge = (ev.aux["dist"] < c) & (part.tissue != "thin_bone")
    att = (mu - mw) * path + (cfg.mu_cortex - mu) * np.minimum(path, 4.0) * edge
    return np.where(ev.inside, att, 0.0)


def _extras(spine: Spine, rng: np.random.Generator, cfg: Any) -> list[tuple[ShapePart, float]]:
    """Unlabelled bones only a radiograph shows: skull base, mastoid, mandible, hyoid, shoulder girdle.

    Returns (part, path length mm of bone) pairs; paths are per side for bilateral structures.
    """
    lm, cv = spine.landmarks, spine.curves
    zt, c2a = lm["z_top"], lm["c2_ant"]
    xpw_top = float(np.interp(zt, cv["zs"], cv["xpw"]))
    xa, za = float(c2a[0]), float(c2a[1])
    out: list[tuple[ShapePart, float]] = []
    out.append(
        (
            ShapePart(
                "skull base",
                0,
                "bone",
                "ellipse",
                0,
                1,
                center=(xpw_top + 10, zt + 48),
                radii=(95.0, 34.0),
                angle=float(rng.normal(0.12, 0.05)),
            ),
            16.0,
        )
    )
    out.append(
        (
            ShapePart(
                "mastoid",
                0,
                "bone",
                "ellipse",
                0,
                1,
                center=(xpw_top + 2, zt + 8),
                radii=(11.0, 15.0),
                angle=0.3,
            ),
            14.0,
        )
    )
    ang = float(rng.normal(0.0, 0.08))
    jaw_x, jaw_z = xa - 10 + rng.normal(0, 4), za - 6 + rng.normal(0, 5)
    ca, sa = math.cos(ang), math.sin(ang)

    def rot(px: float, pz: float) -> tuple[float, float]:
        dx, dz = px - jaw_x, pz - jaw_z
        return jaw_x + ca * dx - sa * dz, jaw_z + sa * dx + ca * dz

    jaw = [
        rot(jaw_x, jaw_z),
        rot(jaw_x - 110, jaw_z + 4),
        rot(jaw_x - 110, jaw_z + 30),
        rot(jaw_x - 32, zt + 4),
        rot(jaw_x + 4, zt + 12),
    ]
    out.append((ShapePart("mandible", 0, "bone", "poly", 0, 1, vertices=np.array(jaw[::-1])), 7.0))
    z_hy = lm["z_c3"] - 8 + rng.normal(0, 4)
    x_hy = float(np.interp(z_hy, cv["zs"], cv["xaw"])) - 32
    out.append(
        (
            ShapePart(
                "hyoid",
                0,
                "bone",
                "capsule",
                0,
                1,
                p0=(x_hy - 10, z_hy + 2),
                p1=(x_hy + 4, z_hy - 1),
                r0=2.5,
                r1=1.8,
            ),
            10.0,
        )
    )
    return out


def true_corners(spine: Spine, grid: Grid, image: sitk.Image) -> list[tuple[str, str, float, float]]:
    """The true corners of each labelled vertebral body in the image's physical mm: (level, corner, x, y).

    A body's corners are the ends of its endplate chords (:mod:`cdeg.synth.anatomy`): AI and PI at t = 0 and
    1 of its lower chord, AS and PS on its upper surface at t = 0 and 1. Levels with a corner outside the
    image are left out, as an annotator could not place it.
    """
    from cdeg.corners import CORNERS

    size = image.GetSize()
    out = []
    for p in spine.pieces:
        if p.kind != "vertebra" or p.label == 0:
            continue
        pts = {"AS": p.upper(0.0), "PS": p.upper(1.0), "PI": p.lower(1.0), "AI": p.lower(0.0)}
        rows = []
        for corner in CORNERS:
            r, c = grid.to_pixel(np.array([pts[corner][0]]), np.array([pts[corner][1]]))
            if not (-0.5 <= c[0] <= size[0] - 0.5 and -0.5 <= r[0] <= size[1] - 0.5):
                break
            x, y = image.TransformContinuousIndexToPhysicalPoint((float(c[0]), float(r[0])))
            rows.append((p.name, corner, float(x), float(y)))
        else:
            out.extend(rows)
    return out


def render(
    spine: Spine, patient: Mapping[str, Any], cfg: Any, rng: np.random.Generator
) -> tuple[sitk.Image, sitk.Image, list[tuple[str, str, float, float]]]:
    """Render the radiograph, its mask and the true corners of the bodies in it (see module docstring)."""
    px = float(rng.uniform(*cfg.pixel_mm))
    rows, cols = round(cfg.fov_si_mm / px), round(cfg.fov_ap_mm / px)
    theta = math.radians(rng.normal(0.0, cfg.tilt_sd_deg))
    grid = place_grid(
        spine,
        (rows, cols),
        px,
        px,
        theta,
        (rng.normal(0.0, cfg.offset_ap_sd_mm), rng.normal(0.0, cfg.offset_si_sd_mm)),
        cfg.posterior_wall_at,
    )
    p = _soft_tissue(spine, grid, patient, cfg, rng)
    tex = 0.6 * _smooth_field(rng, (rows, cols), 5) + 0.6 * _smooth_field(rng, (rows, cols), 2)
    mask = np.zeros((rows, cols), np.uint8)
    dbl = float(rng.uniform(*cfg.double_contour_mm))
    dang = float(rng.uniform(0, 2 * math.pi))
    shift = (0.5 * dbl * math.cos(dang), 0.5 * dbl * math.sin(dang))

    for part in spine.parts:
        if (part.tissue in _WATER_LIKE or part.tissue in _SKIP) and part.label == 0:
            continue
        bilateral = part.min_inner > 0 or abs(part.xc) > 0
        offsets = (
            [(-shift[0], -shift[1]), shift]
            if (bilateral and dbl > 0.05 and part.label == 0)
            else [(0.0, 0.0)]
        )
        if bilateral and part.label > 0:
            offsets = [(0.0, 0.0)]  # labelled bilateral parts: one footprint, mask and image agree
        b = part.bounds
        win = grid.window((b[0] - 1.5, b[1] + 1.5, b[2] - 1.5, b[3] + 1.5))
        if win is None:
            continue
        X0, Z0 = grid.points(*win)
        for ox, oz in offsets:
            ev = part.evaluate(X0 + ox, Z0 + oz)
            if not ev.inside.any():
                continue
            att = _attenuation(part, ev, cfg, tex[win])
            if att is not None:
                p[win] += (att / len(offsets)).astype(np.float32)
            if part.label > 0:
                np.copyto(mask[win], np.uint8(part.label), where=ev.inside)

    for part, path in _extras(spine, rng, cfg):
        for sgn in (-1, 1):
            b = part.bounds
            win = grid.window((b[0] - 3, b[1] + 3, b[2] - 3, b[3] + 3))
            if win is None:
                continue
            X, Z = grid.points(*win)
            ev = part.evaluate(X + sgn * shift[0] * 2, Z + sgn * shift[1] * 2)
            # ellipses are thick in the middle and thin at the rim; plates (polygons) have cortical edges
            if part.shape == "ellipse":
                prof = np.sqrt(np.clip(1 - (1 - ev.aux["dist"] / float(min(part.geom["radii"]))) ** 2, 0, 1))
            else:
                prof = 1.0 + 0.6 * (ev.aux["dist"] < 1.5)
            p[win] += np.where(ev.inside, (cfg.mu_bone - cfg.mu_water) * path * prof, 0).astype(np.float32)
    mask_image = _mask_image(mask, px)
    return _detector(p, px, grid, spine, cfg, rng), mask_image, true_corners(spine, grid, mask_image)


def _soft_tissue(
    spine: Spine, grid: Grid, patient: Mapping[str, Any], cfg: Any, rng: np.random.Generator
) -> np.ndarray:
    """Line integral of the neck's soft tissue and the shoulders (full frame, float32)."""
    X, Z = grid.points(slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    ant, post = neck_outline(spine, Z)
    lm = spine.landmarks
    mid, half = 0.5 * (ant + post), np.maximum(0.5 * (post - ant), 1.0)
    q = np.clip(1 - ((X - mid) / half) ** 2, 0, None)
    width = cfg.neck_width * lm["neck_depth"] * (1 + 0.35 * np.clip((Z - lm["z_top"]) / 40, 0, 1))
    path = width * np.sqrt(q)
    # shoulders: a thick soft-tissue band (plus bone) below a line near C7, wider than the neck
    z_sh = lm["z_c7"] + rng.normal(0.0, cfg.shoulder_level_sd_mm) - 10.0
    sh = float(rng.uniform(*cfg.shoulder_mm))
    slope = math.radians(rng.normal(-8.0, 5.0))
    zline = z_sh + (X - mid) * math.tan(slope)
    w_sh = 1 / (1 + np.exp(-(zline - Z) / 10.0))
    ap = np.clip(1 - ((X - mid) / (half * 1.9)) ** 2, 0, None)
    path = path + sh * w_sh * np.sqrt(ap)
    p = cfg.mu_water * path
    # humeral heads / scapulae and clavicles as bony density in the shoulder band
    bone = 14.0 * w_sh * np.clip(1 - ((X - (mid + 25)) / (half * 1.3)) ** 2, 0, None)
    cl = np.abs((Z - (z_sh - 14)) - (X - mid) * 0.35) < 6.0
    bone = bone + 8.0 * cl * (X < mid + 30)
    p = p + (cfg.mu_bone - cfg.mu_water) * bone
    return p.astype(np.float32)


def _detector(
    p: np.ndarray, px: float, grid: Grid, spine: Spine, cfg: Any, rng: np.random.Generator
) -> sitk.Image:
    """Blur, scatter, quantum noise and film curve; uint16 12-bit image, bone bright."""
    if cfg.blur_mm > 0:
        p = ndimage.gaussian_filter(p, cfg.blur_mm / px, truncate=3.0)
    prim = np.exp(-p)
    # scatter: a broad low-pass copy of the primary
    f = 16
    r, c = (prim.shape[0] // f) * f, (prim.shape[1] // f) * f
    small = prim[:r, :c].reshape(r // f, f, c // f, f).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, 2.0)
    # bilinear upsampling: nearest-neighbour blocks would show in bright regions
    sc = ndimage.zoom(
        small, (r / small.shape[0], c / small.shape[1]), order=1, grid_mode=True, mode="nearest"
    )
    scat = np.pad(sc, ((0, prim.shape[0] - sc.shape[0]), (0, prim.shape[1] - sc.shape[1])), mode="edge")
    s = float(rng.uniform(*cfg.scatter))
    It = (prim + s * scat) / (1 + s)
    k = float(rng.uniform(*cfg.noise))
    It = It + k * np.sqrt(It) * rng.standard_normal(It.shape, dtype=np.float32)
    pobs = -np.log(np.maximum(It, 1e-4))
    # film curve centred near the attenuation of the vertebral bodies
    lm = spine.landmarks
    centre = cfg.mu_water * cfg.neck_width * lm["neck_depth"] * 0.85 + 0.2 + rng.normal(0.0, cfg.window_shift)
    width = float(rng.uniform(*cfg.window_width))
    v = 1 / (1 + np.exp(-(pobs - centre) / width))
    v = v ** float(rng.uniform(*cfg.gamma))
    img = sitk.GetImageFromArray(np.clip(v * 4095.0, 0, 4095).astype(np.uint16))
    img.SetSpacing((px, px))
    return img


def _mask_image(mask: np.ndarray, px: float) -> sitk.Image:
    m = sitk.GetImageFromArray(mask)
    m.SetSpacing((px, px))
    return m
