"""`cdeg fit` benchmark: (a) wall time with the DEFAULT configuration on 109 patients x ~1,000 features,
(b) on synthetic cohorts, nested-CV and external AUC next to the oracle AUC (the physical ceiling).

Run: .venv/bin/python benchmarks/bench_fit.py [--part timing|synthetic|all] [--n 109] [--features 1000]
Writes benchmarks/results/fit.json (one key per part) and prints a summary. The issue's target for (a):
<= 5 minutes on 2 cores.

Part (b) needs `cdeg synth` and `cdeg extract`: a surgical ("neck") cohort of --n patients and a population
cohort of --pop-n, features from the reference masks, `cdeg fit` on the surgical cohort restricted (--exclude)
to the variables both cohorts share, `cdeg validate` on the population cohort; the oracle AUC is the AUC of
truth/patients.csv p_oracle against the true `accelerated` on the same patients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "fit.json"


def machine() -> dict[str, Any]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_cores": cores,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


def part_timing(n: int, n_features: int, work: Path, jobs: int | None) -> dict[str, Any]:
    """Wall time of `fit` with the shipped defaults on a simulated wide table with a planted signal."""
    from cdeg.modeling.config import resolve_config
    from cdeg.modeling.fit import fit
    from cdeg.modeling.simulate import write_tables

    tables = write_tables(work / "wide", n=n, n_features=n_features, signal=1.0, seed=0)
    cfg = resolve_config(overrides={"jobs": jobs})
    load_before = os.getloadavg()[0]
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    res = fit(
        tables.features_path,
        tables.clinical_path,
        "accelerated",
        work / "run_timing",
        jobs=jobs,
        progress=False,
    )
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    load_after = os.getloadavg()[0]
    t1 = time.perf_counter()
    again = fit(
        tables.features_path,
        tables.clinical_path,
        "accelerated",
        work / "run_timing",
        jobs=jobs,
        progress=False,
    )
    resumed = time.perf_counter() - t1
    return {
        "n_patients": n,
        "n_features": res.metrics["n_features"],
        "wall_s": round(wall, 1),
        "cpu_s_all_processes": round(cpu, 1),
        "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "rerun_resumed_wall_s": round(resumed, 1),
        "rerun_new_trials": again.metrics["new_trials"],
        "timings_s": res.metrics["timings_s"],
        "config": {k: getattr(cfg, k) for k in ("trials", "outer_folds", "repeats", "inner_folds", "jobs")},
        "auc": {m: round(s["auc"], 3) for m, s in res.metrics["cv"].items()},
        "auc_ci": {m: [round(v, 3) for v in s["auc_ci"]] for m, s in res.metrics["cv"].items()},
        "data": "modeling.simulate: planted signal (1 log-odds/SD) in 2 of the columns + age, 20 latent factors",
    }


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of its finished worker processes."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _available() -> str | None:
    try:
        from cdeg.features.extract import extract  # noqa: F401

        from cdeg.synth import synthesize  # noqa: F401
    except ImportError as e:
        return f"synth/extract not importable: {e}"
    return None


def _oracle_auc(cohort: Path, ids: list[str]) -> float:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    truth = pd.read_csv(cohort / "truth" / "patients.csv", dtype={"patient_id": str}).set_index("patient_id")
    t = truth.loc[ids]
    return float(roc_auc_score(t["accelerated"], t["p_oracle"]))


def _cohort(synthesize: Any, folder: Path, profile: str, n: int, seed: int, jobs: int) -> Path:
    """Synthesize a cohort, or reuse the one a kept work folder (--keep) already holds with the same n and seed."""
    meta = folder / "cohort.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        if (m.get("profile"), m.get("n_patients"), m.get("seed")) == (profile, n, seed):
            return folder
    return Path(
        synthesize(folder, profile=profile, n=n, seed=seed, jobs=jobs, progress=False, overwrite=True)
    )


def part_synthetic(n: int, pop_n: int, work: Path, jobs: int | None, seed: int) -> dict[str, Any]:
    """Neck cohort -> fit (shared variables only) -> validate on a population cohort; oracle AUCs beside."""
    import pandas as pd
    from cdeg.features.extract import extract
    from cdeg.modeling.fit import fit
    from cdeg.modeling.validate import validate

    from cdeg.synth import synthesize

    ext_jobs = jobs or os.cpu_count() or 1
    t = {}
    t0 = time.perf_counter()
    neck = _cohort(synthesize, work / "neck", "neck", n, seed, ext_jobs)
    pop = _cohort(synthesize, work / "pop", "population", pop_n, seed + 1, ext_jobs)
    t["synth_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    fneck = extract(neck, work / "neck_features", jobs=ext_jobs, progress=False)
    fpop = extract(pop, work / "pop_features", jobs=ext_jobs, progress=False)
    t["extract_s"] = round(time.perf_counter() - t0, 1)
    cneck = pd.read_csv(Path(neck) / "clinical.csv", dtype={"patient_id": str})
    cpop = pd.read_csv(Path(pop) / "clinical.csv", dtype={"patient_id": str})
    shared = set(fpop.features.columns) | set(cpop.columns)
    exclude = sorted((set(fneck.features.columns) | set(cneck.columns)) - shared - {"patient_id"})
    t0 = time.perf_counter()
    res = fit(
        fneck.out / "features.csv",
        Path(neck) / "clinical.csv",
        "accelerated",
        work / "run_neck",
        exclude=exclude,
        jobs=jobs,
        progress=False,
    )
    t["fit_s"] = round(time.perf_counter() - t0, 1)
    val = validate(
        res.out / "model",
        fpop.out / "features.csv",
        Path(pop) / "clinical.csv",
        "accelerated",
        work / "validate_pop",
        progress=False,
    )
    ids_neck = list(
        pd.read_csv(res.out / "oof_predictions.csv", dtype={"patient_id": str})["patient_id"].unique()
    )
    ids_pop = list(val.predictions["patient_id"].astype(str))
    return {
        "neck": {
            "n": n,
            "seed": seed,
            "n_features": res.metrics["n_features"],
            "prevalence": round(res.metrics["prevalence"], 3),
            "nested_cv_auc": {m: round(s["auc"], 3) for m, s in res.metrics["cv"].items()},
            "nested_cv_auc_ci": {m: [round(v, 3) for v in s["auc_ci"]] for m, s in res.metrics["cv"].items()},
            "oracle_auc": round(_oracle_auc(Path(neck), ids_neck), 3),
        },
        "population": {
            "n": pop_n,
            "seed": seed + 1,
            "prevalence": round(val.metrics["prevalence"], 3),
            "external_auc": {m: round(s["auc"], 3) for m, s in val.metrics["external"].items()},
            "external_auc_ci": {
                m: [round(v, 3) for v in s["auc_ci"]] for m, s in val.metrics["external"].items()
            },
            "calibration_slope": {
                m: round(s["calibration_slope"], 2) for m, s in val.metrics["external"].items()
            },
            "imputed_share": val.metrics["imputed_share"],
            "oracle_auc": round(_oracle_auc(Path(pop), ids_pop), 3),
        },
        "excluded_not_shared": len(exclude),
        "timings_s": t,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["timing", "synthetic", "all"], default="all")
    ap.add_argument("--n", type=int, default=109, help="development patients")
    ap.add_argument("--features", type=int, default=1000, help="columns of the wide table (part a)")
    ap.add_argument("--pop-n", type=int, default=500, help="population cohort size (part b)")
    ap.add_argument("--jobs", type=int, default=None, help="override the configured worker count")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="cdeg_bench_fit_"))
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = machine()
    try:
        if args.part in ("timing", "all"):
            r = part_timing(args.n, args.features, work, args.jobs)
            results["timing"] = r
            print(
                f"(a) fit with defaults on {r['n_patients']} x {r['n_features']}: {r['wall_s']} s wall, "
                f"{r['cpu_s_all_processes']} CPU-s, load {r['load_average_1min_before_after']} "
                f"(target <= 300 s); re-run resumed in {r['rerun_resumed_wall_s']} s; AUC {r['auc']}"
            )
        if args.part in ("synthetic", "all"):
            missing = _available()
            if missing:
                results["synthetic"] = {"skipped": missing}
                print(f"(b) skipped: {missing}")
            else:
                r = part_synthetic(args.n, args.pop_n, work, args.jobs, args.seed)
                results["synthetic"] = r
                print(
                    f"(b) neck nested-CV AUC {r['neck']['nested_cv_auc']} vs oracle {r['neck']['oracle_auc']}; "
                    f"population external AUC {r['population']['external_auc']} vs oracle "
                    f"{r['population']['oracle_auc']}"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
