"""Self-contained HTML reports (images inline as base64, no network) of `cdeg fit` and `cdeg validate`.

The page, tables and figures are those of the study report (:mod:`cdeg.report.html`); this module
only says what the classifier stage's reports hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cdeg.modeling.explain import AGE_SENTENCE
from cdeg.modeling.plots import MODEL_LABELS

from cdeg.report.html import esc, figure, fmt, page, section, table


def metrics_rows(per_model: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for m, s in per_model.items():
        if not s:
            continue
        boot = s.get("bootstrap") or {}
        rows.append(
            [
                MODEL_LABELS.get(m, m),
                f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
                _with_ci(s["brier"], boot.get("brier"), 3),
                _with_ci(s["calibration_intercept"], boot.get("calibration_intercept"), 2),
                _with_ci(s["calibration_slope"], boot.get("calibration_slope"), 2),
            ]
        )
    return rows


def _with_ci(value: float | None, boot: dict[str, Any] | None, digits: int) -> str:
    """A value with its bootstrap interval when there is one."""
    ci = (boot or {}).get("ci") or [None, None]
    if ci[0] is None or ci[1] is None:
        return fmt(value, digits)
    return f"{fmt(value, digits)} [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


METRIC_HEADER = [
    "model",
    "AUC [95% CI]",
    "Brier [95% CI]",
    "calibration intercept [95% CI]",
    "calibration slope [95% CI]",
]


def comparison_rows(comp: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for name, c in comp.items():
        a, b = name.split("_vs_")
        t = c.get("corrected_t") or {}
        rows.append(
            [
                f"{MODEL_LABELS.get(a, a)} - {MODEL_LABELS.get(b, b)}",
                f"{c['auc_difference']:+.3f}",
                f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]",
                f"{c['p_value']:.3f}",
                f"{t['p_value']:.3f}" if t.get("p_value") is not None else "-",
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


#: Tier names in words, in report order.
TIER_WORDS: dict[str, str] = {
    "clinical": "clinical scores only",
    "measurements": "clinical + measurements",
    "radiomics": "clinical + radiomics",
    "all": "all variables",
}


def tier_rows(tiers: dict[str, Any]) -> list[list[str]]:
    """One row per feature tier: AUC and Brier with their differences to all variables (paired)."""
    comp = {(c["tier"], c["metric"]): c for c in tiers.get("comparison", [])}
    rows = []
    for tier in TIER_WORDS:
        s = tiers.get("cv", {}).get(tier)
        if not s:
            continue
        row = [
            TIER_WORDS[tier],
            f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
            fmt(s["brier"], 3),
        ]
        for metric in ("auc", "brier"):
            c = comp.get((tier, metric))
            row.append(_difference(c) if c else "reference" if tier == "all" else "-")
        rows.append(row)
    return rows


TIER_HEADER = [
    "feature tier",
    "AUC [95% CI]",
    "Brier",
    "AUC minus all variables [95% CI], p",
    "Brier minus all variables [95% CI], p",
]


def _difference(c: dict[str, Any]) -> str:
    return f"{c['difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], p = {c['p_value']:.2f}"


def tier_verdict(tiers: dict[str, Any]) -> str:
    """One plain sentence: does radiomics add anything beyond the measurements (and images beyond clinical)?"""
    comp = {(c["tier"], c["metric"]): c for c in tiers.get("comparison", [])}
    cv = tiers.get("cv", {})
    m = comp.get(("measurements", "auc"))
    out = []
    if m and "measurements" in cv:
        # The entry is measurements minus all; the question is what adding radiomics changes.
        d, lo, hi = -m["difference"], -m["ci"][1], -m["ci"][0]
        tail = f"(AUC {cv['all']['auc']:.3f} with all variables vs {cv['measurements']['auc']:.3f}; difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}, p = {m['p_value']:.2f})"
        if lo > 0:
            out.append(f"Radiomics adds to the measurements {tail}.")
        elif hi < 0:
            out.append(
                f"Radiomics makes the model WORSE than the measurements alone {tail}: use the measurements model."
            )
        else:
            out.append(
                f"Radiomics adds nothing detectable beyond the radiologist's measurements {tail}: as far as this "
                "study can tell, the simpler measurements model is as good."
            )
    c = comp.get(("clinical", "auc"))
    if c and "clinical" in cv:
        d, lo, hi = -c["difference"], -c["ci"][1], -c["ci"][0]
        tail = f"(AUC difference {d:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f})"
        out.append(
            f"The images add to the clinical scores {tail}."
            if lo > 0
            else f"No evidence that the images add to the clinical scores {tail}."
        )
    return " ".join(out)


def tiers_block(tiers: dict[str, Any]) -> str:
    """The feature-tier table, its verdict and how it was tested (empty without tiers)."""
    if not tiers or not tiers.get("cv"):
        return ""
    model = MODEL_LABELS.get(tiers.get("model", ""), tiers.get("model", ""))
    return (
        f"<h3>What each kind of variable adds ({esc(model)}, same protocol and outer folds)</h3>"
        + table(TIER_HEADER, tier_rows(tiers))
        + (f"<p><b>{esc(tier_verdict(tiers))}</b></p>" if tier_verdict(tiers) else "")
        + "<p class='muted'>Differences are paired (same patients, same folds); their intervals and p values come "
        "from the corrected resampled t-test over the outer folds and repeats (Nadeau &amp; Bengio), which "
        "accounts for the overlap of the training sets. DeLong on the pooled out-of-fold predictions is in "
        "metrics.json beside it.</p>"
    )


def baselines_block(
    development: dict[str, Any],
    external: dict[str, Any] | None = None,
    primary: tuple[str, float] | None = None,
) -> str:
    """The baselines (age alone, age-blind degeneration count) as a table, and one sentence on whether the
    primary model (name, AUC) does better than the count; empty without baselines."""
    from cdeg.modeling.baselines import BASELINES

    names = [b for b in BASELINES if b in development or (external and b in external)]
    if not names:
        return ""

    def auc(s: dict[str, Any] | None) -> str:
        return f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]" if s else "-"

    head = ["baseline (nothing fitted)", "AUC development [95% CI]"] + (["AUC external"] if external else [])
    rows = [
        [BASELINES[b], auc(development.get(b))] + ([auc(external.get(b))] if external else []) for b in names
    ]
    defs = {**(external or {}).get("definitions", {}), **development.get("definitions", {})}
    text = " ".join(f"{BASELINES[b].capitalize()}: {defs[b]}." for b in names if b in defs)
    out = table(head, rows) + f"<p class='muted'>{esc(text)}</p>"
    # The primary model's AUC is compared with the count of the same cohort only (`primary` is the external
    # AUC in a validation report, where `external` is given even when empty).
    count = (external if external is not None else development).get("degeneration_count")
    if primary is not None and count:
        name, value = primary
        where = "external" if external is not None else "development"
        if value <= count["auc"]:
            out += (
                f"<p><b>{esc(MODEL_LABELS.get(name, name))} ({value:.3f}) does not beat the age-blind degeneration "
                f"count ({count['auc']:.3f}, {where}): it has not shown more than counting degenerated discs."
                "</b></p>"
            )
        else:
            out += (
                f"<p>{esc(MODEL_LABELS.get(name, name))} ({value:.3f}) is above the age-blind degeneration count "
                f"({count['auc']:.3f}, {where}) by {value - count['auc']:.3f}.</p>"
            )
    return out


def subgroups_block(rows: list[dict[str, Any]], model: str | None = None) -> str:
    """The primary model's external performance by subgroup (age band, sex, index level), and one sentence on
    the patients outside the development age range; empty without subgroups."""
    from cdeg.modeling.subgroups import OUTSIDE

    if not rows:
        return ""

    def auc(r: dict[str, Any]) -> str:
        return (
            f"{r['auc']:.2f} [{r['auc_ci'][0]:.2f}, {r['auc_ci'][1]:.2f}]"
            if r.get("auc") is not None
            else "-"
        )

    body = [
        [
            r["variable"],
            r["group"],
            str(r["n"]),
            str(r["events"]),
            auc(r),
            fmt(r.get("mean_risk"), 2, pct=True),
            fmt(r.get("observed"), 2, pct=True),
        ]
        for r in rows
    ]
    head = ["subgroup", "", "patients", "with the outcome", "AUC [95% CI]", "mean predicted risk", "observed"]
    who = esc(MODEL_LABELS.get(model, model)) if model else "the primary model"
    out = f"<p>External performance of {who} by subgroup (AUC only where both outcomes occur twice).</p>"
    out += table(head, body)
    outside = next((r for r in rows if r["group"].startswith(OUTSIDE)), None)
    if outside and outside["n"]:
        # the share among the patients with an age: the age bands, not the outside row itself
        total = sum(r["n"] for r in rows if r["variable"] == outside["variable"] and r is not outside)
        share = outside["n"] / total if total else 0.0
        risk, seen = outside["mean_risk"], outside["observed"]
        how = "" if abs(risk - seen) < 0.01 else f": it {'over' if risk > seen else 'under'}-predicts there"
        out += (
            f"<p><b>{outside['n']} external patients ({share:.0%}) are {esc(outside['group'])}: the model never "
            f"saw such patients, and there it predicts a mean risk of {fmt(risk, 2, pct=True)} "
            f"where {fmt(seen, 2, pct=True)} have the outcome{how}.</b></p>"
        )
    return out


TRANSPORT_HEADER = [
    "variable (top by mean |SHAP|)",
    "development median (IQR)",
    "external median (IQR)",
    "external imputed",
    "external below / above the development range",
    "SMD",
]


def transport_block(transport: dict[str, Any]) -> str:
    """The development-vs-external table of the primary model's top variables and the sentence that reads it
    (:mod:`cdeg.modeling.transport`); a note when the model folder keeps no development distribution."""
    if not transport:
        return ""
    if not transport.get("available"):
        return f"<p class='muted'>No development-vs-external table: {esc(transport.get('reason', ''))}.</p>"

    def mid(r: dict[str, Any], side: str) -> str:
        if r[f"{side}_median"] is None:
            return "-"
        return f"{r[f'{side}_median']:.3g} ({r[f'{side}_q1']:.3g} to {r[f'{side}_q3']:.3g})"

    rows = [
        [
            r["label"],
            mid(r, "development"),
            mid(r, "external"),
            fmt(r["external_imputed_share"], 2, pct=True),
            f"{fmt(r['external_below_min'], 2, pct=True)} / {fmt(r['external_above_max'], 2, pct=True)}",
            fmt(r["smd"], 2),
        ]
        for r in transport["rows"]
    ]
    model = MODEL_LABELS.get(transport.get("model", ""), transport.get("model", ""))
    sentence = (transport.get("summary") or {}).get("sentence", "")
    return (
        f"<p>The {len(rows)} variables of the {esc(model)} model with the largest mean |SHAP| on the development "
        "patients, as the model reads them (before imputation), in both cohorts.</p>"
        + table(TRANSPORT_HEADER, rows)
        + (f"<p><b>{esc(sentence)}</b></p>" if sentence else "")
        + "<p class='muted'>Imputed: share of external patients without a value, set to the development median "
        "or most frequent value. Below / above: share of the external values outside the development minimum "
        "and maximum. SMD: standardised mean difference, external minus development over the pooled SD "
        "(above 0.1 is commonly read as a meaningful shift). Also in transport.csv.</p>"
    )


def recalibration_block(rec: dict[str, Any], external: dict[str, Any]) -> str:
    """The recalibrated figures beside the original ones (cdeg validate --recalibrate), or one line saying
    that the model was applied unchanged."""
    if not rec or not rec.get("applied"):
        return (
            "<p class='muted'>No model updating: the figures are those of the model unchanged "
            "(<code>cdeg validate --recalibrate intercept|logistic</code> estimates a recalibration).</p>"
        )
    rows = []
    for m, r in rec["models"].items():
        o, cv = external.get(m, {}), r["cross_validated"]
        rows.append(
            [
                MODEL_LABELS.get(m, m),
                fmt(r["intercept"], 3),
                fmt(r["slope"], 3),
                fmt(o.get("auc"), 3),
                f"{fmt(o.get('brier'), 3)} / {fmt(cv['brier'], 3)}",
                f"{fmt(o.get('calibration_intercept'), 2)} / {fmt(cv['calibration_intercept'], 2)}",
                f"{fmt(o.get('calibration_slope'), 2)} / {fmt(cv['calibration_slope'], 2)}",
            ]
        )
    head = [
        "model",
        "fitted intercept",
        "fitted slope",
        "AUC (unchanged)",
        "Brier: original / recalibrated",
        "calibration intercept: original / recalibrated",
        "calibration slope: original / recalibrated",
    ]
    return (
        f"<p>Update: {esc(rec['words'])}. It is estimated on these external patients and reported apart from the "
        "original figures, which it never replaces.</p>"
        + table(head, rows)
        + f"<p class='muted'>{esc(rec['evaluation'][:1].upper() + rec['evaluation'][1:])}. Apply the update to new patients of "
        f"this population with {esc(rec['formula'])} (intercept and slope fitted on all external patients, "
        "metrics.json <code>recalibration</code>). The update keeps the ranking, so the AUC does not change.</p>"
    )


def permutation_text(perm: dict[str, Any]) -> str:
    """The label-permutation test in one paragraph (empty when it did not run)."""
    if not perm:
        return ""
    model = MODEL_LABELS.get(perm["model"], perm["model"])
    return (
        f"<p><b>Permutation test</b> ({esc(model)}): cross-validated AUC {perm['observed']:.3f} with the real "
        f"outcome against {fmt(perm['null_mean'], 3)} on average over {perm['n_permutations']} shuffled outcomes, "
        f"p = {perm['p_value']:.3f}. <span class='muted'>{esc(perm['method'])}; the smallest possible p is "
        f"{1 / (1 + perm['n_permutations']):.3f}.</span></p>"
    )


def limitations_block(fit: dict[str, Any], val: dict[str, Any] | None = None) -> str:
    """The limitations one question's own figures show (TRIPOD+AI item 26), one sentence each ("" if none)."""
    from cdeg.modeling.tripod import limitations

    lines = limitations(fit, val)
    if not lines:
        return ""
    return (
        "<h3>Limitations these results show</h3><p class='muted'>Each sentence comes from a check on this run's "
        "own figures (thresholds in cdeg/modeling/tripod.py): a start for the paper's limitations, not all of "
        "them.</p><ul>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>"
    )


def answers_block(rows: list[list[str]]) -> str:
    """The TRIPOD+AI items answered from the run (rows: item, question, answer); "" without rows."""
    if not rows:
        return ""
    return "<h3>Answered from this run</h3>" + table(("item", "question", "answer from this run"), rows)


#: A target whose ceiling AUC (the observable one, else the latent oracle) is below this is presented as
#: exploratory: even a perfect reading of the data predicts it only weakly.
EXPLORATORY_CEILING = 0.70
_CEILING_WORDS = {"observable": "observable ceiling", "latent": "latent oracle"}


def exploratory_note(ceilings: dict[str, float | None]) -> str | None:
    """One sentence presenting a target as exploratory when its ceiling AUC is low, else None.

    Parameters
    ----------
    ceilings : dict
        Ceiling kind ("observable", "latent") -> AUC on the development patients (synthetic truth); the
        observable ceiling decides where there is one, else the latent oracle.
    """
    known = [(k, float(v)) for k in ("observable", "latent") if (v := ceilings.get(k)) is not None]
    if not known or known[0][1] >= EXPLORATORY_CEILING:
        return None
    kind, value = known[0]
    return (
        f"Exploratory target: its {_CEILING_WORDS[kind]} is only {value:.2f} (below {EXPLORATORY_CEILING:.2f}), "
        "so even a perfect reading of these data predicts it weakly; read its models as hypotheses to test, "
        "not as a usable prediction."
    )


def ceiling_block(ceilings: dict[str, float | None]) -> str:
    """The synthetic-truth ceilings of a fit and, when they are low, the exploratory sentence."""
    shown = {k: v for k, v in ceilings.items() if v is not None}
    if not shown:
        return ""
    text = "; ".join(f"{_CEILING_WORDS.get(k, k)} {v:.3f}" for k, v in shown.items())
    note = exploratory_note(ceilings)
    return f"<p>Synthetic truth on these patients (AUC): {esc(text)}.</p>" + (
        f"<p class='warn'>{esc(note)}</p>" if note else ""
    )


def sample_size_text(ss: dict[str, Any]) -> str:
    """The Riley criteria against the study's size, one sentence (metrics.json ``sample_size``)."""
    reduced, raw = ss.get("after_reduction"), ss.get("raw")
    if not reduced and not raw:
        return ""
    main = reduced or raw
    parts = [
        f"The Riley criteria need {main['n_required']} patients ({main['events_required']:.0f} events) for "
        f"{main['n_params']} candidate parameters" + (" after the preprocessing reduction" if reduced else "")
    ]
    if reduced and raw and raw["n_params"] != reduced["n_params"]:
        parts.append(f" and {raw['n_required']} for the {raw['n_params']} input columns")
    enough = ss["n_patients"] >= main["n_required"]
    parts.append(
        f"; this study has {ss['n_patients']} ({ss['events']} events): "
        + ("enough." if enough else "too few, so expect overfitting and optimistic apparent performance.")
    )
    return (
        "".join(parts)
        + f" <span class='muted'>Anticipated Cox-Snell R2 {main['r2_cs']:.3f} ({main['r2_source']}); "
        f"shrinkage {main['n_shrinkage']}, optimism {main['n_optimism']}, overall risk {main['n_risk']} "
        "patients (criteria 1-3).</span>"
    )


def checklist_block() -> str:
    """The TRIPOD+AI and PROBAST+AI items: which cdeg answers, which the study's authors must."""
    from cdeg.modeling.checklist import CHECKLIST_HEAD, checklist_rows, owner_counts

    counts = owner_counts()
    return (
        "<p>Reporting (TRIPOD+AI) and risk-of-bias (PROBAST+AI) items: where cdeg's outputs answer an item, and "
        f"what the study's authors must add. {esc(_counts_text(counts))}</p>"
        + table(CHECKLIST_HEAD, checklist_rows())
    )


def _counts_text(counts: dict[str, int]) -> str:
    from cdeg.modeling.checklist import OWNER_WORDS

    return "; ".join(f"{OWNER_WORDS.get(k, k)}: {v}" for k, v in counts.items()) + "."


def figure_block(figs: dict[str, list[Path]], names: Sequence[tuple[str, str]]) -> str:
    """The PNG of each figure of `names` (key, caption) that `figs` holds, full resolution."""
    parts = []
    for key, caption in names:
        if key in figs:
            png = next(p for p in figs[key] if p.suffix == ".png")
            parts.append(figure(png, caption, colours=None))
    return f'<div class="figs">{"".join(parts)}</div>' if parts else ""


# ==============================================================================================================
# cdeg fit
# ==============================================================================================================

_FIT_NAV = [
    ("cv", "Nested cross-validation"),
    ("shap", "SHAP"),
    ("data", "Data"),
    ("checklist", "TRIPOD+AI / PROBAST+AI"),
    ("params", "Hyperparameters"),
    ("versions", "Versions"),
]


def outcome_block(definition: dict[str, Any] | None) -> str:
    """The outcome definition of an operational label (metrics.json ``outcome_definition``) in one sentence,
    and, when the model reads images of the modality the label is read from, why the task is then to automate
    that reading; "" for a plain clinical-table column."""
    if not definition or not definition.get("operational") or not definition.get("text"):
        return ""
    out = f"<p><b>Outcome definition.</b> {esc(definition['text'])}</p>"
    if definition.get("circularity"):
        out += f"<p class='warn'>{esc(definition['circularity'])}</p>"
    return out


def fit_report(metrics: dict[str, Any], figs: dict[str, list[Path]], cfg: Any) -> str:
    """report.html of a `cdeg fit` run folder (`cfg`: its :class:`~cdeg.modeling.config.FitConfig`)."""
    d = metrics["data"]
    body = [
        f"<p>Target <code>{esc(metrics['target'])}</code>: {metrics['n_patients']} patients, {metrics['events']} events "
        f"(prevalence {metrics['prevalence']:.1%}), {metrics['n_features']} candidate variables "
        f"({esc(', '.join(f'{k}: {v}' for k, v in d['column_sets'].items()))}).</p>",
        outcome_block(metrics.get("outcome_definition")),
        ceiling_block(metrics.get("ceilings") or {}),
        _sample_size_paragraph(metrics.get("sample_size") or {}),
        *_cv_section(metrics, figs, cfg),
        *_shap_section(metrics, figs, cfg),
        section("data", "Data"),
        table(["item", "value"], _data_rows(d)),
    ]
    if d.get("suspected_leaks"):
        body.append(
            "<p class='warn'>Variables that alone separate the target almost perfectly (check they are "
            f"known before surgery): {esc(', '.join(d['suspected_leaks']))}</p>"
        )
    from cdeg.modeling.tripod import run_answers, with_primary

    run = with_primary(metrics, cfg.primary_model)
    body += [
        limitations_block(run),
        section("checklist", "TRIPOD+AI and PROBAST+AI checklist"),
        answers_block([[k, metrics["target"], v] for k, v in run_answers(run).items()]),
        checklist_block(),
        section("params", "Final hyperparameters"),
        table(
            ["model", "hyperparameters"],
            [[m, json.dumps(s["final_params"], default=str)] for m, s in metrics["cv"].items()],
        ),
        section("versions", "Versions and timings"),
        table(
            ["", ""],
            [[k, v] for k, v in metrics["versions"].items()]
            + [[f"time: {k}", f"{v} s"] for k, v in metrics.get("timings_s", {}).items()],
        ),
    ]
    return page(f"cdeg fit: {metrics['target']}", _fit_subtitle(metrics), _FIT_NAV, body)


def _sample_size_paragraph(ss: dict[str, Any]) -> str:
    text = sample_size_text(ss) if ss else ""
    # sample_size_text escapes nothing itself: its numbers and fixed words carry no markup of the user's.
    return f"<p>{text}</p>" if text else ""


def _primary_auc(per_model: dict[str, Any], primary: Any) -> tuple[str, float] | None:
    """(primary model, its AUC): `primary` (a name, or a configuration with ``primary_model``), else the first
    model of `per_model`."""
    name = (primary if isinstance(primary, str) else getattr(primary, "primary_model", None)) or next(
        iter(per_model), None
    )
    s = per_model.get(name) if name else None
    return (name, float(s["auc"])) if s and s.get("auc") is not None else None


def _fit_subtitle(metrics: dict[str, Any]) -> str:
    p = metrics["protocol"]
    return f"nested cross-validation ({p['outer']}), final models and SHAP; run key {p['run_key']}"


def _cv_section(metrics: dict[str, Any], figs: dict[str, list[Path]], cfg: Any) -> list[str]:
    p = metrics["protocol"]
    return [
        section("cv", "Nested cross-validation"),
        table(METRIC_HEADER, metrics_rows(metrics["cv"])),
        f"<p><b>{esc(verdict(metrics['comparison']))}</b></p>",
        table(
            ["AUC difference", "estimate", "95% CI", "p (paired DeLong)", "p (corrected resampled t-test)"],
            comparison_rows(metrics["comparison"]),
        ),
        permutation_text(metrics.get("permutation_test") or {}),
        tiers_block(metrics.get("tiers") or {}),
        baselines_block(metrics.get("baselines") or {}, primary=_primary_auc(metrics["cv"], cfg)),
        f"<p class='muted'>Outer loop: {esc(p['outer'])}; inner loop: {esc(p['inner'])} with {cfg.trials} "
        f"Optuna trials per study minimising {esc(p['objective'])}. Preprocessing (imputation, near-constant "
        "and near-duplicate removal, encoding, scaling) is fitted inside each training fold only. AUC CI: "
        f"{esc(p['auc_ci'])}. Calibration intercept: calibration-in-the-large (0 ideal); slope: 1 ideal, "
        "below 1 means too extreme predictions.</p>",
        figure_block(
            figs,
            [
                ("roc", "ROC curves (mean out-of-fold prediction per patient)"),
                ("calibration", "Calibration"),
                ("decision_curve", "Decision curve"),
            ],
        ),
    ]


def _shap_section(metrics: dict[str, Any], figs: dict[str, list[Path]], cfg: Any) -> list[str]:
    return [
        section(
            "shap",
            f"What drives the {MODEL_LABELS.get(cfg.primary_model, cfg.primary_model)} model "
            "(SHAP, final model, development patients)",
        ),
        "<p class='muted'>SHAP values are contributions to the log-odds; they add up from the model's average "
        "log-odds over its training patients (the base value) to each patient's. They explain the model, not "
        "causation.</p>",
        f"<p class='muted'>{esc(AGE_SENTENCE)}</p>",
        figure_block(figs, [("shap_bar", "Mean |SHAP|"), ("shap_beeswarm", "SHAP per patient")]),
        figure_block(
            figs,
            [
                (f"shap_dependence_{k + 1}", "SHAP dependence: " + t["label"])
                for k, t in enumerate(metrics["shap_top"][: cfg.shap_dependence])
            ],
        ),
        *stability_html(metrics.get("shap_stability")),
    ]


def stability_html(stability: dict[str, Any] | None) -> list[str]:
    """The stability of the top variables and levels across the outer-fold models (``shap_stability``)."""
    if not stability:
        return []
    parts = [
        "<h3>Stability across the outer folds</h3>",
        f"<p class='muted'>{esc(stability['how'])}</p>",
    ]
    for key, words in (("variables", "variable"), ("level", "level")):
        s = stability.get(key)
        if not s:
            continue
        if s.get("mean_spearman") is None:
            parts.append(
                f"<p>Rank agreement of the top {s['top']} by {words}: none to compute, no two of the "
                f"{s['models']} fold models rank two or more {words}s with a contribution.</p>"
            )
        else:
            parts.append(
                f"<p>Rank agreement of the top {s['top']} by {words}: mean Spearman {fmt(s['mean_spearman'], 2)} "
                f"(lowest {fmt(s['min_spearman'], 2)}, highest {fmt(s['max_spearman'], 2)}; {s['models']} fold "
                "models).</p>"
            )
        rows = [
            [t.get("label", t["name"]), fmt(t["mean_abs_shap"], 3), f"{t['folds_in_top']} of {s['models']}"]
            for t in s["top_variables"]
        ]
        if rows:
            parts.append(table([words, "mean |SHAP| over the fold models", f"in top {s['top']}"], rows))
    return parts


def _data_rows(d: dict[str, Any]) -> list[list[str]]:
    def lst(x: Any) -> str:
        x = list(x or [])
        return f"{len(x)}" + (f": {', '.join(map(str, x[:12]))}{' ...' if len(x) > 12 else ''}" if x else "")

    rows = [
        ["patients left out for bad input values", lst(d.get("skipped_patients"))],
        ["patients without a target (left out)", lst(d.get("ids_without_target"))],
        ["ids only in the features table", lst(d.get("ids_only_in_features"))],
        ["ids only in the clinical table", lst(d.get("ids_only_in_clinical"))],
        ["columns left out by the leakage rule", lst(d.get("leakage_excluded"))],
        ["columns excluded on request", lst(d.get("user_excluded"))],
        ["text columns left out (too many values)", lst(d.get("text_columns_excluded"))],
        ["categorical (one-hot) columns", lst(d.get("categorical"))],
    ]
    other = d.get("missing_in_other_table")
    if other:
        rows.insert(6, [f"clinical columns absent from {other['table']} (excluded)", lst(other["columns"])])
    return rows


# ==============================================================================================================
# cdeg validate
# ==============================================================================================================

_VALIDATE_NAV = [
    ("external", "External validation"),
    ("transport", "Development vs external"),
    ("recalibration", "Recalibration"),
    ("figures", "Figures"),
    ("versions", "Versions"),
]


def validate_report(metrics: dict[str, Any], figs: dict[str, list[Path]]) -> str:
    """report.html of a `cdeg validate` output folder."""
    dev = metrics["development"]
    body = [
        section("external", "External validation"),
        f"<p>Target <code>{esc(metrics['target'])}</code>: {metrics['n_patients']} external patients, "
        f"{metrics['events']} events (prevalence {metrics['prevalence']:.1%}); development: {dev['n_patients']} "
        f"patients (prevalence {dev['prevalence']:.1%}).</p>",
        outcome_block(metrics.get("outcome_definition")),
        table(
            [
                "model",
                "AUC development (nested CV)",
                "AUC external [95% DeLong CI]",
                "Brier dev.",
                "Brier ext.",
                "calibration intercept (ext.)",
                "calibration slope (ext.)",
                "imputed values",
            ],
            _validate_rows(metrics),
        ),
        f"<p><b>{esc(verdict(metrics['comparison']))}</b></p>",
        table(
            ["AUC difference (external)", "estimate", "95% CI", "p (paired DeLong)"],
            comparison_rows(metrics["comparison"]),
        ),
        permutation_text(metrics.get("permutation_test") or {}),
        tiers_block(metrics.get("tiers") or {}),
        baselines_block(
            dev.get("baselines") or {},
            metrics.get("baselines") or {},
            primary=_primary_auc(metrics["external"], metrics.get("primary_model")),
        ),
        subgroups_block(metrics.get("subgroups") or [], metrics.get("primary_model")),
        _imputation_warning(metrics),
        section("transport", "Development vs external: the top variables"),
        transport_block(metrics.get("transport") or {}),
        section("recalibration", "Recalibration (model updating)"),
        recalibration_block(metrics.get("recalibration") or {}, metrics["external"]),
        figure_block(figs, [("recalibration", "Calibration before and after recalibration (external)")]),
        section("figures", "Figures"),
        figure_block(
            figs,
            [
                ("roc", "ROC: development (left) and external (right)"),
                ("calibration", "Calibration"),
                ("decision_curve", "Decision curve"),
            ],
        ),
        section("versions", "Versions"),
        table(["", ""], [[k, v] for k, v in metrics["versions"].items()]),
    ]
    subtitle = f"model {metrics['model']}, {metrics['n_patients']} external patients"
    return page(f"cdeg validate: {metrics['target']}", subtitle, _VALIDATE_NAV, body)


def _validate_rows(metrics: dict[str, Any]) -> list[list[str]]:
    dev = metrics["development"]
    rows = []
    for m, s in metrics["external"].items():
        d = dev["cv"].get(m)
        rows.append(
            [
                MODEL_LABELS.get(m, m),
                f"{d['auc']:.3f} [{d['auc_ci'][0]:.3f}, {d['auc_ci'][1]:.3f}]" if d else "-",
                f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
                fmt(d["brier"], 3) if d else "-",
                _with_ci(s["brier"], (s.get("bootstrap") or {}).get("brier"), 3),
                _with_ci(
                    s["calibration_intercept"], (s.get("bootstrap") or {}).get("calibration_intercept"), 2
                ),
                _with_ci(s["calibration_slope"], (s.get("bootstrap") or {}).get("calibration_slope"), 2),
                f"{metrics['imputed_share'].get(m, 0):.1%}",
            ]
        )
    return rows


def _imputation_warning(metrics: dict[str, Any]) -> str:
    """The box naming the variables absent from the external cohort (empty when none is)."""
    miss = {m: v for m, v in metrics["missing_variables"].items() if v}
    if not miss and not any(v > 0 for v in metrics["imputed_share"].values()):
        return ""
    items = "".join(
        f"<li>{esc(MODEL_LABELS.get(m, m))}: {metrics['imputed_share'][m]:.1%} of input values imputed; "
        f"missing variables ({len(v)}): {esc(', '.join(v[:20]))}{' ...' if len(v) > 20 else ''}</li>"
        for m, v in metrics["missing_variables"].items()
    )
    return (
        "<div class='warn'><p>Variables absent from the external cohort were set to the development "
        f"median / most frequent value (the fitted imputer's values):</p><ul>{items}</ul></div>"
    )
