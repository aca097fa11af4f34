"""Options of the synthetic cohort model (:mod:`cdeg.synth.model`), one frozen dataclass per topic.

The defaults are written once, in ``configs/synth.yaml`` (section ``model:``), which says for every number
whether it comes from the literature (see the project's domain notes) or is a modelling choice. Each
class below declares its fields' types, documentation and ranges, and takes their defaults from its
section of that file (:func:`cdeg.defaults.shipped_defaults`; the profile classes from the neck
profile). :class:`VertebraAnatomy` has no defaults: every vertebra's row is in the file.
"""

# _f() below is dataclasses.field() with the documentation attached; ruff cannot see that it is one.
# ruff: noqa: RUF009
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from cdeg import labels
from cdeg.choices import SYNTH_PROFILES
from cdeg.defaults import doc_field as _f
from cdeg.defaults import shipped_defaults

PROFILE_NAMES: tuple[str, ...] = SYNTH_PROFILES  # the order gives each profile its code in the generator
SMOKING_STATUSES: tuple[str, ...] = ("never", "former", "current")
ARMS: tuple[str, ...] = ("ACD", "ACDF", "ACDA")
#: How the predisposition u acts on degeneration: a constant offset (b u) or a faster rate with age (exp(c u)).
ACCELERATION_MODES: tuple[str, ...] = ("offset", "rate")


def _check_keys(where: str, mapping: dict[str, Any], expected: tuple[str, ...]) -> None:
    if set(mapping) != set(expected):
        missing = [k for k in expected if k not in mapping]
        extra = sorted(set(mapping) - set(expected))
        raise ValueError(
            f"{where} must have exactly the keys {', '.join(expected)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )


def _check_increasing(where: str, values: tuple[float, ...], n: int | None = None) -> None:
    if n is not None and len(values) != n:
        raise ValueError(f"{where} must have {n} values, got {len(values)}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{where} must be strictly increasing, got {list(values)}")


def _check_sum_one(where: str, values: list[float]) -> None:
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"{where} must sum to 1, got {sum(values):.6g}")


# --- who the patients are ---------------------------------------------------------------------------
@dataclass(frozen=True)
@shipped_defaults("model.profiles.neck.age")
class AgeDistribution:
    """Age at imaging: a normal distribution truncated to [min, max], rounded to whole years."""

    mean: float = _f("mean of the untruncated normal (years)", (0, 120))
    sd: float = _f("standard deviation of the untruncated normal (years)", (0.1, 50))
    min: float = _f("youngest age (years)", (0, 120))
    max: float = _f("oldest age (years)", (0, 120))

    def __post_init__(self) -> None:
        if self.max - self.min < 1:
            raise ValueError(f"age.max ({self.max}) must exceed age.min ({self.min}) by at least a year")


@dataclass(frozen=True)
@shipped_defaults("model.profiles.neck.smoking")
class SmokingMix:
    """Fractions of never, former and current smokers (sum to 1)."""

    never: float = _f("fraction of never smokers", (0, 1))
    former: float = _f("fraction of former smokers", (0, 1))
    current: float = _f("fraction of current smokers", (0, 1))

    def __post_init__(self) -> None:
        _check_sum_one("smoking fractions", [self.never, self.former, self.current])

    def as_dict(self) -> dict[str, float]:
        return {"never": self.never, "former": self.former, "current": self.current}


@dataclass(frozen=True)
@shipped_defaults("model.profiles.neck")
class ProfileConfig:
    """Who one cohort profile samples."""

    id_prefix: str = _f("patient id prefix; ids are the prefix + a zero-padded number (NECK0001)")
    surgical: bool = _f("operated radiculopathy cohort: index level, surgery arm and outcome columns")
    age: AgeDistribution = _f("age distribution")
    male_fraction: float = _f("fraction of men", (0, 1))
    bmi_mean: float = _f("mean body mass index (kg/m2)", (10, 60))
    bmi_sd: float = _f("standard deviation of the body mass index", (0, 20))
    bmi_min: float = _f("lowest body mass index (values below are clipped)", (10, 60))
    smoking: SmokingMix = _f("smoking status fractions")

    def __post_init__(self) -> None:
        if (
            not self.id_prefix
            or not self.id_prefix[0].isalnum()
            or not all(c.isalnum() or c in "_-" for c in self.id_prefix)
        ):
            raise ValueError(f"id_prefix {self.id_prefix!r} must be letters, digits, '_' or '-'")


@dataclass(frozen=True)
@shipped_defaults("model.profiles")
class ProfilesConfig:
    """The two cohort profiles."""

    neck: ProfileConfig = _f("surgical radiculopathy cohort (NECK trial)")
    population: ProfileConfig = _f("population study cohort (Rotterdam Study), not operated")

    def get(self, profile: str) -> ProfileConfig:
        if profile not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILE_NAMES)}")
        return getattr(self, profile)


# --- how spines degenerate -------------------------------------------------------------------------
@dataclass(frozen=True)
@shipped_defaults("model.predisposition")
class PredispositionConfig:
    """The patient predisposition u ~ N(shift[smoking], 1) and the accelerated label u > threshold."""

    smoking_shift: dict[str, float] = _f("prior mean of u by smoking status")
    accelerated_quantile: float = _f(
        "threshold = this quantile of the profile's u distribution (1 - prevalence)", (0.5, 0.999)
    )

    def __post_init__(self) -> None:
        _check_keys("predisposition.smoking_shift", self.smoking_shift, SMOKING_STATUSES)


@dataclass(frozen=True)
@shipped_defaults("model.degeneration")
class DegenerationConfig:
    """Latent degeneration d_l = f(age) w_l + b u + e_l (+ index shift), in Miyazaki-grade units; with
    ``acceleration: rate``, d_l = f(age) w_l exp(c u) + e_l (+ index shift)."""

    age_knots: tuple[float, ...] = _f("ages (years) at which f(age) is given")
    age_curve: tuple[float, ...] = _f("f(age) at the knots (linear in between, constant outside)")
    level_weights: dict[str, float] = _f("w_l: how strongly age acts on each disc level")
    predisposition_loading: float = _f("b: degeneration units per SD of predisposition", (0, 5))
    noise_sd: float = _f("SD of the level noise e_l", (0.01, 5))
    neighbour_correlation: float = _f("AR(1) correlation of e_l between neighbouring levels", (0, 0.95))
    index_shift_mean: float = _f("mean extra degeneration of the index level (grades)", (0, 5))
    index_shift_sd: float = _f("SD of the extra degeneration of the index level", (0, 2))
    acceleration: str = _f(
        "how the predisposition acts: offset (d = f(age) w + b u + e) or rate (d = f(age) w exp(c u) + e: "
        "degeneration grows faster with age for high u)",
        choices=ACCELERATION_MODES,
    )
    rate_loading: float = _f(
        "c: log rate of degeneration per SD of predisposition (acceleration: rate)", (0, 2)
    )

    def __post_init__(self) -> None:
        _check_keys("degeneration.level_weights", self.level_weights, labels.DISC_NAMES)
        _check_increasing("degeneration.age_knots", tuple(self.age_knots))
        if len(self.age_curve) != len(self.age_knots):
            raise ValueError("degeneration.age_curve must have one value per age knot")


@dataclass(frozen=True)
@shipped_defaults("model.grading")
class GradingConfig:
    """Grades as noisy monotone functions of d_l."""

    miyazaki_cuts: tuple[float, ...] = _f("cut points on d + noise between Miyazaki grades I|II|III|IV|V")
    miyazaki_noise_sd: float = _f("SD of the MRI grading noise", (0, 5))
    kl_cuts: tuple[float, ...] = _f("cut points on d + age shift + noise between KL 0|1|2|3|4")
    kl_noise_sd: float = _f("SD of the radiograph grading noise", (0, 5))
    kl_age_knots: tuple[float, ...] = _f("ages (years) at which the KL age shift is given")
    kl_age_shift: tuple[float, ...] = _f(
        "added to d before KL grading (osteophytes need years to form; linear between knots)"
    )
    modic_intercept: float = _f("log-odds of a Modic change at a disc with d = modic_centre", (-20, 20))
    modic_slope: float = _f("log-odds per degeneration unit", (0, 10))
    modic_centre: float = _f("degeneration value at which the intercept applies", (-10, 10))
    modic_index_bonus: float = _f("extra log-odds at the index level", (-5, 5))
    modic_type_probs: tuple[float, ...] = _f("P(type I), P(type II), P(type III) given a change")

    def __post_init__(self) -> None:
        _check_increasing("grading.miyazaki_cuts", tuple(self.miyazaki_cuts), 4)
        _check_increasing("grading.kl_cuts", tuple(self.kl_cuts), 4)
        _check_increasing("grading.kl_age_knots", tuple(self.kl_age_knots))
        if len(self.kl_age_shift) != len(self.kl_age_knots):
            raise ValueError("grading.kl_age_shift must have one value per KL age knot")
        if len(self.modic_type_probs) != 3 or min(self.modic_type_probs) < 0:
            raise ValueError("grading.modic_type_probs must be 3 non-negative probabilities")
        _check_sum_one("grading.modic_type_probs", list(self.modic_type_probs))


@dataclass(frozen=True)
@shipped_defaults("model.disc")
class DiscConfig:
    """Disc shape and the degeneration signs that depend on the grades."""

    healthy_middle_mm: dict[str, float] = _f("healthy middle disc height by level (mm), sex-averaged")
    male_minus_female_mm: float = _f("men's discs are taller by this much (mm)", (-5, 5))
    patient_sd_mm: float = _f("SD of a patient's overall healthy disc height (mm)", (0, 5))
    level_sd_mm: float = _f("SD of one disc's healthy height around the patient's (mm)", (0, 5))
    loss_by_miyazaki: tuple[float, ...] = _f("mean fraction of the healthy middle height lost, Miyazaki I..V")
    loss_sd: float = _f("SD of the height-loss fraction", (0, 1))
    middle_min_mm: float = _f("smallest middle disc height (mm)", (0.5, 10))
    concavity_ratio: float = _f(
        "(middle - mean of anterior and posterior) / middle: endplate concavity", (0, 0.6)
    )
    concavity_sd: float = _f("SD of the concavity ratio", (0, 0.2))
    min_height_mm: float = _f(
        "smallest anterior/posterior disc height (mm); disc angles are limited to keep it", (0.1, 5)
    )
    t2_by_miyazaki: tuple[float, ...] = _f("nucleus T2 signal relative to a healthy disc, Miyazaki I..V")
    t2_sd: float = _f("SD of the relative T2 signal", (0, 1))
    osteophyte_by_kl: tuple[float, ...] = _f("mean anterior osteophyte length (mm) by KL grade 0..4")
    osteophyte_sd: float = _f("SD of the osteophyte length as a fraction of its mean", (0, 2))
    sclerosis_by_kl: tuple[float, ...] = _f("mean endplate sclerosis (0-1) by KL 0..4")
    sclerosis_sd: float = _f("SD of the sclerosis score", (0, 1))
    bulge_base_mm: float = _f("posterior bulge of a grade I disc (mm)", (0, 10))
    bulge_per_grade_mm: float = _f("extra posterior bulge per Miyazaki grade above I (mm)", (0, 10))
    bulge_index_mm: float = _f("extra posterior protrusion at the index level (herniation, mm)", (0, 10))
    bulge_sd_mm: float = _f("SD of the posterior bulge (mm)", (0, 5))

    def __post_init__(self) -> None:
        _check_keys("disc.healthy_middle_mm", self.healthy_middle_mm, labels.DISC_NAMES)
        for name, n in (
            ("loss_by_miyazaki", 5),
            ("t2_by_miyazaki", 5),
            ("osteophyte_by_kl", 5),
            ("sclerosis_by_kl", 5),
        ):
            if len(getattr(self, name)) != n:
                raise ValueError(f"disc.{name} must have {n} values")


@dataclass(frozen=True)
class VertebraAnatomy:
    """Mean body size of one vertebra for a size_scale of 1 (mm)."""

    height_anterior_mm: float = _f("body height at t=0.1 of its AP extent (mm)", (1, 60))
    height_posterior_mm: float = _f("body height at t=0.9 of its AP extent (mm)", (1, 60))
    depth_mm: float = _f("body AP depth (mm)", (5, 60))
    width_mm: float = _f("endplate width, left-right (mm)", (5, 60))


@dataclass(frozen=True)
@shipped_defaults("model.vertebra")
class VertebraConfig:
    """Vertebral body sizes."""

    anatomy: dict[str, VertebraAnatomy] = _f("mean body size per vertebra (size_scale 1)")
    height_sd_mm: float = _f("SD of a body's height around its scaled mean (mm)", (0, 5))
    height_difference_sd_mm: float = _f(
        "SD of a body's anterior - posterior height difference around its mean (mm)", (0, 5)
    )
    depth_sd_mm: float = _f("SD of a body depth around its scaled mean (mm)", (0, 5))
    width_sd_mm: float = _f("SD of a body width around its scaled mean (mm)", (0, 5))
    dens_height_mm: float = _f("mean height of the dens above the C2 body (mm)", (5, 30))
    dens_height_sd_mm: float = _f("SD of the dens height (mm)", (0, 5))
    size_scale_male: float = _f("mean size scale of men (bodies ~1-2 mm larger than women's)", (0.5, 2))
    size_scale_female: float = _f("mean size scale of women", (0.5, 2))
    size_scale_sd: float = _f("SD of the size scale", (0, 0.5))
    t1_inferior_concavity_mm: float = _f(
        "depth of T1's concave inferior endplate (the T1-T2 disc is not modelled, mm)", (0, 5)
    )

    def __post_init__(self) -> None:
        _check_keys("vertebra.anatomy", self.anatomy, labels.VERTEBRA_NAMES)


@dataclass(frozen=True)
@shipped_defaults("model.alignment")
class AlignmentConfig:
    """Sagittal alignment: the C2-C7 Cobb angle and how it is spread over the discs."""

    cobb_mean_deg: float = _f("mean C2-C7 Cobb angle (deg, positive = lordosis)", (-90, 90))
    cobb_sd_deg: float = _f("SD of the C2-C7 Cobb angle (deg)", (0, 60))
    disc_angle_share: dict[str, float] = _f(
        "share of the C2-C7 disc lordosis carried by each disc (normalised)"
    )
    flattening: float = _f("a disc's share shrinks by this factor times its height-loss fraction", (0, 1))
    angle_noise_sd_deg: float = _f("SD of the per-disc angle scatter (sums to zero over C2-C7)", (0, 20))
    c7t1_angle_mean_deg: float = _f("mean C7-T1 disc angle (deg)", (-30, 30))
    c7t1_angle_sd_deg: float = _f("SD of the C7-T1 disc angle (deg)", (0, 30))

    def __post_init__(self) -> None:
        _check_keys("alignment.disc_angle_share", self.disc_angle_share, labels.DISC_NAMES[:-1])
        if sum(self.disc_angle_share.values()) <= 0 or min(self.disc_angle_share.values()) < 0:
            raise ValueError("alignment.disc_angle_share must be non-negative with a positive sum")


@dataclass(frozen=True)
@shipped_defaults("model.soft_tissue")
class SoftTissueConfig:
    """Spinal canal and neck soft tissue (what the renderer needs around the spine)."""

    canal_ap_mean_mm: float = _f("mean AP diameter of the spinal canal at C3-C7 (mm)", (5, 30))
    canal_ap_sd_mm: float = _f("SD of the canal AP diameter (mm)", (0, 10))
    neck_depth_female_mm: float = _f("soft-tissue AP neck depth of a woman with BMI 27 (mm)", (40, 250))
    neck_depth_male_extra_mm: float = _f("men's necks are deeper by this much (mm)", (-50, 50))
    neck_depth_per_bmi_mm: float = _f("neck depth per BMI unit (mm)", (0, 20))
    neck_depth_sd_mm: float = _f("SD of the neck depth (mm)", (0, 50))


# --- clinical scores ---------------------------------------------------------------------------------
@dataclass(frozen=True)
@shipped_defaults("model.clinical")
class ClinicalConfig:
    """Clinical variables of the surgical profile, and the few the population profile has."""

    symptom_median_months: float = _f("median symptom duration before surgery (months)", (0.1, 240))
    symptom_min_months: float = _f("shortest symptom duration (inclusion: > 8 weeks)", (0, 240))
    symptom_over_24_fraction: float = _f("fraction with symptoms longer than 24 months", (0.001, 0.5))
    index_level_frequencies: dict[str, float] = _f("frequency of each operated (index) level")
    arms: tuple[str, ...] = _f("surgery arms, randomised with equal probability")
    ndi_baseline_mean: float = _f("mean baseline Neck Disability Index (0-100)", (0, 100))
    ndi_baseline_sd: float = _f("SD of the baseline NDI", (0, 50))
    ndi_remaining_logit_mean: float = _f(
        "mean logit of the fraction of baseline NDI left at follow-up", (-10, 10)
    )
    ndi_remaining_logit_sd: float = _f("SD of that logit between patients", (0, 10))
    ndi_2y_logit_change_sd: float = _f("SD of the change of that logit from 1 to 2 years", (0, 10))
    ndi_noise_sd: float = _f("measurement noise of a follow-up NDI (points)", (0, 50))
    vas_baseline_mean: float = _f("mean baseline VAS arm and neck pain (0-100 mm)", (0, 100))
    vas_baseline_sd: float = _f("SD of the baseline VAS", (0, 50))
    vas_remaining_logit_mean: float = _f(
        "mean logit of the fraction of baseline VAS left at follow-up", (-10, 10)
    )
    vas_remaining_logit_sd: float = _f("SD of that logit between patients", (0, 10))
    vas_ndi_correlation: float = _f("correlation of the VAS and NDI recovery logits", (-1, 1))
    vas_noise_sd: float = _f("measurement noise of a follow-up VAS (mm)", (0, 50))
    recovery_cuts: tuple[float, ...] = _f(
        "cut points on the recovery logit between Likert 1 (completely recovered) .. 7 (worse than ever)"
    )
    recovery_noise_sd: float = _f("noise of the perceived-recovery rating (logit units)", (0, 10))
    excess_baseline_ndi: float = _f("baseline NDI points per SD of degeneration beyond age", (-20, 20))
    excess_outcome_logit: float = _f(
        "recovery logit per SD of degeneration beyond age (worse outcome)", (-5, 5)
    )
    smoking_outcome_logit: dict[str, float] = _f(
        "recovery logit added by smoking status (never, former, current; positive = worse outcome)"
    )
    duration_outcome_logit_per_doubling: float = _f(
        "recovery logit per doubling of the symptom duration beyond its median (worse outcome)", (-5, 5)
    )
    neck_dominant_outcome_logit: float = _f(
        "recovery logit added when neck pain dominates (baseline VAS neck above VAS arm)", (-5, 5)
    )
    ndi_baseline_outcome_logit_per_10: float = _f(
        "recovery logit per 10 baseline NDI points above ndi_baseline_mean", (-5, 5)
    )
    reoperation_rate_per_year: float = _f("reoperation rate per year in years 0-2", (0, 0.5))
    reoperation_excess_logodds: float = _f(
        "log-odds of reoperation per SD of degeneration beyond age", (-5, 5)
    )
    population_ndi_zero_fraction: float = _f("population profile: fraction with NDI 0", (0, 1))
    population_ndi_mean_nonzero: float = _f("population profile: mean NDI of the others", (0, 100))
    population_vas_neck_mean: float = _f("population profile: mean VAS neck pain (mm)", (0, 100))

    def __post_init__(self) -> None:
        freq = self.index_level_frequencies
        unknown = set(freq) - set(labels.DISC_NAMES)
        if unknown:
            raise ValueError(
                f"clinical.index_level_frequencies: unknown level(s) {', '.join(sorted(unknown))}"
            )
        if min(freq.values(), default=-1) < 0:
            raise ValueError("clinical.index_level_frequencies must be non-negative")
        _check_sum_one("clinical.index_level_frequencies", list(freq.values()))
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"clinical.arms: unknown arm(s) {bad}; valid: {', '.join(ARMS)}")
        _check_increasing("clinical.recovery_cuts", tuple(self.recovery_cuts), 6)
        _check_keys("clinical.smoking_outcome_logit", self.smoking_outcome_logit, SMOKING_STATUSES)


#: Clinical columns that may be blanked by :class:`MissingConfig` (values a real registry loses).
MISSABLE_COLUMNS: tuple[str, ...] = (
    "bmi",
    "smoking",
    "symptom_duration_months",
    "vas_arm_0",
    "vas_neck_0",
    "vas_arm_1y",
    "vas_neck_1y",
    "vas_arm_2y",
    "vas_neck_2y",
)


@dataclass(frozen=True)
@shipped_defaults("model.missing")
class MissingConfig:
    """Missing data, as in a real cohort."""

    no_mri_fraction: float = _f("fraction of patients without an MRI", (0, 1))
    no_xray_fraction: float = _f("fraction of patients without a radiograph (never both missing)", (0, 1))
    clinical_fraction: float = _f("fraction of values left empty in each of clinical_columns", (0, 1))
    clinical_columns: tuple[str, ...] = _f("clinical columns that can have missing values")

    def __post_init__(self) -> None:
        bad = [c for c in self.clinical_columns if c not in MISSABLE_COLUMNS]
        if bad:
            raise ValueError(
                f"missing.clinical_columns: {bad} cannot be missing; valid: {', '.join(MISSABLE_COLUMNS)}"
            )


@dataclass(frozen=True)
@shipped_defaults("model")
class ModelConfig:
    """All options of the synthetic cohort model (``model:`` section of configs/synth.yaml)."""

    profiles: ProfilesConfig = _f("the two cohort profiles")
    predisposition: PredispositionConfig = _f("predisposition u and the accelerated label")
    degeneration: DegenerationConfig = _f("latent degeneration per disc level")
    grading: GradingConfig = _f("KL, Miyazaki and Modic grades from the latent degeneration")
    disc: DiscConfig = _f("disc heights and degeneration signs")
    vertebra: VertebraConfig = _f("vertebral body sizes")
    alignment: AlignmentConfig = _f("sagittal alignment")
    soft_tissue: SoftTissueConfig = _f("spinal canal and neck soft tissue")
    clinical: ClinicalConfig = _f("clinical scores and outcomes")
    missing: MissingConfig = _f("missing images and values")
