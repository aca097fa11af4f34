"""Performance of a validated model by subgroup: age band, sex and index level (TRIPOD+AI item 23a).

A model that transports in the whole external cohort can still fail in part of it, above all where the
external cohort lies outside the development range (a population study's patients over 65 against a surgical
cohort of 18-65). Per subgroup: patients, events, the AUC with its DeLong CI (where both outcomes occur at
least twice), and the mean predicted risk beside the observed share with the outcome, whose difference is
calibration-in-the-large within the subgroup.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Lower edges of the age bands (years); the last band is open.
AGE_BANDS: tuple[int, ...] = (0, 40, 50, 60, 66)
#: Start of the group name of the patients outside the development age range.
OUTSIDE = "outside the development range"
#: Fewest patients of each outcome for a subgroup AUC.
MIN_PER_CLASS = 2


def age_band(age: float, edges: tuple[int, ...] = AGE_BANDS) -> str | None:
    """The band of `age` ("<40", "40-49", ..., "66+"); None when missing."""
    if age is None or not np.isfinite(age):
        return None
    i = int(np.searchsorted(edges, age, side="right")) - 1
    if i == 0:
        return f"<{edges[1]}"
    if i == len(edges) - 1:
        return f"{edges[-1]}+"
    return f"{edges[i]}-{edges[i + 1] - 1}"


def subgroup_table(
    y: np.ndarray,
    p: np.ndarray,
    groups: dict[str, pd.Series],
    ages: pd.Series | None = None,
    development_ages: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """One row per (variable, group) of `groups` (variable -> group label per patient, aligned with y and p);
    with `ages` and `development_ages` (min, max), one more row for the patients outside that age range."""
    from cdeg.modeling import metrics as M

    rows: list[dict[str, Any]] = []
    y, p = np.asarray(y, int), np.asarray(p, float)
    for variable, labels in groups.items():
        lab = labels.to_numpy(dtype=object)
        present = {g for g in lab if isinstance(g, str)}
        for g in sorted(present, key=_order):
            rows.append(_row(variable, g, lab == g, y, p, M))
    if ages is not None and development_ages is not None:
        lo, hi = development_ages
        a = pd.to_numeric(ages, errors="coerce").to_numpy(dtype=float)
        outside = (a < lo) | (a > hi)
        if outside.any():
            rows.append(_row("age", f"{OUTSIDE} ({lo:g}-{hi:g})", outside, y, p, M))
    return rows


def _order(g: Any) -> tuple[int, Any]:
    s = str(g)
    if s.startswith("<"):
        return (0, 0)
    head = s.split("-")[0].rstrip("+")
    return (1, int(head)) if head.isdigit() else (2, s)


def _row(variable: str, group: str, keep: np.ndarray, y: np.ndarray, p: np.ndarray, M: Any) -> dict[str, Any]:
    yy, pp = y[keep], p[keep]
    row: dict[str, Any] = {
        "variable": variable,
        "group": group,
        "n": int(keep.sum()),
        "events": int(yy.sum()),
        "observed": float(yy.mean()) if len(yy) else None,
        "mean_risk": float(pp.mean()) if len(pp) else None,
        "auc": None,
        "auc_ci": None,
    }
    if yy.sum() >= MIN_PER_CLASS and (len(yy) - yy.sum()) >= MIN_PER_CLASS:
        auc, lo, hi, _ = M.auc_ci(yy, pp)
        row["auc"], row["auc_ci"] = float(auc), [float(lo), float(hi)]
    return row


def _label(value: Any) -> str | None:
    """A group label: None when missing, integer-valued numbers without decimals (sex coded 0/1 as "0", "1")."""
    if pd.isna(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def subgroups_of(
    clinical: pd.DataFrame, age_column: str, sex_column: str, index_column: str
) -> dict[str, pd.Series]:
    """The subgroup labels (text, None when missing) of each patient: age band, sex and index level, each where
    its column exists."""
    out: dict[str, pd.Series] = {}
    if age_column in clinical.columns:
        out["age"] = pd.to_numeric(clinical[age_column], errors="coerce").map(age_band)
    for name, column in (("sex", sex_column), ("index level", index_column)):
        if column in clinical.columns and clinical[column].notna().any():
            out[name] = clinical[column].map(_label)
    return out
