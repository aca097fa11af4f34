"""`cdeg extract` on a local Dask cluster against the local process pool, and a projection to large cohorts.

Measures, on a synthetic population cohort (both modalities, reference masks):

1. throughput on >= 1000 patients with the LIGHT parameter file ``benchmarks/radiomics_light.yaml``
   (shape + first order, no resampling; the clinical measurements run in full) for: the local pool with
   2 processes, a Dask ``LocalCluster`` with 1 worker and with 2 workers (one thread each): wall seconds,
   seconds per patient, the sum of the units' own seconds, and the tables' equality across executors;
2. the client's serial part: a re-run on the finished output (every unit reused from the cache) is the
   cohort check + cache keys + table assembly that one process does whatever the number of workers;
3. the cost per patient at the DEFAULT parameter files, on a smaller subset (core-seconds per patient);
4. the per-task overhead of each executor with a trivial task (2 workers, many tasks): the rate at which
   one client and one scheduler get tasks done when the tasks themselves cost nothing;

and projects the wall time for 10,000 and 100,000 patients on N workers:

    T(P, N) = P * (s_client + u * o_sched) + P * c_unit / N

with u units per patient, s_client the client's serial seconds per patient (2.), o_sched the serial
seconds per task of client + scheduler (4.) and c_unit the core seconds per patient (3.). The first term
does not shrink with N (Amdahl). The per-task latency on a worker is not counted: with units of seconds
Dask keeps a task queued on each worker, so dispatch overlaps with work. The machine's load averages
are recorded with each measurement.

On a shared machine the background load changes between runs; ``--pairs K`` adds K alternating runs of the
2-process pool and the 2-worker Dask cluster (``--pairs-only``: only those), so the two see the same load.

Run: .venv/bin/python benchmarks/bench_extract_dask.py --cohort POP_1000 [--n-default 50]
(POP_1000 from ``cdeg synth --profile population --n 1000 --jobs 2 --out POP_1000``; without --cohort a
cohort of --n patients is generated). Writes benchmarks/results/extract_dask.json and prints it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
from cdeg.features.extract import extract

from cdeg.io import read_json, write_json

HERE = Path(__file__).resolve().parent
LIGHT = HERE / "radiomics_light.yaml"
TABLES = ("features_long.parquet", "features.parquet", "features.csv")
PROJECT_PATIENTS = (10_000, 100_000)
PROJECT_WORKERS = (2, 16, 64, 256)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _unit_seconds(out: Path) -> tuple[float, int]:
    """Sum of the units' own seconds (recorded by the worker that ran each) and the number of units."""
    metas = list((out / "cache").glob("*/*.json"))
    return sum(read_json(p)["seconds"] for p in metas), len(metas)


def _timed(label: str, cohort: Path, out: Path, workers: int, **kwargs) -> dict:
    load_before = _load()
    t0 = time.perf_counter()
    res = extract(cohort, out, progress=False, **kwargs)
    wall = time.perf_counter() - t0
    n = len(res.features)
    unit_s, units = _unit_seconds(out)
    row = {
        "executor": label,
        "workers": workers,
        "patients": n,
        "units": units,
        "wall_s": round(wall, 2),
        "s_per_patient": round(wall / n, 4),
        "sum_unit_s": round(unit_s, 2),
        "core_s_per_patient": round(unit_s / n, 4),
        # Wall time not explained by the units' own work spread over the workers: scheduling, process
        # start, the client's serial part, and waiting for the CPU on a shared machine.
        "overhead_s": round(wall - unit_s / workers, 2),
        "load_before": load_before,
        "load_after": _load(),
    }
    print(json.dumps(row), flush=True)
    return row


def _subset(cohort: Path, n: int, dst: Path) -> Path:
    """A cohort of the first `n` patients of `cohort`, with symlinks to its image and mask folders."""
    clinical = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str}).head(n)
    dst.mkdir(parents=True)
    meta = read_json(cohort / "cohort.json")
    write_json(dst / "cohort.json", {**meta, "name": f"{meta['name']}_{n}", "n_patients": n})
    clinical.to_csv(dst / "clinical.csv", index=False)
    for sub in ("images", "masks"):
        (dst / sub).mkdir()
        for pid in clinical["patient_id"]:
            if (cohort / sub / pid).is_dir():
                (dst / sub / pid).symlink_to((cohort / sub / pid).resolve(), target_is_directory=True)
    return dst


def _noop(i: int) -> int:
    return i


def _micro(n_tasks: int) -> dict:
    """Seconds per trivial task: Dask LocalCluster (2 workers) vs the local process pool (2 processes)."""
    from distributed import Client, LocalCluster, as_completed

    out: dict[str, float | int | list[float]] = {"tasks": n_tasks, "load_before": _load()}
    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(_noop, range(4)))  # processes started
        t0 = time.perf_counter()
        futs = [pool.submit(_noop, i) for i in range(n_tasks)]
        for f in cf.as_completed(futs):
            f.result()
        out["pool_s_per_task"] = (time.perf_counter() - t0) / n_tasks
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(_noop, range(4), pure=False))  # workers up and warm
        t0 = time.perf_counter()
        futs = client.map(_noop, range(n_tasks), pure=False, retries=2)
        for _ in as_completed(futs, with_results=True):
            pass
        out["dask_s_per_task"] = (time.perf_counter() - t0) / n_tasks
    out["load_after"] = _load()
    print(json.dumps(out), flush=True)
    return out


def _project(c_unit: float, s_client: float, o_sched: float, u: float) -> list[dict]:
    rows = []
    for p in PROJECT_PATIENTS:
        for n in PROJECT_WORKERS:
            serial = p * (s_client + u * o_sched)
            parallel = p * c_unit / n
            rows.append(
                {
                    "patients": p,
                    "workers": n,
                    "hours": round((serial + parallel) / 3600, 2),
                    "serial_share": round(serial / (serial + parallel), 3),
                }
            )
    return rows


def _pairs(cohort: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    """Alternate the 2-process pool and the 2-worker Dask cluster, so both see the same background load."""
    rows = []
    for i in range(args.pairs):
        order = [("pool", {"jobs": 2}), ("dask", {"cluster": "local:2"})]
        for name, kw in order if i % 2 == 0 else order[::-1]:
            label = "process pool" if name == "pool" else "dask LocalCluster"
            rows.append(_timed(label, cohort, work / f"pair{i}_{name}", 2, params=LIGHT, **kw))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, help="population cohort (default: generate --n patients)")
    ap.add_argument("--n", type=int, default=1000, help="patients for the executor comparison")
    ap.add_argument("--n-default", type=int, default=50, help="patients for the default-parameter cost")
    ap.add_argument("--micro-tasks", type=int, default=2000, help="trivial tasks for the overhead test")
    ap.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="extra alternating runs of the 2-process pool and the 2-worker Dask cluster (the same load for both)",
    )
    ap.add_argument("--pairs-only", action="store_true", help="only the alternating pairs")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "extract_dask.json")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="cdeg_bench_dask_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        source = args.cohort
        if source is None:
            from cdeg.synth import synthesize

            source = work / "cohort"
            synthesize(source, n=args.n, profile="population", seed=7, jobs=2)
        cohort = _subset(source, args.n, work / f"cohort_{args.n}")
        if args.pairs_only:
            result = {
                "benchmark": "extract_dask_pairs",
                "cohort": str(source),
                "pairs": _pairs(cohort, work, args),
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json(args.out, result)
            print(json.dumps(result, indent=2))
            return
        small = _subset(source, args.n_default, work / f"cohort_{args.n_default}")

        light = [
            _timed("process pool", cohort, work / "pool2", 2, params=LIGHT, jobs=2),
            _timed("dask LocalCluster", cohort, work / "dask1", 1, params=LIGHT, cluster="local:1"),
            _timed("dask LocalCluster", cohort, work / "dask2", 2, params=LIGHT, cluster="local:2"),
        ]
        identical = all(
            (work / "pool2" / t).read_bytes() == (work / d / t).read_bytes()
            for d in ("dask1", "dask2")
            for t in TABLES
        )
        # Every unit cached: what is left is the client's serial part (cohort check, cache keys, tables).
        rerun = _timed("re-run, all cached", cohort, work / "dask2", 2, params=LIGHT, cluster="local:2")
        default = _timed("process pool, default parameters", small, work / "default", 2, jobs=2)
        micro = _micro(args.micro_tasks)

        u = light[0]["units"] / light[0]["patients"]
        c_unit = default["core_s_per_patient"]
        s_client = rerun["wall_s"] / rerun["patients"]
        o_sched = micro["dask_s_per_task"]
        result = {
            "benchmark": "extract_dask",
            "machine": {
                "cpu_count": os.cpu_count(),
                "processor": platform.machine(),
                "python": platform.python_version(),
                "note": "the 1-, 5- and 15-min load averages before and after each row show whether other jobs shared the cores",
            },
            "cohort": str(source),
            "light_params": str(LIGHT.relative_to(HERE.parent)),
            "executors_light": light,
            "tables_identical_across_executors": identical,
            "rerun_all_cached": rerun,
            "default_params": default,
            "trivial_tasks": micro,
            "pairs": _pairs(cohort, work, args),
            "projection": {
                "formula": "T = P*(s_client + u*o_sched) + P*c_unit/N",
                "u_units_per_patient": round(u, 3),
                "c_unit_core_s_per_patient": c_unit,
                "s_client_s_per_patient": round(s_client, 4),
                "o_sched_s_per_task": round(o_sched, 5),
                "rows": _project(c_unit, s_client, o_sched, u),
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, result)
        print(json.dumps(result, indent=2))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
