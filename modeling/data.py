"""Reading and checking the two input tables, and choosing the candidate predictors.

The features file (``cdeg extract`` output or any wide CSV/Parquet table) and the clinical table are joined
on the id column. Every problem a user can cause is reported as a one-line :class:`CdegError` naming the
file and, where relevant, the patient; everything left out on purpose (rows without a target, ids in one
table only, leakage columns, excluded columns, free-text columns) is logged and recorded in the report.

Column sets
-----------
``clinical`` = columns of the clinical table; ``mri`` / ``xray`` = features-file columns named
``<modality>__<level>__<feature>``; ``other`` = any other features-file column.

Leakage rule
------------
A predictor must be known when the prediction is made, i.e. before surgery. The patterns in
``FitConfig.leakage_columns`` (follow-up scores, outcomes and anything derived from them, dates, synthetic
ground truth) are matched case-insensitively against the column names of both tables and never used; the
target column is always excluded.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from cdeg import measures
from cdeg.cohort import MODALITIES
from cdeg.errors import CdegError

log = logging.getLogger(__name__)

#: Separator of ``<modality>__<level>__<feature>`` column names written by `cdeg extract`.
SEP = "__"
#: Share of numeric-looking values above which a text column is taken to be a numeric column with typos.
_NUMERIC_SHARE = 0.8


def is_text(s: pd.Series) -> bool:
    """True for a column of text (categorical) values: neither numeric nor boolean (pandas 2 object or 3 str)."""
    return is_text_dtype(s.dtype)


def is_text_dtype(dtype: Any) -> bool:
    """:func:`is_text` of a column's dtype (``DataFrame.dtypes`` without taking every column out)."""
    return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))


def feature_set_of(column: str) -> str:
    """Feature set of a features-file column: its modality prefix ("mri", "xray") or "other"."""
    prefix = column.split(SEP, 1)[0] if SEP in column else ""
    return prefix if prefix in MODALITIES else "other"


#: A PyRadiomics feature name: image type, feature class, feature (``original_glcm_Correlation``,
#: ``wavelet-LLH_firstorder_Mean``), as PyRadiomics' featureextractor names its results.
RADIOMICS_NAME = re.compile(
    r"^(?P<image>[A-Za-z0-9\-.]+?)_(?P<cls>shape2D|shape|firstorder|glcm|glrlm|glszm|gldm|ngtdm)_(?P<name>\w+)$"
)
#: What a column holds, for the feature tiers: see :func:`feature_kind`.
FEATURE_KINDS: tuple[str, ...] = ("clinical", "measurement", "radiomics", "other")


def feature_kind(column: str, column_set: str) -> str:
    """ "clinical", "measurement" (a clinical measurement of :mod:`cdeg.measures`, per level or aggregated,
    raw or age-adjusted), "radiomics" (a PyRadiomics feature) or "other", of a column of feature set
    `column_set` (see :func:`feature_set_of`)."""
    if column_set == "clinical":
        return "clinical"
    parts = column.split(SEP)
    if column_set == "other" or len(parts) < 2:
        return "other"
    # <modality>__<level>__<feature>[__<suffix>]; <modality>__<feature> for whole-image values
    for feature in parts[1:]:
        if feature in measures.UNITS:
            return "measurement"
        if RADIOMICS_NAME.match(feature):
            return "radiomics"
    return "other"


def match_patterns(columns: Iterable[str], patterns: Sequence[str]) -> dict[str, str]:
    """Columns matching any glob pattern (case-insensitive), mapped to the first pattern that matched."""
    out: dict[str, str] = {}
    lowered = [(p, p.lower()) for p in patterns]
    for col in columns:
        c = col.lower()
        for p, pl in lowered:
            if c == pl or fnmatch.fnmatchcase(c, pl):
                out[col] = p
                break
    return out


def parse_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Split "a,b*,c" (or a list of such strings) into stripped names/patterns."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(p.strip() for item in items for p in str(item).split(",") if p.strip())


# --- reading ----------------------------------------------------------------------------------------------


def read_with_ids(
    path: str | Path, id_column: str, bad_ids: Literal["error", "drop", "first"] = "error"
) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet table whose `id_column` holds unique, non-empty patient ids (read as text).

    `bad_ids`: what becomes of rows with an empty or repeated id ("error", "drop", "first"; see
    :func:`cdeg.cohort.read_clinical`, which decides it for every stage).

    Raises
    ------
    CdegError
        Naming the file: unreadable table, missing id column; empty or duplicate ids when `bad_ids` is
        "error".
    """
    from cdeg.cohort import read_clinical

    return read_clinical(path, id_column=id_column, bad_ids=bad_ids)


def read_features_table(path: str | Path, id_column: str, skip: Collection[str] = ()) -> pd.DataFrame:
    """Read the features table: one row per patient, every column except the id numeric.

    `skip`: ids of patients left out (found unusable by the input check of the stage).

    Raises
    ------
    CdegError
        Missing id column, empty or duplicate ids, or a non-numeric value (naming column and patient).
    """
    df = _without(read_with_ids(path, id_column).set_index(id_column), skip)
    df = pd.DataFrame(
        {col: _numeric_column(df[col], col, path, what="feature column") for col in df.columns},
        index=df.index,
    )
    return df


def read_clinical_table(
    path: str | Path, id_column: str, skip: Collection[str] = (), unused: Collection[str] = ()
) -> pd.DataFrame:
    """Read the clinical table; numeric columns become float, text columns stay text (categorical).

    A text column whose values are numbers except for a few is taken as a numeric column with a typo and
    raises CdegError naming the patient, unless the column is in `unused` (not read by the stage: its
    typos become missing values); boolean columns become 0/1. `skip`: ids of patients left out.

    Rows with an empty id, and every row of an id on several rows, are left out (``bad_ids="drop"``): the
    stage's input check (:func:`cdeg.check.check_stage_table`) has reported them, one line each, and listed
    the repeated ids among the skipped patients; a bad clinical row costs only its patient.
    """
    df = _without(read_with_ids(path, id_column, bad_ids="drop").set_index(id_column), skip)
    for col in df.columns:
        s = df[col]
        if s.dtype == bool or pd.api.types.is_numeric_dtype(s.dtype):
            df[col] = s.astype(float)
            continue
        present = s.dropna()
        parsed = pd.to_numeric(present, errors="coerce")
        if len(present) and parsed.notna().mean() >= _NUMERIC_SHARE and col in unused:
            df[col] = pd.to_numeric(s, errors="coerce").astype(float)
        elif len(present) and parsed.notna().mean() >= _NUMERIC_SHARE:
            df[col] = _numeric_column(s, col, path, what="clinical column")
        elif len(present) and set(present.astype(str).str.lower()) <= {"true", "false"}:
            df[col] = s.map(lambda v: np.nan if pd.isna(v) else float(str(v).lower() == "true"))
        else:
            df[col] = (
                s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v).strip())
            )
    return df


def _without(df: pd.DataFrame, skip: Collection[str]) -> pd.DataFrame:
    """`df` without the rows of the patients in `skip`."""
    return df[~df.index.isin(list(skip))] if len(skip) else df


def _numeric_column(s: pd.Series, col: str, path: str | Path, what: str) -> pd.Series:
    if s.dtype == bool:
        return s.astype(float)
    if pd.api.types.is_numeric_dtype(s.dtype):
        out = s.astype(float)
    else:
        out = pd.to_numeric(s, errors="coerce")
        bad = out.isna() & s.notna() & (s.astype(str).str.strip() != "")
        if bad.any():
            pid = bad.index[bad][0]
            n = int(bad.sum())
            raise CdegError(
                f"non-numeric value {s[pid]!r} in {what} {col!r}"
                f"{f' ({n} values in all)' if n > 1 else ''}; features must be numbers (empty = missing)",
                patient=str(pid),
                path=path,
            )
        out = out.astype(float)
    inf = np.isinf(out.to_numpy())
    if inf.any():
        log.warning("%s: %d infinite value(s) in %s %r read as missing", path, int(inf.sum()), what, col)
        out = out.where(~np.isinf(out), np.nan)
    return out


def parse_target(clinical: pd.DataFrame, target: str, path: str | Path, skip_bad: bool = False) -> pd.Series:
    """The target column as 0/1 floats (NaN where missing).

    A value other than 0/1 (or true/false) raises CdegError naming the patient, or with `skip_bad` is
    logged (one line per patient, naming the file) and read as missing, so that patient is left out.
    """
    if target not in clinical.columns:
        cols = list(map(str, clinical.columns))
        raise CdegError(
            f"no target column {target!r} (columns: {', '.join(cols[:10])}{', ...' if len(cols) > 10 else ''})",
            path=path,
        )
    raw = clinical[target]
    s = raw
    if is_text(s):
        s = s.map(lambda v: {"true": 1.0, "false": 0.0}.get(v.lower(), v) if isinstance(v, str) else v)
    num = pd.to_numeric(s, errors="coerce").astype(float)
    bad = raw.notna() & ~num.isin([0.0, 1.0])  # text that is no number, or a number other than 0/1
    for pid in bad.index[bad]:
        value = raw[pid]
        err = CdegError(
            f"target {target!r} must be 0 or 1, found {value:g}"
            if isinstance(value, (int, float, np.number))
            else f"target {target!r} must be 0 or 1, found {value!r}",
            patient=str(pid),
            path=path,
        )
        if not skip_bad:
            raise err
        log.warning("%s; patient left out", err.one_line())
    return num.where(~bad, np.nan)


def check_events(y: np.ndarray, outer_folds: int, inner_folds: int, target: str, path: str | Path) -> None:
    """Raise CdegError when the rarer class is too small for the outer and inner stratified folds."""
    n1 = int(np.sum(y == 1))
    n0 = int(np.sum(y == 0))
    if n1 == 0 or n0 == 0:
        raise CdegError(
            f"target {target!r} is constant ({'all 1' if n0 == 0 else 'all 0'} in {len(y)} patients with a target): "
            "nothing to learn",
            path=path,
        )
    rare = min(n0, n1)
    if rare < _min_events(outer_folds, inner_folds):
        raise CdegError(
            f"too few events for the folds: {rare} patients with {target}={1 if rare == n1 else 0}; "
            f"{outer_folds} outer x {inner_folds} inner stratified folds need at least "
            f"{_min_events(outer_folds, inner_folds)}; lower --outer-folds or add patients",
            path=path,
        )


def _min_events(outer_folds: int, inner_folds: int) -> int:
    # Every outer test fold needs one patient of the rarer class, and every inner training set of the
    # smallest outer training set (rare - ceil(rare / K) of them) needs one per inner fold.
    rare = outer_folds
    while rare - int(np.ceil(rare / outer_folds)) < inner_folds:
        rare += 1
    return rare


# --- the design table ---------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Candidate predictors and target of the patients used for fitting.

    Attributes
    ----------
    X : DataFrame
        Index = patient ids (str). Numeric columns are float; categorical clinical columns hold str or None.
    y : ndarray of int
        0/1 target, same order as X.
    column_sets : dict
        Column -> feature set ("clinical", "mri", "xray", "other").
    categorical : list of str
        Text (categorical) clinical columns, one-hot encoded inside the folds.
    report : dict
        What was left out and why (rows, ids, columns), for metrics.json and the report.
    """

    X: pd.DataFrame
    y: np.ndarray
    target: str
    column_sets: dict[str, str]
    categorical: list[str]
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return list(self.X.index)

    def columns_of(self, sets: Iterable[str]) -> list[str]:
        """Columns that belong to any of `sets`, in table order."""
        wanted = set(sets)
        return [c for c in self.X.columns if self.column_sets[c] in wanted]

    def fingerprint(self) -> str:
        """SHA-256 of ids, target, column names and values: part of the Optuna study names."""
        h = hashlib.sha256()
        h.update("\x00".join(self.X.index).encode())
        h.update(np.asarray(self.y, dtype=np.int8).tobytes())
        h.update("\x00".join(self.X.columns).encode())
        h.update(
            pd.util.hash_pandas_object(self.X.astype(object).where(self.X.notna(), None), index=False)
            .to_numpy()
            .tobytes()
        )
        return h.hexdigest()


def load_dataset(
    features: str | Path,
    clinical: str | Path,
    target: str,
    id_column: str,
    exclude: Sequence[str] = (),
    leakage_columns: Sequence[str] = (),
    max_categories: int = 20,
    leak_auc_threshold: float = 0.98,
    skip: Collection[str] = (),
    unused: Collection[str] = (),
    skip_bad_target: bool = False,
) -> Dataset:
    """Read, check and join the two tables; apply the leakage rule and the exclusions.

    `skip`: patients left out of both tables (their input was found unusable); `unused`: clinical columns
    the stage does not read, whose typos are read as missing instead of stopping it; `skip_bad_target`:
    patients whose target is not 0/1 are left out with a warning instead of stopping.

    Raises
    ------
    CdegError
        For any problem with the files (see :func:`read_features_table`, :func:`parse_target`).
    """
    feat = read_features_table(features, id_column, skip)
    clin = read_clinical_table(clinical, id_column, skip, unused)
    y_all = parse_target(clin, target, clinical, skip_bad=skip_bad_target)
    report: dict[str, Any] = {}
    feat = _without_overlap(feat, clin, report)
    ids = _matched_ids(feat, clin, y_all, target, (features, clinical), report)

    clin_cols = [c for c in clin.columns if c != target]
    column_sets = {c: "clinical" for c in clin_cols}
    column_sets.update({c: feature_set_of(c) for c in feat.columns})
    candidates = clin_cols + list(feat.columns)
    left_out = _left_out(candidates, leakage_columns, exclude, report)
    keep = [c for c in candidates if c not in left_out]
    X = pd.concat(
        [
            clin.loc[ids, [c for c in clin_cols if c in keep]],
            feat.loc[ids, [c for c in feat.columns if c in keep]],
        ],
        axis=1,
    ).copy()  # copy: one consolidated block per dtype, fast column selection in the folds
    X, categorical = _without_free_text(X, max_categories, report)
    if X.shape[1] == 0:
        raise CdegError("no predictor left after the leakage rule and the exclusions", path=features)

    y = y_all[ids].to_numpy().astype(int)
    report["suspected_leaks"] = suspected_leaks(X.drop(columns=categorical), y, leak_auc_threshold)
    for col, auc in report["suspected_leaks"].items():
        log.warning(
            "variable %r alone separates %s with AUC %.3f: check it is known before surgery (else --exclude it)",
            col,
            target,
            auc,
        )
    X.index.name = id_column
    return Dataset(
        X=X,
        y=y,
        target=target,
        column_sets={c: column_sets[c] for c in X.columns},
        categorical=categorical,
        report=report,
    )


def _without_overlap(feat: pd.DataFrame, clin: pd.DataFrame, report: dict[str, Any]) -> pd.DataFrame:
    """The features table less the columns the clinical table also has (taken from the clinical table)."""
    overlap = [c for c in feat.columns if c in clin.columns]
    if overlap:
        log.warning(
            "%d column(s) in both tables, taken from the clinical table: %s", len(overlap), _short(overlap)
        )
        feat = feat.drop(columns=overlap)
        report["columns_in_both_tables"] = overlap
    return feat


def _matched_ids(
    feat: pd.DataFrame,
    clin: pd.DataFrame,
    y_all: pd.Series,
    target: str,
    paths: tuple[str | Path, str | Path],
    report: dict[str, Any],
) -> list[str]:
    """Ids with a row in both tables and a value of the target, in clinical order; the others are reported."""
    features, clinical = paths
    only_feat = sorted(set(feat.index) - set(clin.index))
    only_clin = sorted(set(clin.index) - set(feat.index))
    if only_feat:
        log.warning(
            "%d patient(s) in %s only (no clinical row), left out: %s",
            len(only_feat),
            features,
            _short(only_feat),
        )
    if only_clin:
        log.warning(
            "%d patient(s) in %s only (no features row), left out: %s",
            len(only_clin),
            clinical,
            _short(only_clin),
        )
    report["ids_only_in_features"] = only_feat
    report["ids_only_in_clinical"] = only_clin
    ids = [i for i in clin.index if i in feat.index]
    no_target = [i for i in ids if pd.isna(y_all[i])]
    if no_target:
        log.warning(
            "%d patient(s) without a value of %r, left out: %s", len(no_target), target, _short(no_target)
        )
    report["ids_without_target"] = no_target
    ids = [i for i in ids if not pd.isna(y_all[i])]
    if not ids:
        raise CdegError(f"no patient has both a features row and a value of {target!r}", path=clinical)
    return ids


def _left_out(
    candidates: list[str], leakage_columns: Sequence[str], exclude: Sequence[str], report: dict[str, Any]
) -> set[str]:
    """Candidate columns matched by the leakage rule or the exclusions (both reported)."""
    leaks = match_patterns(candidates, leakage_columns)
    if leaks:
        log.info(
            "leakage rule: %d column(s) are not baseline predictors, left out: %s",
            len(leaks),
            _short(list(leaks)),
        )
    report["leakage_excluded"] = leaks
    excluded = match_patterns(candidates, exclude)
    unused = [p for p in exclude if p not in excluded.values()]
    if unused:
        log.warning("--exclude pattern(s) matching no column: %s", ", ".join(unused))
    if excluded:
        log.info("excluded on request: %d column(s): %s", len(excluded), _short(list(excluded)))
    report["user_excluded"] = sorted(excluded)
    report["exclude_patterns_unmatched"] = unused
    return set(leaks) | set(excluded)


def _without_free_text(
    X: pd.DataFrame, max_categories: int, report: dict[str, Any]
) -> tuple[pd.DataFrame, list[str]]:
    """`X` less the text columns with too many distinct values, and its categorical (text) columns."""
    categorical = [c for c in X.columns if is_text(X[c])]
    too_many = [c for c in categorical if X[c].nunique(dropna=True) > max_categories]
    if too_many:
        log.warning(
            "%d text column(s) with more than %d distinct values (free text, dates?) left out: %s",
            len(too_many),
            max_categories,
            _short(too_many),
        )
        X = X.drop(columns=too_many)
        categorical = [c for c in categorical if c not in too_many]
    report["text_columns_excluded"] = too_many
    return X, categorical


def univariate_auc(X: pd.DataFrame | np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC of each column alone (Mann-Whitney, ties counted half, missing values skipped); NaN if undefined."""
    from scipy.stats import rankdata

    A = np.asarray(X, dtype=float)
    pos = np.asarray(y) == 1
    if A.ndim != 2 or A.shape[1] == 0:
        return np.full(A.shape[1] if A.ndim == 2 else 0, np.nan)
    ok = ~np.isnan(A)
    # All columns at once: average ranks among each column's present values (missing values stay NaN).
    R = rankdata(A, axis=0, nan_policy="omit")
    n1 = (ok & pos[:, None]).sum(axis=0)
    n0 = ok.sum(axis=0) - n1
    s1 = np.where(ok & pos[:, None], R, 0.0).sum(axis=0)
    out = np.full(A.shape[1], np.nan)
    defined = (n1 > 0) & (n0 > 0)
    out[defined] = (s1[defined] - n1[defined] * (n1[defined] + 1) / 2) / (n1[defined] * n0[defined])
    return out


def suspected_leaks(X: pd.DataFrame, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Numeric columns whose univariate AUC (either direction) exceeds `threshold`."""
    if X.shape[1] == 0:
        return {}
    auc = univariate_auc(X, y)
    strength = np.maximum(auc, 1 - auc)
    return {c: round(float(a), 4) for c, a, s in zip(X.columns, auc, strength, strict=True) if s > threshold}


def _short(items: Sequence[Any], n: int = 8) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (f", ... ({len(items)} in all)" if len(items) > n else "")
