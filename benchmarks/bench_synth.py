"""Generator speed: patients per second per core, both modalities, default resolution.

Run: .venv/bin/python benchmarks/bench_synth.py [--n 40] [--jobs 1 2]
Writes benchmarks/results/synth.json and prints a table. The issue's target: >= 2 patients/s/core.
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

from cdeg.synth import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="patients per run")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    ap.add_argument("--profile", default="neck")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synth.json")
    args = ap.parse_args()

    rows = []
    for jobs in args.jobs:
        tmp = Path(tempfile.mkdtemp(prefix="cdeg_bench_synth_"))
        try:
            t0 = time.perf_counter()
            synthesize(tmp / "c", profile=args.profile, n=args.n, seed=1, jobs=jobs, progress=False)
            dt = time.perf_counter() - t0
            size = sum(p.stat().st_size for p in (tmp / "c").rglob("*") if p.is_file())
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append(
            {
                "jobs": jobs,
                "n": args.n,
                "seconds": round(dt, 2),
                "patients_per_s": round(args.n / dt, 2),
                "patients_per_s_per_core": round(args.n / dt / jobs, 2),
                "mb_per_patient": round(size / args.n / 1e6, 2),
            }
        )
        print(
            f"jobs={jobs}: {args.n} patients in {dt:.1f} s = {args.n / dt:.2f}/s ({args.n / dt / jobs:.2f}/s/core), "
            f"{size / args.n / 1e6:.2f} MB/patient"
        )
    result = {
        "benchmark": "synth",
        "profile": args.profile,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "load_before": os.getloadavg(),
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
