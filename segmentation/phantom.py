"""Tiny box phantoms of a cervical spine: a cohort in seconds, for tests and for trying `cdeg segment`.

Not anatomy: vertebrae are boxes (C2 taller, with a dens), discs are thinner boxes between them, stacked
cranio-caudally with a lordotic curve, in the cohort layout and the label convention. Realistic images
come from :func:`cdeg.synth.synthesize`; phantoms exist so that segmentation can be exercised with exact
control over what is where (level counts, sizes, orientation) at a size a 2-core CPU trains on in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdeg import labels
from cdeg.cohort import (
    CANONICAL_DIRECTION,
    CLINICAL_CSV,
    CohortMeta,
    image_path,
    mask_path,
    write_cohort_json,
)
from cdeg.io import image_from_array, write_image, write_text

#: Phantom grid per modality: numpy shape and SimpleITK spacing (x, y[, z]) in mm.
MRI_SHAPE, MRI_SPACING = (8, 112, 72), (1.2, 1.2, 3.0)
XRAY_SHAPE, XRAY_SPACING = (112, 80), (1.2, 1.2)


def spine_layout(
    rng: np.random.Generator, n_rows: int, n_structures: int = 13
) -> list[tuple[int, int, int, int]]:
    """Rows and AP columns of each structure: (label, top row, bottom row, AP shift), cranio-caudal."""
    row = int(rng.integers(3, 7))
    out = []
    for s in labels.STRUCTURES[:n_structures]:
        if s.kind == "disc":
            h = int(rng.integers(3, 5))
        elif s.name == "C2":
            h = int(rng.integers(10, 12))
        else:
            h = int(rng.integers(6, 8))
        shift = round(4 * float(np.sin(np.pi * (s.order + 0.5) / 13)))  # lordosis: mid-cervical most anterior
        out.append((s.label, row, min(row + h, n_rows - 2), shift))
        row += h
        if row >= n_rows - 3:
            break
    return out


def _draw(mask2d: np.ndarray, layout: list[tuple[int, int, int, int]], body: tuple[int, int]) -> None:
    c0, c1 = body
    for label, r0, r1, shift in layout:
        a, b = c0 - shift, c1 - shift
        if labels.is_disc(label):
            mask2d[r0:r1, a + 1 : b - 1] = label
        else:
            mask2d[r0:r1, a:b] = label
            mask2d[r0 + 1 : r1 - 1, b : b + 8] = label  # posterior elements, attached to the body
            if label == labels.label_of("C2"):
                mask2d[max(r0 - 3, 0) : r0, a + 6 : a + 11] = label  # dens


def phantom_case(
    rng: np.random.Generator, modality: str, n_structures: int = 13
) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) arrays of one phantom in canonical array order."""
    if modality == "mri":
        nz, ny, nx = MRI_SHAPE
        layout = spine_layout(rng, ny, n_structures)
        m2 = np.zeros((ny, nx), np.uint8)
        _draw(m2, layout, (22, 40))
        mask = np.zeros((nz, ny, nx), np.uint8)
        for z in range(1, nz - 1):
            sl = m2.copy()
            if z in (1, nz - 2):
                sl[np.isin(sl, labels.DISC_LABELS)] = 0  # discs are narrower left-right than vertebrae
            mask[z] = sl
        values = {"background": 120.0, "vertebra": 380.0, "disc": 760.0, "noise": 40.0}
    else:
        ny, nx = XRAY_SHAPE
        layout = spine_layout(rng, ny, n_structures)
        mask = np.zeros((ny, nx), np.uint8)
        _draw(mask, layout, (24, 42))
        values = {"background": 300.0, "vertebra": 900.0, "disc": 450.0, "noise": 50.0}
    img = np.full(mask.shape, values["background"], np.float32)
    img[np.isin(mask, labels.VERTEBRA_LABELS)] = values["vertebra"]
    img[np.isin(mask, labels.DISC_LABELS)] = values["disc"]
    img += rng.normal(0.0, values["noise"], img.shape).astype(np.float32)
    return np.clip(img, 0, 4000).astype(np.int16), mask


def write_phantom_cohort(
    root: str | Path,
    n: int = 6,
    seed: int = 0,
    modalities: tuple[str, ...] = ("mri", "xray"),
    short_fraction: float = 0.0,
) -> Path:
    """Write a phantom cohort (cohort.json, clinical.csv, images/, masks/) and return its folder.

    Parameters
    ----------
    root : Path
        Folder to create.
    n : int
        Number of patients (ids ``P000``, ``P001``, ...).
    seed : int
        Random seed; the same seed gives the same files.
    modalities : tuple of str
        Which images to write.
    short_fraction : float
        Fraction of patients whose field of view ends above T1 (C7-T1 and T1 missing).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    for pid in ids:
        n_struct = 11 if rng.random() < short_fraction else 13
        for modality in modalities:
            img, mask = phantom_case(rng, modality, n_struct)
            spacing = MRI_SPACING if modality == "mri" else XRAY_SPACING
            direction = CANONICAL_DIRECTION[modality]
            write_image(image_path(root, pid, modality), image_from_array(img, spacing, direction=direction))
            write_image(
                mask_path(root / "masks", pid, modality), image_from_array(mask, spacing, direction=direction)
            )
    write_text(root / CLINICAL_CSV, "patient_id\n" + "".join(f"{p}\n" for p in ids))
    write_cohort_json(
        root,
        CohortMeta(
            name="phantom",
            profile="external",
            seed=seed,
            n_patients=n,
            extra={"generator": "cdeg.segmentation.phantom"},
        ),
    )
    return root
