"""`cdeg fit` on public radiomics feature tables (radMLBench), next to the nested-CV AUCs their authors published.

The data: radMLBench (A. Demircioğlu, https://github.com/aydindemircioglu/radMLBench), one gzip-compressed CSV per
dataset, ``datasets/<name>.gz``. Its loader (radMLBench.py ``loadData``, PyPI ``radmlbench`` 1.2) reads a file
with ``pd.read_csv(path, compression="gzip")`` and splits it with ``drop(["ID", "Target"])``: one row per patient,
an ``ID`` column, a 0/1 ``Target`` column, every other column a feature. ``loadData(name, local_cache_dir=DIR)``
stores the same file as ``DIR/<name>.gz``, so ``--data`` takes either a folder of downloaded files or such a cache.
Download the files first (this script never goes online), e.g.
``https://github.com/aydindemircioglu/radMLBench/raw/main/datasets/WORC-Lipo.gz``.

The default datasets are the six public WORC datasets (Starmans et al., arXiv:2108.08618; radMLBench
metadata.yaml names that paper for all six): Lipo, Desmoid, Liver, GIST, CRLM and Melanoma. Melanoma (BRAF
mutation status) is the negative control: the published AUC is 0.51, so a confidence interval of cdeg that
excludes 0.5 there would point at a leak, not at a better model.

Each dataset becomes cdeg's two-table input (features CSV: patient_id + features; clinical CSV: patient_id +
target) and goes through `fit` with the shipped defaults (configs/fit.yaml; `--trials`, `--outer-folds`,
`--repeats` override). The feature tiers find no measurement- or PyRadiomics-named columns and are skipped, and
the clinical-only model has no clinical variable and is skipped: the comparison is xgboost (the primary model)
against the elastic-net logistic baseline on the same outer folds.

The two checks, per dataset (None when an input is missing):

* ``at_least_published``: the upper end of the primary model's nested-CV AUC 95% CI is >= the published mean
  AUC, i.e. cdeg's interval overlaps or lies above the published result.
* ``not_worse_than_baseline``: primary AUC >= logistic AUC - half the width of the logistic AUC's 95% CI.

Run: .venv/bin/python benchmarks/bench_public_radiomics.py --data DIR [--datasets WORC-Lipo,WORC-GIST]
Writes benchmarks/results/public_radiomics.json and prints a summary table. A missing folder or file stops
with one line naming the download location and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_fit import machine

RESULTS = Path(__file__).parent / "results" / "public_radiomics.json"
SOURCE_URL = "https://github.com/aydindemircioglu/radMLBench"
DATASETS_URL = SOURCE_URL + "/raw/main/datasets"
SUFFIX = ".gz"
#: Column names of a radMLBench file (radMLBench.py loadData: ``dataset.drop(['ID', 'Target'], axis=1)``).
ID_COLUMN, TARGET_COLUMN = "ID", "Target"
#: Names in cdeg's input tables.
PATIENT_ID, TARGET = "patient_id", "target"
WORC_DATASETS: tuple[str, ...] = (
    "WORC-Lipo",
    "WORC-Desmoid",
    "WORC-Liver",
    "WORC-GIST",
    "WORC-CRLM",
    "WORC-Melanoma",
)
NEGATIVE_CONTROLS: frozenset[str] = frozenset({"WORC-Melanoma"})
CHANCE = 0.5


@dataclass(frozen=True)
class Published:
    """A published nested-CV AUC: mean and 95% CI (None where not verified), and where it was read."""

    auc: float | None
    ci: tuple[float, float] | None
    source: str


# The mean AUCs are those the abstract of arXiv:2108.08618v1 (Starmans et al., "Reproducible radiomics through
# automated machine learning validated on twelve clinical applications", 19 Aug 2021) lists per application:
# liposarcoma 0.83, desmoid-type fibromatosis 0.82, primary liver tumors 0.81, gastrointestinal stromal tumors
# 0.77, colorectal liver metastases 0.68, melanoma metastases 0.51. Read from the abstract as reproduced at
# https://deepai.org/publication/reproducible-radiomics-through-automated-machine-learning-validated-on-twelve-clinical-applications
# Later versions (v3: "An automated machine learning framework to optimize radiomics model construction validated
# on twelve clinical applications") may report other numbers.
# TODO: the 95% CIs (and the mean AUCs of the version of record) come from the paper's per-application results
# table (AUC with 95% CI of the 100x random-split cross-validation); that table could not be read here, so `ci`
# stays None and the published half-width is not used by any check.
_STARMANS_V1 = (
    "Starmans et al., arXiv:2108.08618v1 (2021), abstract; 95% CI: TODO, results table of the paper"
)
PUBLISHED: dict[str, Published] = {
    "WORC-Lipo": Published(0.83, None, _STARMANS_V1),
    "WORC-Desmoid": Published(0.82, None, _STARMANS_V1),
    "WORC-Liver": Published(0.81, None, _STARMANS_V1),
    "WORC-GIST": Published(0.77, None, _STARMANS_V1),
    "WORC-CRLM": Published(0.68, None, _STARMANS_V1),
    "WORC-Melanoma": Published(0.51, None, _STARMANS_V1),
}
UNPUBLISHED = Published(None, None, "no published result recorded in this script")


class DataMissing(Exception):
    """The data folder or a dataset file is missing; the message is the one line shown to the user."""


def dataset_path(data: Path, name: str) -> Path:
    """Where a dataset's file is: ``<data>/<name>.gz``, the layout of radMLBench's ``local_cache_dir``."""
    return data / f"{name}{SUFFIX}"


def check_data(data: Path, names: list[str]) -> None:
    """Raise DataMissing (one line, with the download location) unless every dataset file is there."""
    if not data.is_dir():
        raise DataMissing(
            f"data folder {data} not found: download the radMLBench files ({DATASETS_URL}/<name>{SUFFIX}) into it"
        )
    missing = [n for n in names if not dataset_path(data, n).is_file()]
    if missing:
        urls = ", ".join(f"{DATASETS_URL}/{n}{SUFFIX}" for n in missing)
        raise DataMissing(f"{len(missing)} dataset file(s) missing in {data}: download {urls}")


def convert(source: Path, folder: Path) -> tuple[Path, Path]:
    """A radMLBench file as cdeg's two tables: features.csv (patient_id + features), clinical.csv (+ target).

    Parameters
    ----------
    source : path
        Gzip-compressed CSV with columns ``ID``, ``Target`` (0/1) and the features.
    folder : path
        Where the two CSVs are written.

    Returns
    -------
    (features_path, clinical_path)
    """
    import pandas as pd

    from cdeg.io import write_table

    table = pd.read_csv(source, compression="gzip")
    absent = [c for c in (ID_COLUMN, TARGET_COLUMN) if c not in table.columns]
    if absent:
        raise ValueError(f"{source}: no column {', '.join(absent)} (a radMLBench file has ID and Target)")
    ids = table[ID_COLUMN].astype(str)
    features = table.drop(columns=[ID_COLUMN, TARGET_COLUMN])
    features.insert(0, PATIENT_ID, ids)
    clinical = pd.DataFrame({PATIENT_ID: ids, TARGET: table[TARGET_COLUMN].astype(int)})
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "features.csv", folder / "clinical.csv"
    write_table(paths[0], features)
    write_table(paths[1], clinical)
    return paths


def checks(primary: dict[str, Any], baseline: dict[str, Any], published: Published) -> dict[str, bool | None]:
    """The pass/fail checks of one dataset (see the module docstring); None where an input is missing.

    `primary` and `baseline` hold ``auc`` and ``auc_ci`` ([low, high]) of cdeg's primary and logistic models.
    """
    ci_hi = primary["auc_ci"][1] if primary.get("auc_ci") else None
    at_least = None if published.auc is None or ci_hi is None else bool(ci_hi >= published.auc)
    not_worse = None
    if primary.get("auc") is not None and baseline.get("auc") is not None and baseline.get("auc_ci"):
        half = (baseline["auc_ci"][1] - baseline["auc_ci"][0]) / 2
        not_worse = bool(primary["auc"] >= baseline["auc"] - half)
    return {"at_least_published": at_least, "not_worse_than_baseline": not_worse}


def _model_summary(metrics: dict[str, Any], model: str) -> dict[str, Any]:
    cv = metrics["cv"].get(model)
    if cv is None:
        return {"auc": None, "auc_ci": None}
    return {"auc": round(cv["auc"], 3), "auc_ci": [round(v, 3) for v in cv["auc_ci"]]}


def run_dataset(name: str, data: Path, work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Convert one dataset, fit it with the shipped defaults (and `overrides`), and compare it."""
    from cdeg.modeling.fit import fit

    features, clinical = convert(dataset_path(data, name), work / name / "tables")
    t0 = time.perf_counter()
    res = fit(features, clinical, TARGET, work / name / "run", progress=False, **overrides)
    wall = time.perf_counter() - t0
    primary_name = res.config.primary_model
    models = {m: _model_summary(res.metrics, m) for m in (primary_name, "logistic")}
    published = PUBLISHED.get(name, UNPUBLISHED)
    result: dict[str, Any] = {
        "n_patients": res.metrics["n_patients"],
        "n_features": res.metrics["n_features"],
        "prevalence": round(res.metrics["prevalence"], 3),
        "primary_model": primary_name,
        "auc": {m: s["auc"] for m, s in models.items()},
        "auc_ci": {m: s["auc_ci"] for m, s in models.items()},
        "published": {"auc": published.auc, "auc_ci": published.ci, "source": published.source},
        "checks": checks(models[primary_name], models["logistic"], published),
        "wall_s": round(wall, 1),
    }
    if name in NEGATIVE_CONTROLS:
        ci = models[primary_name]["auc_ci"]
        result["checks"]["chance_in_ci"] = None if ci is None else bool(ci[0] <= CHANCE <= ci[1])
    return result


def _fmt(auc: float | None, ci: list[float] | tuple[float, float] | None) -> str:
    if auc is None:
        return "-"
    return f"{auc:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def summary_lines(datasets: dict[str, dict[str, Any]]) -> list[str]:
    """The summary table: one line per dataset."""
    mark = {True: "pass", False: "FAIL", None: "n/a"}
    head = f"{'dataset':<15} {'n':>4} {'xgboost AUC [95% CI]':>22} {'logistic AUC [95% CI]':>22} "
    lines = [head + f"{'published':>10} {'>=published':>11} {'>=baseline':>10}"]
    for name, r in datasets.items():
        p, c = r["primary_model"], r["checks"]
        lines.append(
            f"{name:<15} {r['n_patients']:>4} {_fmt(r['auc'][p], r['auc_ci'][p]):>22} "
            f"{_fmt(r['auc']['logistic'], r['auc_ci']['logistic']):>22} "
            f"{_fmt(r['published']['auc'], r['published']['auc_ci']):>10} "
            f"{mark[c['at_least_published']]:>11} {mark[c['not_worse_than_baseline']]:>10}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, required=True, help=f"folder with the radMLBench <name>{SUFFIX} files"
    )
    ap.add_argument("--datasets", default=",".join(WORC_DATASETS), help="comma-separated radMLBench names")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--trials", type=int, default=None, help="override the configured Optuna trials")
    ap.add_argument("--outer-folds", type=int, default=None, help="override the configured outer folds")
    ap.add_argument("--repeats", type=int, default=None, help="override the configured repeats")
    ap.add_argument("--jobs", type=int, default=None, help="override the configured worker count")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code (2: data missing)."""
    from cdeg.io import write_json

    args = parse_args(argv)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        check_data(args.data, names)
    except DataMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    overrides = {"trials": args.trials, "outer_folds": args.outer_folds, "repeats": args.repeats}
    overrides["jobs"] = args.jobs
    work = args.keep or Path(tempfile.mkdtemp(prefix="cdeg_bench_public_"))
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            results[name] = run_dataset(name, args.data, work, overrides)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "machine": {
            **machine(),
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "data": {"folder": str(args.data), "source": SOURCE_URL},
        "overrides": {k: v for k, v in overrides.items() if v is not None},
        "checks": {
            "at_least_published": "upper end of the primary model's AUC 95% CI >= published mean AUC",
            "not_worse_than_baseline": "primary AUC >= logistic AUC - half the width of the logistic AUC 95% CI",
            "chance_in_ci": "negative control only: the primary model's AUC 95% CI contains 0.5",
        },
        "datasets": results,
    }
    print("\n".join(summary_lines(results)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
