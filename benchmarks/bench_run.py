"""Time `cdeg run` on a study configuration: a first run, then a re-run with nothing changed.

Usage::

    python benchmarks/bench_run.py [--config configs/demo.yaml] [--out bench_run_output] [--jobs 0] [--keep]

Prints a table of stage timings for both runs (what ran, seconds) with the machine (CPU count, GPU, load
average before and after), and writes them to benchmarks/results/run.json. Budgets of the demo (issue):
first run <= 25 min on a 2-core CPU, <= 20 min on a GPU; re-run with nothing changed <= 1 min. The load
average is printed because a shared machine makes every stage slower: quote numbers from a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path


def machine() -> dict:
    """CPU count, GPU name (if any), Python and the load average."""
    info = {"cpu_count": os.cpu_count(), "processor": platform.machine(), "python": platform.python_version()}
    try:
        import torch

        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # torch missing or broken: no GPU information
        info["gpu"] = None
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--out", default="bench_run_output")
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) an existing run folder")
    ap.add_argument("--results", default="benchmarks/results/run.json")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from cdeg.pipeline import run

    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    rows: dict = {"machine": machine(), "config": args.config, "load_before": os.getloadavg()}
    for label in ("first_run", "rerun_nothing_changed"):
        t0 = time.perf_counter()
        res = run(args.config, out=out, jobs=args.jobs, progress=True)
        rows[label] = {"seconds": round(time.perf_counter() - t0, 1), "stages": res.stages}
        rows[f"load_after_{label}"] = os.getloadavg()
    rows["report"] = str(res.report)
    print(f"\nmachine: {rows['machine']}; load average before {rows['load_before']}")
    print(f"{'stage':32s} {'first run, s':>13s} {'re-run, s':>10s}")
    for a, b in zip(rows["first_run"]["stages"], rows["rerun_nothing_changed"]["stages"], strict=True):
        sa = f"{a['seconds']:.1f}" if a["status"] == "ran" else a["status"]
        sb = f"{b['seconds']:.1f}" if b["status"] == "ran" else b["status"]
        print(f"{a['stage']:32s} {sa:>13s} {sb:>10s}")
    print(
        f"{'total':32s} {rows['first_run']['seconds']:13.1f} {rows['rerun_nothing_changed']['seconds']:10.1f}"
    )
    print(f"load average after: {rows['load_after_rerun_nothing_changed']}")
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(f"report: {res.report.resolve()}\nresults: {args.results}")


if __name__ == "__main__":
    main()
