"""Options of `cdeg fit`: one frozen dataclass, its default values read from ``configs/fit.yaml``.

The shipped ``configs/fit.yaml`` is the one place that writes the default values (with the reasons for them);
every field below takes its default from it (:func:`_default`), and declares only its type, help and range.
Three layers, each checked against the dataclasses below by :func:`cdeg.config.from_dict`:
the shipped ``configs/fit.yaml`` < a YAML given with ``--config`` < command-line flags.
``cdeg fit --print-config`` prints the resolved result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdeg.modeling.preprocess import AGE_NORM_MODES, AGGREGATES, read_icc_table

from cdeg.config import ConfigError, dump_yaml, load_config, load_yaml, shipped_config

#: Feature sets a user can ask for. "clinical" = columns of the clinical table; "mri"/"xray" = columns of
#: the features file named ``<modality>__<level>__<feature>``; "other" = any other features-file column.
FEATURE_SETS: tuple[str, ...] = ("clinical", "mri", "xray", "other")
#: The models, in report order. "xgboost" and "logistic" use the chosen feature sets and are tuned by
#: Optuna; "clinical_only" uses baseline clinical variables only, with a fixed light L2 penalty.
MODELS: tuple[str, ...] = ("xgboost", "logistic", "clinical_only")
TUNED_MODELS: tuple[str, ...] = ("xgboost", "logistic")
#: Feature tiers: the primary model's protocol repeated on a subset of the variables, on the same outer folds,
#: to answer "what does radiomics add beyond a radiologist's measurements?". "clinical" = clinical-table
#: columns; "measurements" = clinical + the clinical measurements per level (cdeg.measures); "radiomics" =
#: clinical + PyRadiomics features. The primary model on all its feature sets is the fourth tier, "all".
TIERS: tuple[str, ...] = ("clinical", "measurements", "radiomics")
ALL_TIER = "all"
#: Separator of a tier arm's name: ``xgboost@measurements`` = XGBoost on the measurements tier.
TIER_SEP = "@"


def tier_arm(kind: str, tier: str) -> str:
    """Name of the arm that fits model `kind` on feature tier `tier` (``xgboost@radiomics``)."""
    return f"{kind}{TIER_SEP}{tier}"


def split_arm(arm: str) -> tuple[str, str | None]:
    """(model kind, tier) of an arm name; tier is None for the models of :data:`MODELS`."""
    kind, _, tier = arm.partition(TIER_SEP)
    return kind, (tier or None)


OBJECTIVES: tuple[str, ...] = ("log_loss", "auc")
CONFIG_NAME = "fit.yaml"


def default_config_path() -> Path:
    """The shipped configs/fit.yaml (the defaults layer)."""
    return shipped_config(CONFIG_NAME)


#: The shipped configs/fit.yaml, read once: the default of every field.
_DEFAULTS: dict[str, Any] = load_yaml(default_config_path())


def _frozen(value: Any) -> Any:
    """Lists as tuples (the frozen dataclasses hold tuples), recursively."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _default(*keys: str) -> Any:
    """The value at `keys` (e.g. ``"preprocess", "max_missing"``) of the shipped configs/fit.yaml."""
    node: Any = _DEFAULTS
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            raise ConfigError(f"no default for {'.'.join(keys)}", path=default_config_path())
        node = node[k]
    return _frozen(node)


#: Leakage rule (see configs/fit.yaml): columns that are never baseline predictors, whatever the target.
LEAKAGE_PATTERNS: tuple[str, ...] = _default("leakage_columns")


@dataclass(frozen=True)
class PreprocessOptions:
    """Preprocessing, fitted inside every training fold only (never on the patients it is tested on)."""

    max_missing: float = field(
        default=_default("preprocess", "max_missing"),
        metadata={
            "help": "drop a variable missing in more than this share of training patients",
            "range": (0.0, 1.0),
        },
    )
    corr_threshold: float = field(
        default=_default("preprocess", "corr_threshold"),
        metadata={
            "help": "drop a variable whose |Spearman r| with an earlier kept variable exceeds this (near-duplicates); "
            "1.0 keeps all",
            "range": (0.5, 1.0),
        },
    )
    select_k: int = field(
        default=_default("preprocess", "select_k"),
        metadata={
            "help": "keep the k variables with the largest univariate |AUC - 0.5| (0 = no pre-selection)",
            "range": (0, 100000),
        },
    )
    max_categories: int = field(
        default=_default("preprocess", "max_categories"),
        metadata={
            "help": "a text clinical column with more distinct values than this is left out (free text, "
            "dates) with a warning",
            "range": (2, 1000),
        },
    )
    near_constant: float = field(
        default=_default("preprocess", "near_constant"),
        metadata={
            "help": "drop a variable whose most frequent value covers more than this share of training patients "
            "(1.0 = only single-valued variables)",
            "range": (0.5, 1.0),
        },
    )
    age_norm: str = field(
        default=_default("preprocess", "age_norm"),
        metadata={
            "help": "age-adjusted measurements (<column>__age_z, SD from the norm for age and sex): norms fitted "
            "on the training patients of each fold, on the reference cohort of age_reference, or off",
            "choices": AGE_NORM_MODES,
        },
    )
    age_reference: tuple[str, ...] = field(
        default=_default("preprocess", "age_reference"),
        metadata={
            "help": "[features table, clinical table] of the reference cohort for age_norm: reference, joined on "
            "the one column they share (the patient id)"
        },
    )
    age_column: str = field(
        default=_default("preprocess", "age_column"), metadata={"help": "clinical column of age (years)"}
    )
    sex_column: str = field(
        default=_default("preprocess", "sex_column"),
        metadata={"help": "clinical column of sex (M/F, male/female or 1/0)"},
    )
    index_column: str = field(
        default=_default("preprocess", "index_column"),
        metadata={"help": "clinical column of the index level (e.g. C5-C6), for the index-level summaries"},
    )
    level_summary: tuple[str, ...] = field(
        default=_default("preprocess", "level_summary"),
        metadata={
            "help": "summaries of each measurement over levels, added as <modality>__<summary>__<feature>: "
            + ", ".join(AGGREGATES)
            + " ([] = none)"
        },
    )
    radiomics_mean: bool = field(
        default=_default("preprocess", "radiomics_mean"),
        metadata={
            "help": "add each PyRadiomics feature averaged over the discs and over the vertebrae "
            "(<modality>__discs_mean__<feature>, <modality>__vertebrae_mean__<feature>)"
        },
    )
    per_level: bool = field(
        default=_default("preprocess", "per_level"),
        metadata={
            "help": "keep each level's own image variables beside the level summaries (false: summaries only)"
        },
    )
    degeneration_score: bool = field(
        default=_default("preprocess", "degeneration_score"),
        metadata={
            "help": "add the patient's disc degeneration beyond the age norm, one number per modality "
            "(<modality>__discs_mean__degeneration_score__age_z; needs age_norm)"
        },
    )
    stable_features: str | None = field(
        default=_default("preprocess", "stable_features"),
        metadata={
            "help": "CSV with columns feature, icc (feature = <modality>__<feature> or the full column name): "
            "radiomics features with icc below min_icc are dropped first (null = no stability filter)"
        },
    )
    min_icc: float = field(
        default=_default("preprocess", "min_icc"),
        metadata={
            "help": "smallest ICC of a kept radiomics feature (with stable_features)",
            "range": (0.0, 1.0),
        },
    )

    def __post_init__(self) -> None:
        # Checks of several fields and of the named files, at configuration time (one-line errors, no traceback).
        bad = [a for a in self.level_summary if a not in AGGREGATES]
        if bad:
            raise ValueError(f"preprocess.level_summary {bad}: valid are {', '.join(AGGREGATES)}")
        if self.age_norm == "reference" and len(self.age_reference) != 2:
            raise ValueError(
                "preprocess.age_norm is 'reference': preprocess.age_reference must name two tables "
                f"[features, clinical], got {list(self.age_reference)}"
            )
        if self.age_reference and self.age_norm != "reference":
            raise ValueError(
                f"preprocess.age_reference is set but preprocess.age_norm is {self.age_norm!r}: "
                "set age_norm: reference to use it"
            )
        for path in self.age_reference:
            if not Path(path).is_file():
                raise ConfigError("preprocess.age_reference: table not found", path=path)
        if self.stable_features is not None:
            read_icc_table(self.stable_features)  # CdegError naming the file when missing or malformed


@dataclass(frozen=True)
class PermutationOptions:
    """Label-permutation test of the primary model's cross-validated AUC (a cheap version of the protocol)."""

    n: int = field(
        default=_default("permutation", "n"),
        metadata={
            "help": "outcome shuffles (0 = no test); the smallest p is 1 / (n + 1)",
            "range": (0, 10000),
        },
    )
    trials: int = field(
        default=_default("permutation", "trials"),
        metadata={"help": "Optuna trials per study in each shuffle (the cheap part)", "range": (1, 1000)},
    )


@dataclass(frozen=True)
class XGBoostSpace:
    """Optuna search space of XGBoost, sized for ~100 patients: shallow, few, strongly regularised trees.

    Each pair is (low, high); learning_rate, min_child_weight, reg_lambda and reg_alpha are sampled on a log scale.
    """

    max_depth: tuple[int, int] = field(
        default=_default("xgboost", "max_depth"), metadata={"help": "tree depth", "range": (1, 10)}
    )
    n_estimators: tuple[int, int] = field(
        default=_default("xgboost", "n_estimators"), metadata={"help": "number of trees", "range": (1, 5000)}
    )
    learning_rate: tuple[float, float] = field(
        default=_default("xgboost", "learning_rate"),
        metadata={"help": "shrinkage (log scale)", "range": (1e-4, 1.0)},
    )
    subsample: tuple[float, float] = field(
        default=_default("xgboost", "subsample"),
        metadata={"help": "share of patients per tree", "range": (0.1, 1.0)},
    )
    colsample_bytree: tuple[float, float] = field(
        default=_default("xgboost", "colsample_bytree"),
        metadata={"help": "share of variables per tree", "range": (0.01, 1.0)},
    )
    min_child_weight: tuple[float, float] = field(
        default=_default("xgboost", "min_child_weight"),
        metadata={"help": "minimum hessian per leaf (log scale)", "range": (0.0, 100.0)},
    )
    reg_lambda: tuple[float, float] = field(
        default=_default("xgboost", "reg_lambda"),
        metadata={"help": "L2 penalty on leaf weights (log scale)", "range": (1e-6, 1e4)},
    )
    reg_alpha: tuple[float, float] = field(
        default=_default("xgboost", "reg_alpha"),
        metadata={"help": "L1 penalty on leaf weights (log scale)", "range": (1e-6, 1e4)},
    )


@dataclass(frozen=True)
class LogisticSpace:
    """Optuna search space of the elastic-net logistic regression on standardised variables."""

    C: tuple[float, float] = field(
        default=_default("logistic", "C"),
        metadata={"help": "inverse penalty strength (log scale)", "range": (1e-6, 1e6)},
    )
    l1_ratio: tuple[float, float] = field(
        default=_default("logistic", "l1_ratio"),
        metadata={"help": "elastic-net mixing: 0 = ridge, 1 = lasso", "range": (0.0, 1.0)},
    )
    max_iter: int = field(
        default=_default("logistic", "max_iter"),
        metadata={"help": "saga solver iterations", "range": (10, 100000)},
    )


@dataclass(frozen=True)
class ClinicalOnlyOptions:
    """The reference a clinician asks for: a lightly penalised logistic regression on baseline clinical variables."""

    C: float = field(
        default=_default("clinical_only", "C"),
        metadata={"help": "inverse L2 penalty on standardised variables", "range": (1e-6, 1e6)},
    )
    variables: tuple[str, ...] = field(
        default=_default("clinical_only", "variables"),
        metadata={
            "help": "clinical columns (names or glob patterns) to use; empty = every baseline clinical column"
        },
    )


@dataclass(frozen=True)
class FitConfig:
    """Everything that defines a `cdeg fit` run (the protocol); runtime-only options are function arguments."""

    id_column: str = field(
        default=_default("id_column"), metadata={"help": "patient id column, in both tables"}
    )
    feature_sets: tuple[str, ...] = field(
        default=_default("feature_sets"),
        metadata={"help": "feature sets of the xgboost and logistic models: " + ", ".join(FEATURE_SETS)},
    )
    models: tuple[str, ...] = field(
        default=_default("models"), metadata={"help": "models to fit: " + ", ".join(MODELS)}
    )
    primary_model: str = field(
        default=_default("primary_model"),
        metadata={"help": "model explained with SHAP and used first by predict", "choices": MODELS},
    )
    trials: int = field(
        default=_default("trials"), metadata={"help": "Optuna trials per study", "range": (1, 100000)}
    )
    outer_folds: int = field(
        default=_default("outer_folds"),
        metadata={"help": "outer stratified folds (the estimate)", "range": (2, 50)},
    )
    repeats: int = field(
        default=_default("repeats"), metadata={"help": "repeats of the outer K-fold split", "range": (1, 100)}
    )
    inner_folds: int = field(
        default=_default("inner_folds"),
        metadata={"help": "inner stratified folds (the tuning)", "range": (2, 20)},
    )
    seed: int = field(
        default=_default("seed"),
        metadata={"help": "seed of splits, samplers and models", "range": (0, 2**31 - 1)},
    )
    jobs: int = field(
        default=_default("jobs"),
        metadata={"help": "worker processes over (model, repeat, fold) studies", "range": (1, 256)},
    )
    objective: str = field(
        default=_default("objective"),
        metadata={
            "help": "inner-CV score Optuna optimises: log_loss (minimised) or auc (maximised)",
            "choices": OBJECTIVES,
        },
    )
    tiers: tuple[str, ...] = field(
        default=_default("tiers"),
        metadata={
            "help": "feature tiers fitted with the primary model's protocol on the same outer folds (cross-"
            "validation only), compared with all features: " + ", ".join(TIERS) + "; empty = none"
        },
    )
    startup_trials: int = field(
        default=_default("startup_trials"),
        metadata={"help": "random trials before TPE starts modelling the search space", "range": (1, 1000)},
    )
    exclude: tuple[str, ...] = field(
        default=_default("exclude"),
        metadata={"help": "columns (names or glob patterns) never used as predictors"},
    )
    leakage_columns: tuple[str, ...] = field(
        default=_default("leakage_columns"),
        metadata={
            "help": "columns (glob patterns, case-insensitive) that are never baseline predictors: outcomes "
            "after surgery, anything derived from them, synthetic ground truth"
        },
    )
    leak_auc_threshold: float = field(
        default=_default("leak_auc_threshold"),
        metadata={
            "help": "warn when one variable alone separates the target with |AUC - 0.5| + 0.5 above this",
            "range": (0.5, 1.0),
        },
    )
    shap_dependence: int = field(
        default=_default("shap_dependence"),
        metadata={"help": "SHAP dependence plots for this many top variables", "range": (0, 50)},
    )
    waterfalls: bool = field(
        default=_default("waterfalls"),
        metadata={
            "help": "draw a SHAP waterfall of each development patient's cross-validated risk (waterfalls/ of "
            "the run folder, for the patient cards)"
        },
    )
    preprocess: PreprocessOptions = field(
        default_factory=PreprocessOptions, metadata={"help": "preprocessing"}
    )
    permutation: PermutationOptions = field(
        default_factory=PermutationOptions, metadata={"help": "label-permutation test of the primary model"}
    )
    xgboost: XGBoostSpace = field(default_factory=XGBoostSpace, metadata={"help": "XGBoost search space"})
    logistic: LogisticSpace = field(
        default_factory=LogisticSpace, metadata={"help": "elastic-net search space"}
    )
    clinical_only: ClinicalOnlyOptions = field(
        default_factory=ClinicalOnlyOptions, metadata={"help": "clinical-variables-only reference model"}
    )

    def __post_init__(self) -> None:
        # Checks that involve several fields or list items; single values are checked by from_dict.
        bad = [s for s in self.feature_sets if s not in FEATURE_SETS]
        if bad or not self.feature_sets:
            raise ValueError(f"feature_sets {list(self.feature_sets)}: valid are {', '.join(FEATURE_SETS)}")
        bad = [m for m in self.models if m not in MODELS]
        if bad or not self.models:
            raise ValueError(f"models {list(self.models)}: valid are {', '.join(MODELS)}")
        bad = [t for t in self.tiers if t not in TIERS]
        if bad:
            raise ValueError(f"tiers {list(self.tiers)}: valid are {', '.join(TIERS)}")
        if self.primary_model not in self.models:
            raise ValueError(f"primary_model {self.primary_model!r} is not among models {list(self.models)}")
        for name, (lo, hi) in _ranges(self):
            if lo > hi:
                raise ValueError(f"search range {name} = ({lo}, {hi}): low must not exceed high")

    def protocol(self) -> dict[str, Any]:
        """The options that change results (not trials or jobs): hashed into the Optuna study names."""
        from cdeg.config import to_dict

        d = to_dict(self)
        for runtime in ("trials", "jobs", "shap_dependence", "primary_model", "waterfalls"):
            d.pop(runtime)
        return d


def _ranges(cfg: FitConfig) -> list[tuple[str, tuple[float, float]]]:
    out = []
    for space_name in ("xgboost", "logistic"):
        space = getattr(cfg, space_name)
        for k, v in vars(space).items():
            if isinstance(v, tuple) and len(v) == 2:
                out.append((f"{space_name}.{k}", v))
    return out


def resolve_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> FitConfig:
    """Resolve the configuration: configs/fit.yaml < `path` < `overrides` (None values are ignored)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    # The shipped values pass through the same checks (types, ranges) as the user's layers.
    return load_config(FitConfig, path, overrides, defaults=_DEFAULTS)


def config_yaml(cfg: FitConfig) -> str:
    """The resolved configuration as YAML (what ``cdeg fit --print-config`` prints)."""
    return dump_yaml(cfg)
