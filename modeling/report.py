"""Self-contained HTML reports (images inline as base64, no script, no network) for `cdeg fit` and `cdeg validate`."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdeg.modeling.plots import MODEL_LABELS

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}.note{color:#555;font-size:.92em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em}
code{background:#f4f4f4;padding:0 .2em}
"""


def esc(x: Any) -> str:
    return html.escape(str(x))


def img(path: str | Path, alt: str) -> str:
    """An <img> with the PNG inlined as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def page(title: str, body: Sequence[str]) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>{''.join(body)}</body></html>\n"
    )


def fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def metrics_rows(per_model: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m, s in per_model.items():
        if not s:
            continue
        rows.append(
            [
                MODEL_LABELS.get(m, m),
                f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
                fmt(s["brier"]),
                fmt(s["calibration_intercept"], 2),
                fmt(s["calibration_slope"], 2),
            ]
        )
    return rows


METRIC_HEADER = ["model", "AUC [95% CI]", "Brier", "calibration intercept", "calibration slope"]


def comparison_rows(comp: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, c in comp.items():
        a, b = name.split("_vs_")
        rows.append(
            [
                f"{MODEL_LABELS.get(a, a)} - {MODEL_LABELS.get(b, b)}",
                f"{c['auc_difference']:+.3f}",
                f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]",
                f"{c['p_value']:.3f}",
            ]
        )
    return rows


def verdict(comp: dict[str, dict[str, Any]], first: str = "xgboost", second: str = "logistic") -> str:
    """One honest sentence on the XGBoost vs logistic regression comparison."""
    c = comp.get(f"{first}_vs_{second}")
    if not c:
        return ""
    d, (lo, hi) = c["auc_difference"], c["ci"]
    a, b = MODEL_LABELS.get(first, first), MODEL_LABELS.get(second, second)
    if lo > 0:
        return f"{a} has a higher AUC than {b} (difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
    if hi < 0:
        return f"{a} has a LOWER AUC than {b} (difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})."
    return (
        f"No evidence that {a} discriminates better than {b}: AUC difference {d:+.3f} "
        f"(95% CI {lo:+.3f} to {hi:+.3f}, p = {c['p_value']:.2f}). With samples of this size the simpler "
        "model is the honest default."
    )


def figure_block(figs: dict[str, list[Path]], names: Sequence[tuple[str, str]]) -> str:
    parts = []
    for key, caption in names:
        if key in figs:
            png = next(p for p in figs[key] if p.suffix == ".png")
            parts.append(f"<h3>{esc(caption)}</h3>{img(png, caption)}")
    return "".join(parts)
