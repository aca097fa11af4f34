"""Figures: ROC, calibration, decision curve, SHAP bar / beeswarm / dependence / waterfall, and grouped SHAP.

Built with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch, no display), and
written atomically as PNG and SVG (the per-patient waterfalls as SVG only, their words as text). Every axis
says its unit; SHAP axes say "log-odds".

Layout: figures are sized for the width the study report shows them at (``css_width`` of
:func:`cdeg.report.html.figure`: 350 px for one performance panel, 545 px for the SHAP charts, 520 px for a
waterfall), so that one point of font is about one pixel on screen and no text is smaller than 8 pt. Long titles,
axis labels and variable names are wrapped (:func:`wrap`) to the width they have; the layout engine (constrained
layout, or fixed margins for the per-patient waterfalls) then keeps every text inside the figure, and the
PNG is cut to the drawn artists (``bbox_inches="tight"``) as a last guard. ``tests/test_plot_layout.py``
checks that no text leaves the figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from cdeg.modeling import metrics as M
from cdeg.modeling.explain import ShapResult, grouped_importance, grouped_shap, modality_of
from cdeg.modeling.groups import CLINICAL, base_variable, group_of, without_age_z
from cdeg.modeling.names import describe
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cdeg.cohort import MODALITY_WORDS
from cdeg.io import atomic_path

MODEL_LABELS: dict[str, str] = {
    "xgboost": "XGBoost",
    "logistic": "elastic-net logistic",
    "clinical_only": "clinical-only logistic",
}
MODEL_COLORS: dict[str, str] = {"xgboost": "#1f77b4", "logistic": "#d62728", "clinical_only": "#2ca02c"}
#: Colours of curves that are not a model's (the recalibrated predictions of `cdeg validate --recalibrate`).
CURVE_COLORS: dict[str, str] = {"recalibrated": "#ff7f0e"}
#: One curve: (model name, outcomes, probabilities, legend text).
Curve = tuple[str, np.ndarray, np.ndarray, str]
#: Font sizes (pt): axis labels and tick labels of variable names; small print (legends, notes).
FONT = 9
SMALL = 8
#: Width (inches) of one performance panel, of the SHAP charts, of a waterfall: the report's css widths / 72 px.
PANEL_WIDTH = 4.8
SHAP_WIDTH = 7.4
WATERFALL_WIDTH = 7.2
#: Average glyph width of DejaVu Sans in em, for wrapping text to a width in inches.
_EM_PER_CHAR = 0.6


def wrap(text: str, width_in: float, fontsize: float = FONT) -> str:
    """`text` wrapped into lines that fit `width_in` inches at `fontsize` points (existing line breaks kept)."""
    chars = max(10, int(width_in * 72 / (_EM_PER_CHAR * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False) for line in text.split("\n"))


def new_figure(width: float = 6.0, height: float = 5.0, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(
    fig: Figure,
    stem: str | Path,
    svg: bool = True,
    dpi: int = 120,
    tight: bool = True,
    png: bool = True,
    svg_text: bool = False,
) -> list[Path]:
    """Write ``stem.png`` and/or ``stem.svg`` atomically; return the paths.

    `tight` cuts the image to its drawn artists, so a text the layout could not place is never cut off (costs
    one more draw; the per-patient waterfalls use fixed margins instead). `svg_text` keeps the SVG's words as
    text (the viewer's sans-serif font draws them; searchable, copyable) instead of glyph outlines.
    """
    stem = Path(stem)
    out = []
    extra = {"bbox_inches": "tight", "pad_inches": 0.04} if tight else {}
    for fmt in [f for f, on in (("png", png), ("svg", svg)) if on]:
        path = stem.with_suffix(f".{fmt}")
        # No date, and SVG element ids from a fixed salt: the same figure gives the same bytes on a re-run.
        meta = {"Date": None} if fmt == "svg" else {}
        rc = {"svg.hashsalt": "cdeg", "svg.fonttype": "none" if svg_text else "path"}
        with atomic_path(path) as tmp, matplotlib.rc_context(rc):
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta, **extra)
        out.append(path)
    return out


# --- performance --------------------------------------------------------------------------------------------


def roc_panel(ax, curves: Sequence[Curve], title: str) -> None:
    from sklearn.metrics import roc_curve

    for model, y, p, legend in curves:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=MODEL_COLORS.get(model), lw=2, label=legend)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
    _panel_text(ax, title, "1 - specificity (false-positive rate)", "sensitivity (true-positive rate)")
    ax.legend(loc="lower right", fontsize=SMALL)


def calibration_panel(ax, curves: Sequence[Curve], title: str, bins: int = 5) -> None:
    grid = np.linspace(0.005, 0.995, 199)
    for model, y, p, legend in curves:
        color = MODEL_COLORS.get(model, CURVE_COLORS.get(model))
        pred, obs, _ = M.calibration_curve(y, p, bins=bins)
        ax.plot(pred, obs, "o", color=color, ms=6)
        a, b = _logistic_recalibration(y, p)
        lg = np.log(grid / (1 - grid))
        ax.plot(grid, _expit(np.clip(a + b * lg, -50, 50)), color=color, lw=1.5, label=legend)
        k = list(MODEL_COLORS).index(model) if model in MODEL_COLORS else len(MODEL_COLORS)
        ax.plot(
            p, np.full(len(p), -0.04 + 0.012 * k), "|", color=color, ms=5, alpha=0.5
        )  # rug of predictions
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="ideal")
    ax.set(xlim=(0, 1), ylim=(-0.05, 1.0))
    _panel_text(ax, title, "predicted probability", "observed frequency")
    ax.legend(loc="upper left", fontsize=SMALL)
    ax.text(
        0.98,
        0.98,
        f"dots: {bins} equal-size groups\nlines: logistic recalibration",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=SMALL - 1,
        color="dimgrey",
    )


def _panel_text(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title and axis labels of a performance panel, wrapped to the panel's width."""
    ax.set_title(wrap(title, PANEL_WIDTH - 0.8, 10), fontsize=10)
    ax.set_xlabel(wrap(xlabel, PANEL_WIDTH - 0.8, FONT), fontsize=FONT)
    ax.set_ylabel(wrap(ylabel, PANEL_WIDTH - 0.8, FONT), fontsize=FONT)
    ax.tick_params(labelsize=SMALL)


def _logistic_recalibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    lp = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    X = np.column_stack([np.ones(len(y)), lp])
    beta = M._logistic_fit(X, np.asarray(y, float), np.zeros(len(y)))
    return float(beta[0]), float(beta[1])


def recalibration_figure(
    y: np.ndarray, p: np.ndarray, p_new: np.ndarray, model: str, method: str, stem: str | Path
) -> list[Path]:
    """One calibration panel of `model` on the external patients: its original probabilities `p` and the
    recalibrated ones `p_new` (cross-validated within the cohort); written as ``stem.png`` and ``.svg``."""
    name = MODEL_LABELS.get(model, model)
    curves = [
        (model, np.asarray(y, int), np.asarray(p, float), f"{name}: original"),
        (
            "recalibrated",
            np.asarray(y, int),
            np.asarray(p_new, float),
            f"{name}: {method} recalibration (CV)",
        ),
    ]
    fig, axes = new_figure(PANEL_WIDTH, PANEL_WIDTH + 0.3)
    calibration_panel(axes[0], curves, f"external validation (n={len(y)}): before and after recalibration")
    return save(fig, stem)


def decision_panel(ax, curves: Sequence[Curve], title: str, max_threshold: float = 0.6) -> None:
    t = np.linspace(0.01, max_threshold, 120)
    y0 = curves[0][1]
    nb_all = M.net_benefit_all(y0, t)
    ax.plot(t, nb_all, color="black", lw=1, label="treat all")
    ax.axhline(0, color="grey", lw=1, ls="--", label="treat none")
    top = float(np.mean(y0))
    for model, y, p, legend in curves:
        ax.plot(t, M.net_benefit(y, p, t), color=MODEL_COLORS.get(model), lw=2, label=legend)
    ax.set(xlim=(0, max_threshold), ylim=(-0.05, max(top, 0.05) * 1.1))
    _panel_text(ax, title, "threshold probability", "net benefit")
    ax.legend(loc="upper right", fontsize=SMALL)


def performance_figures(
    curves_by_panel: Sequence[tuple[str, Sequence[Curve]]], out_dir: Path, svg: bool = True
) -> dict[str, list[Path]]:
    """ROC, calibration and decision-curve figures, one panel per (title, curves) entry (side by side)."""
    return {name: save(performance_figure(name, curves_by_panel), out_dir / name, svg=svg) for name in PANELS}


#: The performance figures and the function drawing one panel of each.
PANELS = {"roc": roc_panel, "calibration": calibration_panel, "decision_curve": decision_panel}


def performance_figure(name: str, curves_by_panel: Sequence[tuple[str, Sequence[Curve]]]) -> Figure:
    """The figure `name` of :data:`PANELS`, one panel per (title, curves) entry, side by side."""
    fig, axes = new_figure(PANEL_WIDTH, PANEL_WIDTH + 0.3, ncols=len(curves_by_panel))
    for ax, (title, curves) in zip(axes, curves_by_panel, strict=True):
        PANELS[name](ax, curves, title)
    return fig


# --- SHAP ---------------------------------------------------------------------------------------------------

#: Share of a SHAP chart's width given to the variable names on the left.
_NAME_SHARE = 0.42
#: Words of each grouping in titles.
GROUPING_WORDS: dict[str, str] = {
    "level": "level",
    "concept": "kind of finding",
    "level_concept": "level and kind of finding",
}


def _target_words(target: str) -> str:
    return target.replace("_", " ")


def _names(texts: Sequence[str], width_in: float) -> tuple[list[str], int]:
    """Variable names wrapped to `width_in` inches at :data:`FONT`, and the number of lines they take."""
    wrapped = [wrap(t, width_in) for t in texts]
    return wrapped, sum(w.count("\n") + 1 for w in wrapped)


def _bar_chart(importance: pd.Series, texts: list[str], title: str, xlabel: str) -> Figure:
    """Horizontal bars of `importance` (largest on top) named by `texts`."""
    names, lines = _names(texts[::-1], _NAME_SHARE * SHAP_WIDTH)
    fig, (ax,) = new_figure(SHAP_WIDTH, 0.2 * lines + 0.12 * len(names) + 1.5)
    ax.barh(range(len(names)), importance.to_numpy()[::-1], color="#1f77b4")
    ax.set_yticks(range(len(names)), names, fontsize=FONT)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(wrap(xlabel, (1 - _NAME_SHARE) * SHAP_WIDTH - 0.2), fontsize=FONT)
    ax.set_title(wrap(title, SHAP_WIDTH - 0.3, 10), fontsize=10)
    ax.tick_params(axis="x", labelsize=SMALL)
    return fig


def shap_bar(sr: ShapResult, stem: Path, target: str, top: int = 15, svg: bool = True) -> list[Path]:
    """Mean |SHAP| of the `top` variables."""
    return save(shap_bar_figure(sr, target, top), stem, svg=svg)


def shap_bar_figure(sr: ShapResult, target: str, top: int = 15) -> Figure:
    imp = sr.importance()
    shown = imp.iloc[:top]
    return _bar_chart(
        shown,
        [describe(c).label for c in shown.index],
        f"Most influential variables ({len(shown)} of {len(imp)})",
        f"mean |SHAP value| (change in log-odds of {_target_words(target)})",
    )


def shap_bar_grouped(
    sr: ShapResult, stem: Path, target: str, by: str = "level", top: int = 15, svg: bool = True
) -> list[Path]:
    """Mean |SHAP| of groups of variables (:mod:`cdeg.modeling.groups`; `by` "level", "concept" or
    "level_concept"): each patient's SHAP values summed per group, then averaged in absolute value."""
    return save(shap_bar_grouped_figure(sr, target, by, top), stem, svg=svg)


def shap_bar_grouped_figure(sr: ShapResult, target: str, by: str = "level", top: int = 15) -> Figure:
    imp = grouped_importance(sr, by)
    shown = imp.iloc[:top]
    return _bar_chart(
        shown,
        list(shown.index),
        f"Contributions summed per {GROUPING_WORDS[by]} ({len(shown)} of {len(imp)} groups)",
        f"mean |sum of the group's SHAP values| (change in log-odds of {_target_words(target)})",
    )


def shap_beeswarm(sr: ShapResult, stem: Path, target: str, top: int = 15, svg: bool = True) -> list[Path]:
    """SHAP value of each patient for the `top` variables, coloured by the variable's value."""
    return save(shap_beeswarm_figure(sr, target, top), stem, svg=svg)


def shap_beeswarm_figure(sr: ShapResult, target: str, top: int = 15) -> Figure:
    imp = sr.importance()
    cols = list(imp.index[:top])
    rng = np.random.default_rng(0)  # jitter only
    names, lines = _names([describe(c).label for c in reversed(cols)], _NAME_SHARE * SHAP_WIDTH)
    fig, (ax,) = new_figure(SHAP_WIDTH, 0.2 * lines + 0.15 * len(cols) + 1.7)
    sc = None
    for row, c in enumerate(reversed(cols)):
        j = sr.feature_names.index(c)
        v = sr.values[:, j]
        x = sr.data[c].to_numpy(dtype=float)
        lo, hi = np.nanpercentile(x, 5), np.nanpercentile(x, 95)
        colour = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else np.full(len(x), 0.5)
        sc = ax.scatter(
            v,
            row + rng.uniform(-0.3, 0.3, len(v)),
            c=colour,
            cmap="coolwarm",
            s=10,
            vmin=0,
            vmax=1,
            linewidths=0,
        )
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(cols)), names, fontsize=FONT)
    xlabel = f"SHAP value (change in log-odds of {_target_words(target)}; > 0 raises the probability)"
    ax.set_xlabel(wrap(xlabel, (1 - _NAME_SHARE) * SHAP_WIDTH - 0.8), fontsize=FONT)
    ax.set_title("Each dot is one patient", fontsize=10)
    ax.tick_params(axis="x", labelsize=SMALL)
    if sc is not None:
        cb = fig.colorbar(sc, ax=ax, ticks=[0, 1], aspect=40)
        cb.ax.set_yticklabels(["low", "high"], fontsize=SMALL)
        cb.set_label("variable value", fontsize=SMALL)
    return fig


def shap_dependence(sr: ShapResult, feature: str, stem: Path, target: str, svg: bool = True) -> list[Path]:
    """SHAP value of `feature` against its value, one dot per patient."""
    return save(shap_dependence_figure(sr, feature, target), stem, svg=svg)


def shap_dependence_figure(sr: ShapResult, feature: str, target: str) -> Figure:
    j = sr.feature_names.index(feature)
    width = 5.5
    fig, (ax,) = new_figure(width, 4.4)
    ax.scatter(sr.data[feature].to_numpy(dtype=float), sr.values[:, j], s=14, color="#1f77b4", alpha=0.8)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xlabel(wrap(describe(feature).label, width - 1.0), fontsize=FONT)
    ax.set_ylabel(wrap(f"SHAP value (log-odds of {_target_words(target)})", 3.6), fontsize=FONT)
    ax.set_title(wrap(describe(feature).text, width - 0.3, 10), fontsize=10)
    ax.tick_params(labelsize=SMALL)
    return fig


def shap_waterfall(
    sr: ShapResult,
    i: int,
    stem: Path,
    target: str,
    patient: str,
    top: int = 10,
    note: str = "",
    absent: Sequence[str] = (),
    what: str = "predicted probability",
) -> list[Path]:
    """One patient's explanation: bars move the log-odds from the base value to this patient's value.

    `absent`: modalities the patient has no scan of (:func:`cdeg.modeling.explain.absent_modalities`); their
    imputed variables are one bar. `what` names the probability in the title."""
    fig = waterfall_figure(
        variable_rows(sr, i, top, absent), sr.base_value, target, patient, note, sr.mean_risk, what
    )
    # SVG with the words as text: a third of a PNG's drawing time (Agg rasterises every glyph; a study draws two
    # waterfalls per patient and target) and a third of its size in the report.
    return save(fig, stem, png=False, svg_text=True, tight=False)


def _present(sr: ShapResult, absent: Sequence[str]) -> tuple[ShapResult, list[tuple[str, np.ndarray]]]:
    """`sr` without the variables of the `absent` modalities, one bar per absent modality ("no MRI: imputed
    values (12 variables)", the sum of their SHAP values) per patient, as (text, column indices) pairs."""
    mods = [modality_of(c) for c in sr.feature_names]
    keep = np.array([m not in absent for m in mods], dtype=bool)
    lines = []
    for m in absent:
        cols = np.flatnonzero([x == m for x in mods])
        if len(cols):
            lines.append((f"no {MODALITY_WORDS.get(m, m)}: imputed values ({len(cols)} variables)", cols))
    sub = ShapResult(sr.values[:, keep], sr.base_value, sr.data.loc[:, keep], sr.mean_risk)
    return sub, lines


def _with_lump(
    named: list[tuple[str, float]], others: np.ndarray, what: str, absent_rows: list[tuple[str, float]]
) -> list[tuple[str, float]]:
    """The named bars and the absent-scan bars by size, then the lump of the `others` (their values) with its
    share of the total effect: the sum of the sizes of all bars before lumping."""
    rows = sorted(named + absent_rows, key=lambda r: -abs(r[1]))
    if len(others):
        total = sum(abs(w) for _, w in rows) + float(np.abs(others).sum())
        share = float(np.abs(others).sum()) / total if total > 0 else 0.0
        rows.append((f"{len(others):,} other {what} ({share:.0%} of the total effect)", float(others.sum())))
    return rows


def variable_rows(
    sr: ShapResult, i: int, top: int = 10, absent: Sequence[str] = ()
) -> list[tuple[str, float]]:
    """Waterfall bars of patient `i`: the `top` variables by |SHAP| ("disc height C5-C6 = 5.1 mm"), one bar per
    modality of `absent` (the patient has no such scan: all its variables are imputed), and the rest, whose
    label gives their share of the total effect (sum of the |SHAP| of the bars before lumping)."""
    present, lines = _present(sr, absent)
    v = present.values[i]
    order = np.argsort(-np.abs(v), kind="stable")
    named: list[tuple[str, float]] = []
    for j in order[:top]:
        d = describe(present.feature_names[j])
        value = float(present.data.iloc[i, j])
        unit = f" {d.unit}" if d.unit and d.unit != "0-100" else ""
        named.append((f"{d.text} = {_fmt(value)}{unit}", float(v[j])))
    absent_rows = [(text, float(sr.values[i, cols].sum())) for text, cols in lines]
    return _with_lump(named, v[order[top:]], "variables", absent_rows)


def shap_waterfall_grouped(
    sr: ShapResult,
    i: int,
    stem: Path,
    target: str,
    patient: str,
    top: int = 8,
    note: str = "",
    absent: Sequence[str] = (),
    what: str = "predicted probability",
) -> list[Path]:
    """One patient's explanation per level: each bar is the sum of the SHAP values of one level's variables
    ("disc C5-C6: height, signal (below the age norm)"), from the base value to this patient's log-odds."""
    fig = waterfall_figure(
        grouped_rows(sr, i, top, absent), sr.base_value, target, patient, note, sr.mean_risk, what
    )
    return save(fig, stem, png=False, svg_text=True, tight=False)  # as shap_waterfall


def grouped_rows(sr: ShapResult, i: int, top: int = 8, absent: Sequence[str] = ()) -> list[tuple[str, float]]:
    """Waterfall bars of patient `i`: the `top` levels by |summed SHAP| (:func:`group_words`), one bar per
    modality of `absent` (no such scan), and the rest with their share of the total effect."""
    present, lines = _present(sr, absent)
    g = grouped_shap(present, "level")
    v = g.iloc[i].to_numpy(dtype=float)
    order = np.argsort(-np.abs(v), kind="stable")
    named = [(group_words(present, i, str(g.columns[k])), float(v[k])) for k in order[:top]]
    absent_rows = [(text, float(sr.values[i, cols].sum())) for text, cols in lines]
    return _with_lump(named, v[order[top:]], "groups", absent_rows)


def group_words(sr: ShapResult, i: int, level: str, most: int = 3) -> str:
    """A level's bar in words for patient `i`: the level and its kinds of finding by size of contribution
    ("disc C5-C6: height, signal (below the age norm)"); clinical variables are named ("clinical: age, NDI")."""
    members = [j for j, c in enumerate(sr.feature_names) if group_of(c).level == level]
    members.sort(key=lambda j: -abs(sr.values[i, j]))
    if level == CLINICAL:
        what = list(dict.fromkeys(describe(base_variable(sr.feature_names[j])).text for j in members))
        return f"{level}: {', '.join(what[:most])}{', ...' if len(what) > most else ''}"
    kinds = list(dict.fromkeys(group_of(without_age_z(sr.feature_names[j])).concept for j in members))
    z = [
        float(sr.data.iloc[i, j]) for j in members if group_of(sr.feature_names[j]).concept == "age-adjusted"
    ]
    norm = ""
    if z and np.isfinite(z[0]):  # the largest age-adjusted contribution says where the patient stands
        norm = " (below the age norm)" if z[0] < 0 else " (above the age norm)"
    return f"{level}: {', '.join(kinds[:most])}{', ...' if len(kinds) > most else ''}{norm}"


def waterfall_title(patient: str, total: float, mean_risk: float | None, what: str) -> str:
    """The words above a waterfall: this patient's probability, and the average patient's as the mean predicted
    risk of the model's training patients (the expit of the base value, a mean log-odds, is not that mean)."""
    average = (
        f"Average patient: {mean_risk:.0%}, the mean predicted risk of the model's training patients."
        if mean_risk is not None
        else ""
    )
    return (
        f"Patient {patient}: {what} {_expit(total):.0%} (log-odds {total:+.2f}). {average} "
        "Red raises, blue lowers the probability."
    ).replace("  ", " ")


def waterfall_figure(
    rows: list[tuple[str, float]],
    base: float,
    target: str,
    patient: str,
    note: str,
    mean_risk: float | None = None,
    what: str = "predicted probability",
) -> Figure:
    """Draw waterfall `rows` (text, log-odds contribution; largest first) from `base` to base + their sum.

    `base` is the SHAP base value, the model's average log-odds over its training patients, where the bars start;
    `mean_risk` the mean predicted probability of those patients (the "average patient" of the title)."""
    rows = rows[::-1]  # drawn bottom-up: least important first, so the top bar ends at the patient's value
    total = base + float(sum(w for _, w in rows))
    lefts = base + np.concatenate([[0.0], np.cumsum([w for _, w in rows])[:-1]])
    names, lines = _names([r[0] for r in rows], _NAME_SHARE * WATERFALL_WIDTH - 0.15)
    title = wrap(waterfall_title(patient, total, mean_risk, what), WATERFALL_WIDTH - 0.3, FONT)
    xlabel = wrap(
        f"log-odds of {_target_words(target)} (dotted: base value {base:+.2f}, the model's average log-odds over "
        "its training patients; dashed: this patient; +1 multiplies the odds by 2.7)",
        (1 - _NAME_SHARE) * WATERFALL_WIDTH - 0.3,
        SMALL,
    )
    note = "\n".join(textwrap.wrap(note, int(WATERFALL_WIDTH * 72 / (_EM_PER_CHAR * SMALL)) - 2)[:3])
    # Fixed margins instead of a layout engine (much faster for a card per patient), computed from the lines
    # of wrapped text above and below the axes.
    top_in = 0.25 + 0.17 * (title.count("\n") + 1)
    bottom_in = 0.4 + 0.15 * (xlabel.count("\n") + 1) + (0.15 * (note.count("\n") + 1) + 0.1 if note else 0)
    height = top_in + bottom_in + 0.17 * lines + 0.14 * len(rows) + 0.2
    fig = Figure(figsize=(WATERFALL_WIDTH, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=_NAME_SHARE, right=0.97, top=1 - top_in / height, bottom=bottom_in / height)
    ax = fig.add_subplot(1, 1, 1)
    for k, ((_, w), left) in enumerate(zip(rows, lefts, strict=True)):
        ax.barh(k, w, left=left, color="#d62728" if w > 0 else "#1f77b4", height=0.6)
        ax.annotate(
            f"{w:+.2f}" if abs(w) >= 0.01 else f"{w:+.3f}",
            (left + w, k),
            xytext=(3 if w >= 0 else -3, 0),
            textcoords="offset points",
            va="center",
            ha="left" if w >= 0 else "right",
            fontsize=SMALL,
        )
    ax.set_yticks(range(len(rows)), names, fontsize=SMALL)
    ends = np.concatenate([lefts, lefts + [w for _, w in rows], [base, total]])
    span = max(float(ends.max() - ends.min()), 0.05)
    ax.set_xlim(ends.min() - 0.22 * span, ends.max() + 0.22 * span)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.axvline(base, color="grey", ls=":", lw=1)
    ax.axvline(total, color="black", ls="--", lw=1)
    ax.tick_params(axis="x", labelsize=SMALL)
    ax.set_xlabel(xlabel, fontsize=SMALL)
    ax.set_title(title, fontsize=FONT, loc="left", x=-_NAME_SHARE / (0.97 - _NAME_SHARE) + 0.01)
    if note:
        fig.text(0.01, 0.01, note, fontsize=SMALL, color="dimgrey", ha="left", va="bottom")
    return fig


def _expit(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(x, float)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "missing"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
