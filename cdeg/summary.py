"""`cdeg summary`: what is in a cohort folder (patients, images, clinical variables, ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.cohort import ID_COLUMN, MODALITIES, TRUTH_CEILINGS, Cohort
from cdeg.io import read_table, write_json


def summarize(cohort: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Summarise a cohort: counts of images and masks, clinical variables, and the truth when synthetic.

    Parameters
    ----------
    cohort : path
        Cohort folder.
    out : path, optional
        Write the summary as JSON there.

    Returns
    -------
    dict
        JSON-ready summary (see README, "Cohort summary").
    """
    c = Cohort.open(cohort)
    clin = c.clinical(bad_ids="first")  # a summary lists patients; a repeated id is `cdeg check`'s to report
    ids = list(clin[ID_COLUMN])
    s: dict[str, Any] = {
        "name": c.meta.name,
        "profile": c.meta.profile,
        "synthetic": c.is_synthetic,
        "seed": c.meta.seed,
        "n_patients": len(ids),
        "images": {m: sum(c.has_image(p, m) for p in ids) for m in MODALITIES},
        "masks": {m: sum(c.has_mask(p, m) for p in ids) for m in MODALITIES},
        "clinical": _clinical_summary(clin),
    }
    if c.is_synthetic and c.truth_levels_path.is_file():
        s["truth"] = _truth_summary(read_table(c.truth_levels_path), read_table(c.truth_patients_path), clin)
    if out is not None:
        write_json(out, s)
    return s


def _clinical_summary(clin: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "age" in clin:
        a = clin["age"].astype(float)
        out["age"] = {
            "mean": round(a.mean(), 1),
            "sd": round(a.std(), 1),
            "min": round(a.min(), 1),
            "max": round(a.max(), 1),
        }
    if "sex" in clin:
        out["male_share"] = round(float((clin["sex"] == "M").mean()), 3)
    for col in ("accelerated", "poor_outcome_2y", "reoperation_2y"):
        if col in clin:
            out[f"{col}_prevalence"] = round(float(clin[col].mean()), 3)
    missing = clin.drop(columns=[ID_COLUMN]).isna().sum()
    out["missing_values"] = {k: int(v) for k, v in missing.items() if v > 0}
    return out


def _truth_summary(levels: Any, patients: Any, clin: Any) -> dict[str, Any]:
    discs = levels[levels["structure"] == "disc"]
    order = [n for n in labels.DISC_NAMES if n in set(discs["level"])]
    by_level = discs.groupby("level")
    out: dict[str, Any] = {
        "mean_miyazaki_by_level": {k: round(float(by_level["miyazaki_grade"].mean()[k]), 2) for k in order},
        "miyazaki_4_5_share_by_level": {
            k: round(float((by_level["miyazaki_grade"].apply(lambda g: (g >= 4).mean()))[k]), 3)
            for k in order
        },
        "mean_disc_height_middle_mm_by_level": {
            k: round(float(by_level["disc_height_middle_mm"].mean()[k]), 2) for k in order
        },
    }
    ceilings = _ceiling_aucs(patients, clin)
    if "latent" in ceilings.get("accelerated", {}):  # the headline question's ceiling, under its old name
        out["oracle_auc"] = ceilings["accelerated"]["latent"]
    if ceilings:
        out["ceiling_auc"] = ceilings
    if "cobb_c2c7_deg" in patients:
        out["cobb_c2c7_deg_mean"] = round(float(np.mean(patients["cobb_c2c7_deg"])), 1)
    return out


def _ceiling_aucs(patients: Any, clin: Any) -> dict[str, dict[str, float]]:
    """Outcome -> ceiling kind -> AUC of that truth column (:data:`cdeg.cohort.TRUTH_CEILINGS`) against
    the outcome in clinical.csv, for the outcomes and columns the cohort has."""
    from sklearn.metrics import roc_auc_score

    out: dict[str, dict[str, float]] = {}
    for target, columns in TRUTH_CEILINGS.items():
        present = [c for c in columns.values() if c in patients]
        if target not in clin or not present:
            continue
        truth = patients[[ID_COLUMN, *present]].astype({ID_COLUMN: str})
        t = truth.merge(clin[[ID_COLUMN, target]].dropna(), on=ID_COLUMN)
        if t[target].nunique() != 2:
            continue
        for kind, column in columns.items():
            if column in present:
                auc = roc_auc_score(t[target].astype(int), t[column])
                out.setdefault(target, {})[kind] = round(float(auc), 3)
    return out


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a few lines of text for the terminal."""
    lines = [
        f"cohort {s['name']!r} ({s['profile']}{', synthetic' if s['synthetic'] else ''}): {s['n_patients']} patients",
        "images: "
        + ", ".join(f"{m} {k}" for m, k in s["images"].items())
        + "; masks: "
        + ", ".join(f"{m} {k}" for m, k in s["masks"].items()),
    ]
    cl = s["clinical"]
    if "age" in cl:
        a = cl["age"]
        lines.append(
            f"age {a['mean']} +- {a['sd']} (range {a['min']}-{a['max']}); male {cl.get('male_share', float('nan')):.0%}"
        )
    for key in ("accelerated_prevalence", "poor_outcome_2y_prevalence", "reoperation_2y_prevalence"):
        if key in cl:
            lines.append(f"{key.replace('_prevalence', '')}: {cl[key]:.0%}")
    if cl.get("missing_values"):
        lines.append("missing values: " + ", ".join(f"{k} {v}" for k, v in cl["missing_values"].items()))
    t = s.get("truth")
    if t:
        lines.append(
            "truth, per disc level (mean Miyazaki grade / share grade IV-V / mean middle disc height mm):"
        )
        for lvl, g in t["mean_miyazaki_by_level"].items():
            lines.append(
                f"  {lvl:6s} {g:4.2f}  {t['miyazaki_4_5_share_by_level'][lvl]:5.0%}  "
                f"{t['mean_disc_height_middle_mm_by_level'][lvl]:4.1f}"
            )
        for target, aucs in t.get("ceiling_auc", {}).items():
            parts = [f"{kind} {aucs[kind]:.3f}" for kind in ("latent", "observable") if kind in aucs]
            lines.append(f"ceiling AUC of {target} (synthetic truth): {', '.join(parts)}")
        if "cobb_c2c7_deg_mean" in t:
            lines.append(f"mean C2-C7 Cobb angle: {t['cobb_c2c7_deg_mean']} deg")
    return "\n".join(lines)
