"""TRIPOD+AI and PROBAST+AI as data: each item, in brief, and who answers it (cdeg, partly cdeg, the author).

Sources
-------
TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting
clinical prediction models that use regression or machine learning methods. BMJ 2024;385:e078378,
https://doi.org/10.1136/bmj-2023-078378; expanded checklist:
https://www.tripod-statement.org/wp-content/uploads/2024/04/TRIPODAI-Supplement.pdf (27 items, 52 sub-items;
D = development, E = evaluation).

PROBAST+AI: Moons KGM, Damen JAA, Kaul T, et al. PROBAST+AI: an updated quality, risk of bias, and
applicability assessment tool for prediction models using regression or artificial intelligence methods.
BMJ 2025;388:e082505, https://doi.org/10.1136/bmj-2024-082505. Two parts, each with four domains
(participants and data sources, predictors, outcome, analysis): 16 signalling questions for model development
(quality) and 18 for model evaluation (risk of bias), as the abstract states; the questions below add up to
those numbers.

The texts are short paraphrases, not the published wording; read the papers before filling the checklist.

Who answers
-----------
``"cdeg"``: the run folder holds the answer; ``where`` says in which file and key, and which report section.
``"partly"``: cdeg gives part of it; ``where`` says what it gives and what the author must add.
``"user"``: only the author knows (study setting, eligibility, ethics, funding...); ``where`` may hint.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OWNERS: tuple[str, ...] = ("cdeg", "partly", "user")
OWNER_WORDS: dict[str, str] = {"cdeg": "cdeg", "partly": "partly cdeg", "user": "author"}
GUIDELINES: tuple[str, ...] = ("TRIPOD+AI", "PROBAST+AI")

#: Column headings of :func:`checklist_rows` (for ``cdeg.report.html.table``).
CHECKLIST_HEAD: tuple[str, ...] = ("item", "topic", "asks for", "answered by", "where / what is missing")


@dataclass(frozen=True)
class Item:
    """One checklist item.

    Attributes
    ----------
    id : str
        Guideline and item number, e.g. ``"TRIPOD+AI 12a"``, ``"PROBAST+AI development 4.5"``.
    topic : str
        The item's heading in the guideline.
    text : str
        What the item asks for, paraphrased briefly.
    owner : {"cdeg", "partly", "user"}
    where : str
        For ``cdeg``: file and key, and report section; for ``partly``: what cdeg gives and what is missing;
        for ``user``: an optional hint.
    """

    id: str
    topic: str
    text: str
    owner: str
    where: str = ""

    @property
    def guideline(self) -> str:
        return self.id.split(" ", 1)[0]


# Places in the run folder, written once so the items below stay short.
_FIT = "fit run metrics.json"
_CV = f"{_FIT} cv.<model> (auc, auc_ci, brier, calibration_intercept, calibration_slope)"
_PROTO = f"{_FIT} protocol (outer, inner, trials, objective, sampler, seed)"
_DATA = f"{_FIT} data (ids_only_in_features, ids_only_in_clinical, ids_without_target, leakage_excluded)"
_PREP = "model/model.json preprocessing (missing filter, median imputation, one-hot, filters, scaling)"
_TARGET = "report section of the target"
_NO_IMBALANCE = "no class-imbalance method (no resampling, no class weights): model.json hyperparameters"


def _t(num: str, topic: str, text: str, owner: str, where: str = "") -> Item:
    return Item(f"TRIPOD+AI {num}", topic, text, owner, where)


TRIPOD_AI: tuple[Item, ...] = (
    _t("1", "Title", "Say it develops or evaluates a prediction model; population; outcome", "user"),
    _t("2", "Abstract", "Follow the TRIPOD+AI for Abstracts checklist", "user"),
    _t(
        "3a", "Background", "Healthcare context, diagnostic or prognostic, rationale, existing models", "user"
    ),
    _t("3b", "Background", "Target population, intended purpose in the care pathway, intended users", "user"),
    _t("3c", "Background", "Known health inequalities between sociodemographic groups", "user"),
    _t(
        "4",
        "Objectives",
        "Study objectives: development, evaluation, or both",
        "partly",
        "targets and their titles in run.json config; external validation present or not (Summary). "
        "Missing: the objectives in words",
    ),
    _t(
        "5a",
        "Data",
        "Data sources for development and evaluation, why these, representativeness",
        "partly",
        "cohorts, their roles and sizes: report section Cohorts. Missing: origin, rationale, representativeness",
    ),
    _t("5b", "Data", "Dates of accrual and end of follow-up", "user"),
    _t("6a", "Participants", "Study setting, number and location of centres", "user"),
    _t(
        "6b",
        "Participants",
        "Eligibility criteria",
        "partly",
        f"patients left out by the pipeline: {_DATA}. Missing: the clinical inclusion and exclusion criteria",
    ),
    _t("6c", "Participants", "Treatments received and how they were handled", "user"),
    _t(
        "7",
        "Data preparation",
        "Pre-processing and quality checks, and whether similar across sociodemographic groups",
        "partly",
        "segmentation QC (qc.csv; report section Segmentation), extraction errors (features errors.csv, "
        f"provenance.json), {_PREP}. Missing: comparison across sociodemographic groups",
    ),
    _t(
        "8a",
        "Outcome",
        "Outcome definition, time horizon, how and when assessed, rationale, consistency across groups",
        "partly",
        "target column, title and description in run.json config; an operational label's rule, reference and "
        "thresholds in metrics.json outcome_definition (`cdeg label`). Missing: assessment, horizon, rationale",
    ),
    _t("8b", "Outcome", "Qualifications and demographics of outcome assessors, if subjective", "user"),
    _t("8c", "Outcome", "Blinding of outcome assessment", "user"),
    _t(
        "9a",
        "Predictors",
        "Choice of initial predictors and any pre-selection before modelling",
        "partly",
        f"{_FIT} protocol.feature_sets, data.column_sets, data.user_excluded, data.leakage_excluded. "
        "Missing: why these candidate predictors",
    ),
    _t(
        "9b",
        "Predictors",
        "Define all predictors, how and when measured, blinding of their assessment",
        "partly",
        "image features and clinical measurements per level (features provenance.json: PyRadiomics version and "
        "settings; report section Features). Missing: image acquisition, timing, blinding",
    ),
    _t(
        "9c",
        "Predictors",
        "Qualifications and demographics of predictor assessors, if subjective",
        "partly",
        "outlines are drawn by the segmentation model (report section Segmentation). Missing: who drew the "
        "reference outlines and reviewed the QC",
    ),
    _t(
        "10",
        "Sample size",
        "How the study size was arrived at and why it suffices; any sample size calculation",
        "cdeg",
        f"{_FIT} sample_size (Riley criteria for the candidate parameters, n_patients, events): fit report",
    ),
    _t(
        "11",
        "Missing data",
        "How missing data were handled; reasons for omitting data",
        "partly",
        f"{_PREP}; {_DATA}; validation metrics.json imputed_share. Missing: why values or images are missing",
    ),
    _t(
        "12a",
        "Analytical methods",
        "How the data were used (development, evaluation), partitioning",
        "cdeg",
        f"{_PROTO}; report section Nested cross-validation",
    ),
    _t(
        "12b",
        "Analytical methods",
        "Handling of predictors: functional form, rescaling, transformation, standardisation",
        "cdeg",
        f"{_PREP}; report section Data",
    ),
    _t(
        "12c",
        "Analytical methods",
        "Model type, rationale, all building steps incl. hyperparameter tuning, internal validation method",
        "partly",
        f"{_PROTO}, tuning, cv.<model>.final_params; report sections Nested cross-validation and Final "
        "hyperparameters. Missing: rationale for the model types",
    ),
    _t("12d", "Analytical methods", "Heterogeneity across clusters (e.g. hospitals)", "user", "not analysed"),
    _t(
        "12e",
        "Analytical methods",
        "All performance measures and plots, their rationale, and model comparisons",
        "cdeg",
        f"{_CV}, comparison; plots roc, calibration, decision_curve; {_TARGET}",
    ),
    _t(
        "12f",
        "Analytical methods",
        "Model updating (e.g. recalibration) after evaluation",
        "partly",
        "cdeg validate applies the model unchanged unless asked: --recalibrate intercept|logistic "
        "(targets.<t>.recalibrate), reported apart in validation metrics.json recalibration. Missing: why",
    ),
    _t(
        "12g",
        "Analytical methods",
        "How predictions were calculated in the evaluation (formula, code, object, API)",
        "cdeg",
        "model/ folder (model.json and the saved model) applied by cdeg validate and cdeg predict; report "
        "section Provenance",
    ),
    _t("13", "Class imbalance", "Class imbalance methods, why, and any recalibration", "cdeg", _NO_IMBALANCE),
    _t("14", "Fairness", "Approaches to model fairness and their rationale", "user", "not analysed"),
    _t(
        "15",
        "Model output",
        "Output (probability or class); thresholds and how they were chosen",
        "partly",
        "predicted probabilities (oof_predictions.csv, predictions.csv); net benefit by threshold "
        "(decision_curve plot). Missing: any threshold used and why",
    ),
    _t(
        "16",
        "Training versus evaluation",
        "Differences between development and evaluation data: setting, eligibility, outcome, predictors",
        "partly",
        "cohorts side by side (report section Cohorts), variables left out for the external cohort and their "
        "imputed share, the top variables' development-vs-external distributions and the ages outside the "
        "development range (validation metrics.json transport, transport.csv). Missing: setting, eligibility "
        "and outcome differences",
    ),
    _t("17", "Ethical approval", "Ethics committee, informed consent or waiver", "user"),
    _t("18a", "Funding", "Funding source and role of funders", "user"),
    _t("18b", "Conflicts of interest", "Conflicts of interest of all authors", "user"),
    _t("18c", "Protocol", "Where the protocol is, or that there is none", "user"),
    _t("18d", "Registration", "Registry and number, or that it was not registered", "user"),
    _t("18e", "Data sharing", "Availability of the study data", "user"),
    _t(
        "18f",
        "Code sharing",
        "Availability of the analysis code",
        "partly",
        "cdeg and library versions, configuration and seeds (report section Provenance; every manifest). "
        "Missing: where the code and run configuration are deposited",
    ),
    _t("19", "Patient and public involvement", "Patient and public involvement, or none", "user"),
    _t(
        "20a",
        "Participants",
        "Flow of participants, numbers with and without the outcome, follow-up",
        "partly",
        f"{_FIT} n_patients, events; {_DATA}; segmentation QC and extraction errors. Missing: flow diagram, "
        "follow-up",
    ),
    _t(
        "20b",
        "Participants",
        "Characteristics per data source: dates, predictors, treatments, events, follow-up, missingness",
        "partly",
        "report section Cohorts (age, sex, BMI, smoking, outcome, NDI, missing images). Missing: dates, "
        "treatments, follow-up, differences across demographic groups",
    ),
    _t(
        "20c",
        "Participants",
        "Evaluation data compared with development data on important predictors and outcome",
        "cdeg",
        "report section Cohorts (side by side); the model's top variables, development vs external "
        "(validation transport.csv, report section of the target)",
    ),
    _t(
        "21",
        "Model development",
        "Participants and events in each analysis (development, tuning, evaluation)",
        "cdeg",
        f"{_FIT} n_patients, events; oof_predictions.csv (repeat, fold); validation metrics.json n_patients, "
        f"events; {_TARGET}",
    ),
    _t(
        "22",
        "Model specification",
        "The full model, usable for new individuals, and restrictions on access",
        "partly",
        "model/ folder (model.json, the saved model; cdeg predict). Missing: access and re-use terms",
    ),
    _t(
        "23a",
        "Model performance",
        "Performance with confidence intervals, incl. key subgroups; plots",
        "partly",
        f"{_CV}; comparison; subgroups by age band, sex, index level (validation metrics.json subgroups); "
        f"{_TARGET}. Missing: subgroups of the development cohort, and other key subgroups",
    ),
    _t("23b", "Model performance", "Heterogeneity of performance across clusters", "user", "not analysed"),
    _t(
        "24",
        "Model updating",
        "Results of any model updating",
        "partly",
        "with --recalibrate: fitted intercept and slope, cross-validated figures beside the original ones "
        "(validation metrics.json recalibration). Missing: other updating methods",
    ),
    _t(
        "25",
        "Interpretation",
        "Overall interpretation, incl. fairness, against objectives and other studies",
        "user",
    ),
    _t(
        "26",
        "Limitations",
        "Limitations and their effect on bias, uncertainty and generalisability",
        "partly",
        "the limitations the run's own figures show (report section of the target, cdeg/modeling/tripod.py). "
        "Missing: those of the study design",
    ),
    _t(
        "27a",
        "Usability",
        "How poor-quality or unavailable input data should be handled in use",
        "partly",
        "cdeg predict checks clinical inputs and fills missing values with development values (model/ folder); "
        "segmentation QC flags. Missing: guidance for users",
    ),
    _t("27b", "Usability", "User interaction needed and expertise required", "user"),
    _t("27c", "Usability", "Next steps for research: applicability and generalisability", "user"),
)


def _p(part: str, num: str, topic: str, text: str, owner: str, where: str = "") -> Item:
    return Item(f"PROBAST+AI {part} {num}", topic, text, owner, where)


def _shared_domains_1_to_3(part: str) -> tuple[Item, ...]:
    """Domains 1-3 ask the same questions in the development and the evaluation part."""
    return (
        _p(part, "1.1", "Participants and data sources", "Appropriate data sources", "user"),
        _p(part, "1.2", "Participants and data sources", "Appropriate study design", "user"),
        _p(
            part,
            "1.3",
            "Participants and data sources",
            "In- and exclusions give a representative dataset",
            "user",
        ),
        _p(
            part,
            "2.1",
            "Predictors",
            "Predictors defined and assessed the same way for all participants",
            "partly",
            "one segmentation model and one PyRadiomics configuration for every patient (features provenance.json). "
            "Missing: differences in image acquisition",
        ),
        _p(part, "2.2", "Predictors", "Pre-processing of predictors similar for all", "cdeg", _PREP),
        _p(
            part,
            "2.3",
            "Predictors",
            "Predictors assessed without knowledge of the outcome",
            "partly",
            "automatic outlines and features never read the outcome. Missing: blinding of reference outlines and "
            "clinical measurements",
        ),
        _p(
            part,
            "2.4",
            "Predictors",
            "Predictors available when the model is meant to be used",
            "partly",
            f"{_FIT} data.suspected_leaks, data.leakage_excluded. Missing: timing of each predictor in care",
        ),
        _p(part, "3.1", "Outcome", "Outcome defined and assessed appropriately", "user"),
        _p(part, "3.2", "Outcome", "Outcome defined and assessed the same way for all", "user"),
        _p(part, "3.3", "Outcome", "Outcome assessed without use or knowledge of predictors", "user"),
        _p(part, "3.4", "Outcome", "Appropriate interval between predictor and outcome assessment", "user"),
    )


PROBAST_AI_DEVELOPMENT: tuple[Item, ...] = (
    *_shared_domains_1_to_3("development"),
    _p(
        "development",
        "4.1",
        "Analysis",
        "Evidence that the sample size was reasonable",
        "cdeg",
        f"{_FIT} sample_size: Riley criteria for the candidate parameters vs n_patients (fit report)",
    ),
    _p(
        "development",
        "4.2",
        "Analysis",
        "Continuous and categorical predictors handled appropriately",
        "cdeg",
        f"continuous kept continuous, categorical one-hot: {_PREP}",
    ),
    _p(
        "development",
        "4.3",
        "Analysis",
        "Missing or censored data handled appropriately",
        "cdeg",
        f"imputation fitted inside each training fold: {_PREP}; {_DATA}",
    ),
    _p(
        "development",
        "4.4",
        "Analysis",
        "Model recalibrated if class imbalance methods were used",
        "cdeg",
        _NO_IMBALANCE,
    ),
    _p(
        "development",
        "4.5",
        "Analysis",
        "Methods against overfitting",
        "cdeg",
        f"nested CV with tuning inside each outer fold, regularised models: {_PROTO}; calibration slope in {_CV}",
    ),
)

PROBAST_AI_EVALUATION: tuple[Item, ...] = (
    *_shared_domains_1_to_3("evaluation"),
    _p(
        "evaluation",
        "4.1",
        "Analysis",
        "Evaluation not based on apparent performance only",
        "cdeg",
        f"out-of-fold predictions of nested CV (oof_predictions.csv), external validation run: {_TARGET}",
    ),
    _p(
        "evaluation",
        "4.2",
        "Analysis",
        "Evidence that the sample size was reasonable",
        "partly",
        f"{_FIT} n_patients, events; validation metrics.json n_patients, events. Missing: justification",
    ),
    _p(
        "evaluation",
        "4.3",
        "Analysis",
        "Missing or censored data handled appropriately",
        "cdeg",
        f"{_PREP}; validation metrics.json imputed_share",
    ),
    _p("evaluation", "4.4", "Analysis", "Evaluated without imbalance correction", "cdeg", _NO_IMBALANCE),
    _p(
        "evaluation",
        "4.5",
        "Analysis",
        "No data leakage between training and test data",
        "cdeg",
        f"preprocessing and tuning fitted on training folds only; duplicate ids refused; {_DATA}",
    ),
    _p(
        "evaluation",
        "4.6",
        "Analysis",
        "All development steps repeated inside each resample",
        "cdeg",
        f"{_PROTO}; {_FIT} tuning (one study per outer fold); report section Nested cross-validation",
    ),
    _p(
        "evaluation",
        "4.7",
        "Analysis",
        "Performance evaluated appropriately: discrimination, calibration, net benefit",
        "cdeg",
        f"{_CV}; plots roc, calibration, decision_curve; {_TARGET}",
    ),
)

#: Every item, TRIPOD+AI first.
CHECKLIST: tuple[Item, ...] = TRIPOD_AI + PROBAST_AI_DEVELOPMENT + PROBAST_AI_EVALUATION


def checklist_rows(items: Iterable[Item] = CHECKLIST, guideline: str | None = None) -> list[list[str]]:
    """Rows for ``cdeg.report.html.table(CHECKLIST_HEAD, rows)`` (plain text; the table escapes it).

    Parameters
    ----------
    items : iterable of Item
        Defaults to the whole checklist.
    guideline : {"TRIPOD+AI", "PROBAST+AI"}, optional
        Only the items of this guideline.
    """
    if guideline is not None and guideline not in GUIDELINES:
        raise ValueError(f"guideline {guideline!r}: valid are {', '.join(GUIDELINES)}")
    return [
        [it.id, it.topic, it.text, OWNER_WORDS[it.owner], it.where or "-"]
        for it in items
        if guideline is None or it.guideline == guideline
    ]


def owner_counts(items: Iterable[Item] = CHECKLIST) -> dict[str, int]:
    """How many items each owner answers (for a one-line summary above the table)."""
    out = dict.fromkeys(OWNERS, 0)
    for it in items:
        out[it.owner] += 1
    return out
