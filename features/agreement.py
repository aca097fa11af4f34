"""Agreement of the features of two mask sets (`cdeg extract-agreement`): ICC per feature and Bland-Altman
per clinical measurement.

A radiomics study on automatic masks is credible when the features of the automatic masks agree with those of
manual ones. Given two `cdeg extract` feature tables of the same patients (predicted vs reference masks, or
two raters), :func:`agreement` writes, per feature column present in both tables,

* ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979 case 2;
  McGraw & Wong 1996 ICC(A,1)). A systematic offset between the two mask sets lowers it.
* ICC(3,1): two-way mixed effects, consistency, single rater (Shrout & Fleiss 1979 case 3; McGraw & Wong
  1996 ICC(C,1)). An offset does not lower it; only disagreement in the ranking of patients does.
* For the clinical measurements (:data:`cdeg.measures.UNITS`), Bland-Altman bias and limits of agreement.

The stable-features table it writes (columns ``feature``, ``icc`` = ICC(2,1)) is what `cdeg fit
--stable-features` reads (:func:`cdeg.modeling.preprocess.read_icc_table`).

References
----------
Shrout PE, Fleiss JL. Intraclass correlations: uses in assessing rater reliability. Psychol Bull 1979;86:420-8.
McGraw KO, Wong SP. Forming inferences about some intraclass correlation coefficients. Psychol Methods
1996;1:30-46.
Bland JM, Altman DG. Statistical methods for assessing agreement between two methods of clinical measurement.
Lancet 1986;1(8476):307-10.
Koo TK, Li MY. A guideline of selecting and reporting intraclass correlation coefficients for reliability
research. J Chiropr Med 2016;15:155-63.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling.data import RADIOMICS_NAME, SEP, feature_kind, feature_set_of

from cdeg import measures
from cdeg.cohort import ID_COLUMN, MODALITIES, read_clinical
from cdeg.errors import CdegError
from cdeg.io import file_sha256, write_table
from cdeg.outputs import AgreementRun, FeatureFolder, write_manifest

log = logging.getLogger(__name__)

#: ICC thresholds of Koo & Li (2016): below 0.5 poor, 0.5-0.75 moderate, 0.75-0.9 good, above 0.9 excellent.
GOOD_ICC = 0.75
EXCELLENT_ICC = 0.9
#: Width of the limits of agreement in standard deviations of the differences (Bland & Altman 1986: 95%).
LOA_SD = 1.96
#: Columns of agreement.csv, in order.
COLUMNS: tuple[str, ...] = (
    "column",
    "modality",
    "level",
    "feature",
    "feature_class",
    "unit",
    "n",
    "icc_2_1",
    "icc_2_1_ci_low",
    "icc_2_1_ci_high",
    "icc_3_1",
    "icc_3_1_ci_low",
    "icc_3_1_ci_high",
    "ba_bias",
    "ba_sd",
    "ba_loa_low",
    "ba_loa_high",
)


@dataclass(frozen=True)
class AgreementResult:
    """What :func:`agreement` wrote: the folder, the per-feature table and the manifest."""

    out: Path
    table: pd.DataFrame
    manifest: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------------


def icc(ratings: np.ndarray, confidence: float = 0.95) -> dict[str, np.ndarray]:
    """ICC(2,1) and ICC(3,1) with their confidence intervals, for many variables at once.

    Parameters
    ----------
    ratings : array of shape (n_targets, k_raters, n_variables)
        The ratings; a target with a missing (non-finite) rating of a variable is left out of that variable
        (complete cases, per variable).
    confidence : float
        Level of the confidence intervals.

    Returns
    -------
    dict
        Arrays of length n_variables: ``n`` (targets used), ``icc_2_1``, ``icc_2_1_ci_low``,
        ``icc_2_1_ci_high``, ``icc_3_1``, ``icc_3_1_ci_low``, ``icc_3_1_ci_high``. NaN where fewer than two
        targets are complete or the variable does not vary at all.

    Notes
    -----
    From the two-way ANOVA of n targets by k raters (Shrout & Fleiss 1979, Table 1; McGraw & Wong 1996,
    Tables 4 and 7), with MSR the mean square between targets (rows), MSC between raters (columns), MSE the
    residual mean square::

        ICC(2,1) = (MSR - MSE) / (MSR + (k-1) MSE + k (MSC - MSE) / n)
        ICC(3,1) = (MSR - MSE) / (MSR + (k-1) MSE)

    ICC(3,1) interval (McGraw & Wong 1996, Table 7, case 3 / ICC(C,1)), F0 = MSR / MSE::

        FL = F0 / F(1-a/2; n-1, (n-1)(k-1)),   FU = F0 * F(1-a/2; (n-1)(k-1), n-1)
        low = (FL - 1) / (FL + k - 1),         high = (FU - 1) / (FU + k - 1)

    written here as (MSR - q MSE) / (MSR + (k-1) q MSE), so that MSE = 0 (identical ratings) gives 1 instead of
    inf/inf. ICC(2,1) interval (McGraw & Wong 1996, Table 7, case 2A / ICC(A,1); Satterthwaite's degrees of
    freedom v), with p the ICC(2,1) estimate::

        a = k p / (n (1 - p)),   b = 1 + k p (n - 1) / (n (1 - p))
        v = (a MSC + b MSE)^2 / ((a MSC)^2 / (k-1) + (b MSE)^2 / ((n-1)(k-1)))
        FL = F(1-a/2; n-1, v),   FU = F(1-a/2; v, n-1)
        low  = n (MSR - FL MSE) / (FL (k MSC + (k n - k - n) MSE) + n MSR)
        high = n (FU MSR - MSE) / (k MSC + (k n - k - n) MSE + n FU MSR)

    On the Shrout & Fleiss (1979) example (6 targets, 4 judges) this gives ICC(2,1) = 0.290 [0.019, 0.761] and
    ICC(3,1) = 0.715 [0.342, 0.946], as R's psych::ICC does (tests/test_extract_agreement.py).
    """
    from scipy.stats import f as f_dist

    y = np.asarray(ratings, dtype=float)
    if y.ndim != 3 or y.shape[1] < 2:
        raise ValueError(f"ratings must have shape (targets, raters >= 2, variables), got {y.shape}")
    k = y.shape[1]
    complete = np.isfinite(y).all(axis=1)  # (n_targets, n_variables)
    n = complete.sum(axis=0).astype(float)
    w = complete[:, None, :]
    y = np.where(w, y, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        col = y.sum(axis=0) / n  # (k, variables): rater means
        grand = col.mean(axis=0)  # the mean of the rater means, so identical raters give exact zeros below
        row = y.mean(axis=1)  # (targets, variables): target means
        msr = k * (np.where(complete, row - grand, 0.0) ** 2).sum(axis=0) / (n - 1)
        msc = n * ((col - grand) ** 2).sum(axis=0) / (k - 1)
        resid = np.where(w, y - row[:, None, :] - col[None, :, :] + grand, 0.0)
        mse = (resid**2).sum(axis=(0, 1)) / ((n - 1) * (k - 1))
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        icc3 = (msr - mse) / (msr + (k - 1) * mse)
    alpha = 1.0 - confidence
    df1, df2 = n - 1, (n - 1) * (k - 1)
    out = {"n": n.astype(int), "icc_2_1": icc2, "icc_3_1": icc3}
    out.update(_icc3_ci(msr, mse, k, df1, df2, alpha, f_dist))
    out.update(_icc2_ci(icc2, msr, msc, mse, n, k, alpha, f_dist))
    bad = (n < 2) | ~np.isfinite(icc3)  # too few targets, or no variation at all (0/0)
    for key in out:
        if key != "n":
            out[key] = np.where(bad, np.nan, out[key])
    return out


def _icc3_ci(msr, mse, k, df1, df2, alpha, f_dist) -> dict[str, np.ndarray]:
    ok = df1 >= 1
    q_low = f_dist.ppf(1 - alpha / 2, np.where(ok, df1, 1), np.where(ok, df2, 1))
    q_high = f_dist.ppf(1 - alpha / 2, np.where(ok, df2, 1), np.where(ok, df1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        low = (msr - q_low * mse) / (msr + (k - 1) * q_low * mse)
        high = (q_high * msr - mse) / (q_high * msr + (k - 1) * mse)
    return {"icc_3_1_ci_low": low, "icc_3_1_ci_high": high}


def _icc2_ci(p, msr, msc, mse, n, k, alpha, f_dist) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a = k * p / (n * (1 - p))
        b = 1 + k * p * (n - 1) / (n * (1 - p))
        v = (a * msc + b * mse) ** 2 / ((a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / ((n - 1) * (k - 1)))
        ok = (n >= 2) & np.isfinite(v) & (v > 0)
        df1, v = np.where(ok, n - 1, 1), np.where(ok, v, 1)
        f_low = f_dist.ppf(1 - alpha / 2, df1, v)
        f_high = f_dist.ppf(1 - alpha / 2, v, df1)
        extra = k * msc + (k * n - k - n) * mse
        low = n * (msr - f_low * mse) / (f_low * extra + n * msr)
        high = n * (f_high * msr - mse) / (extra + n * f_high * msr)
    # Identical ratings (no rater and no residual variance): the estimate is exactly 1, and so is its interval
    # (the formulas above are 0/0 there).
    exact = (mse == 0) & (msc == 0) & (msr > 0)
    low = np.where(exact, 1.0, np.where(ok, low, np.nan))
    high = np.where(exact, 1.0, np.where(ok, high, np.nan))
    return {"icc_2_1_ci_low": low, "icc_2_1_ci_high": high}


def bland_altman(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Bland-Altman bias and 95% limits of agreement of `a` - `b`, per column (complete pairs only).

    bias = mean(a - b), sd = sample standard deviation of a - b, limits = bias -+ 1.96 sd (Bland & Altman
    1986). Arrays of shape (n_targets, n_variables); NaN where fewer than two pairs are complete.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    ok = np.isfinite(d)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(ok, d, 0.0).sum(axis=0) / n
        sd = np.sqrt((np.where(ok, d - bias, 0.0) ** 2).sum(axis=0) / (n - 1))
    bias, sd = np.where(n >= 2, bias, np.nan), np.where(n >= 2, sd, np.nan)
    return {"ba_bias": bias, "ba_sd": sd, "ba_loa_low": bias - LOA_SD * sd, "ba_loa_high": bias + LOA_SD * sd}


# ----------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------


def agreement(
    features: Sequence[str | Path],
    out: str | Path,
    *,
    id_column: str | None = None,
    patients: str | Sequence[str] | None = None,
) -> AgreementResult:
    """Agreement of the features of two mask sets of the same patients: ICC per feature, Bland-Altman per
    clinical measurement, and the stable-features table of `cdeg fit --stable-features`.

    Parameters
    ----------
    features : two paths
        Two `cdeg extract` outputs: a feature folder or its features table (CSV/Parquet, one row per patient,
        columns ``<modality>__<level>__<feature>``). Differences are the first minus the second.
    out : path
        Output folder: agreement.csv, stable_features.csv, agreement.json (:class:`cdeg.outputs.AgreementRun`).
    id_column : str, optional
        Patient id column of both tables [patient_id].
    patients : "id1,id2" or list, optional
        Compare only these patients (default: every patient of both tables), e.g. the subset whose reference
        masks were extracted; the other rows of either table are not compared and not reported as unmatched.

    Returns
    -------
    AgreementResult

    Raises
    ------
    ValueError
        Not exactly two tables.
    CdegError
        Naming the file (and patient): not a features table, a duplicated or empty id, a value that is not a
        number, no patient or no feature column in common, a patient of `patients` in neither table.
    """
    if len(features) != 2:
        raise ValueError(f"--features must be given exactly twice (two feature tables), got {len(features)}")
    id_column = id_column or ID_COLUMN
    paths = [table_path(p) for p in features]
    a, b = (read_feature_columns(p, id_column) for p in paths)
    listed = None
    if patients is not None:
        a, b = _restrict(a, b, patients, paths)
        listed = len(set(a.index).union(b.index))
    matched = [p for p in a.index if p in b.index]
    if not matched:
        raise CdegError(f"no patient in common with {paths[1]} (column {id_column})", path=paths[0])
    columns = [c for c in a.columns if c in b.columns]
    if not columns:
        raise CdegError(f"no feature column in common with {paths[1]}", path=paths[0])
    table = agreement_table(a.loc[matched, columns], b.loc[matched, columns])
    folder = AgreementRun(Path(out))
    folder.root.mkdir(parents=True, exist_ok=True)
    write_table(folder.table, table)
    write_table(folder.stable_features, stable_features(table))
    manifest = write_manifest(
        folder.manifest, _manifest(paths, id_column, a, b, matched, table, listed), stage="agreement"
    )
    only = _only(a, b)
    if only:
        log.warning(
            "%d patient(s) in only one table, left out: %s%s",
            len(only),
            ", ".join(f"{p} ({paths[i].name} #{i + 1})" for i, p in only[:10]),
            " ..." if len(only) > 10 else "",
        )
    log.info("agreement of %d feature(s) on %d patient(s) -> %s", len(table), len(matched), folder.table)
    return AgreementResult(out=folder.root, table=table, manifest=manifest)


def _restrict(
    a: pd.DataFrame, b: pd.DataFrame, patients: str | Sequence[str], paths: list[Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of `a` and `b` of the listed patients; a listed patient in neither table is an error."""
    items = patients.split(",") if isinstance(patients, str) else list(patients)
    wanted = {str(p).strip() for p in items if str(p).strip()}
    if not wanted:
        raise ValueError("patients: give at least one patient id (or none at all for every patient)")
    nowhere = sorted(wanted.difference(a.index).difference(b.index))
    if nowhere:
        raise CdegError(
            f"{len(nowhere)} listed patient(s) in neither features table (the other: {paths[1]}): "
            + ", ".join(nowhere[:10]),
            path=paths[0],
        )
    return a[a.index.isin(wanted)], b[b.index.isin(wanted)]


def table_path(path: str | Path) -> Path:
    """The features table of a `cdeg extract` folder (Parquet, else CSV), or `path` itself when it is a file."""
    path = Path(path)
    if path.is_dir():
        folder = FeatureFolder(path)
        for candidate in (folder.features, folder.features_csv):
            if candidate.is_file():
                return candidate
        raise CdegError(
            f"not a feature folder: neither {folder.FEATURES} nor {folder.FEATURES_CSV} (`cdeg extract` output)",
            path=path,
        )
    if not path.is_file():
        raise CdegError("features table not found", path=path)
    return path


def read_feature_columns(path: Path, id_column: str) -> pd.DataFrame:
    """The ``<modality>__...`` columns of a features table as floats, indexed by patient id.

    Raises
    ------
    CdegError
        Naming the file: unreadable, no id column, an empty or duplicated id, no feature column, or a value
        that is not a number (naming the patient).
    """
    df = read_clinical(path, id_column=id_column, bad_ids="error").set_index(id_column)
    cols = [c for c in df.columns if feature_set_of(str(c)) in MODALITIES]
    if not cols:
        raise CdegError(
            f"not a features table: no column named <modality>__<level>__<feature> "
            f"(modality {' or '.join(MODALITIES)}; `cdeg extract` writes them)",
            path=path,
        )
    out = {}
    for c in cols:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna()
        if bad.any():
            patient = bad.index[bad.to_numpy()][0]
            raise CdegError(f"{c}: {df.at[patient, c]!r} is not a number", patient=str(patient), path=path)
        out[c] = values.astype(float)
    return pd.DataFrame(out, index=df.index)


def agreement_table(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """One row per column of `a` (the same patients and columns as `b`): the columns of :data:`COLUMNS`."""
    stats = icc(np.stack([a.to_numpy(float), b.to_numpy(float)], axis=1))
    table = pd.DataFrame([describe_column(c) for c in a.columns])
    table.insert(0, "column", list(a.columns))
    for key, values in stats.items():
        table[key] = values
    ba = bland_altman(a.to_numpy(float), b.to_numpy(float))
    is_measure = (table["feature_class"] == "measurement").to_numpy()
    for key, values in ba.items():
        table[key] = np.where(is_measure, values, np.nan)
    return table[list(COLUMNS)]


def describe_column(column: str) -> dict[str, str]:
    """modality, level, feature, feature_class and unit of a features-table column.

    feature_class: "measurement" (a clinical measurement of :mod:`cdeg.measures`), the PyRadiomics class of a
    radiomics feature ("shape", "shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"), else
    "other" (:func:`cdeg.modeling.data.feature_kind`).
    """
    parts = column.split(SEP)
    modality = feature_set_of(column)
    level, feature = (parts[1], SEP.join(parts[2:])) if len(parts) >= 3 else ("", parts[-1])
    kind = feature_kind(column, modality)
    if kind == "radiomics":
        match = RADIOMICS_NAME.match(feature)
        cls = match.group("cls") if match else "other"
    else:
        cls = kind
    unit = measures.UNITS.get(feature, "") if kind == "measurement" else ""
    return {"modality": modality, "level": level, "feature": feature, "feature_class": cls, "unit": unit}


def stable_features(table: pd.DataFrame) -> pd.DataFrame:
    """The stability table of `cdeg fit --stable-features`: ``feature`` (full column name), ``icc`` (ICC(2,1));
    features without an ICC are left out (the filter keeps them, as unrated)."""
    rated = table[np.isfinite(table["icc_2_1"].to_numpy(float))]
    return pd.DataFrame({"feature": rated["column"].to_numpy(), "icc": rated["icc_2_1"].to_numpy()})


def reliable_share(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per modality and feature class: features with an ICC(2,1), and the share of them at or above
    :data:`GOOD_ICC` and :data:`EXCELLENT_ICC` (Koo & Li 2016)."""
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    rated = table[np.isfinite(table["icc_2_1"].to_numpy(float))]
    for (modality, cls), group in rated.groupby(["modality", "feature_class"], sort=True):
        values = group["icc_2_1"].to_numpy(float)
        out.setdefault(str(modality), {})[str(cls)] = {
            "n_features": len(values),
            f"icc_ge_{GOOD_ICC}": round(float((values >= GOOD_ICC).mean()), 4),
            f"icc_ge_{EXCELLENT_ICC}": round(float((values >= EXCELLENT_ICC).mean()), 4),
        }
    return out


def _only(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[int, str]]:
    """(0 or 1, patient) for each patient in only one of the two tables."""
    first = [(0, str(p)) for p in a.index if p not in b.index]
    return first + [(1, str(p)) for p in b.index if p not in a.index]


def _manifest(
    paths: list[Path],
    id_column: str,
    a: pd.DataFrame,
    b: pd.DataFrame,
    patients: list,
    table: pd.DataFrame,
    listed: int | None = None,
) -> dict[str, Any]:
    only = _only(a, b)
    unrated = int((~np.isfinite(table["icc_2_1"].to_numpy(float))).sum())
    return {
        "inputs": [{"path": str(p), "sha256": file_sha256(p)} for p in paths],
        "id_column": id_column,
        "difference": "first minus second table",
        "patients": {
            "matched": len(patients),
            "only_in_first": [p for i, p in only if i == 0],
            "only_in_second": [p for i, p in only if i == 1],
            # With a patient list (`patients`): how many of them were found in either table.
            **({"listed": listed} if listed is not None else {}),
        },
        "columns": {
            "compared": len(table),
            "only_in_first": [c for c in a.columns if c not in b.columns],
            "only_in_second": [c for c in b.columns if c not in a.columns],
            "without_icc": unrated,
        },
        "icc": {
            "reported": ["ICC(2,1) absolute agreement", "ICC(3,1) consistency"],
            "stable_features": "ICC(2,1)",
            "thresholds": {"good": GOOD_ICC, "excellent": EXCELLENT_ICC, "source": "Koo & Li 2016"},
        },
        "reliable_share": reliable_share(table),
    }
