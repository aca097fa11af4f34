"""Clinical measurements (cdeg.features.measurements) against exact phantom geometry and synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cdeg.features.measurements import (
    COBB_LEVEL,
    DISC_FEATURES,
    SPINE_FEATURES,
    VERTEBRA_FEATURES,
    measure,
)
from phantoms import build_phantom, mri_pair, xray_pair

from cdeg import labels

HEIGHTS = ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm")


def _errors(truth: dict, measured: dict, features) -> list[float]:
    out = []
    for level, vals in truth.items():
        for f in features:
            if f in vals:
                assert f in measured.get(level, {}), f"{level} {f} not measured"
                out.append(measured[level][f] - vals[f])
    return out


@pytest.fixture(scope="module")
def phantom():
    return build_phantom()


@pytest.fixture(scope="module")
def xray_measured(phantom):
    image, mask = xray_pair(phantom, spacing=(0.35, 0.35), shape=(430, 200))
    return measure(mask, image, "xray")


def test_xray_disc_heights_are_sub_pixel(phantom, xray_measured):
    values, problems = xray_measured
    assert problems == []
    err = np.abs(_errors(phantom.truth, values, HEIGHTS))
    assert len(err) == 18
    assert err.mean() < 0.2 and err.max() < 0.6  # pixels are 0.35 mm


def test_xray_bodies_and_angles(phantom, xray_measured):
    values, _ = xray_measured
    body = np.abs(_errors(phantom.truth, values, ("body_depth_mm", "body_height_middle_mm")))
    assert body.mean() < 0.2
    ang = np.abs(_errors(phantom.truth, values, ("disc_angle_deg", "segmental_angle_deg")))
    assert ang.mean() < 1.5
    cobb = values[COBB_LEVEL]["cobb_c2c7_deg"] - phantom.truth[COBB_LEVEL]["cobb_c2c7_deg"]
    assert abs(cobb) < 2.0


def test_features_sit_on_the_right_levels(xray_measured):
    values, _ = xray_measured
    for level, vals in values.items():
        if level == COBB_LEVEL:
            assert set(vals) <= set(SPINE_FEATURES)
        elif labels.structure(level).kind == "disc":
            assert set(vals) <= set(DISC_FEATURES)
        else:
            assert set(vals) <= set(VERTEBRA_FEATURES)
    # C2 has no superior endplate of its own (dens): depth only.
    assert set(values["C2"]) == {"body_depth_mm"}
    # DHI = middle disc height / depth of the body above.
    assert values["C5-C6"]["disc_height_index"] == pytest.approx(
        values["C5-C6"]["disc_height_middle_mm"] / values["C5"]["body_depth_mm"]
    )


def test_mri_uses_mid_sagittal_slices_and_signal_ratio(phantom):
    # 0.7 mm pixels, 3 mm slices; the outer slices show shorter sections (must not be averaged in).
    image, mask = mri_pair(phantom, spacing=(0.7, 0.7), shape=(230, 100), slices=5)
    values, problems = measure(mask, image, "mri")
    assert problems == []
    err = np.abs(_errors(phantom.truth, values, HEIGHTS))
    assert err.mean() < 0.25
    depth = np.abs(_errors(phantom.truth, values, ("body_depth_mm",)))
    assert depth.mean() < 0.2 and depth.max() < 0.8  # 0.7 mm pixels; osteophytes at C4-C6
    # Discs 800, CSF 1000 in the phantom: ratio 0.8 (cord and bone excluded from the CSF region).
    ratios = [values[d]["disc_csf_signal_ratio"] for d in labels.DISC_NAMES[1:]]
    assert np.allclose(ratios, 0.8, atol=0.15)
    assert np.median(ratios) == pytest.approx(0.8, abs=0.03)


def test_xray_has_no_signal_ratio(xray_measured):
    values, _ = xray_measured
    assert all("disc_csf_signal_ratio" not in v for v in values.values())


def test_missing_level_is_absent_not_a_failure(phantom):
    image, mask = xray_pair(phantom, spacing=(0.35, 0.35), shape=(430, 200))
    arr = sitk.GetArrayFromImage(mask)
    arr[arr == labels.label_of("C5-C6")] = 0
    m2 = sitk.GetImageFromArray(arr)
    m2.CopyInformation(mask)
    values, problems = measure(m2, image, "xray")
    assert problems == []
    assert "C5-C6" not in values
    assert "disc_height_middle_mm" in values["C4-C5"] and "body_depth_mm" in values["C5"]
    # Segmental angles and Cobb still come from the bodies' own endplates where a disc is missing.
    assert "segmental_angle_deg" in values["C6-C7"]


ANGLES = ("disc_angle_deg", "segmental_angle_deg")
BODY = ("body_height_anterior_mm", "body_height_middle_mm", "body_height_posterior_mm", "body_depth_mm")


def _truth_errors(cohort, modality: str) -> pd.DataFrame:
    """measured - truth per patient, level and feature (truth/levels.csv; Cobb from truth/patients.csv)."""
    truth = pd.read_csv(cohort / "truth" / "levels.csv")
    cobb = pd.read_csv(cohort / "truth" / "patients.csv").set_index("patient_id")["cobb_c2c7_deg"]
    rows = []
    for pid, t in truth.groupby("patient_id"):
        mpath = cohort / "masks" / pid / f"{modality}.nii.gz"
        if not mpath.is_file():
            continue
        image = sitk.ReadImage(str(cohort / "images" / pid / f"{modality}.nii.gz"))
        values, _ = measure(sitk.ReadImage(str(mpath)), image, modality)
        for _, r in t.iterrows():
            feats = HEIGHTS + ANGLES if r["structure"] == "disc" else BODY if r["level"] != "C2" else ()
            for f in feats:
                if r["level"] in values and f in values[r["level"]]:
                    rows.append((pid, r["level"], f, values[r["level"]][f] - r[f]))
        if COBB_LEVEL in values:
            rows.append((pid, COBB_LEVEL, "cobb_c2c7_deg", values[COBB_LEVEL]["cobb_c2c7_deg"] - cobb[pid]))
    return pd.DataFrame(rows, columns=["patient_id", "level", "feature", "error"])


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["xray", "mri"])
def test_measurements_agree_with_synthetic_truth(tiny_cohort, modality):
    err = _truth_errors(tiny_cohort, modality)
    e = {f: g["error"] for f, g in err.groupby("feature")}
    heights = err.loc[err.feature.isin(HEIGHTS), "error"]
    assert len(heights) >= 60  # most discs of the 6 patients are in the field of view
    # The limit of the issue: mean absolute disc-height error <= 0.5 mm on reference masks. Measured on
    # 20 patients: 0.05 mm (radiograph), 0.11 mm (MRI); each position is well inside the limit too.
    assert heights.abs().mean() <= 0.5
    assert heights.abs().mean() <= (0.15 if modality == "xray" else 0.25)
    for f in HEIGHTS:
        assert e[f].abs().mean() <= 0.3, f
        assert abs(e[f].mean()) <= 0.15, f  # no systematic error at the corners (bulges, osteophytes)
    # Bodies: heights and depth (MRI: only the mid-sagittal slices show the full depth).
    for f in BODY:
        assert e[f].abs().mean() <= 0.25 and abs(e[f].mean()) <= 0.1, f
    # Angles: no bias (endplate chords between the bodies' corners), scatter well under the pixel limit.
    for f in ANGLES:
        assert abs(e[f].mean()) < 0.5 and e[f].abs().mean() < 1.5, f
    assert e["cobb_c2c7_deg"].abs().mean() < 3.0 and abs(e["cobb_c2c7_deg"].mean()) < 1.5


def _chord_angle(d) -> float:
    return float(np.degrees(np.arctan2(d[1], d[0])))


def test_synthetic_geometry_is_the_truth():
    """The renderer's chain of bodies and discs has exactly the true heights and angles (cdeg.measures)."""
    from cdeg.synth import anatomy
    from cdeg.synth.model import load_model_config, sample_cohort
    from cdeg.synth.render import RenderConfig

    tables = sample_cohort(load_model_config(), "neck", 3, seed=4)
    for pid, levels in tables.levels.groupby("patient_id"):
        patient = tables.patients.set_index("patient_id").loc[pid].to_dict()
        _check_geometry(
            anatomy.build_spine(patient, levels, RenderConfig().anatomy, np.random.default_rng(0)),
            levels.set_index("level"),
            patient["cobb_c2c7_deg"],
        )


def _check_geometry(spine, truth, cobb: float) -> None:
    by = {p.name: p for p in spine.pieces}

    def inferior(v):  # inferior endplate chord angle (spine frame: X posterior, Z superior)
        return _chord_angle(by[v].e)

    def superior(v):
        return _chord_angle(by[v].upper(1.0) - by[v].upper(0.0))

    for s in labels.STRUCTURES:
        r = truth.loc[s.name]
        if s.kind == "vertebra":
            assert inferior(s.name) - superior(s.name) == pytest.approx(r["body_wedge_deg"], abs=1e-3)
            continue
        up, lo = (labels.name_of(v) for v in labels.vertebrae_of_disc(s.label))
        # one chord per endplate: the disc's bounding chords are its bodies' chords
        assert inferior(lo) - inferior(up) == pytest.approx(r["segmental_angle_deg"], abs=1e-3)
        assert superior(lo) - inferior(up) == pytest.approx(r["disc_angle_deg"], abs=1e-3)
        heights = [float(by[s.name].h(t)) for t in (0.1, 0.5, 0.9)]
        want = [r[f] for f in HEIGHTS]
        assert heights == pytest.approx(want, abs=1e-3)
    assert inferior("C7") - inferior("C2") == pytest.approx(cobb, abs=1e-3)


def test_disc_bulge_leaves_vertebral_bodies_whole():
    """A posterior bulge reaches above and below its disc; it must not take the bodies' corners."""
    from cdeg.synth.render import RenderConfig, example_patient, render_patient

    patient, levels = example_patient(age=60, seed=3)
    flat = levels.copy()
    flat["bulge_mm"] = 0.0
    bulged = levels.copy()
    bulged.loc[bulged["level"] == "C5-C6", "bulge_mm"] = 3.5
    m0 = sitk.GetArrayFromImage(render_patient(RenderConfig(), patient, flat, seed=4)["xray"].mask)
    m1 = sitk.GetArrayFromImage(render_patient(RenderConfig(), patient, bulged, seed=4)["xray"].mask)
    disc = labels.label_of("C5-C6")
    assert (m1 == disc).sum() > (m0 == disc).sum() + 20  # the bulge is in the mask...
    for v in ("C5", "C6"):
        lab = labels.label_of(v)
        assert np.array_equal(m0 == lab, m1 == lab)  # ...and not over the vertebrae
