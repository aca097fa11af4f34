"""The sections of the study report, each a function of the run folder's files (no computation of results).

Every number shown comes from a stage's output: cohort tables from clinical.csv, segmentation from
`cdeg segment evaluate` / `predict`, features from `cdeg extract`, models from `cdeg fit` / `validate` /
`predict`. Variable names are shown in clinical words with units (:func:`cdeg.modeling.names.describe`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cdeg.cohort import CEILING_KINDS, ID_COLUMN, MODALITY_WORDS
from cdeg.report.html import esc, figure, fmt, howto, table

log = logging.getLogger(__name__)

MODEL_WORDS = {
    "xgboost": "XGBoost (images + clinical)",
    "logistic": "logistic regression (images + clinical)",
    "clinical_only": "clinical variables only (logistic)",
}
MODEL_NAMES = {"xgboost": "XGBoost", "logistic": "logistic regression", "clinical_only": "clinical-only"}


def _read_csv(path: Path, **kw: Any) -> Any:
    import pandas as pd

    return pd.read_csv(path, **kw) if path.is_file() else None


def auc_text(s: dict[str, Any] | None) -> str:
    """AUC with its 95% CI as text, '-' when absent."""
    if not s or s.get("auc") is None:
        return "-"
    ci = s.get("auc_ci") or [None, None]
    return f"{s['auc']:.2f} ({fmt(ci[0])} to {fmt(ci[1])})"


def _label_share(data: Any, target: str, key: str) -> str:
    """Share labelled 1 among the patients with an operational label of `target` in cohort `key`."""
    table = data.run.label(target, key).read_labels()
    if table is None:
        return "not labelled"
    v = table["label"].dropna()
    return f"{(v == 1).mean():.0%} ({int((v == 1).sum())} of {len(v)})" if len(v) else "-"


# --------------------------------------------------------------------------------------------------------------
def cohorts_section(data: Any) -> str:
    """Development vs external (and annotated) cohorts: age, sex, outcome prevalence, missing data."""
    cols = list(data.cohorts)
    rows: list[list[Any]] = []

    def row(label: str, fn: Any) -> None:
        rows.append([label] + [fn(data.cohorts[k]) for k in cols])

    def mean_sd(c: dict, col: str, nd: int = 1) -> str:
        d = c["clinical"]
        if col not in d:
            return "not recorded"
        v = d[col].dropna()
        return f"{v.mean():.{nd}f} ({v.std():.{nd}f})" if len(v) else "-"

    def share(c: dict, col: str, value: Any = 1) -> str:
        d = c["clinical"]
        if col not in d:
            return "not recorded"
        v = d[col].dropna()
        return f"{(v == value).mean():.0%} ({int((v == value).sum())} of {len(v)})" if len(v) else "-"

    row("role", lambda c: c["role"])
    row("patients", lambda c: str(len(c["clinical"])))
    row("age, years: mean (SD)", lambda c: mean_sd(c, "age"))
    row(
        "age, years: range",
        lambda c: (
            f"{c['clinical']['age'].min():.0f} to {c['clinical']['age'].max():.0f}"
            if "age" in c["clinical"]
            else "not recorded"
        ),
    )
    row("men", lambda c: share(c, "sex", "M"))
    row("BMI, kg/m²: mean (SD)", lambda c: mean_sd(c, "bmi"))
    row("current smokers", lambda c: share(c, "smoking", "current"))
    for t in data.cfg.targets:
        words = f"{data.target_words(t)} (outcome)"
        if data.cfg.targets[t].label is None:
            row(words, lambda c, t=t: share(c, t))
        else:  # an operational label: the share labelled 1 by `cdeg label`, in the cohorts it labels
            rows.append([words] + [_label_share(data, t, k) for k in cols])
    row("NDI before surgery / at baseline, 0-100: mean (SD)", lambda c: mean_sd(c, "ndi_0"))
    row("patients without MRI", lambda c: str(c["no_image"].get("mri", "-")))
    row("patients without radiograph", lambda c: str(c["no_image"].get("xray", "-")))
    row("clinical variables with missing values", lambda c: c["missing_text"])
    header = ["", *[data.cohort_label(k) for k in cols]]
    return (
        '<h2 id="cohorts">Cohorts</h2>'
        + howto(
            "Each column is one group of patients. The <i>development</i> cohort is where the models learn "
            "(with cross-validation, so every patient is predicted by a model that never saw them); the "
            "<i>external</i> cohort is a different population that tests whether a model travels. The "
            "<i>annotated</i> cohort only teaches the segmentation network where the vertebrae and discs are. "
            "Percentages are of patients with a recorded value."
        )
        + table(header, rows)
    )


# --------------------------------------------------------------------------------------------------------------
def segmentation_section(data: Any) -> str:
    """Dice / HD95 / level identification per level and modality, training summary, QC gallery."""
    from cdeg import labels

    parts = [
        '<h2 id="segmentation">Segmentation</h2>',
        howto(
            "A neural network (nnU-Net) outlines every vertebra (C2 to T1) and disc on each MRI and radiograph, "
            "and names its level. Where hand-drawn reference outlines exist, it is scored: <b>Dice</b> is the "
            "overlap with the reference (0 = none, 1 = perfect; above 0.8 is good for discs), <b>HD95</b> the "
            "distance in mm within which 95% of the outline lies (smaller is better), and <b>level "
            "identification</b> the share of patients whose levels are all named correctly (a wrong level means "
            "wrong measurements for that patient); <b>structures identified (VerSe)</b> is the share of single "
            "vertebrae and discs found at the right place under the right name, the rate published spine "
            "segmenters report (it forgives an outline a few mm off). Patients whose masks failed an "
            "automatic check are <span class=flag>flagged</span> and shown first in the gallery: look at them "
            "before trusting their measurements."
        ),
    ]
    if not data.cfg.segmentation.enabled:
        parts.append("<p>Segmentation was not run: features come from the cohorts' reference masks.</p>")
        return "".join(parts)
    train_rows = []
    for m, man in data.train_manifests.items():
        r = man.get("result", {})
        train_rows.append(
            [
                MODALITY_WORDS.get(m, m),
                r.get("preset"),
                r.get("device"),
                r.get("configuration"),
                r.get("n_cases"),
                r.get("epochs_completed"),
                fmt(man.get("seconds"), 0),
            ]
        )
    if train_rows:
        parts.append("<h3>Training</h3>")
        parts.append(
            table(
                [
                    "modality",
                    "preset",
                    "device",
                    "network",
                    "annotated patients",
                    "epochs",
                    "training time, s",
                ],
                train_rows,
            )
        )
    for key, ev in data.evaluations.items():
        summ = ev.get("summary", {})
        mods = [m for m in data.cfg.segmentation.modalities if m in summ]
        if not mods:
            continue
        parts.append(f"<h3>Accuracy against reference outlines: {esc(data.cohort_label(key))}</h3>")
        rows = []
        for m in mods:
            s = summ[m]
            rows.append(
                [
                    MODALITY_WORDS[m],
                    s["n_evaluated"],
                    fmt(s["level_identification"], 2, pct=True),
                    fmt(s.get("identification_rate_verse"), 2, pct=True),
                    fmt(s["dice_vertebrae_mean"]),
                    fmt(s["dice_discs_mean"]),
                    fmt(s["hd95_vertebrae_mean_mm"], 1),
                    fmt(s["hd95_discs_mean_mm"], 1),
                ]
            )
        parts.append(
            table(
                [
                    "modality",
                    "patients",
                    "levels all named correctly",
                    "structures identified (VerSe)",
                    "Dice vertebrae",
                    "Dice discs",
                    "HD95 vertebrae, mm",
                    "HD95 discs, mm",
                ],
                rows,
            )
        )
        level_names = [s.name for s in labels.STRUCTURES]
        lrows = []
        for name in level_names:
            cells = [name]
            present = False
            for m in mods:
                lv = summ[m].get("per_level", {}).get(name)
                present |= lv is not None
                cells += [fmt(lv["dice_mean"]) if lv else "-", fmt(lv["hd95_mean_mm"], 1) if lv else "-"]
            if present:
                lrows.append(cells)
        head = ["level"] + [f"{MODALITY_WORDS[m]}: {h}" for m in mods for h in ("Dice", "HD95, mm")]
        parts.append(
            f"<details><summary>Per level ({len(lrows)} structures)</summary>{table(head, lrows)}</details>"
        )
    parts.append(qc_gallery(data))
    return "".join(parts)


def qc_gallery(data: Any) -> str:
    """QC overlays per cohort, flagged patients first (`cdeg segment predict` writes them)."""
    parts = ["<h3>Quality control of the automatic outlines</h3>"]
    for key, qc in data.qc.items():
        status = qc["status"]
        counts = {
            s: sum(1 for v in status.values() if v["status"] == s)
            for s in ("ok", "flagged", "empty", "failed", "skipped")
        }
        parts.append(
            f"<p><b>{esc(data.cohort_label(key))}</b>: {counts['ok']} images passed the checks, "
            f"<span class=flag>{counts['flagged']} flagged</span>, {counts['empty']} empty, {counts['failed']} "
            f"failed, {counts['skipped']} without image. Flagged images are shown first.</p>"
        )
        order = sorted(status.items(), key=lambda kv: (kv[1]["status"] == "ok", kv[0]))
        shown = [(k, v) for k, v in order if v["status"] != "skipped"][: data.cfg.report.gallery_max]
        figs = []
        for (pid, mod), v in shown:
            path = data.qc_png(key, pid, mod)
            checks = qc["findings"].get((pid, mod), [])
            note = _first(checks, 2) if v["status"] != "ok" else "passed"
            figs.append(
                figure(
                    path,
                    f"{pid}, {MODALITY_WORDS.get(mod, mod)}: {v['status']} ({note})",
                    width=data.cfg.report.image_width,
                    colours=96,
                    css_width=240,
                )
            )
        parts.append(f'<div class="gallery">{"".join(figs)}</div>')
    return "".join(parts)


# --------------------------------------------------------------------------------------------------------------
def features_section(data: Any) -> str:
    """How many features per modality and level, and how many are missing."""
    from cdeg import labels

    parts = [
        '<h2 id="features">Features</h2>',
        howto(
            "From each outlined vertebra and disc the software measures what a radiologist would (disc heights "
            "in mm, angles in degrees, disc signal on MRI) and, in addition, radiomics: shape, brightness and "
            "texture numbers computed by PyRadiomics. A value is <i>missing</i> when the image, the structure "
            "or its outline is absent; the models fill such gaps with the development cohort's typical value."
        ),
    ]
    for key, df in data.features.items():
        cols = [c for c in df.columns if c.count("__") >= 2]
        by: dict[tuple[str, str], list[str]] = {}
        for c in cols:
            mod, level, _ = c.split("__", 2)
            by.setdefault((mod, level), []).append(c)
        mods = sorted(
            {m for m, _ in by}, key=lambda m: list(MODALITY_WORDS).index(m) if m in MODALITY_WORDS else 9
        )
        order = [s.name for s in labels.STRUCTURES]
        levels = sorted({lv for _, lv in by}, key=lambda lv: order.index(lv) if lv in order else len(order))
        rows = []
        for lv in levels:
            cells: list[Any] = [lv]
            for m in mods:
                cs = by.get((m, lv), [])
                miss = float(df[cs].isna().to_numpy().mean()) if cs else None
                cells += [len(cs) or "-", fmt(miss, 2, pct=True) if cs else "-"]
            rows.append(cells)
        head = ["level"] + [f"{MODALITY_WORDS.get(m, m)}: {h}" for m in mods for h in ("features", "missing")]
        total = ", ".join(
            f"{sum(len(v) for (mm, _), v in by.items() if mm == m)} from the {MODALITY_WORDS.get(m, m)}"
            for m in mods
        )
        parts.append(f"<h3>{esc(data.cohort_label(key))}: {len(df)} patients; {total}</h3>")
        parts.append(f"<details><summary>Per level</summary>{table(head, rows)}</details>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------------------
#: Words for the feature classes of agreement.json (PyRadiomics classes, and the clinical measurements).
FEATURE_CLASS_WORDS = {
    "measurement": "clinical measurements",
    "shape": "radiomics: shape (3D)",
    "shape2D": "radiomics: shape (2D)",
    "firstorder": "radiomics: brightness (first order)",
    "glcm": "radiomics: texture (GLCM)",
    "glrlm": "radiomics: texture (GLRLM)",
    "glszm": "radiomics: texture (GLSZM)",
    "gldm": "radiomics: texture (GLDM)",
    "ngtdm": "radiomics: texture (NGTDM)",
    "other": "other",
}
#: Clinical measurements shown with their Bland-Altman limits (those with the lowest ICC first).
AGREEMENT_ROWS = 8

AGREEMENT_TITLE = "Do features from the predicted masks agree with features from reference masks?"


def agreement_section(data: Any) -> str:
    """ICC of the predicted-mask features against the reference-mask features (`cdeg extract-agreement`):
    the share of reliable features per modality and feature class, and Bland-Altman for the measurements."""
    agreement = data.agreement
    parts = [
        f'<h2 id="agreement">{esc(AGREEMENT_TITLE)}</h2>',
        howto(
            "ICC(2,1) is the absolute agreement of one reading with another: ≥ 0.75 good, ≥ 0.9 excellent "
            "(Koo &amp; Li 2016); a feature with low ICC measures the segmentation as much as the patient."
        ),
    ]
    manifest = agreement["manifest"]
    if manifest is None:
        parts.append('<p class="warn">No agreement results (the agreement stage has not run).</p>')
        return "".join(parts)
    thresholds = manifest.get("icc", {}).get("thresholds", {})
    good, excellent = thresholds.get("good"), thresholds.get("excellent")
    n, cols = manifest["patients"]["matched"], manifest["columns"]
    chosen = (
        f"the first {data.cfg.agreement.patients} by id with reference outlines"
        if data.cfg.agreement.patients
        else "every patient with reference outlines"
    )
    parts.append(
        f"<p>Features computed twice for {n} patients of the {esc(data.cohort_label(agreement['cohort']))} "
        f"cohort ({chosen}): from the automatic outlines and from the hand-drawn "
        f"reference outlines. {cols['compared']} features compared, {cols['without_icc']} without an ICC "
        "(missing in one of the two, or the same value in every patient).</p>"
    )
    rows = []
    for modality, classes in manifest["reliable_share"].items():
        # The clinical measurements first, then the radiomics classes.
        for cls, v in sorted(classes.items(), key=lambda kv: (kv[0] != "measurement", kv[0])):
            rows.append(
                [
                    MODALITY_WORDS.get(modality, modality),
                    FEATURE_CLASS_WORDS.get(cls, cls),
                    v["n_features"],
                    fmt(v.get(f"icc_ge_{good}"), 2, pct=True),
                    fmt(v.get(f"icc_ge_{excellent}"), 2, pct=True),
                ]
            )
    head = ["modality", "kind of feature", "features with an ICC", f"ICC ≥ {good}", f"ICC ≥ {excellent}"]
    parts.append(table(head, rows))
    parts.append(_bland_altman_table(agreement["table"]))
    return "".join(parts)


def _bland_altman_table(table_df: Any) -> str:
    """The clinical measurements with the lowest ICC(2,1): bias and 95% limits of agreement (predicted minus
    reference, Bland & Altman 1986), from agreement.csv."""
    import numpy as np

    from cdeg.modeling.names import describe

    if table_df is None:
        return ""
    m = table_df[
        (table_df["feature_class"] == "measurement") & np.isfinite(table_df["icc_2_1"].astype(float))
    ]
    if m.empty:
        return '<p class="muted">No clinical measurement was found in enough patients of both mask sets.</p>'
    worst = m.sort_values("icc_2_1").head(AGREEMENT_ROWS)
    rows = [
        [
            describe(r["column"]).text,
            int(r["n"]),
            f"{fmt(r['icc_2_1'])} ({fmt(r['icc_2_1_ci_low'])} to {fmt(r['icc_2_1_ci_high'])})",
            f"{fmt(r['ba_bias'])} {r['unit'] if isinstance(r['unit'], str) else ''}".strip(),
            f"{fmt(r['ba_loa_low'])} to {fmt(r['ba_loa_high'])}",
        ]
        for r in worst.to_dict("records")
    ]
    return (
        f"<h3>Clinical measurements: the {len(rows)} of {len(m)} with the lowest ICC</h3>"
        + table(
            [
                "measurement",
                "patients",
                "ICC(2,1) (95% CI)",
                "bias (automatic minus reference)",
                "95% limits of agreement",
            ],
            rows,
        )
        + '<p class="muted">agreement.csv in the agreement folder lists every feature.</p>'
    )


# --------------------------------------------------------------------------------------------------------------
def target_section(data: Any, target: str) -> str:
    """One study question: metrics side by side, curves, explanations."""
    from cdeg.modeling.tripod import with_primary

    spec = data.cfg.targets[target]
    fit = data.fits.get(target) or {}
    val = data.validations.get(target)
    parts = [f'<h2 id="target-{esc(target)}">{esc(spec.title or data.target_words(target))}</h2>']
    if spec.description:
        parts.append(f"<p>{esc(spec.description)}</p>")
    parts.append(_outcome_definition(data, target, fit))
    note = _exploratory(data.ceilings.get(target) or {})
    if note:
        parts.append(f'<p class="warn">{esc(note)}</p>')
    cv = fit.get("cv", {})
    parts.append(
        howto(
            "The <b>AUC</b> is the chance that the model gives a higher risk to a patient with the outcome than to "
            "one without (0.5 = a coin toss, 1 = perfect); the interval in brackets is its 95% confidence interval. "
            "<i>Development</i> figures come from nested cross-validation: each patient is predicted by a model "
            "that never saw them. <i>External</i> figures come from another population. Calibration slope: 1 is "
            "ideal, below 1 means the predicted risks are too extreme. The clinical-only model is the reference "
            "a clinician would build without images; the image models must beat it to be worth their cost. "
            "The <i>baselines</i> are fitted to nothing: age alone, and the age-blind degeneration count (disc "
            "height and signal loss over all discs, age ignored). A model of degeneration beyond age that does "
            "not beat the count has shown no more than counting degenerated discs."
            + (
                " The <i>latent oracle</i> is the AUC of the true probability given the true degeneration, known "
                "only in synthetic data: no model built on images can reach it, because images show the "
                "degeneration only through noisy grades and measurements. The <i>observable ceiling</i> is the "
                "AUC of a model fitted on a large synthetic cohort to everything these images and the clinical "
                "table show, read perfectly: the best a model on this study's data can hope for."
                if data.ceilings.get(target)
                else ""
            )
        )
    )
    if not cv:
        parts.append('<p class="warn">No model results (the fit stage has not run).</p>')
        return "".join(parts)
    parts.append(_metrics_table(data, target, fit, val))
    parts.append(_interval_note(fit))
    parts.append(_subgroups(data, target, val))
    parts.append(_transport(data, target, val))
    parts.append(_left_out_note(data, target, fit, val))
    parts.append(_comparisons(fit))
    parts.append(_curves(data, target, val))
    parts.append(_explanations(data, target, fit))
    parts.append(_limitations(with_primary(fit, data.primary_model(target)), val))
    return "".join(parts)


def _limitations(fit: dict[str, Any], val: dict[str, Any] | None) -> str:
    """The limitations this question's own figures show (TRIPOD+AI item 26)."""
    from cdeg.modeling.report import limitations_block

    return limitations_block(fit, val)


def _outcome_definition(data: Any, target: str, fit: dict[str, Any]) -> str:
    """The rule of an operational target (fit metrics.json, else the label stage's label.json) and, when the
    model reads images of the label's modality, what predicting it can and cannot show."""
    from cdeg.modeling.label import circularity
    from cdeg.modeling.report import outcome_block

    definition = fit.get("outcome_definition")
    spec = data.cfg.targets[target]
    record = data.run.label(target, spec.development).read() if spec.label is not None else None
    if not (definition or {}).get("text") and record is not None:
        sets = data.cfg.fit.feature_set or "clinical,mri,xray"
        definition = {
            "operational": True,
            "text": record["rule"]["words"],
            "circularity": circularity(record, sets.split(",")),
        }
    out = outcome_block(definition)
    ages = (record or {}).get("ages") or {}
    if ages.get("n_outside"):
        lo, hi = ages["reference"]
        out += (
            f'<p class="warn">{ages["n_outside"]} of {record["counts"]["patients"]} development patients are '
            f"outside the reference cohort's ages ({lo:g} to {hi:g} years): their age norms are extrapolated, so "
            "their labels depend on the shape of the norm where the reference has no patients.</p>"
        )
    return out


def _interval_note(fit: dict[str, Any]) -> str:
    """How the development AUC's interval was computed and how often it covered in simulation (fit's words)."""
    s = next(iter(fit.get("cv", {}).values()), {})
    if not s.get("auc_ci_coverage"):
        return ""  # a fit run written before the interval carried its coverage
    return f'<p class="muted">Development AUC interval: {esc(s["auc_ci_method"])}. {esc(s["auc_ci_coverage"])}</p>'


def _exploratory(ceilings: dict[str, dict[str, float | None]]) -> str | None:
    """The exploratory sentence of a target whose development ceiling is low (:data:`EXPLORATORY_CEILING`)."""
    from cdeg.modeling.report import exploratory_note

    return exploratory_note({kind: (by_role or {}).get("development") for kind, by_role in ceilings.items()})


def _metrics_table(data: Any, target: str, fit: dict[str, Any], val: dict[str, Any] | None) -> str:
    """Development and external metrics of every model side by side, the ceilings, and the verdict."""
    from cdeg.modeling.report import verdict

    cv, ext = fit.get("cv", {}), (val or {}).get("external", {})
    rows = [
        [
            MODEL_WORDS.get(m, m),
            auc_text(cv[m]),
            auc_text(ext.get(m)) if val else "not validated",
            fmt(cv[m].get("brier"), 3),
            fmt(cv[m].get("calibration_slope")),
            fmt(ext.get(m, {}).get("calibration_slope")) if val else "-",
        ]
        for m in cv
    ]
    ceilings = data.ceilings.get(target) or {}
    for kind, words in CEILING_KINDS.items():
        if kind in ceilings:
            by_role = ceilings[kind]
            rows.append(
                [
                    words,
                    fmt(by_role.get("development")),
                    fmt(by_role.get("external")) if val else "-",
                    "-",
                    "-",
                    "-",
                ]
            )
    rows += _baseline_rows(fit.get("baselines") or {}, (val or {}).get("baselines") or {}, val is not None)
    n_ext = f", {val['n_patients']} external patients ({val['events']} with the outcome)" if val else ""
    head = [
        "model",
        "AUC development (nested CV)",
        "AUC external",
        "Brier score (development)",
        "calibration slope (development)",
        "calibration slope (external)",
    ]
    out = (
        f"<p>{fit.get('n_patients')} development patients ({fit.get('events')} with the outcome, "
        f"{fmt(fit.get('prevalence'), 2, pct=True)}){n_ext}.</p>" + table(head, rows)
    )
    v = verdict(fit.get("comparison", {}))
    return out + (f"<p><b>{esc(v)}</b></p>" if v else "")


def _baseline_rows(dev: dict[str, Any], ext: dict[str, Any], validated: bool) -> list[list[str]]:
    """Rows of the baselines (nothing fitted: AUC only) for the metrics table."""
    from cdeg.modeling.baselines import BASELINES

    return [
        [
            f"baseline: {words}",
            auc_text(dev.get(b)),
            auc_text(ext.get(b)) if validated else "-",
            "-",
            "-",
            "-",
        ]
        for b, words in BASELINES.items()
        if b in dev or b in ext
    ]


def _subgroups(data: Any, target: str, val: dict[str, Any] | None) -> str:
    """The external cohort by age band, sex and index level (the transport of the model)."""
    from cdeg.modeling.report import subgroups_block

    if not val:
        return ""
    return subgroups_block(val.get("subgroups") or [], val.get("primary_model") or data.primary_model(target))


def _transport(data: Any, target: str, val: dict[str, Any] | None) -> str:
    """The top variables in the development and the external cohort, and any recalibration (model updating),
    reported apart from the original external figures."""
    from cdeg.modeling.report import recalibration_block, transport_block

    if not val:
        return ""
    out = "<h3>Development vs external: the model's top variables</h3>" + transport_block(
        val.get("transport") or {}
    )
    rec = val.get("recalibration") or {}
    if rec.get("applied"):
        out += (
            "<h3>Recalibration on the external cohort (model updating)</h3>"
            + recalibration_block(rec, val.get("external") or {})
            + '<div class="figs">'
            + figure(
                data.run.validation(target).plot("recalibration"),
                "Calibration before and after recalibration (external)",
                width=700,
                css_width=350,
            )
            + "</div>"
        )
    return out


def _comparisons(fit: dict[str, Any]) -> str:
    """The label-permutation test and what each kind of variable adds (the feature tiers)."""
    from cdeg.modeling.report import permutation_text, tiers_block

    return permutation_text(fit.get("permutation_test") or {}) + tiers_block(fit.get("tiers") or {})


def checklist_section(data: Any) -> str:
    """The TRIPOD+AI and PROBAST+AI items: which the run's files answer, which the authors must."""
    from cdeg.modeling.report import checklist_block

    return (
        '<h2 id="checklist">Reporting checklist (TRIPOD+AI, PROBAST+AI)</h2>'
        + _run_answers(data)
        + checklist_block()
    )


def _run_answers(data: Any) -> str:
    """The TRIPOD+AI items this run's files answer, in words, per question."""
    from cdeg.modeling.report import answers_block
    from cdeg.modeling.tripod import run_answers, with_primary

    rows = []
    for target in data.cfg.targets:
        fit = data.fits.get(target)
        if not fit:
            continue
        words = data.target_words(target)
        fit = with_primary(fit, data.primary_model(target))
        for item, answer in run_answers(fit, data.validations.get(target)).items():
            rows.append([item, words, answer])
    return answers_block(rows)


def _left_out_note(data: Any, target: str, fit: dict[str, Any], val: dict[str, Any] | None) -> str:
    """Which variables were left out so the model travels, and how much the external cohort lacked."""
    from cdeg.modeling.names import describe

    parts = []
    excluded = data.missing_in_external(target)
    if excluded:
        words = ", ".join(describe(c).text for c in excluded)
        parts.append(
            f'<p class="muted">Left out so that the model uses only what both cohorts record: {esc(words)}.</p>'
        )
    primary = data.primary_model(target)
    imp = (val or {}).get("imputed_share", {}).get(primary)
    if imp:
        parts.append(
            f'<p class="muted">In the external cohort {fmt(imp, 3, pct=True)} of the '
            f"{esc(MODEL_NAMES.get(primary, primary))} model's input values were missing and filled with "
            "development values.</p>"
        )
    return "".join(parts)


def _curves(data: Any, target: str, val: dict[str, Any] | None) -> str:
    """ROC, calibration and decision curves (development, and external beside it when validated)."""
    run = data.run.validation(target) if val else data.run.fit(target)
    where = "development (left) and external (right)" if val else "development, out-of-fold"
    # Two panels (development beside external) need twice the width of one.
    w = 540 if val else 350
    return (
        "<h3>Discrimination, calibration and clinical usefulness</h3>"
        + howto(
            "<b>ROC curve</b>: higher and further left is better. <b>Calibration</b>: predicted risk against observed "
            "frequency; points on the diagonal mean the risks can be taken at face value. <b>Decision curve</b>: the "
            "net benefit of acting on the model at each risk threshold, against treating everyone or no one; a model "
            "is useful where its curve lies above both."
        )
        + '<div class="figs">'
        + figure(run.plot("roc"), f"ROC curves, {where}", width=2 * w, css_width=w)
        + figure(run.plot("calibration"), f"Calibration, {where}", width=2 * w, css_width=w)
        + figure(run.plot("decision_curve"), f"Decision curves, {where}", width=2 * w, css_width=w)
        + "</div>"
    )


def _explanations(data: Any, target: str, fit: dict[str, Any]) -> str:
    """SHAP of the explained model summed per level and per kind of finding, then per variable (bar chart and
    beeswarm), and the top groups and variables."""
    run = data.run.fit(target)
    primary = data.primary_model(target)
    name = MODEL_NAMES.get(primary, primary)
    groups = fit.get("shap_groups") or {}
    tops = "; ".join(
        f"by {words}: " + ", ".join(f"{g['group']} ({fmt(g['mean_abs_shap'], 2)})" for g in groups[by][:3])
        for by, words in (("level", "level"), ("concept", "kind of finding"))
        if groups.get(by)
    )
    parts = [
        "<h3>What drives the predictions</h3>",
        howto(
            "SHAP values split each prediction into contributions of the variables, in log-odds (+1 multiplies the "
            "odds by 2.7). <b>Per level and per kind of finding</b>: the contributions of all variables of one level "
            "(or of one kind: height, signal, shape, texture, age-adjusted, clinical) added up, since SHAP values add "
            "up. <b>Bar chart</b>: the variables with the largest average contribution. <b>Beeswarm</b>: "
            "one dot per patient; red = high value of the variable, blue = low; dots right of the centre push the "
            "risk up. These show associations the model uses, not causes. " + _age_sentence()
        ),
    ]
    if tops:
        parts.append(
            f"<p>Contributions summed per level and per kind of finding (mean |SHAP|, log-odds): {esc(tops)}.</p>"
        )
    parts += [
        '<div class="figs">'
        + figure(
            run.plot("shap_bar_level"), f"Average contribution per level ({name})", width=1100, css_width=545
        )
        + figure(
            run.plot("shap_bar_concept"),
            f"Average contribution per kind of finding ({name})",
            width=1100,
            css_width=545,
        )
        + "</div>",
        '<div class="figs">'
        + figure(
            run.plot("shap_bar"), f"Average contribution per variable ({name})", width=1100, css_width=545
        )
        + figure(run.plot("shap_beeswarm"), f"Contribution per patient ({name})", width=1100, css_width=545)
        + "</div>",
    ]
    top = fit.get("shap_top") or []
    if top:
        trs = [[t["label"], fmt(t["mean_abs_shap"], 3)] for t in top[:10]]
        parts.append(table(["variable", "mean |SHAP|, log-odds"], trs))
    if fit.get("shap_stability"):
        from cdeg.modeling.report import stability_html

        parts += stability_html(fit["shap_stability"])
    return "".join(parts)


def _age_sentence() -> str:
    from cdeg.modeling.explain import AGE_SENTENCE

    return AGE_SENTENCE


# --------------------------------------------------------------------------------------------------------------
def patients_section(data: Any) -> str:
    """A table of development patients with links to one card each (CSS :target; no script needed)."""
    if not data.cfg.report.patient_cards or data.dev_key is None:
        return ""
    clin = data.cohorts[data.dev_key]["clinical"].set_index(ID_COLUMN)
    targets = [t for t in data.cfg.targets if data.cfg.targets[t].development == data.dev_key]
    head = ["patient", "age", "sex", "index level"]
    for t in targets:
        head += [f"{data.target_words(t)}: predicted risk", "observed"]
    head += ["segmentation check", ""]
    rows, cards = [], []
    for pid in clin.index:
        c = clin.loc[pid]
        cells = [
            f'<a href="#patient-{esc(pid)}">{esc(pid)}</a>',
            esc(_int(c.get("age"))),
            esc(c.get("sex", "-")),
            esc(c.get("index_level", "-")),
        ]
        for t in targets:
            p = data.oof_risk(t, pid)
            obs = c.get(t)
            cells += [
                f'{fmt(p, 2, pct=True)} <span class="bar" style="width:{int(60 * (p or 0))}px"></span>'
                if p is not None
                else "-",
                esc(_yes_no(obs)),
            ]
        qc = data.patient_qc_status(pid)
        cells += [
            f'<span class="{"ok" if qc == "passed" else "flag"}">{esc(qc)}</span>',
            f'<a href="#patient-{esc(pid)}">open card</a>',
        ]
        rows.append(cells)
        cards.append(patient_card(data, pid, c, targets))
    return (
        '<h2 id="patients">Patients</h2>'
        + howto(
            "One row per development patient. <i>Predicted risk</i> is the cross-validated probability (from a "
            "model that did not see this patient); <i>observed</i> is what happened. Click a patient to open "
            "their card: the risk, which variables raised or lowered it (the waterfall chart), and the outlines "
            "the measurements came from. A card opens in place of the address <code>#patient-ID</code>, so it "
            "can be bookmarked or sent."
        )
        + table(head, rows, raw=True)
        + "".join(cards)
    )


def patient_card(data: Any, pid: str, c: Any, targets: list[str]) -> str:
    """One patient's card: facts, predictions with SHAP waterfalls of the cross-validated risk, QC overlays."""
    facts = []
    for col, words in (
        ("age", "age, years"),
        ("sex", "sex"),
        ("bmi", "BMI, kg/m²"),
        ("smoking", "smoking"),
        ("index_level", "index level"),
        ("arm", "treatment arm"),
        ("ndi_0", "NDI before surgery"),
        ("symptom_duration_months", "symptom duration, months"),
    ):
        if col in c.index:
            facts.append([words, esc(c[col]) if c[col] == c[col] else "missing"])
    preds, figs, notes = [], [], []
    absent = data.absent_scans(pid)
    if absent:
        scans = " and ".join(MODALITY_WORDS.get(m, m) for m in absent)
        notes.append(
            f"This patient has no {scans}: the model saw only imputed (development median) values for those "
            "variables; the waterfalls show them as one bar, not as findings."
        )
    lowered = []
    for t in targets:
        preds.append(_card_risks(data, t, pid, c))
        figs += _card_waterfalls(data, t, pid)
        age = data.age_contribution(t, pid)
        if age is not None and age < 0:
            lowered.append(f"{data.target_words(t)} ({age:+.2f} log-odds)")
    if lowered:
        notes.append(f"Age lowers this patient's risk of {'; '.join(lowered)}. {_age_sentence()}")
    for mod in data.cfg.segmentation.modalities if data.cfg.segmentation.enabled else ():
        path = data.qc_png(data.dev_key, pid, mod)
        findings = data.qc[data.dev_key]["findings"].get((pid, mod), []) if data.dev_key in data.qc else []
        figs.append(
            figure(
                path,
                f"{MODALITY_WORDS[mod]} outlines" + (f": {_first(findings, 4)}" if findings else ""),
                width=data.cfg.report.image_width,
                colours=96,
            )
        )
    cv_shown = any(data.run.fit(t).waterfall(pid).is_file() for t in targets)
    return (
        f'<section class="card" id="patient-{esc(pid)}"><a class="close" href="#patients">back to the patient '
        f"table</a><h3>Patient {esc(pid)}</h3>"
        + table(["patient", pid], facts, raw=True)
        + table(
            [
                "question",
                "risk, cross-validated (explained below)",
                "mean over the repeats",
                "risk, final model",
                "observed",
            ],
            preds,
            raw=True,
        )
        + f'<p class="muted">{_CARD_CV if cv_shown else _CARD_FINAL}</p>'
        + "".join(f"<p>{esc(n)}</p>" for n in notes)
        + f'<div class="figs">{"".join(figs)}</div></section>'
    )


#: What the card's risks and waterfalls are: with the cross-validated waterfalls (fit runs since they exist), and
#: with only the final model's (older runs).
_CARD_CV = (
    "The cross-validated risk is the honest estimate for this patient: it comes from the model of an outer fold "
    "that was trained without this patient, and the waterfalls explain exactly that model (first repeat; the bars "
    "add up from its average log-odds to its log-odds of this patient). With several repeats each gives one such "
    "model, and the mean over the repeats averages their probabilities. The final model was trained on all "
    "development patients including this one; its risk is shown for comparison only."
)
_CARD_FINAL = (
    "The cross-validated risk is the honest estimate for this patient; the final model was trained on all "
    "development patients including this one, and its waterfall shows how it arrives at its risk."
)


def _card_risks(data: Any, t: str, pid: str, c: Any) -> list[str]:
    """A row of the card's risk table: first-repeat and mean cross-validated risk, final model, observed."""
    p_first, p_mean, p_final = data.oof_first_risk(t, pid), data.oof_risk(t, pid), data.final_risk(t, pid)
    n = data.repeats(t)
    return [
        esc(data.target_words(t)),
        fmt(p_first, 2, pct=True) if p_first is not None else "-",
        (fmt(p_mean, 2, pct=True) + f" ({n} repeat{'s' if n > 1 else ''})") if p_mean is not None else "-",
        fmt(p_final, 2, pct=True) if p_final is not None else "-",
        esc(_yes_no(c.get(t))),
    ]


def _card_waterfalls(data: Any, t: str, pid: str) -> list[str]:
    """The waterfalls of the cross-validated risk (fit run); a run without them shows the final model's, so
    labelled."""
    model = MODEL_NAMES.get(data.primary_model(t), data.primary_model(t))
    fit_run = data.run.fit(t)
    if fit_run.waterfall(pid).is_file():
        where, whose = fit_run, f"cross-validated {model} model of the outer fold that predicted this patient"
    else:
        where, whose = data.run.predictions(t), f"final {model} model"
    return [
        figure(
            path,
            f"Why this risk of {data.target_words(t)} {how}, {whose})",
            width=1000,
            colours=64,
            css_width=520,
        )
        for path, how in (
            (where.grouped_waterfall(pid), "per level (SHAP values summed per level"),
            (where.waterfall(pid), "(SHAP waterfall"),
        )
    ]


def _first(items: list[str], n: int) -> str:
    """The first `n` QC findings, and how many more there are."""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


def _int(x: Any) -> str:
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return "-"


def _yes_no(x: Any) -> str:
    if x is None or x != x:
        return "-"
    try:
        return "yes" if int(x) == 1 else "no"
    except (TypeError, ValueError):
        return str(x)


# --------------------------------------------------------------------------------------------------------------
def provenance_section(data: Any) -> str:
    """Versions, configuration, seeds and stage timings."""
    import yaml

    rows = []
    for name, man in data.manifests.items():
        rows.append([name, man.get("finished", "-"), fmt(man.get("seconds"), 1), (man.get("key") or "")[:12]])
    total = sum(float(m.get("seconds") or 0) for m in data.manifests.values())
    vers = data.versions()
    seeds = [[data.cohort_label(k), s.synth.seed] for k, s in data.cfg.cohorts.items() if s.synth is not None]
    seeds.append(["modelling (fit)", data.cfg.fit.seed if data.cfg.fit.seed is not None else data.cfg.seed])
    return (
        '<h2 id="provenance">Provenance</h2>'
        + howto(
            "What produced this report, so that it can be reproduced: software versions, the study configuration, "
            "random seeds, and each stage's last run (the key identifies its inputs and options)."
        )
        + "<h3>Software</h3>"
        + table(["package", "version"], sorted(vers.items()))
        + "<h3>Seeds</h3>"
        + table(["", "seed"], seeds)
        + f"<h3>Stages (last runs; {total:.0f} s in all)</h3>"
        + table(["stage", "finished (UTC)", "seconds", "key"], rows)
        + "<h3>Configuration</h3>"
        + f"<pre>{esc(yaml.safe_dump(data.config_dict, sort_keys=False, width=100))}</pre>"
    )
