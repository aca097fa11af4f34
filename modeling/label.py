"""Operational target labels (`cdeg label`): a study label derived by a rule stated before the study.

A real study has no reference standard for "accelerated degeneration": the development patients have one
radiograph and one MRI, both before surgery. The label must then be defined operationally, for instance as an
age- and sex-standardised degeneration score above a centile of a population cohort. :func:`derive_label`
applies such a rule:

1. the age and sex norm of each named measurement (:data:`cdeg.measures.DEGENERATION_SIGN`) at each disc is
   fitted on the reference cohort (:class:`cdeg.modeling.preprocess.AgeNorm`: natural cubic spline of age plus
   sex; with ``by_sex`` one norm per sex, so curve and spread may differ between women and men);
2. each patient's score is :class:`cdeg.modeling.preprocess.DegenerationScore`: per disc, each sign of
   degeneration (height loss, signal loss) is the mean of its signed SD from the norm, a disc the mean of its
   signs, the score the mean over the discs (at least ``min_levels``);
3. the threshold is the reference cohort's ``centile``-th centile of the score (per sex with ``by_sex``); a
   patient whose score is above it is labelled 1, else 0, and a patient without a score gets no label.

The label is read from the images: when a model predicts it from image features of the same modality, what
the study measures is how well the model automates that reading, not whether images predict a clinical course
(:func:`circularity`; the reports say so).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cdeg import measures
from cdeg.cohort import ID_COLUMN, MODALITIES, MODALITY_WORDS
from cdeg.errors import CdegError

log = logging.getLogger(__name__)

#: Measurements a label may name: those with a known direction of degeneration.
LABEL_MEASUREMENTS: tuple[str, ...] = tuple(measures.DEGENERATION_SIGN)
#: Fewest reference patients with a score in a stratum (each sex with ``by_sex``) for a centile threshold.
MIN_REFERENCE = 20
#: Name of the stratum when the norms and the threshold are shared by both sexes.
ALL_STRATUM = "all"
SEX_STRATA: dict[float, str] = {0.0: "female", 1.0: "male"}


@dataclass(frozen=True)
class LabelRule:
    """The rule of an operational label, fixed before the study (what `cdeg label` and a study's
    ``targets.<name>.label`` section take)."""

    measurements: tuple[str, ...] = field(
        default=("disc_height_index", "disc_csf_signal_ratio"),
        metadata={
            "help": f"disc measurements averaged into the score; valid: {', '.join(LABEL_MEASUREMENTS)}"
        },
    )
    modality: str = field(
        default="mri", metadata={"help": "modality of the measurements", "choices": tuple(MODALITIES)}
    )
    centile: float = field(
        default=90.0,
        metadata={"help": "label 1 above this centile of the reference cohort's score", "range": (1.0, 99.9)},
    )
    by_sex: bool = field(
        default=True,
        metadata={"help": "one age norm and one threshold per sex (false: one for both, sex as a shift)"},
    )
    min_levels: int = field(
        default=2, metadata={"help": "fewest discs measured for a patient's score", "range": (1, 6)}
    )
    age_column: str = field(default="age", metadata={"help": "clinical column of age (years)"})
    sex_column: str = field(default="sex", metadata={"help": "clinical column of sex (M/F)"})
    age_df: int = field(default=3, metadata={"help": "age terms of the norm's spline", "range": (1, 6)})

    def check(self) -> None:
        """Raise ValueError naming the first invalid option."""
        bad = [m for m in self.measurements if m not in LABEL_MEASUREMENTS]
        if bad or not self.measurements:
            raise ValueError(
                f"label measurements {list(bad) or '(none)'}: give disc measurements with a direction of "
                f"degeneration; valid: {', '.join(LABEL_MEASUREMENTS)}"
            )
        if self.modality not in MODALITIES:
            raise ValueError(f"label modality {self.modality!r}; valid: {', '.join(MODALITIES)}")
        if not 0 < self.centile < 100:
            raise ValueError(f"label centile {self.centile} must be between 0 and 100")
        if self.min_levels < 1 or self.age_df < 1:
            raise ValueError("label min_levels and age_df must be at least 1")

    def words(self, name: str, n_reference: int | None = None) -> str:
        """The rule in one sentence, for label.json, metrics.json and the reports."""
        what = " and ".join(measures.DESCRIPTIONS.get(m, m) for m in self.measurements)
        ref = f"the reference cohort ({n_reference} patients)" if n_reference else "the reference cohort"
        sex = ", women and men each against their own norms and centile" if self.by_sex else ""
        return (
            f"{name} = 1 when the patient's {MODALITY_WORDS[self.modality]} disc degeneration score (mean over "
            f"the discs of the SD from the age and sex norm of {what}, signed so that degeneration is "
            f"positive) is above the {self.centile:g}th centile of {ref}{sex}; 0 otherwise; no label without a "
            f"score (fewer than {self.min_levels} discs measured, or no age or sex)."
        )


@dataclass(frozen=True)
class LabelResult:
    """What :func:`derive_label` wrote: the folder, the per-patient table and the manifest."""

    out: Path
    labels: Any
    manifest: dict[str, Any]


def derive_label(
    features: str | Path,
    clinical: str | Path,
    reference_features: str | Path,
    reference_clinical: str | Path,
    out: str | Path,
    *,
    measurements: str | list[str] | tuple[str, ...] | None = None,
    modality: str | None = None,
    centile: float | None = None,
    by_sex: bool | None = None,
    min_levels: int | None = None,
    name: str = "accelerated_operational",
    id_column: str | None = None,
    rule: LabelRule | None = None,
) -> LabelResult:
    """Derive an operational study label by a stated rule against a reference cohort's centiles.

    Parameters
    ----------
    features, clinical : path
        The cohort to label: its `cdeg extract` output (folder or features table) and its clinical table (with
        age and sex).
    reference_features, reference_clinical : path
        The reference cohort (e.g. the population study) whose norms and centiles define the rule.
    out : path
        Output folder (:class:`cdeg.outputs.LabelRun`): labels.csv, clinical.csv, label.json.
    measurements, modality, centile, by_sex, min_levels : optional
        The rule (:class:`LabelRule`; None keeps its default or the value in `rule`). `measurements` may be
        comma-separated.
    name : str
        The label column added to the clinical table (the study's target).
    id_column : str, optional
        Patient id column of every table [patient_id].
    rule : LabelRule, optional
        A whole rule (a study's ``targets.<name>.label``); the keyword options above override its fields.

    Returns
    -------
    LabelResult

    Raises
    ------
    ValueError
        An invalid rule.
    CdegError
        Naming the file: a table that cannot be read, no measurement column of the rule, no age or sex
        column, a clinical table that already has a column `name`, too few reference patients with a score.
    """
    rule = _resolve_rule(rule, measurements, modality, centile, by_sex, min_levels)
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"label name {name!r}: letters, digits and '_' only")
    id_column = id_column or ID_COLUMN
    paths = _paths(features, clinical, reference_features, reference_clinical)
    cohort, table = _read_cohort(paths["features"], paths["clinical"], rule, id_column, name)
    reference, _ = _read_cohort(paths["reference_features"], paths["reference_clinical"], rule, id_column)
    # The norms are those of the reference's columns: a disc only the cohort has is left out of its score.
    cohort = cohort.reindex(columns=reference.columns)
    norms = fit_norms(reference, rule)
    ref_scores = score(reference, rule, norms)
    thresholds = _thresholds(ref_scores, rule, paths["reference_features"])
    labels = apply_rule(score(cohort, rule, norms), ref_scores, thresholds, rule)
    labels = labels.reindex(table[id_column].to_numpy())
    labels.loc[labels["why_missing"].isna() & labels["score"].isna(), "why_missing"] = "no features"
    for pid, why in labels["why_missing"].dropna().items():
        log.warning("patient %s: no %s label (%s) / %s", pid, name, why, paths["features"])
    ages = age_coverage(reference, cohort, rule)
    if ages["outside"]:
        log.warning(
            "%d patient(s) outside the reference cohort's ages (%g-%g): their norms are extrapolated (the norm is "
            "linear beyond its outer knots), so their labels rest on the shape of the norm where it was not "
            "measured / %s",
            len(ages["outside"]), *ages["reference"], paths["reference_clinical"],
        )  # fmt: skip
    run = _write(Path(out), name, rule, paths, table, labels, thresholds, ref_scores, id_column, ages)
    return run


def age_coverage(reference: Any, cohort: Any, rule: LabelRule) -> dict[str, Any]:
    """The reference cohort's age range and the cohort's patients outside it (ids, for label.json)."""
    import pandas as pd

    ref_age = pd.to_numeric(reference[rule.age_column], errors="coerce").dropna()
    age = pd.to_numeric(cohort[rule.age_column], errors="coerce")
    lo, hi = (float(ref_age.min()), float(ref_age.max())) if len(ref_age) else (float("nan"), float("nan"))
    outside = age[(age < lo) | (age > hi)]
    return {"reference": [lo, hi], "outside": [str(p) for p in outside.index]}


def _resolve_rule(
    rule: LabelRule | None, measurements: Any, modality: Any, centile: Any, by_sex: Any, min_levels: Any
) -> LabelRule:
    from dataclasses import replace

    if isinstance(measurements, str):
        measurements = [m.strip() for m in measurements.split(",") if m.strip()]
    given = {
        "measurements": tuple(measurements) if measurements is not None else None,
        "modality": modality,
        "centile": float(centile) if centile is not None else None,
        "by_sex": by_sex,
        "min_levels": min_levels,
    }
    rule = replace(rule or LabelRule(), **{k: v for k, v in given.items() if v is not None})
    rule.check()
    return rule


def _paths(features: Any, clinical: Any, reference_features: Any, reference_clinical: Any) -> dict[str, Path]:
    from cdeg.features.agreement import table_path

    out = {"features": table_path(features), "reference_features": table_path(reference_features)}
    for key, p in (("clinical", clinical), ("reference_clinical", reference_clinical)):
        if not Path(p).is_file():
            raise CdegError("clinical table not found", path=p)
        out[key] = Path(p)
    return out


def _read_cohort(
    features_path: Path, clinical_path: Path, rule: LabelRule, id_column: str, name: str | None = None
) -> tuple[Any, Any]:
    """(the rule's measurement columns joined with age and sex, indexed by patient id; the clinical table as
    read). Raises CdegError naming the file when a column the rule needs is absent."""
    from cdeg.features.agreement import read_feature_columns

    from cdeg.cohort import read_clinical

    table = read_clinical(clinical_path, id_column)
    absent = [c for c in (rule.age_column, rule.sex_column) if c not in table.columns]
    if absent:
        raise CdegError(
            f"no {' or '.join(map(repr, absent))} column; the label's age norm needs it", path=clinical_path
        )
    if name is not None and name in table.columns:
        raise CdegError(
            f"the clinical table already has a column {name!r}; give the label another name",
            path=clinical_path,
        )
    feats = read_feature_columns(features_path, id_column)
    columns = rule_columns(feats.columns, rule, features_path)
    joined = table.set_index(id_column)[[rule.age_column, rule.sex_column]].join(feats[columns], how="inner")
    return joined, table


def rule_columns(columns: Any, rule: LabelRule, path: Path | None = None) -> list[str]:
    """The features-table columns the rule reads (``<modality>__<disc>__<measurement>``); a measurement with no
    column at any disc is a CdegError naming the file."""
    from cdeg.modeling.preprocess import parse_image_name

    from cdeg import labels

    found: dict[str, list[str]] = {m: [] for m in rule.measurements}
    for c in columns:
        parsed = parse_image_name(c)
        if parsed and not parsed[3] and parsed[0] == rule.modality and parsed[1] in labels.DISC_NAMES:
            if parsed[2] in found:
                found[parsed[2]].append(c)
    missing = [m for m, cols in found.items() if not cols]
    if missing:
        raise CdegError(
            f"no {rule.modality} column of {', '.join(missing)} at any disc (e.g. "
            f"{rule.modality}__C5-C6__{missing[0]}); the label rule reads it",
            path=path,
        )
    return [c for cols in found.values() for c in cols]


def _strata(sex: Any, rule: LabelRule) -> Any:
    """Each row's stratum name (:data:`SEX_STRATA` with `by_sex`, else :data:`ALL_STRATUM`); None: no sex."""
    import numpy as np
    import pandas as pd
    from cdeg.modeling.preprocess import male_indicator

    male = male_indicator(sex)
    if not rule.by_sex:
        return pd.Series(np.where(np.isfinite(male), ALL_STRATUM, None), index=sex.index, dtype=object)
    return pd.Series([SEX_STRATA.get(float(m)) if np.isfinite(m) else None for m in male], index=sex.index)


def fit_norms(reference: Any, rule: LabelRule) -> dict[str, Any]:
    """Stratum -> fitted :class:`~cdeg.modeling.preprocess.AgeNorm` on the reference rows of that stratum."""
    from cdeg.modeling.preprocess import AgeNorm

    strata = _strata(reference[rule.sex_column], rule)
    norms = {}
    for s in sorted(strata.dropna().unique()):
        rows = reference[strata == s]
        norms[s] = AgeNorm(age_column=rule.age_column, sex_column=rule.sex_column, age_df=rule.age_df).fit(
            rows
        )
    return norms


def score(cohort: Any, rule: LabelRule, norms: dict[str, Any]) -> Any:
    """Per patient: the standardised degeneration score, its stratum and why it is missing (DataFrame)."""
    import pandas as pd
    from cdeg.modeling.preprocess import DegenerationScore

    strata = _strata(cohort[rule.sex_column], rule)
    out = pd.DataFrame({"score": float("nan"), "stratum": strata, "why_missing": None}, index=cohort.index)
    out.loc[strata.isna(), "why_missing"] = "no sex"
    for s, norm in norms.items():
        rows = cohort[strata == s]
        if rows.empty:
            continue
        z = norm.transform(rows)
        z = z[[c for c in z.columns if c not in rows.columns]]
        ds = DegenerationScore(min_levels=rule.min_levels).fit(z)
        if not ds.scores_:
            out.loc[rows.index, "why_missing"] = "no age norm of the measurements"
            continue
        out.loc[rows.index, "score"] = ds.transform(z)[ds.scores_[0]["name"]].to_numpy()
    unknown = strata.notna() & ~strata.isin(list(norms))
    out.loc[unknown, "why_missing"] = "no reference patient of the same sex"
    age = pd.to_numeric(cohort[rule.age_column], errors="coerce")
    no_score = out["score"].isna() & out["why_missing"].isna()
    out.loc[no_score & age.isna(), "why_missing"] = "no age"
    out.loc[no_score & age.notna(), "why_missing"] = f"fewer than {rule.min_levels} discs measured"
    return out


def _thresholds(ref_scores: Any, rule: LabelRule, path: Path) -> dict[str, float]:
    """Stratum -> the reference scores' centile.

    numpy's default ``method="linear"`` is type 7 of Hyndman and Fan (Sample quantiles in statistical
    packages, Am Stat 1996;50:361-5), R's default ``quantile`` type
    (https://numpy.org/doc/stable/reference/generated/numpy.percentile.html): with distinct scores, exactly
    the reference patients above that value are labelled.
    """
    import numpy as np

    out = {}
    for s, group in ref_scores.dropna(subset=["score"]).groupby("stratum"):
        v = group["score"].to_numpy(dtype=float)
        if len(v) < MIN_REFERENCE:
            raise CdegError(
                f"only {len(v)} reference patient(s) with a score in stratum {s} (< {MIN_REFERENCE}) for a "
                "centile threshold",
                path=path,
            )
        out[str(s)] = float(np.percentile(v, rule.centile))
    if not out:
        raise CdegError("no reference patient has a score (age, sex and the measurements)", path=path)
    return out


def apply_rule(scores: Any, ref_scores: Any, thresholds: dict[str, float], rule: LabelRule) -> Any:
    """labels.csv rows (without the id column): score, its centile among the reference scores of its stratum
    (percent at or below it), stratum, label (nullable 0/1) and why a label is missing."""
    import numpy as np
    import pandas as pd

    ref = {s: np.sort(g["score"].dropna().to_numpy(dtype=float)) for s, g in ref_scores.groupby("stratum")}
    out = scores.copy()
    centile = np.full(len(out), np.nan)
    label = pd.array([pd.NA] * len(out), dtype="Int64")
    for i, (s, v) in enumerate(zip(out["stratum"], out["score"], strict=True)):
        if s in thresholds and np.isfinite(v):
            centile[i] = 100.0 * np.searchsorted(ref[s], v, side="right") / len(ref[s])
            label[i] = int(v > thresholds[s])
        elif s is not None and s not in thresholds and out["why_missing"].iloc[i] is None:
            out.iloc[i, out.columns.get_loc("why_missing")] = f"no reference patient of stratum {s}"
    out["reference_centile"] = centile
    out["label"] = label
    return out[["score", "reference_centile", "stratum", "label", "why_missing"]]


def _write(
    out: Path,
    name: str,
    rule: LabelRule,
    paths: dict[str, Path],
    table: Any,
    labels: Any,
    thresholds: dict[str, float],
    ref_scores: Any,
    id_column: str,
    ages: dict[str, Any],
) -> LabelResult:
    from cdeg.io import write_table
    from cdeg.outputs import LabelRun, write_manifest

    run = LabelRun(out)
    run.root.mkdir(parents=True, exist_ok=True)
    rows = labels.reset_index(names=ID_COLUMN)
    write_table(run.labels, rows[list(LabelRun.LABEL_COLUMNS)])
    labelled = table.copy()
    labelled[name] = labels["label"].to_numpy()
    write_table(run.clinical, labelled)
    n_ref = int(ref_scores["score"].notna().sum())
    counts = {
        "patients": len(rows),
        "labelled": int(rows["label"].notna().sum()),
        "positive": int((rows["label"] == 1).sum()),
        "missing": int(rows["label"].isna().sum()),
    }
    manifest = write_manifest(
        run.manifest,
        {
            "name": name,
            "rule": {"words": rule.words(name, n_ref), **asdict(rule)},
            "thresholds": thresholds,
            "reference": {
                **{
                    k.removeprefix("reference_"): _file(paths[k])
                    for k in ("reference_features", "reference_clinical")
                },
                "n_patients": n_ref,
                "n_per_stratum": {
                    str(k): int(v)
                    for k, v in ref_scores.dropna(subset=["score"])["stratum"].value_counts().items()
                },
            },
            "inputs": {k: _file(paths[k]) for k in ("features", "clinical")},
            "id_column": id_column,
            "counts": counts,
            "ages": {
                "reference": ages["reference"],
                "n_outside": len(ages["outside"]),
                "outside": ages["outside"],
            },
            "missing": {str(k): v for k, v in labels["why_missing"].dropna().items()},
            "outputs": {"labels": LabelRun.LABELS, "clinical": LabelRun.CLINICAL},
        },
        stage="label",
    )
    log.info(
        "%s: %d of %d labelled patient(s) above the %gth reference centile -> %s",
        name,
        counts["positive"],
        counts["labelled"],
        rule.centile,
        run.clinical,
    )
    return LabelResult(out=run.root, labels=rows, manifest=manifest)


def _file(path: Path) -> dict[str, str]:
    from cdeg.io import file_sha256

    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}


def outcome_definition(clinical: str | Path, target: str, columns: Any = ()) -> dict[str, Any]:
    """How the target of a fit or a validation is defined, for metrics.json (``outcome_definition``, TRIPOD+AI
    item 8a, read by :mod:`cdeg.modeling.tripod`): for a `cdeg label` run's clinical table, ``text`` (the rule in
    one sentence), ``circular`` (the model reads images of the modality the label is read from) with its
    ``circularity`` sentence, the rule as data, the thresholds and the reference; for any other table, the
    column only (no ``text``: its definition is the authors').

    Parameters
    ----------
    clinical : path
        The clinical table the stage read.
    target : str
        The target column.
    columns : iterable of str
        The model's candidate input columns (for :func:`circularity`).
    """
    from cdeg.outputs import LabelRun

    record = LabelRun.beside(clinical, target)
    if record is None:
        return {"column": target, "operational": False, "circular": False}
    warning = circularity(record, columns)
    return {
        "column": target,
        "operational": True,
        "text": record["rule"]["words"],
        "circular": bool(warning),
        "circularity": warning,
        "rule": record["rule"],
        "thresholds": record["thresholds"],
        "reference": record["reference"],
        "label_run": str(Path(clinical).parent.resolve()),
    }


def circularity(definition: dict[str, Any] | None, columns: Any) -> str:
    """The plain-words warning when a label read from the images is predicted from image features of the same
    modality ("" when the label is not operational or no input column is of that modality).

    `columns` are the model's candidate input columns (``mri__C5-C6__...``) or feature-set names (``mri``)."""
    if not definition:
        return ""
    modality = definition.get("rule", {}).get("modality")
    if not any(str(c) == modality or str(c).startswith(f"{modality}__") for c in columns or ()):
        return ""
    words = MODALITY_WORDS.get(modality, modality)
    return (
        f"The label is computed from the same {words} images the model reads: predicting it measures how well "
        f"the model automates that reading of the {words}, not whether images predict a clinical course. It "
        "cannot show that the patients labelled will degenerate faster; only follow-up images or outcomes can."
    )
