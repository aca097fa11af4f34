"""Tests of the image renderer of the synthetic cohort generator (cdeg.synth.render)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from cdeg import labels
from cdeg.cohort import CANONICAL_DIRECTION
from cdeg.config import from_dict, load_config, shipped_config
from cdeg.synth.render import RenderConfig, RenderedImage, example_patient, render_patient


def make_rows(age: float = 40.0, degenerated: bool = False, seed: int = 0, **disc_changes):
    """Patient row and levels table in the truth-table columns; `disc_changes` = {level: {column: value}}."""
    patient, levels = example_patient(age=age, degenerated=degenerated, seed=seed)
    levels = levels.copy()
    for level, cols in disc_changes.items():
        for col, val in cols.items():
            levels.loc[levels["level"] == level, col] = val
    return patient, levels


def cfg_with(**overrides) -> RenderConfig:
    return load_config(RenderConfig, overrides=overrides)


def arr(img: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(img)


@pytest.fixture(scope="module")
def healthy():
    return make_rows(age=30, degenerated=False, seed=1)


@pytest.fixture(scope="module")
def degenerated():
    return make_rows(age=65, degenerated=True, seed=2)


@pytest.fixture(scope="module")
def centred_cfg():
    """No random field-of-view shift: every level is inside the image."""
    return cfg_with(
        **{
            "mri.offset_si_sd_mm": 0.0,
            "mri.offset_ap_sd_mm": 0.0,
            "xray.offset_si_sd_mm": 0.0,
            "xray.offset_ap_sd_mm": 0.0,
        }
    )


@pytest.fixture(scope="module")
def healthy_out(healthy, centred_cfg):
    return render_patient(centred_cfg, *healthy, seed=11)


def test_yaml_render_section_holds_the_defaults():
    data = yaml.safe_load(shipped_config("synth.yaml").read_text())
    assert from_dict(RenderConfig, data["render"]) == RenderConfig()


def test_geometry_types_and_labels(healthy_out):
    assert set(healthy_out) == {"mri", "xray"}
    for mod, dim in (("mri", 3), ("xray", 2)):
        r = healthy_out[mod]
        assert isinstance(r, RenderedImage)
        assert r.image.GetDimension() == dim and r.mask.GetDimension() == dim
        assert r.image.GetSize() == r.mask.GetSize()
        assert r.image.GetSpacing() == r.mask.GetSpacing()
        assert r.image.GetOrigin() == r.mask.GetOrigin()
        assert r.image.GetDirection() == r.mask.GetDirection() == CANONICAL_DIRECTION[mod]
        m = arr(r.mask)
        assert m.dtype == np.uint8
        assert not labels.invalid_labels(np.unique(m))
        # every level is in the field of view here, and present lists them cranio-caudally
        assert r.present == labels.ALL_LABELS
    mri, xr = arr(healthy_out["mri"].image), arr(healthy_out["xray"].image)
    assert mri.dtype == np.int16 and 0 <= mri.min() and mri.max() <= 4095
    assert xr.dtype == np.uint16 and xr.max() <= 4095
    sx, sy, sz = healthy_out["mri"].image.GetSpacing()
    assert 0.5 <= sx == sy <= 0.8 and 2.5 <= sz <= 3.85
    assert 12 <= mri.shape[0] <= 16
    px = healthy_out["xray"].image.GetSpacing()
    assert 0.3 <= px[0] == px[1] <= 0.4


def test_mri_orientation_superior_top_anterior_left(healthy_out):
    m = arr(healthy_out["mri"].mask)
    rows_c2 = np.nonzero((m == labels.label_of("C2")).any(axis=(0, 2)))[0]
    rows_t1 = np.nonzero((m == labels.label_of("T1")).any(axis=(0, 2)))[0]
    assert rows_c2.mean() < rows_t1.mean()  # C2 above T1: rows run superior -> inferior
    k = int(np.argmax((m == 105).sum(axis=(1, 2))))
    cols_disc = np.nonzero((m[k] == 105).any(axis=0))[0]
    cols_spinous = np.nonzero((m[k] == labels.label_of("C5")).any(axis=0))[0]
    assert cols_spinous.max() > cols_disc.max() + 10  # posterior elements to the right: anterior is left


def test_levels_out_of_fov_are_missing_not_broken(healthy):
    cfg = cfg_with(**{"mri.offset_si_sd_mm": 45.0, "xray.offset_si_sd_mm": 45.0})
    seen_partial = False
    for seed in range(6):
        out = render_patient(cfg, *healthy, seed=seed)
        for r in out.values():
            present = r.present
            assert list(present) == labels.sort_labels(present)
            assert set(present) == set(np.unique(arr(r.mask))) - {0}
            # discs are compact: those in the image form a contiguous run (posterior elements of a
            # vertebra whose body is cut off may still reach into the image, so vertebrae need not)
            discs = [labels.DISC_LABELS.index(v) for v in present if labels.is_disc(v)]
            assert discs == list(range(discs[0], discs[0] + len(discs)))
            seen_partial |= len(present) < len(labels.ALL_LABELS)
    assert seen_partial


def _pca_heights(mask: np.ndarray, spacing: float) -> tuple[float, float, float]:
    """Reference measurement: heights of a disc mask across its principal (AP) axis at t = 0.1/0.5/0.9."""
    rr, cc = np.nonzero(mask)
    pts = np.stack([cc * spacing, -rr * spacing], axis=1)
    pts = pts - pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts, full_matrices=False)
    e1 = vt[0] * np.sign(vt[0][0])  # anterior -> posterior (columns run anterior -> posterior)
    e2 = np.array([-e1[1], e1[0]])
    a, b = pts @ e1, pts @ e2
    lo, hi = a.min() - spacing / 2, a.max() + spacing / 2
    out = []
    for t in (0.1, 0.5, 0.9):
        sel = np.abs(a - (lo + t * (hi - lo))) <= spacing * 0.75
        out.append(float(b[sel].max() - b[sel].min() + spacing))
    return out[0], out[1], out[2]


@pytest.mark.parametrize("modality", ["xray", "mri"])
def test_disc_heights_on_mask_match_truth(modality):
    patient, levels = make_rows(age=65, degenerated=True, seed=3)
    levels["bulge_mm"] = 0.0  # the bulge extends the disc's AP extent; the reference measure ignores it
    levels["osteophyte_mm"] = 0.0
    fine = {
        "xray": {"xray.pixel_mm": [0.08, 0.08], "xray.fov_si_mm": 170.0, "xray.offset_si_sd_mm": 0.0},
        "mri": {
            "mri.in_plane_mm": [0.1, 0.1],
            "mri.n_slices": [1, 1],
            "mri.offset_lr_sd_mm": 0.0,
            "mri.offset_si_sd_mm": 0.0,
            "mri.fov_si_mm": 170.0,
            "mri.fov_ap_mm": 60.0,
            "mri.posterior_wall_at": 0.75,
        },
    }[modality]
    out = render_patient(cfg_with(**fine), patient, levels, seed=5, modalities=(modality,))[modality]
    m = arr(out.mask)
    if m.ndim == 3:
        m = m[m.shape[0] // 2]
    sp = out.mask.GetSpacing()[0]
    errors = []
    for s in labels.STRUCTURES:
        if s.kind != "disc":
            continue
        truth = levels.set_index("level").loc[s.name]
        got = _pca_heights(m == s.label, sp)
        want = [truth[f"disc_height_{p}_mm"] for p in ("anterior", "middle", "posterior")]
        errors += [g - w for g, w in zip(got, want, strict=True)]
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.5, errors.round(2)
    assert abs(errors.mean()) < 0.2


def test_degenerated_disc_darker_on_mri(healthy, degenerated, centred_cfg):
    def nucleus_mean(rows, seed):
        out = render_patient(centred_cfg, *rows, seed=seed, modalities=("mri",))["mri"]
        img, m = arr(out.image).astype(float), arr(out.mask)
        lab = labels.label_of("C5-C6")
        k = int(np.argmax((m == lab).sum(axis=(1, 2))))
        sel = m[k] == lab
        cc = np.nonzero(sel)[1]
        lo, hi = cc.min(), cc.max()
        sel[:, : int(lo + 0.3 * (hi - lo))] = False  # central third along AP: the nucleus region
        sel[:, int(hi - 0.3 * (hi - lo)) :] = False
        csf = img[k][img[k] > np.percentile(img[k], 99)].mean()
        return img[k][sel].mean() / csf

    assert nucleus_mean(degenerated, 1) < 0.6 * nucleus_mean(healthy, 1)


def test_osteophyte_adds_vertebra_area_anteriorly():
    base = make_rows(age=50, seed=4, **{"C5-C6": {"osteophyte_mm": 0.0}})
    spur = make_rows(age=50, seed=4, **{"C5-C6": {"osteophyte_mm": 4.0}})
    cfg = cfg_with(**{"xray.offset_si_sd_mm": 0.0})
    m0 = arr(render_patient(cfg, *base, seed=8, modalities=("xray",))["xray"].mask)
    m1 = arr(render_patient(cfg, *spur, seed=8, modalities=("xray",))["xray"].mask)
    for name in ("C5", "C6"):
        lab = labels.label_of(name)
        a0, a1 = m0 == lab, m1 == lab
        assert a1.sum() > a0.sum() + 20
        new = a1 & ~a0
        assert np.nonzero(new)[1].mean() < np.nonzero(a0)[1].mean()  # the new pixels lie anteriorly
        assert np.nonzero(a1)[1].min() < np.nonzero(a0)[1].min()


def test_radiograph_bone_brighter_than_disc(healthy_out):
    img, m = arr(healthy_out["xray"].image).astype(float), arr(healthy_out["xray"].mask)
    for v, d in ((3, 103), (4, 104), (5, 105)):
        assert img[m == v].mean() > img[m == d].mean()


def test_deterministic_for_a_seed(degenerated):
    cfg = RenderConfig()
    a = render_patient(cfg, *degenerated, seed=np.random.SeedSequence(42))
    b = render_patient(cfg, *degenerated, seed=np.random.SeedSequence(42))
    c = render_patient(cfg, *degenerated, seed=43)
    for mod in ("mri", "xray"):
        assert np.array_equal(arr(a[mod].image), arr(b[mod].image))
        assert np.array_equal(arr(a[mod].mask), arr(b[mod].mask))
        assert a[mod].image.GetSpacing() == b[mod].image.GetSpacing()
        assert (
            not np.array_equal(arr(a[mod].image), arr(c[mod].image))
            or a[mod].image.GetSize() != c[mod].image.GetSize()
        )


def test_modalities_follow_request_and_flags(healthy):
    patient, levels = healthy
    assert set(render_patient(RenderConfig(), patient, levels, 1, modalities=("xray",))) == {"xray"}
    no_xray = dict(patient, has_xray=False)
    assert set(render_patient(RenderConfig(), no_xray, levels, 1)) == {"mri"}
    with pytest.raises(ValueError, match="unknown modality"):
        render_patient(RenderConfig(), patient, levels, 1, modalities=("ct",))


def test_missing_structure_row_is_reported(healthy):
    patient, levels = healthy
    with pytest.raises(KeyError, match="C4-C5"):
        render_patient(RenderConfig(), patient, levels[levels["level"] != "C4-C5"], 1)


def test_speed_budget(healthy, degenerated):
    cfg = RenderConfig()
    render_patient(cfg, *healthy, seed=0)  # warm-up (imports, caches)
    t0 = time.perf_counter()
    for i in range(4):
        render_patient(cfg, *(healthy if i % 2 else degenerated), seed=i)
    per_patient = (time.perf_counter() - t0) / 4
    assert per_patient < 1.5, per_patient


def test_example_patient_columns():
    patient, levels = example_patient(age=65, degenerated=True)
    assert isinstance(levels, pd.DataFrame)
    assert list(levels["label"]) == list(labels.ALL_LABELS)
    disc = levels.set_index("level").loc["C5-C6"]
    assert disc["miyazaki_grade"] == 5 and disc["kl_grade"] == 4 and disc["osteophyte_mm"] > 4
    for key in ("canal_ap_mm", "neck_depth_mm", "size_scale", "has_mri", "has_xray"):
        assert key in patient
