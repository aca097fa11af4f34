"""Analytic spine phantoms for the feature tests: polygons of known geometry rasterised onto masks.

A phantom is a chain of vertebral bodies (biconcave quadrilaterals with a posterior arch behind a
canal, optionally an anterior osteophyte) and wedge-shaped discs with concave endplates. Its true
measurements are computed from the polygons themselves under the definitions of :mod:`cdeg.measures`,
so the tests compare the extractor with exact geometry, not with another pixel method.

The analytic phantoms of the feature tests: tests import them from here (pytest puts tests/ on sys.path),
never from another test module. (The segmentation tests use the package's own nnU-Net phantom,
:mod:`cdeg.segmentation.phantom`.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
from matplotlib.path import Path as MplPath

from cdeg import labels, measures
from cdeg.cohort import CANONICAL_DIRECTION, CohortMeta, image_path, mask_path, write_cohort_json
from cdeg.io import write_image, write_table


def _dir(phi_deg: float) -> np.ndarray:
    p = math.radians(phi_deg)
    return np.array([math.cos(p), math.sin(p)])


def _perp(a: np.ndarray) -> np.ndarray:
    return np.array([-a[1], a[0]])


@dataclass
class Phantom:
    """Polygons (plane mm, (ap, si)) per label and the exact measurements."""

    polygons: dict[int, list[np.ndarray]] = field(default_factory=dict)
    truth: dict[str, dict[str, float]] = field(default_factory=dict)
    canal: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (polygon, T2 value), drawn in order


def build_phantom(
    disc_heights: dict[str, tuple[float, float]] | None = None,
    disc_angles: dict[str, float] | None = None,
    depth: float = 15.5,
    body_height: float = 11.0,
    concavity: float = 0.6,
    tilt_deg: float = 8.0,
    top: tuple[float, float] = (40.0, 15.0),
    levels: tuple[str, ...] = labels.VERTEBRA_NAMES,
    osteophyte: bool = True,
) -> Phantom:
    """A sagittal chain of bodies and discs.

    disc_heights: name -> (anterior edge gap, posterior edge gap) between the endplate chords (mm);
    disc_angles follow from them and the depth. Endplates are concave by `concavity` mm each.
    """
    disc_heights = disc_heights or {
        "C2-C3": (4.2, 3.2),
        "C3-C4": (4.6, 3.3),
        "C4-C5": (4.4, 3.0),
        "C5-C6": (3.0, 2.6),
        "C6-C7": (4.8, 3.4),
        "C7-T1": (4.0, 3.6),
    }
    ph = Phantom()
    phi = tilt_deg
    corner = np.array(top, dtype=float)  # superior-anterior corner of the first body
    inf_chords: dict[str, np.ndarray] = {}
    prev = None  # (inferior curve, inferior chord angle, inferior-anterior corner) of the vertebra above
    for i, name in enumerate(levels):
        a = _dir(phi)
        n = _perp(a)
        ts = np.linspace(0, 1, 201)
        bump = 4 * concavity * ts * (1 - ts)
        sa = corner
        ia = sa + body_height * n
        sup = sa[None, :] + (ts * depth)[:, None] * a + bump[:, None] * n
        inf = ia[None, :] + (ts * depth)[:, None] * a - bump[:, None] * n
        body = np.concatenate([sup, inf[::-1]])
        polys = [body]
        # Posterior arch behind a 14 mm canal (same label, as in real masks).
        arch0 = sa + (depth + 14.0) * a + 0.2 * body_height * n
        polys.append(
            np.array(
                [arch0, arch0 + 12 * a, arch0 + 12 * a + 0.6 * body_height * n, arch0 + 0.6 * body_height * n]
            )
        )
        if osteophyte and name in ("C4", "C5", "C6"):
            polys.append(np.array([ia - 0.05 * a - 0.8 * n, ia - 2.5 * a - 0.2 * n, ia - 0.3 * a + 1.2 * n]))
        ph.polygons[labels.label_of(name)] = polys
        ph.canal.extend(_canal(sa, ia, a, depth))
        if name != labels.VERTEBRA_NAMES[0]:
            ph.truth[name] = {
                **{
                    f"body_height_{k}_mm": body_height - 8 * concavity * t * (1 - t)
                    for k, t in measures.POSITIONS.items()
                },
                "body_wedge_deg": 0.0,
            }
        ph.truth.setdefault(name, {})["body_depth_mm"] = depth
        if prev is not None:
            d_name = f"{levels[i - 1]}-{name}"
            up_curve, up_phi = prev
            disc = np.concatenate([up_curve, sup[::-1]])
            ph.polygons[labels.label_of(d_name)] = [disc]
            ph.canal.extend(_canal(up_curve[-1], sup[-1], a, 0.0))
            ph.truth[d_name] = _disc_truth(up_curve, sup, up_phi, phi)
        inf_chords[name] = _dir(phi)
        prev = (inf, phi)
        # The next body: its superior chord is rotated by the disc angle and offset by the edge gaps.
        if i + 1 < len(levels):
            nxt = f"{name}-{levels[i + 1]}"
            ga, gp = disc_heights[nxt]
            alpha = math.degrees(math.atan2(ga - gp, depth))
            phi_next = phi - alpha
            a_mean = _dir(0.5 * (phi + phi_next))
            corner = ia + ga * _perp(a_mean)
            phi = phi_next
    for d_name in list(ph.truth):
        s = labels.structure(d_name)
        if s.kind == "disc":
            up, lo = (inf_chords[labels.name_of(v)] for v in labels.vertebrae_of_disc(s.label))
            ph.truth[d_name]["segmental_angle_deg"] = math.degrees(
                math.atan2(up[1], up[0]) - math.atan2(lo[1], lo[0])
            )
    if "C2" in inf_chords and "C7" in inf_chords:
        c2, c7 = inf_chords["C2"], inf_chords["C7"]
        ph.truth["C2-C7"] = {
            "cobb_c2c7_deg": math.degrees(math.atan2(c2[1], c2[0]) - math.atan2(c7[1], c7[0]))
        }
    return ph


def _canal(
    top: np.ndarray, bottom: np.ndarray, a: np.ndarray, start: float
) -> list[tuple[np.ndarray, float]]:
    """CSF (1000) behind a structure from `start` mm on, with the cord (400) 2.5-11.5 mm into the canal."""

    def band(s0: float, s1: float) -> np.ndarray:
        return np.array([top + s0 * a, top + s1 * a, bottom + s1 * a, bottom + s0 * a])

    return [(band(start, start + 14.0), 1000.0), (band(start + 2.5, start + 11.5), 400.0)]


def _disc_truth(up_curve: np.ndarray, lo_curve: np.ndarray, phi_up: float, phi_lo: float) -> dict[str, float]:
    """Exact disc heights/angle under cdeg.measures: AP axis = mean chord direction, t of the disc's extent."""
    a = _dir(0.5 * (phi_up + phi_lo))
    n = _perp(a)
    pts = np.concatenate([up_curve, lo_curve])
    s_all = pts @ a
    s0, s1 = s_all.min(), s_all.max()
    out = {}
    for k, t in measures.POSITIONS.items():
        st = s0 + t * (s1 - s0)
        u_up = np.interp(st, up_curve @ a, up_curve @ n)
        u_lo = np.interp(st, lo_curve @ a, lo_curve @ n)
        out[f"disc_height_{k}_mm"] = float(u_lo - u_up)
    out["disc_angle_deg"] = phi_up - phi_lo
    return out


def rasterise(ph: Phantom, spacing: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Label image [row = SI, col = AP] by pixel-centre inclusion; discs first, bodies drawn over them."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    centres = np.stack([cols.ravel() * spacing[0], rows.ravel() * spacing[1]], axis=1)  # (ap, si) mm
    out = np.zeros(shape, np.uint8)
    order = sorted(ph.polygons, key=lambda lab: (not labels.is_disc(lab), lab))
    for lab in order:
        for poly in ph.polygons[lab]:
            inside = MplPath(poly).contains_points(centres).reshape(shape)
            out[inside] = lab
    return out


def canal_image(ph: Phantom, lab: np.ndarray, spacing: tuple[float, float], seed: int = 0) -> np.ndarray:
    """A T2-like image: discs 800, bodies 500, CSF 1000, cord 400, background 100, mild noise."""
    rows, cols = np.mgrid[0 : lab.shape[0], 0 : lab.shape[1]]
    centres = np.stack([cols.ravel() * spacing[0], rows.ravel() * spacing[1]], axis=1)
    img = np.full(lab.shape, 100.0)
    for poly, value in ph.canal:
        img[MplPath(poly).contains_points(centres).reshape(lab.shape)] = value
    img[np.isin(lab, labels.VERTEBRA_LABELS)] = 500.0
    img[np.isin(lab, labels.DISC_LABELS)] = 800.0
    rng = np.random.default_rng(seed)
    return (img + rng.normal(0, 5, img.shape)).astype(np.float32)


def xray_pair(
    ph: Phantom, spacing=(0.35, 0.35), shape=(420, 200), seed: int = 0
) -> tuple[sitk.Image, sitk.Image]:
    """Radiograph (2D) image and mask of a phantom, canonical direction."""
    lab = rasterise(ph, spacing, shape)
    img = canal_image(ph, lab, spacing, seed)
    image = sitk.GetImageFromArray(img)
    image.SetSpacing(spacing)
    image.SetDirection(CANONICAL_DIRECTION["xray"])
    mask = sitk.GetImageFromArray(lab)
    mask.CopyInformation(image)
    return image, mask


def mri_pair(
    ph: Phantom, spacing=(0.7, 0.7), shape=(300, 140), slices: int = 5, thickness: float = 3.0, seed: int = 0
) -> tuple[sitk.Image, sitk.Image]:
    """A 3D sagittal MRI (canonical direction) of a phantom: full profile in the central slices, the outer
    slices show narrower discs and bodies (as off-midline sections do) so slice selection matters."""
    lab = rasterise(ph, spacing, shape)
    img = canal_image(ph, lab, spacing, seed)
    vol_l = np.zeros((slices, *shape), np.uint8)
    vol_i = np.zeros((slices, *shape), np.float32)
    centre = slices // 2
    for k in range(slices):
        off = abs(k - centre)
        l2 = lab.copy()
        if off >= 2:
            # Off-midline: drop the anterior 20% of every disc and body (a smaller section).
            cut = int(0.2 * 15.5 / spacing[0])
            for lab_v in np.unique(l2):
                if lab_v == 0:
                    continue
                cols = np.nonzero((l2 == lab_v).any(axis=0))[0]
                l2[:, cols[0] : cols[0] + cut][l2[:, cols[0] : cols[0] + cut] == lab_v] = 0
        vol_l[k] = l2
        vol_i[k] = img
    image = sitk.GetImageFromArray(vol_i)
    image.SetSpacing((spacing[0], spacing[1], thickness))
    image.SetDirection(CANONICAL_DIRECTION["mri"])
    image.SetOrigin((0.0, 0.0, 0.0))
    mask = sitk.GetImageFromArray(vol_l)
    mask.CopyInformation(image)
    return image, mask


def write_phantom_cohort(root: Path, n: int = 3, seed: int = 0, modalities=("mri", "xray")) -> Path:
    """A small cohort in the cohort layout built from phantoms with varied disc heights and tilts."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    rows = []
    for pid in ids:
        heights = {d: (float(rng.uniform(3.5, 5.0)), float(rng.uniform(2.5, 3.6))) for d in labels.DISC_NAMES}
        ph = build_phantom(disc_heights=heights, tilt_deg=float(rng.uniform(-5, 15)))
        for m in modalities:
            image, mask = mri_pair(ph, slices=5) if m == "mri" else xray_pair(ph)
            write_image(image_path(root, pid, m), image)
            write_image(mask_path(root / "masks", pid, m), mask)
        for level, vals in ph.truth.items():
            rows.append({"patient_id": pid, "level": level, **vals})
        del ph
    write_table(root / "clinical.csv", pd.DataFrame({"patient_id": ids, "age": rng.integers(30, 60, n)}))
    write_table(root / "truth" / "phantom_levels.csv", pd.DataFrame(rows))
    write_cohort_json(root, CohortMeta(name="phantom", profile="external", seed=seed, n_patients=n))
    return root
