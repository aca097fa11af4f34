"""No clipped text: every figure of cdeg.modeling.plots, drawn with long realistic titles and variable names,
keeps each text inside the figure after the layout it is saved with, and is written at least as wide as the
report shows it (so its text is not blown up or squeezed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling import plots
from cdeg.modeling.explain import ShapResult
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

TARGET = "accelerated_adjacent_segment_degeneration"
LONG_NAMES = [
    "mri__C6-C7__wavelet-LLH_glszm_SmallAreaLowGrayLevelEmphasis",
    "mri__C3-C4__original_glcm_Correlation",
    "xray__C5-C6__disc_height_middle_mm",
    "xray__C5-C6__disc_height_middle_mm__age_z",
    "mri__C5-C6__disc_csf_signal_ratio",
    "mri__C5__original_firstorder_RobustMeanAbsoluteDeviation",
    "xray__C2-C7__cobb_c2c7_deg",
    "xray__C6__body_height_posterior_mm",
    "mri__C4-C5__original_shape_Maximum2DDiameterColumn",
    "vas_arm_baseline",
    "symptom_duration_months",
    "index_level=C5-C6",
]


@pytest.fixture(scope="module")
def sr() -> ShapResult:
    rng = np.random.default_rng(0)
    n = 109
    data = pd.DataFrame(rng.normal(size=(n, len(LONG_NAMES))), columns=LONG_NAMES)
    data.index = [f"patient-with-a-long-identifier-{i:04d}" for i in range(n)]
    return ShapResult(values=rng.normal(scale=0.5, size=data.shape), base_value=-0.7, data=data)


def _curves(rng: np.random.Generator) -> list[plots.Curve]:
    y = rng.integers(0, 2, 109)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 109), 0.01, 0.99)
    return [
        (m, y, p, f"{plots.MODEL_LABELS[m]}: AUC 0.78 [0.69, 0.86]")
        for m in ("xgboost", "logistic", "clinical_only")
    ]


@pytest.fixture(scope="module")
def figures(sr: ShapResult) -> dict[str, Figure]:
    """Every figure function's figure, drawn with long titles, names, patient id and note."""
    rng = np.random.default_rng(1)
    panels = [
        ("development: nested cross-validation, out-of-fold predictions (n=109 patients)", _curves(rng)),
        ("external validation cohort of the second centre (n=48 patients)", _curves(rng)),
    ]
    note = "7 of 212 variables were missing and set to development values: " + ", ".join(
        ["disc height C5-C6"] * 8
    )
    figs = {name: plots.performance_figure(name, panels) for name in plots.PANELS}
    figs |= {f"{name}, one panel": plots.performance_figure(name, panels[:1]) for name in plots.PANELS}
    figs |= {
        "shap_bar": plots.shap_bar_figure(sr, TARGET),
        "shap_bar_level": plots.shap_bar_grouped_figure(sr, TARGET, by="level"),
        "shap_bar_concept": plots.shap_bar_grouped_figure(sr, TARGET, by="concept"),
        "shap_bar_level_concept": plots.shap_bar_grouped_figure(sr, TARGET, by="level_concept"),
        "shap_beeswarm": plots.shap_beeswarm_figure(sr, TARGET),
        "shap_dependence": plots.shap_dependence_figure(sr, LONG_NAMES[0], TARGET),
        "waterfall": plots.waterfall_figure(
            plots.variable_rows(sr, 0), sr.base_value, TARGET, str(sr.data.index[0]), note
        ),
        "waterfall_grouped": plots.waterfall_figure(
            plots.grouped_rows(sr, 0), sr.base_value, TARGET, str(sr.data.index[0]), note
        ),
        # a patient without MRI (one bar for its imputed variables), the lump's share, the mean risk in the title
        "waterfall_no_mri": plots.waterfall_figure(
            plots.variable_rows(sr, 0, top=4, absent=["mri"]),
            sr.base_value,
            TARGET,
            str(sr.data.index[0]),
            note,
            0.234,
            "cross-validated probability",
        ),
        "waterfall_grouped_no_mri": plots.waterfall_figure(
            plots.grouped_rows(sr, 0, top=3, absent=["mri"]),
            sr.base_value,
            TARGET,
            str(sr.data.index[0]),
            note,
            0.234,
            "cross-validated probability",
        ),
    }
    return figs


def _drawn_texts(fig: Figure, renderer) -> list[tuple[str, Bbox]]:
    """(text, window extent) of every text drawn: titles, labels, legends, notes, annotations, and the tick labels
    inside the axis limits (an axis keeps labels of ticks beyond its limits that it does not draw)."""
    ticks = {
        id(label)
        for ax in fig.axes
        for axis in (ax.xaxis, ax.yaxis)
        for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks())
        for label in (tick.label1, tick.label2)
    }
    out = [
        (t.get_text(), t.get_window_extent(renderer))
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in ticks
    ]
    for ax in fig.axes:  # drawn tick labels and axis labels
        for axis in (ax.xaxis, ax.yaxis):
            box = axis.get_tightbbox(renderer)
            if box is not None:
                out.append((f"{axis.axis_name} axis of {ax.get_title()[:30] or ax.get_ylabel()[:30]}", box))
    return out


def test_no_text_leaves_its_figure(figures: dict[str, Figure]) -> None:
    problems = []
    for name, fig in figures.items():
        fig.canvas.draw()  # runs the layout engine, as savefig does
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        texts = _drawn_texts(fig, renderer)
        assert len(texts) >= 4, name  # title, axis label, both axes at least
        for text, e in texts:
            if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
                problems.append(f"{name}: {text[:50]!r} at {e.bounds} outside {box.bounds}")
    assert not problems, "\n".join(problems)


def test_wrapped_titles_keep_their_words(sr: ShapResult) -> None:
    fig = plots.shap_bar_figure(sr, TARGET)
    xlabel = fig.axes[0].get_xlabel()
    assert "\n" in xlabel and " ".join(xlabel.split()) == (
        "mean |SHAP value| (change in log-odds of accelerated adjacent segment degeneration)"
    )


@pytest.mark.parametrize(
    ("name", "css_width"),
    # the report's css widths (cdeg/report/sections.py): one performance panel 350 px, SHAP charts 545 px;
    # a PNG narrower than that would be enlarged and blurred
    [("roc, one panel", 350), ("shap_bar", 545), ("shap_beeswarm", 545)],
)
def test_figures_are_written_at_least_as_wide_as_the_report_shows_them(
    figures: dict[str, Figure], tmp_path, name: str, css_width: int
) -> None:
    from PIL import Image

    fig = figures[name]
    dpi = 120
    (png,) = plots.save(fig, tmp_path / "f", svg=False, dpi=dpi)
    width_px = Image.open(png).width
    assert width_px >= css_width
    # ... and not much wider: a figure drawn for a larger page shows its 8-9 pt text below 7 px on screen
    assert width_px / dpi * 72 <= 1.6 * css_width


def test_waterfall_svg_is_drawn_for_the_report_width_with_its_words_as_text(
    figures: dict[str, Figure], tmp_path
) -> None:
    """The waterfalls are SVG (vector: no blur at any width) whose words stay text; drawn for the report's 520 px,
    so that their 8 pt text shows at about 8 px."""
    import re

    (svg,) = plots.save(figures["waterfall_grouped"], tmp_path / "w", png=False, svg_text=True, tight=False)
    text = svg.read_text()
    width_pt = float(re.search(r'<svg[^>]* width="([0-9.]+)pt"', text).group(1))
    assert 520 * 0.9 <= width_pt <= 520 * 1.1
    assert "<text" in text and "Patient " in text and "log-odds" in text
    assert "sans-serif" in text  # a generic family last: viewers without DejaVu Sans still draw a sans font
