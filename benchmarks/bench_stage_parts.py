"""Seconds of the per-patient parts of `cdeg extract` and `cdeg segment evaluate` on a run's masks.

Times, in one process on one core, over the first N patients of a cohort of a `cdeg run` folder:

* ``measure``: :func:`cdeg.features.measurements.measure` of each predicted mask (both modalities);
* ``evaluate_case``: :func:`cdeg.segmentation.evaluate.evaluate_case` of each predicted mask against its
  reference.

and writes every value the measurements returned, so that two commits can be compared value by value
(``--compare OTHER.json``: the largest relative difference). Run it at two commits on the same run folder, on an
otherwise idle machine (the load average before and after is recorded):

    .venv/bin/python benchmarks/bench_stage_parts.py --run RUN --cohort development --n 12 --result A.json [--compare B.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
from pathlib import Path

from cdeg.features.measurements import measure
from cdeg.segmentation.evaluate import evaluate_case

from cdeg.io import read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `cdeg run` output folder")
    ap.add_argument("--cohort", default="development")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--compare", type=Path, default=None, help="a result of this script at another commit")
    a = ap.parse_args()
    masks, cohort = a.run / "masks" / a.cohort, a.run / "cohorts" / a.cohort
    pids = sorted(p.name for p in masks.iterdir() if p.is_dir())[: a.n]
    pairs = []
    for pid in pids:
        for m in ("mri", "xray"):
            if (masks / pid / f"{m}.nii.gz").is_file():
                pairs.append((pid, m))
    load_before = os.getloadavg()
    values: dict[str, dict] = {}
    t_measure = t_eval = 0.0
    for pid, m in pairs:
        mask = read_image(masks / pid / f"{m}.nii.gz")
        image = read_image(cohort / "images" / pid / f"{m}.nii.gz")
        ref = read_image(cohort / "masks" / pid / f"{m}.nii.gz")
        t = time.perf_counter()
        vals, _ = measure(mask, image, m)
        t_measure += time.perf_counter() - t
        t = time.perf_counter()
        evaluate_case(mask, ref)
        t_eval += time.perf_counter() - t
        values[f"{pid}/{m}"] = vals
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    res = {
        "commit": commit,
        "units": len(pairs),
        "measure_s": round(t_measure, 2),
        "evaluate_case_s": round(t_eval, 2),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "values": values,
    }
    if a.compare is not None:
        other = json.loads(a.compare.read_text())["values"]
        worst = 0.0
        for unit, levels in values.items():
            for level, feats in levels.items():
                for k, x in feats.items():
                    y = other[unit][level][k]
                    if not (math.isnan(x) and math.isnan(y)):
                        worst = max(worst, abs(x - y) / max(1.0, abs(x)))
        res["largest_relative_difference_to"] = {str(a.compare): worst}
    a.result.parent.mkdir(parents=True, exist_ok=True)
    a.result.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print({k: v for k, v in res.items() if k != "values"})


if __name__ == "__main__":
    main()
