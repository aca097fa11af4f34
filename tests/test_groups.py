"""Variables grouped per level and kind of finding (cdeg.modeling.groups) and grouped SHAP: the mapping on real
names, additivity of the grouped values, and the grouped waterfall ending at the model's log-odds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import plots
from cdeg.modeling.explain import grouped_importance, grouped_shap, shap_values
from cdeg.modeling.groups import CONCEPTS, MEASURE_CONCEPTS, Group, group_of
from cdeg.modeling.models import TabularClassifier

from cdeg import measures


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("xray__C5-C6__disc_height_middle_mm", Group("disc C5-C6", "height")),
        ("xray__C5-C6__disc_height_index", Group("disc C5-C6", "height")),
        ("xray__C5__body_height_anterior_mm", Group("vertebra C5", "height")),
        ("mri__C5-C6__disc_csf_signal_ratio", Group("disc C5-C6", "signal")),
        ("xray__C4-C5__segmental_angle_deg", Group("disc C4-C5", "shape")),
        ("xray__C2-C7__cobb_c2c7_deg", Group("whole spine", "shape")),
        ("mri__C3-C4__original_glcm_Correlation", Group("disc C3-C4", "texture")),
        ("mri__C6-C7__wavelet-LLH_glszm_SmallAreaLowGrayLevelEmphasis", Group("disc C6-C7", "texture")),
        ("mri__C5__original_firstorder_Mean", Group("vertebra C5", "signal")),
        ("mri__C4-C5__original_shape_MeshVolume", Group("disc C4-C5", "height")),
        ("xray__C4-C5__original_shape2D_PixelSurface", Group("disc C4-C5", "height")),
        ("mri__C4-C5__original_shape_Sphericity", Group("disc C4-C5", "shape")),
        ("xray__C5-C6__disc_height_middle_mm__age_z", Group("disc C5-C6", "age-adjusted")),
        ("xray__worst__disc_height_middle_mm", Group("worst disc", "height")),
        ("xray__mean__body_wedge_deg", Group("mean over vertebrae", "shape")),
        ("xray__index__disc_height_index__age_z", Group("index level", "age-adjusted")),
        ("xray__above_index__disc_angle_deg", Group("level above the index", "shape")),
        ("mri__below_index__original_glcm_Contrast", Group("level below the index", "texture")),
        ("age", Group("clinical", "clinical")),
        ("ndi_0", Group("clinical", "clinical")),
        ("index_level=C5-C6", Group("clinical", "clinical")),
        ("sex=F", Group("clinical", "clinical")),
    ],
)
def test_group_of_real_names(name: str, group: Group) -> None:
    assert group_of(name) == group


def test_every_measurement_has_a_concept() -> None:
    assert set(MEASURE_CONCEPTS) == set(measures.UNITS)
    assert set(MEASURE_CONCEPTS.values()) <= set(CONCEPTS)


def test_group_keys() -> None:
    g = group_of("mri__C5-C6__disc_csf_signal_ratio")
    assert (g.key("level"), g.key("concept"), g.key("level_concept")) == (
        "disc C5-C6",
        "signal",
        "disc C5-C6: signal",
    )
    assert group_of("age").key("level_concept") == "clinical"
    with pytest.raises(ValueError, match="valid: level, concept, level_concept"):
        g.key("side")


COLUMNS = [
    "xray__C5-C6__disc_height_middle_mm",
    "xray__C5-C6__disc_height_middle_mm__age_z",
    "mri__C5-C6__disc_csf_signal_ratio",
    "mri__C3-C4__original_glcm_Correlation",
    "xray__C2-C7__cobb_c2c7_deg",
    "xray__C5__body_wedge_deg",
    "age",
    "index_level",
]


@pytest.fixture(scope="module", params=["xgboost", "logistic"])
def explained(request):
    """SHAP values of a small fitted model of each kind on named variables (with a one-hot column)."""
    rng = np.random.default_rng(3)
    n = 80
    X = pd.DataFrame(rng.normal(size=(n, len(COLUMNS) - 1)), columns=COLUMNS[:-1])
    X["index_level"] = rng.choice(["C4-C5", "C5-C6", "C6-C7"], n)
    X.index = [f"P{i:02d}" for i in range(n)]
    logit = 1.5 * X[COLUMNS[0]] - X[COLUMNS[2]] + 0.8 * (X["index_level"] == "C5-C6")
    y = (logit + rng.normal(size=n) > 0).astype(int).to_numpy()
    params = (
        {"n_estimators": 30, "max_depth": 2} if request.param == "xgboost" else {"C": 1.0, "l1_ratio": 0.0}
    )
    model = TabularClassifier(request.param, params=params).fit(X, y)
    return model, X, shap_values(model, X)


@pytest.mark.parametrize("by", ["level", "concept", "level_concept"])
def test_grouped_sums_equal_per_variable_sums(explained, by: str) -> None:
    _, _, sr = explained
    g = grouped_shap(sr, by)
    assert list(g.index) == list(sr.data.index)
    np.testing.assert_allclose(g.sum(axis=1).to_numpy(), sr.values.sum(axis=1), atol=1e-9)
    # each group is the sum of its own members
    level = grouped_shap(sr, "level")
    members = [j for j, c in enumerate(sr.feature_names) if group_of(c).level == "disc C5-C6"]
    np.testing.assert_allclose(level["disc C5-C6"].to_numpy(), sr.values[:, members].sum(axis=1))
    imp = grouped_importance(sr, by)
    assert list(imp.index) == list(g.columns) and imp.is_monotonic_decreasing


def test_one_hot_columns_join_their_source_in_the_clinical_group(explained) -> None:
    _, _, sr = explained
    assert any("=" in c for c in sr.feature_names)
    assert "clinical" in grouped_shap(sr, "level").columns


def test_grouped_waterfall_ends_at_the_models_log_odds(explained, tmp_path) -> None:
    model, X, sr = explained
    p = model.predict_proba(X)[:, 1]
    np.testing.assert_allclose(sr.log_odds(), np.log(p / (1 - p)), atol=1e-4)
    fig = plots.waterfall_figure(plots.grouped_rows(sr, 0, top=3), sr.base_value, "accelerated", "P00", "")
    ax = fig.axes[0]
    # the top bar (drawn last) ends at the patient's log-odds, the bottom one starts at the base value
    bars = sorted(ax.patches, key=lambda b: b.get_y())
    assert bars[0].get_x() == pytest.approx(sr.base_value)
    top = bars[-1]
    assert top.get_x() + top.get_width() == pytest.approx(sr.log_odds()[0], abs=1e-9)
    assert len(bars) == 4  # three groups and "other groups"
    files = plots.shap_waterfall_grouped(sr, 0, tmp_path / "P00", "accelerated", "P00")
    assert files[0].is_file()


def test_group_words_say_where_the_patient_stands_against_the_age_norm(explained) -> None:
    _, _, sr = explained
    z = sr.data["xray__C5-C6__disc_height_middle_mm__age_z"].to_numpy()
    i = int(np.argmin(z)) if z.min() < 0 else 0
    words = plots.group_words(sr, i, "disc C5-C6")
    assert words.startswith("disc C5-C6: ") and "height" in words and "signal" in words
    assert words.endswith("(below the age norm)")
    assert plots.group_words(sr, 0, "clinical").startswith("clinical: ")
