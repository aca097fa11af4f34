"""Render one synthetic patient: sagittal T2 MRI and lateral cervical radiograph, each with a label mask.

The true anatomy of a patient (rows of truth/patients.csv and truth/levels.csv) becomes a sagittal chain of
vertebral bodies and discs (:mod:`cdeg.synth.anatomy`) whose heights, angles and depths are exactly the true
values under the definitions of :mod:`cdeg.measures`; :mod:`cdeg.synth.render_mri` and
:mod:`cdeg.synth.render_xray` image it. Masks use the label convention of :mod:`cdeg.labels`.

Usage::

    from cdeg.synth.render import RenderConfig, example_patient, render_patient
    patient, levels = example_patient(age=65, degenerated=True)
    out = render_patient(RenderConfig(), patient, levels, seed=1)
    out["mri"].image, out["mri"].mask, out["mri"].present
"""

# _f() below is dataclasses.field() with the documentation attached; ruff cannot see that it is one.
# ruff: noqa: RUF009
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import SimpleITK as sitk

from cdeg import labels
from cdeg.defaults import doc_field as _f
from cdeg.defaults import shipped_defaults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
@shipped_defaults("render.anatomy")
class AnatomyConfig:
    """Shape details not in the truth tables (modelling choices, adult cervical anatomy)."""

    corner_radius_mm: float = _f(
        "rounding radius of vertebral body corners (kept outside t=0.1..0.9)", (0.0, 1.4)
    )
    bottom_concavity_mm: float = _f("concavity of the lowest endplate of the chain (T3)", (0.0, 2.0))
    thoracic_disc_mm: float = _f("mean height of the unlabelled T1-T2 / T2-T3 discs", (2.0, 8.0))
    dens_tilt_deg: float = _f("posterior tilt of the dens from the C2 endplate normal", (-10.0, 30.0))
    dens_radius_mm: float = _f("sagittal half-thickness of the dens at its base", (3.0, 7.0))
    dens_halfwidth_mm: float = _f("left-right half-width of the dens", (3.0, 7.0))
    canal_halfwidth_mm: float = _f("half the interpedicular (transverse canal) distance", (8.0, 16.0))
    thecal_halfwidth_mm: float = _f("left-right half-width of the CSF-filled thecal sac", (5.0, 12.0))
    cord_ap_mm: float = _f("AP diameter of the spinal cord", (5.0, 10.0))
    cord_halfwidth_mm: float = _f("left-right half-width of the spinal cord", (4.0, 9.0))
    prevertebral_upper_mm: float = _f("prevertebral soft tissue thickness above C4", (1.0, 8.0))
    prevertebral_lower_mm: float = _f("prevertebral soft tissue (incl. oesophagus) below C4", (4.0, 20.0))
    airway_ap_mm: float = _f("AP diameter of the pharynx / trachea air column", (6.0, 25.0))
    airway_halfwidth_mm: float = _f("left-right half-width of the air column", (4.0, 15.0))
    facet_angle_deg: float = _f(
        "inclination of the facet joints from the endplates (down posteriorly)", (20.0, 70.0)
    )
    pillar_start_mm: float = _f(
        "distance of the articular pillar front behind the posterior wall", (1.0, 8.0)
    )
    pillar_depth_mm: float = _f("AP depth of the articular pillars", (6.0, 15.0))
    facet_gap_mm: float = _f("facet joint space", (0.3, 3.0))
    lamina_thickness_mm: float = _f("AP thickness of the laminae", (1.5, 6.0))
    lamina_drop_mm: float = _f("how much lower the laminae sit than the pillars", (0.0, 8.0))
    interlaminar_gap_mm: float = _f("gap between adjacent laminae (ligamentum flavum)", (1.0, 8.0))
    spinous_length_mm: tuple[float, ...] = _f(
        "spinous process length for C2, C3, ..., C7, T1, T2, T3", (5.0, 50.0)
    )
    spinous_angle_deg: tuple[float, ...] = _f(
        "downward slope of the spinous processes (same order)", (-10.0, 70.0)
    )
    hemangioma_prob: float = _f(
        "probability of a vertebral haemangioma (bright T2 spot) per vertebra", (0.0, 1.0)
    )
    osteophyte_base_mm: float = _f(
        "height of an osteophyte's root along the body wall (+ half its length)", (0.5, 4.0)
    )
    osteophyte_rise: float = _f(
        "how far an osteophyte tip curves toward the disc, per mm of length", (0.0, 1.0)
    )
    bulge_halfwidth_mm: float = _f("left-right half-width of a posterior disc bulge", (2.0, 12.0))
    bulge_side_mm: float = _f("largest left-right offset of a bulge from the midline", (0.0, 10.0))


@dataclass(frozen=True)
@shipped_defaults("render.mri.tissues")
class MriTissues:
    """T2-weighted fast spin echo signal of each tissue before scanner gain (arbitrary units, CSF ~1700)."""

    csf: float = _f("cerebrospinal fluid", (0.0, 4000.0))
    cord: float = _f("spinal cord", (0.0, 4000.0))
    fat: float = _f("subcutaneous and intermuscular fat", (0.0, 4000.0))
    muscle: float = _f("neck muscles", (0.0, 4000.0))
    soft: float = _f("other soft tissue (larynx, thyroid, brain)", (0.0, 4000.0))
    prevertebral: float = _f("prevertebral soft tissue (longus colli, oesophagus)", (0.0, 4000.0))
    epidural: float = _f("epidural fat and venous plexus, nerve roots", (0.0, 4000.0))
    ligament: float = _f("longitudinal ligaments and ligamentum flavum", (0.0, 4000.0))
    marrow: float = _f("vertebral marrow at age 30", (0.0, 4000.0))
    marrow_per_year: float = _f("marrow signal gained per year of age (fatty conversion)", (0.0, 20.0))
    cortex: float = _f("cortical bone and endplates", (0.0, 4000.0))
    annulus: float = _f("annulus fibrosus", (0.0, 4000.0))
    nucleus: float = _f("healthy nucleus pulposus (scaled by the disc's t2_signal)", (0.0, 4000.0))
    modic1: float = _f("Modic type 1 (oedema) marrow", (0.0, 4000.0))
    modic2: float = _f("Modic type 2 (fatty) marrow", (0.0, 4000.0))
    modic3: float = _f("Modic type 3 (sclerotic) marrow", (0.0, 4000.0))
    vessel: float = _f("arterial flow void", (0.0, 4000.0))
    air: float = _f("air", (0.0, 4000.0))


@dataclass(frozen=True)
@shipped_defaults("render.mri")
class MriConfig:
    """Sagittal T2 acquisition: geometry drawn per patient from the ranges, contrast and artefacts."""

    in_plane_mm: tuple[float, float] = _f("in-plane pixel size range (drawn per patient)", (0.05, 2.0))
    slice_thickness_mm: tuple[float, float] = _f("slice thickness range", (0.5, 6.0))
    slice_gap: tuple[float, float] = _f("gap between slices as a fraction of the thickness", (0.0, 1.0))
    n_slices: tuple[int, int] = _f("number of sagittal slices (inclusive range)", (1, 64))
    fov_si_mm: float = _f("field of view, superior-inferior", (60.0, 400.0))
    fov_ap_mm: float = _f("field of view, anterior-posterior", (60.0, 400.0))
    posterior_wall_at: float = _f(
        "fraction of the AP field of view where the C4 posterior wall sits", (0.2, 0.8)
    )
    offset_si_sd_mm: float = _f(
        "SD of the field-of-view placement, superior-inferior (cuts off levels now and then)", (0.0, 50.0)
    )
    offset_ap_sd_mm: float = _f("SD of the field-of-view placement, anterior-posterior", (0.0, 50.0))
    offset_lr_sd_mm: float = _f("SD of the midline's left-right offset from the central slice", (0.0, 10.0))
    tilt_sd_deg: float = _f("SD of the spine's in-plane tilt (posture)", (0.0, 30.0))
    subsamples: int = _f(
        "LR samples per slice for partial volume (odd; the mask uses the middle one)", (1, 9)
    )
    psf_sigma_px: float = _f("in-plane point spread (Gaussian sigma, pixels)", (0.0, 3.0))
    noise: tuple[float, float] = _f("Rician noise sigma as a fraction of the CSF signal", (0.0, 0.5))
    gain: tuple[float, float] = _f("scanner gain range", (0.1, 10.0))
    gamma: tuple[float, float] = _f("contrast exponent range (scanner/protocol variation)", (0.3, 3.0))
    tissue_jitter: float = _f("per-patient relative SD of each tissue's signal", (0.0, 0.5))
    bias: float = _f("strength of the smooth multiplicative bias field", (0.0, 1.0))
    coil_falloff_mm: float = _f("signal falloff length away from the posterior neck coil", (10.0, 1000.0))
    texture: float = _f("relative amplitude of marrow / soft tissue texture", (0.0, 1.0))
    tissues: MriTissues = _f("tissue signals")


@dataclass(frozen=True)
@shipped_defaults("render.xray")
class XrayConfig:
    """Lateral radiograph: projection geometry, attenuation, exposure and detector."""

    pixel_mm: tuple[float, float] = _f("pixel spacing range (at the spine, drawn per patient)", (0.05, 2.0))
    fov_si_mm: float = _f("field of view, superior-inferior", (60.0, 450.0))
    fov_ap_mm: float = _f("field of view, anterior-posterior", (60.0, 450.0))
    posterior_wall_at: float = _f("fraction of the AP field where the posterior wall sits", (0.2, 0.8))
    offset_si_sd_mm: float = _f("SD of the placement, superior-inferior", (0.0, 50.0))
    offset_ap_sd_mm: float = _f("SD of the placement, anterior-posterior", (0.0, 50.0))
    tilt_sd_deg: float = _f("SD of the in-plane tilt (posture)", (0.0, 30.0))
    mu_water: float = _f("linear attenuation of soft tissue (1/mm, ~70 keV)", (0.0, 0.2))
    mu_marrow: float = _f("cancellous bone", (0.0, 0.2))
    mu_cortex: float = _f("cortical bone", (0.0, 0.2))
    mu_bone: float = _f("posterior elements and other bones (mixed cortex/cancellous)", (0.0, 0.2))
    cortex_mm: float = _f("cortical shell thickness", (0.1, 3.0))
    sclerosis_mm: float = _f(
        "extra endplate sclerosis band per unit of the disc's sclerosis score", (0.0, 8.0)
    )
    neck_width: float = _f("left-right neck width relative to the AP neck depth", (0.5, 1.5))
    shoulder_level_sd_mm: float = _f("SD of the shoulder line around the C7 body", (0.0, 50.0))
    shoulder_mm: tuple[float, float] = _f("soft-tissue path added by the shoulders", (0.0, 600.0))
    double_contour_mm: tuple[float, float] = _f(
        "left/right offset of bilateral structures (beam divergence, rotation)", (0.0, 10.0)
    )
    blur_mm: float = _f("detector / focal spot blur (Gaussian sigma)", (0.0, 3.0))
    scatter: tuple[float, float] = _f("scatter-to-primary fraction", (0.0, 2.0))
    noise: tuple[float, float] = _f("quantum noise level (relative, at unit transmission)", (0.0, 0.5))
    window_width: tuple[float, float] = _f("width of the film curve in attenuation units", (0.05, 3.0))
    window_shift: float = _f("SD of the exposure (film curve centre) in attenuation units", (0.0, 2.0))
    gamma: tuple[float, float] = _f("display gamma range", (0.3, 3.0))


@dataclass(frozen=True)
@shipped_defaults("render")
class RenderConfig:
    """How the synthetic anatomy is imaged (the ``render:`` section of configs/synth.yaml)."""

    anatomy: AnatomyConfig = _f("shape details")
    mri: MriConfig = _f("sagittal T2 MRI")
    xray: XrayConfig = _f("lateral radiograph")


@dataclass(frozen=True)
class RenderedImage:
    """An image, its label mask (same geometry, uint8), the labels present (cranio-caudal) and, for a
    radiograph, the true corners of its vertebral bodies: (level, corner, x_mm, y_mm) in the image's
    physical space."""

    image: sitk.Image
    mask: sitk.Image
    present: tuple[int, ...]
    corners: tuple[tuple[str, str, float, float], ...] = ()
    #: The anatomy's true chord heights, level -> {feature -> mm} (:func:`cdeg.synth.anatomy.chord_heights`).
    chords: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def present_labels(mask: np.ndarray) -> tuple[int, ...]:
    """Labels of the convention present in a uint8 mask, cranio-caudal."""
    counts = np.bincount(mask.ravel(), minlength=256)
    return tuple(s.label for s in labels.STRUCTURES if s.label < 256 and counts[s.label] > 0)


def render_patient(
    cfg: RenderConfig,
    patient: Mapping[str, Any],
    levels: pd.DataFrame,
    seed: np.random.SeedSequence | int,
    modalities: tuple[str, ...] | list[str] = ("mri", "xray"),
) -> dict[str, RenderedImage]:
    """Render the requested modalities of one patient.

    Parameters
    ----------
    cfg : RenderConfig
        Rendering options.
    patient : mapping
        One row of truth/patients.csv (needs canal_ap_mm, neck_depth_mm, size_scale, age, has_mri, has_xray).
    levels : DataFrame
        That patient's rows of truth/levels.csv, one per structure of :data:`cdeg.labels.STRUCTURES`.
    seed : SeedSequence or int
        Everything random derives from it: the same seed gives bitwise identical arrays.
    modalities : sequence of str
        Subset of ("mri", "xray"); a modality is rendered only when also flagged in ``has_<modality>``.

    Returns
    -------
    dict
        Modality -> :class:`RenderedImage`.
    """
    from cdeg.synth import anatomy, render_mri, render_xray

    for m in modalities:
        if m not in ("mri", "xray"):
            raise ValueError(f"unknown modality {m!r}; valid: mri, xray")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
    s_anat, s_mri, s_xray = ss.spawn(3)
    spine = anatomy.build_spine(patient, levels, cfg.anatomy, np.random.default_rng(s_anat))
    out: dict[str, RenderedImage] = {}
    chords = anatomy.chord_heights(spine)
    if "mri" in modalities and _flag(patient.get("has_mri", True)):
        img, mask = render_mri.render(spine, patient, cfg.mri, np.random.default_rng(s_mri))
        out["mri"] = RenderedImage(img, mask, present_labels(sitk.GetArrayViewFromImage(mask)), chords=chords)
    if "xray" in modalities and _flag(patient.get("has_xray", True)):
        img, mask, corners = render_xray.render(spine, patient, cfg.xray, np.random.default_rng(s_xray))
        out["xray"] = RenderedImage(
            img, mask, present_labels(sitk.GetArrayViewFromImage(mask)), tuple(corners), chords
        )
    return out


def _flag(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("1", "true", "yes", "y")
    return bool(v) and not (isinstance(v, float) and np.isnan(v))


# --- an example patient (tests, eyeballing, docs) -------------------------------------------------


def example_patient(
    age: float = 30.0, degenerated: bool = False, seed: int = 0, sex: str = "M", patient_id: str = "example"
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A plausible patient row and levels table, in the columns of truth/patients.csv and levels.csv.

    Parameters
    ----------
    age : float
        Age in years; mild age-related disc changes are added above 40.
    degenerated : bool
        Add a collapsed, dark C5-C6 (Miyazaki V, KL 4, 4.5 mm osteophytes, Modic 2, bulge) and moderate
        C4-C5 / C6-C7 degeneration.
    seed : int
        Small random variation of the sizes.
    """
    rng = np.random.default_rng(seed)
    size = (1.0 if sex == "M" else 0.94) * float(rng.normal(1.0, 0.02))
    patient = {
        "patient_id": patient_id,
        "profile": "neck",
        "age": float(age),
        "sex": sex,
        "predisposition_u": 0.0,
        "accelerated": bool(degenerated),
        "p_oracle": 0.5,
        "cobb_c2c7_deg": 0.0,
        "size_scale": size,
        "canal_ap_mm": float(rng.normal(14.0, 0.8)),
        "neck_depth_mm": float(rng.normal(120.0, 6.0)) * size,
        "has_mri": True,
        "has_xray": True,
        "index_level": "C5-C6",
    }
    rows: list[dict[str, Any]] = []
    conc: dict[str, float] = {}
    base_disc = {"C2-C3": 4.6, "C3-C4": 5.2, "C4-C5": 5.6, "C5-C6": 5.8, "C6-C7": 6.0, "C7-T1": 5.0}
    wear = max(0.0, (age - 35) / 40)
    severity = {"C4-C5": 0.5, "C5-C6": 1.0, "C6-C7": 0.6} if degenerated else {}
    discs: dict[str, dict[str, Any]] = {}
    for s in labels.STRUCTURES:
        if s.kind == "disc":
            discs[s.name] = _example_disc(s.name, base_disc[s.name], size, wear, severity.get(s.name, 0.0))
            r = discs[s.name]
            conc[s.name] = r["disc_height_middle_mm"] - 0.5 * (
                r["disc_height_anterior_mm"] + r["disc_height_posterior_mm"]
            )
    for s in labels.STRUCTURES:
        r: dict[str, Any] = {"patient_id": patient_id, "structure": s.kind, "level": s.name, "label": s.label}
        if s.kind == "vertebra":
            k = labels.VERTEBRA_NAMES.index(s.name)
            depth = (15.0 + 0.35 * k + (1.0 if s.name == "T1" else 0.0)) * size + rng.normal(0, 0.2)
            ha = (11.0 + (5.0 if s.name == "C2" else 0.0) + (2.0 if s.name == "T1" else 0.0)) * size
            hp = ha + 0.5 * size
            # concave endplates: each is as deep as half the concavity of the disc it borders (the
            # discs are made first below), so no bowing builds up along the chain
            above, below = labels.neighbours(s.name)
            hm = (
                0.5 * (ha + hp)
                - 0.5 * conc.get(labels.name_of(above) if above else "", 0.0)
                - 0.5 * conc.get(labels.name_of(below) if below else "", 1.2)
            )
            r.update(
                body_height_anterior_mm=ha,
                body_height_middle_mm=hm,
                body_height_posterior_mm=hp,
                body_depth_mm=depth,
                body_width_mm=(21.6 + 0.3 * k) * size,
                body_wedge_deg=float(np.degrees(np.arctan((ha - hp) / depth))),
                dens_height_mm=(15.0 * size if s.name == "C2" else np.nan),
            )
        else:
            r.update(discs[s.name])
        rows.append(r)
    return patient, pd.DataFrame(rows)


def _example_disc(name: str, base: float, size: float, wear: float, sev: float) -> dict[str, Any]:
    """Disc columns of :func:`example_patient` for one level (`sev` 0 healthy .. 1 collapsed)."""
    mid = base * size * (1 - 0.12 * wear) * (1 - 0.62 * sev)
    ant = (4.0 + 0.8 * (name in ("C4-C5", "C5-C6"))) * size * (1 - 0.45 * sev)
    post = 3.6 * size * (1 - 0.45 * sev)
    mid = max(mid, 0.5 * (ant + post) + 0.3)
    t2 = float(np.clip(1.0 - 0.25 * wear - 0.85 * sev, 0.15, 1.0))
    miy = int(np.clip(1 + round(1.6 * wear + 4 * sev), 1, 5))
    kl = int(np.clip(round(1.2 * wear + 4 * sev), 0, 4))
    depth = 15.5 * size
    angle = float(np.degrees(np.arctan((ant - post) / depth)))
    return {
        "d_latent": wear * 0.5 + 2.0 * sev,
        "kl_grade": kl,
        "miyazaki_grade": miy,
        "modic_type": (2 if sev >= 1 else 0),
        "disc_height_anterior_mm": ant,
        "disc_height_middle_mm": mid,
        "disc_height_posterior_mm": post,
        "disc_angle_deg": angle,
        "segmental_angle_deg": angle,
        "t2_signal": t2,
        "osteophyte_mm": float(4.5 * sev + 0.8 * wear * (kl > 0)),
        "sclerosis": float(min(1.0, sev + 0.2 * wear)),
        "bulge_mm": float(2.5 * sev + 0.5 * wear),
        "is_index": name == "C5-C6",
    }
