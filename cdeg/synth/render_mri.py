"""Sagittal T2-weighted MRI of a synthetic spine (:mod:`cdeg.synth.anatomy`), with its label mask.

Each thick slice is the mean of ``subsamples`` thin sagittal sections across its thickness (partial volume:
lateral slices show pedicles and pillars, not the canal); the mask takes the section at the slice centre.
A part is painted only inside its bounding box and only into the sections its left-right extent reaches.
Then: in-plane point spread, smooth multiplicative bias (posterior coil + low-order field), per-patient
gain and contrast exponent, Rician noise. Output: int16 [slice=LR, row=SI, col=AP], canonical direction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cdeg.cohort import CANONICAL_DIRECTION
from cdeg.synth.anatomy import Evaluated, Grid, Part, PiecePart, Spine, place_grid

Shader = Callable[[float], "np.ndarray | float"]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean, unit-SD smooth random field (bilinear upsampling of a coarse Gaussian grid)."""
    cs = (shape[0] // cell + 2, shape[1] // cell + 2)
    coarse = rng.standard_normal(cs).astype(np.float32)
    f = ndimage.zoom(coarse, (shape[0] / (cs[0] - 1.0), shape[1] / (cs[1] - 1.0)), order=1, grid_mode=False)
    f = f[: shape[0], : shape[1]]
    return (f - f.mean()) / (f.std() + 1e-6)


def _tissues(cfg: Any, age: float, rng: np.random.Generator) -> dict[str, float]:
    t = {f.name: float(getattr(cfg.tissues, f.name)) for f in fields(cfg.tissues)}
    jitter = np.exp(rng.normal(0.0, cfg.tissue_jitter, len(t)))
    out = {k: v * j for (k, v), j in zip(t.items(), jitter, strict=True)}
    out["marrow"] = out["marrow"] + t["marrow_per_year"] * max(age - 30.0, 0.0)
    return out


def _shader(part: Part, ev: Evaluated, T: dict[str, float], tex: np.ndarray, amp: float) -> Shader:
    """Signal of a part as a function of the section's LR position x."""
    tissue = part.tissue
    const = {
        "csf": "csf",
        "cord": "cord",
        "ligament": "ligament",
        "epidural": "epidural",
        "air": "air",
        "prevertebral": "prevertebral",
        "vessel": "vessel",
    }
    if tissue in const:
        v = T[const[tissue]]
        if tissue in ("prevertebral", "epidural"):
            arr = (v * (1 + 0.5 * amp * tex)).astype(np.float32)
            return lambda x: arr
        return lambda x: v
    dist = ev.aux["dist"]
    if tissue in ("bone", "osteophyte", "thin_bone", "skull"):
        arr = np.where(dist < 0.9, T["cortex"], T["marrow"] * 0.92 * (1 + amp * tex)).astype(np.float32)
        return lambda x: arr
    if tissue == "body":
        return _body_shader(part, ev, T, tex, amp)
    if tissue == "disc":
        return _disc_shader(part, ev, T, tex, amp)
    if tissue == "disc_bulge":
        t2 = float(part.info.get("t2_signal", 0.5))
        v = T["annulus"] * 1.15 + 0.25 * T["nucleus"] * t2
        return lambda x: v
    raise ValueError(f"no MRI signal for tissue {tissue!r}")  # pragma: no cover - programming error


def _body_shader(part: Part, ev: Evaluated, T: dict[str, float], tex: np.ndarray, amp: float) -> Shader:
    info = part.info
    t, v, h, dist = ev.aux["t"], ev.aux["v"], ev.aux["h"], ev.aux["dist"]
    val = T["marrow"] * (1 + amp * tex)
    # Modic changes: patchy bands along the endplates that border a disc with Modic changes
    for side, key in ((v, "modic_below"), (h - v, "modic_above")):
        mt = info.get(key, 0)
        if mt:
            depth = 2.5 + 2.5 * (0.5 + 0.5 * np.tanh(tex))
            w = np.clip((depth - side) / 1.5, 0, 1) * np.clip(0.6 + 0.6 * tex, 0, 1)
            val = val * (1 - w) + T[f"modic{mt}"] * w
    # endplate sclerosis: a dark band widening with the score
    for side, key in ((v, "scl_below"), (h - v, "scl_above")):
        s = float(info.get(key, 0.0))
        if s > 0.05:
            w = np.clip((0.6 + 2.0 * s - side) / 1.0, 0, 1) * s
            val = val * (1 - 0.6 * w)
    if info.get("hemangioma"):
        tp, vp = info["hem_pos"]
        r2 = ((t - tp) * part.piece.depth) ** 2 + (v - vp * h) ** 2
        val = np.where(r2 < 9.0, T["fat"] * 1.1, val)
    val = np.where(dist < 0.75, T["cortex"], val).astype(np.float32)
    outer = ev.outer
    cortex = T["cortex"]

    def shade(x: float) -> np.ndarray:
        return np.where(outer - abs(x - part.xc) < 0.9, np.float32(cortex), val)

    return shade


def _disc_shader(part: Part, ev: Evaluated, T: dict[str, float], tex: np.ndarray, amp: float) -> Shader:
    assert isinstance(part, PiecePart)
    info = part.info
    t, v, h = ev.aux["t"], ev.aux["v"], ev.aux["h"]
    t2 = float(info.get("t2_signal", 1.0))
    grade = int(info.get("miyazaki", 1))
    vn = v / np.maximum(h, 0.3)
    sh = float(info.get("nucleus_shift", 0.0))
    core2d = ((t - 0.47 - sh) / 0.34) ** 2 + ((vn - 0.5) / 0.38) ** 2
    nuc = T["nucleus"] * t2 * (1 + amp * 0.5 * tex * (1 + (grade >= 3)))
    if grade >= 2:  # intranuclear cleft: a dark horizontal band
        nuc = nuc * np.where(np.abs(vn - 0.5) < 0.08, 0.55, 1.0)
    ann = T["annulus"] * (1 + 0.3 * amp * tex)
    sharp = 2.4 if grade <= 2 else 1.3  # grade III+: unclear nucleus/annulus boundary
    wlr = 0.34 * part.piece.width

    def shade(x: float) -> np.ndarray:
        r2 = core2d + (x / wlr) ** 2
        w = np.clip(sharp * (1 - r2), 0, 1)
        return (ann + (nuc - ann) * w).astype(np.float32)

    return shade


def _base_map(
    spine: Spine,
    grid: Grid,
    patient: Mapping[str, Any],
    T: dict[str, float],
    tex: np.ndarray,
    amp: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Neck soft tissue in the midline plane: skin, subcutaneous fat, muscles, anterior soft tissue, air."""
    X, Z = grid.points(slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    return neck_tissue_map(spine, X, Z, T, tex, amp, rng)


def _sstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def neck_outline(spine: Spine, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anterior and posterior skin positions (spine-frame X) at heights Z."""
    lm, cv = spine.landmarks, spine.curves
    nd = lm["neck_depth"]
    xpw = np.interp(Z, cv["zs"], cv["xpw"])
    ant = xpw - 0.52 * nd - 28 * _sstep((Z - lm["z_c3"]) / 30)
    post = xpw + 0.5 * nd + 10 * _sstep((lm["z_c6"] - Z) / 40) + 18 * _sstep((Z - lm["z_top"]) / 30)
    return ant, post


def neck_tissue_map(
    spine: Spine,
    X: np.ndarray,
    Z: np.ndarray,
    T: dict[str, float],
    tex: np.ndarray,
    amp: float,
    rng: np.random.Generator,
) -> np.ndarray:
    cv = spine.curves
    ant, post = neck_outline(spine, Z)
    xaw = np.interp(Z, cv["zs"], cv["xaw"])
    xpw = np.interp(Z, cv["zs"], cv["xpw"])
    canal = np.interp(Z, cv["zs"], cv["canal"])
    val = np.full(X.shape, T["muscle"], np.float32) * (1 + 0.5 * amp * tex)
    # posterior muscles: thin fat planes between muscle bellies
    k, ph = float(rng.uniform(0.35, 0.55)), float(rng.uniform(0, 2 * math.pi))
    planes = np.sin(k * (X - xpw) + 0.12 * Z + ph + 0.8 * tex) > 0.93
    post_zone = X > xpw + canal + 3
    val = np.where(post_zone & planes, T["fat"] * 0.8, val)
    # anterior compartment: larynx, thyroid, strap muscles
    val = np.where(X < xaw - 12, T["soft"] * (1 + 0.4 * amp * tex), val)
    # subcutaneous fat, thicker at the back
    fat = (X < ant + 4.5) | (X > post - 8.0)
    val = np.where(fat, T["fat"] * (1 + 0.3 * amp * tex), val)
    outside = (X < ant) | (X > post)
    return np.where(outside, T["air"], val).astype(np.float32)


def render(
    spine: Spine, patient: Mapping[str, Any], cfg: Any, rng: np.random.Generator
) -> tuple[sitk.Image, sitk.Image]:
    """Render the MRI volume and mask (see module docstring)."""
    sp = float(rng.uniform(*cfg.in_plane_mm))
    thick = float(rng.uniform(*cfg.slice_thickness_mm))
    dk = thick * (1 + float(rng.uniform(*cfg.slice_gap)))
    ns = int(rng.integers(cfg.n_slices[0], cfg.n_slices[1] + 1))
    nsub = int(cfg.subsamples) | 1  # odd: the middle section gives the mask
    rows, cols = round(cfg.fov_si_mm / sp), round(cfg.fov_ap_mm / sp)
    theta = math.radians(rng.normal(0.0, cfg.tilt_sd_deg))
    grid = place_grid(
        spine,
        (rows, cols),
        sp,
        sp,
        theta,
        (rng.normal(0.0, cfg.offset_ap_sd_mm), rng.normal(0.0, cfg.offset_si_sd_mm)),
        cfg.posterior_wall_at,
    )
    x_mid = float(rng.normal(0.0, cfg.offset_lr_sd_mm))
    xk = (np.arange(ns) - (ns - 1) / 2) * dk - x_mid  # slice centres, patient LR (left +), right to left
    xs = (xk[:, None] + thick * ((np.arange(nsub) + 0.5) / nsub - 0.5)[None, :]).ravel()
    mid = nsub // 2

    T = _tissues(cfg, float(patient.get("age", 45.0)), rng)
    amp = float(cfg.texture)
    tex = (0.7 * _smooth_field(rng, (rows, cols), 6) + 0.5 * _smooth_field(rng, (rows, cols), 2)).astype(
        np.float32
    )
    base = _base_map(spine, grid, patient, T, tex, amp, rng)
    vol = np.empty((ns * nsub, rows, cols), np.float32)
    vol[:] = base
    lab = np.zeros((ns, rows, cols), np.uint8)

    for part in spine.parts:
        a = np.abs(xs - part.xc)
        sel = np.nonzero((a < part.max_outer) & (a >= part.min_inner))[0]
        if sel.size == 0:
            continue
        win = grid.window(part.bounds)
        if win is None:
            continue
        X, Z = grid.points(*win)
        ev = part.evaluate(X, Z)
        if not ev.inside.any():
            continue
        shade = _shader(part, ev, T, tex[win], amp)
        for j in sel:
            x = float(xs[j])
            ax = abs(x - part.xc)
            cov = ev.inside & (ax >= ev.inner) & (ax < ev.outer)
            np.copyto(vol[j][win], shade(x), where=cov, casting="unsafe")
            if j % nsub == mid:
                np.copyto(lab[j // nsub][win], np.uint8(part.label), where=cov)

    img = vol.reshape(ns, nsub, rows, cols).mean(axis=1) if nsub > 1 else vol
    if cfg.psf_sigma_px > 0:
        img = ndimage.gaussian_filter(img, (0, cfg.psf_sigma_px, cfg.psf_sigma_px), truncate=2.5)
    img = _scanner(img, cfg, T, sp, rng)
    image = sitk.GetImageFromArray(img)
    mask = sitk.GetImageFromArray(lab)
    origin = (float(xk[0]), -0.5 * cols * sp, 0.5 * rows * sp)
    for im in (image, mask):
        im.SetSpacing((sp, sp, dk))
        im.SetOrigin(origin)
        im.SetDirection(CANONICAL_DIRECTION["mri"])
    return image, mask


def _scanner(
    img: np.ndarray, cfg: Any, T: dict[str, float], sp: float, rng: np.random.Generator
) -> np.ndarray:
    """Bias field, coil falloff, gain, contrast exponent and Rician noise; int16 output."""
    ns, rows, cols = img.shape
    rr = np.linspace(-1, 1, rows, dtype=np.float32)[:, None]
    cc = np.linspace(-1, 1, cols, dtype=np.float32)[None, :]
    a = rng.normal(0, 1, 5).astype(np.float32) * np.float32(cfg.bias)
    field2 = np.exp(
        a[0] * rr * 0.5 + a[1] * cc * 0.5 + a[2] * rr * rr * 0.3 + a[3] * cc * cc * 0.3 + a[4] * rr * cc * 0.3
    )
    depth = (cols - 1 - np.arange(cols, dtype=np.float32)) * np.float32(
        sp
    )  # distance from the posterior edge
    coil = 0.55 + 0.45 * np.exp(-depth / np.float32(cfg.coil_falloff_mm))
    field2 = field2 * coil[None, :]
    zk = np.linspace(-1, 1, ns, dtype=np.float32)
    fk = 1 + np.float32(cfg.bias) * 0.15 * zk * zk * np.float32(rng.normal())
    gain = np.float32(rng.uniform(*cfg.gain))
    gamma = float(rng.uniform(*cfg.gamma))
    sigma = np.float32(rng.uniform(*cfg.noise) * T["csf"] * gain)
    out = img * (field2[None] * fk[:, None, None])
    np.maximum(out, 0, out=out)
    out = np.float32(1000.0) * gain * (out / np.float32(1000.0)) ** np.float32(gamma)
    n1 = rng.standard_normal(out.shape, dtype=np.float32)
    n2 = rng.standard_normal(out.shape, dtype=np.float32)
    out += n1 * sigma
    n2 *= sigma
    out = np.sqrt(out * out + n2 * n2)
    return np.clip(out, 0, 4095).astype(np.int16)
