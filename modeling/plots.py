"""Figures: ROC, calibration, decision curve, SHAP bar / beeswarm / dependence / waterfall.

Built with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch, no display), and
written atomically as PNG (and SVG where cheap). Every axis says its unit; SHAP axes say "log-odds".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from cdeg.modeling import metrics as M
from cdeg.modeling.explain import ShapResult
from cdeg.modeling.names import describe
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cdeg.io import atomic_path

MODEL_LABELS: dict[str, str] = {
    "xgboost": "XGBoost",
    "logistic": "elastic-net logistic",
    "clinical_only": "clinical-only logistic",
}
MODEL_COLORS: dict[str, str] = {"xgboost": "#1f77b4", "logistic": "#d62728", "clinical_only": "#2ca02c"}
#: One curve: (model name, outcomes, probabilities, legend text).
Curve = tuple[str, np.ndarray, np.ndarray, str]


def new_figure(width: float = 6.0, height: float = 5.0, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save(fig: Figure, stem: str | Path, svg: bool = True, dpi: int = 120) -> list[Path]:
    """Write ``stem.png`` (and ``stem.svg``) atomically; return the paths."""
    stem = Path(stem)
    out = []
    for fmt in ("png", "svg") if svg else ("png",):
        path = stem.with_suffix(f".{fmt}")
        # No date, and SVG element ids from a fixed salt: the same figure gives the same bytes on a re-run.
        meta = {"Date": None} if fmt == "svg" else {}
        with atomic_path(path) as tmp, matplotlib.rc_context({"svg.hashsalt": "cdeg"}):
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
        out.append(path)
    return out


# --- performance --------------------------------------------------------------------------------------------


def roc_panel(ax, curves: Sequence[Curve], title: str) -> None:
    from sklearn.metrics import roc_curve

    for model, y, p, legend in curves:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=MODEL_COLORS.get(model), lw=2, label=legend)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set(
        xlabel="1 - specificity (false-positive rate)",
        ylabel="sensitivity (true-positive rate)",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
    )
    ax.legend(loc="lower right", fontsize=8)


def calibration_panel(ax, curves: Sequence[Curve], title: str, bins: int = 5) -> None:
    grid = np.linspace(0.005, 0.995, 199)
    for model, y, p, legend in curves:
        color = MODEL_COLORS.get(model)
        pred, obs, _ = M.calibration_curve(y, p, bins=bins)
        ax.plot(pred, obs, "o", color=color, ms=6)
        a, b = _logistic_recalibration(y, p)
        lg = np.log(grid / (1 - grid))
        ax.plot(grid, _expit(np.clip(a + b * lg, -50, 50)), color=color, lw=1.5, label=legend)
        k = list(MODEL_COLORS).index(model) if model in MODEL_COLORS else 0
        ax.plot(
            p, np.full(len(p), -0.04 + 0.012 * k), "|", color=color, ms=5, alpha=0.5
        )  # rug of predictions
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="ideal")
    ax.set(
        xlabel="predicted probability",
        ylabel="observed frequency",
        title=title,
        xlim=(0, 1),
        ylim=(-0.05, 1.0),
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.text(
        0.98,
        0.98,
        f"dots: {bins} equal-size groups\nlines: logistic recalibration",
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=7,
        color="dimgrey",
    )


def _logistic_recalibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    lp = np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))
    X = np.column_stack([np.ones(len(y)), lp])
    beta = M._logistic_fit(X, np.asarray(y, float), np.zeros(len(y)))
    return float(beta[0]), float(beta[1])


def decision_panel(ax, curves: Sequence[Curve], title: str, max_threshold: float = 0.6) -> None:
    t = np.linspace(0.01, max_threshold, 120)
    y0 = curves[0][1]
    nb_all = M.net_benefit_all(y0, t)
    ax.plot(t, nb_all, color="black", lw=1, label="treat all")
    ax.axhline(0, color="grey", lw=1, ls="--", label="treat none")
    top = float(np.mean(y0))
    for model, y, p, legend in curves:
        ax.plot(t, M.net_benefit(y, p, t), color=MODEL_COLORS.get(model), lw=2, label=legend)
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        title=title,
        xlim=(0, max_threshold),
        ylim=(-0.05, max(top, 0.05) * 1.1),
    )
    ax.legend(loc="upper right", fontsize=8)


def performance_figures(
    curves_by_panel: Sequence[tuple[str, Sequence[Curve]]], out_dir: Path, svg: bool = True
) -> dict[str, list[Path]]:
    """ROC, calibration and decision-curve figures, one panel per (title, curves) entry (side by side)."""
    out: dict[str, list[Path]] = {}
    n = len(curves_by_panel)
    for name, panel in (
        ("roc", roc_panel),
        ("calibration", calibration_panel),
        ("decision_curve", decision_panel),
    ):
        fig, axes = new_figure(5.2, 5.0, ncols=n)
        for ax, (title, curves) in zip(axes, curves_by_panel, strict=True):
            panel(ax, curves, title)
        out[name] = save(fig, out_dir / name, svg=svg)
    return out


# --- SHAP ---------------------------------------------------------------------------------------------------


def _target_words(target: str) -> str:
    return target.replace("_", " ")


def shap_bar(sr: ShapResult, stem: Path, target: str, top: int = 15, svg: bool = True) -> list[Path]:
    imp = sr.importance()
    shown = imp.iloc[:top][::-1]
    fig, (ax,) = new_figure(8, 0.35 * len(shown) + 1.6)
    ax.barh([describe(c).label for c in shown.index], shown.to_numpy(), color="#1f77b4")
    ax.set(
        xlabel=f"mean |SHAP value| (change in log-odds of {_target_words(target)})",
        title=f"Most influential variables ({min(top, len(imp))} of {len(imp)})",
    )
    ax.tick_params(axis="y", labelsize=8)
    return save(fig, stem, svg=svg)


def shap_beeswarm(sr: ShapResult, stem: Path, target: str, top: int = 15, svg: bool = True) -> list[Path]:
    imp = sr.importance()
    cols = list(imp.index[:top])
    rng = np.random.default_rng(0)  # jitter only
    fig, (ax,) = new_figure(8.5, 0.4 * len(cols) + 1.8)
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
    ax.set_yticks(range(len(cols)), [describe(c).label for c in reversed(cols)], fontsize=8)
    ax.set(
        xlabel=f"SHAP value (change in log-odds of {_target_words(target)}; > 0 raises the probability)",
        title="Each dot is one patient",
    )
    if sc is not None:
        cb = fig.colorbar(sc, ax=ax, ticks=[0, 1], aspect=40)
        cb.ax.set_yticklabels(["low", "high"])
        cb.set_label("variable value")
    return save(fig, stem, svg=svg)


def shap_dependence(sr: ShapResult, feature: str, stem: Path, target: str, svg: bool = True) -> list[Path]:
    j = sr.feature_names.index(feature)
    fig, (ax,) = new_figure(5.5, 4.2)
    ax.scatter(sr.data[feature].to_numpy(dtype=float), sr.values[:, j], s=14, color="#1f77b4", alpha=0.8)
    ax.axhline(0, color="grey", lw=1)
    ax.set(
        xlabel=describe(feature).label,
        ylabel=f"SHAP value (log-odds of {_target_words(target)})",
        title=describe(feature).text,
    )
    return save(fig, stem, svg=svg)


def shap_waterfall(
    sr: ShapResult, i: int, stem: Path, target: str, patient: str, top: int = 10, note: str = ""
) -> list[Path]:
    """One patient's explanation: bars move the log-odds from the average patient to this patient's value."""
    import textwrap

    v = sr.values[i]
    order = np.argsort(-np.abs(v), kind="stable")
    shown = order[:top]
    rows: list[tuple[str, float]] = []
    for j in shown:
        d = describe(sr.feature_names[j])
        value = float(sr.data.iloc[i, j])
        unit = f" {d.unit}" if d.unit and d.unit != "0-100" else ""
        rows.append((f"{d.text} = {_fmt(value)}{unit}", float(v[j])))
    if len(order) > top:
        rows.append((f"{len(order) - top} other variables", float(v[order[top:]].sum())))
    rows = rows[::-1]  # drawn bottom-up: least important first, so the top bar ends at the patient's value
    base = sr.base_value
    total = base + float(v.sum())
    lefts = base + np.concatenate([[0.0], np.cumsum([w for _, w in rows])[:-1]])
    height = 0.42 * len(rows) + 2.4
    fig = Figure(figsize=(10, height))
    FigureCanvasAgg(fig)
    # Fixed margins instead of a layout engine: much faster, and long clinical labels always fit on the left.
    fig.subplots_adjust(left=0.42, right=0.95, top=1 - 0.9 / height, bottom=(0.95 if note else 0.6) / height)
    ax = fig.add_subplot(1, 1, 1)
    for k, ((_, w), left) in enumerate(zip(rows, lefts, strict=True)):
        ax.barh(k, w, left=left, color="#d62728" if w > 0 else "#1f77b4", height=0.6)
        ax.annotate(
            f"{w:+.2f}" if abs(w) >= 0.01 else f"{w:+.3f}",
            (left + w, k),
            xytext=(4 if w >= 0 else -4, 0),
            textcoords="offset points",
            va="center",
            ha="left" if w >= 0 else "right",
            fontsize=8,
        )
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ends = np.concatenate([lefts, lefts + [w for _, w in rows], [base, total]])
    span = max(float(ends.max() - ends.min()), 0.05)
    ax.set_xlim(ends.min() - 0.18 * span, ends.max() + 0.18 * span)
    ax.axvline(base, color="grey", ls=":", lw=1)
    ax.axvline(total, color="black", ls="--", lw=1)
    ax.set_xlabel(
        f"log-odds of {_target_words(target)} (dotted: average patient, dashed: this patient; "
        "+1 multiplies the odds by 2.7)",
        fontsize=8,
    )
    ax.set_title(
        f"Patient {patient}: predicted probability {_expit(total):.0%} (log-odds {total:+.2f}); average patient "
        f"{_expit(base):.0%} (log-odds {base:+.2f})\nred raises, blue lowers the probability",
        fontsize=9,
    )
    if note:
        fig.text(
            0.01,
            0.01,
            "\n".join(textwrap.wrap(note, 180)[:2]),
            fontsize=7,
            color="dimgrey",
            ha="left",
            va="bottom",
        )
    return save(fig, stem, svg=False, dpi=90)


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
