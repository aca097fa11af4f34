"""`cdeg extract` speed and accuracy on a synthetic cohort.

Reports (default parameters, both modalities, reference masks):

* seconds per patient with 1 job, and the speed-up with 2 jobs (target >= 1.8x);
* per core against the obvious alternative, PyRadiomics' own ``execute(image, mask, label=L)`` looped over
  the structures in one process (radiomics only, same parameter files), and cdeg's radiomics part alone;
* the mean absolute disc-height error against truth/levels.csv (target <= 0.5 mm), per modality.

Run: .venv/bin/python benchmarks/bench_extract.py [--n 8]
Writes benchmarks/results/extract.json and prints it. Run it on an otherwise idle machine: the load
average before and after is recorded.
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

import numpy as np
import pandas as pd
import SimpleITK as sitk
from cdeg.features.extract import DEFAULT_PARAMS, extract
from cdeg.features.radiomics_features import StructureExtractor, as_volume, naive_features

from cdeg import labels
from cdeg.config import shipped_config
from cdeg.synth import synthesize

HEIGHTS = ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm")


def _radiomics_only(cohort: Path, patients: list[str], naive: bool) -> float:
    """Seconds for PyRadiomics on every structure of every image, one process, one thread."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    extractors = {m: StructureExtractor(shipped_config(DEFAULT_PARAMS[m])) for m in DEFAULT_PARAMS}
    t0 = time.perf_counter()
    for pid in patients:
        for m in DEFAULT_PARAMS:
            image = sitk.ReadImage(str(cohort / "images" / pid / f"{m}.nii.gz"))
            mask = sitk.ReadImage(str(cohort / "masks" / pid / f"{m}.nii.gz"))
            arr = sitk.GetArrayFromImage(mask)
            present = [s.label for s in labels.STRUCTURES if (arr == s.label).any()]
            if naive:
                naive_features(image, mask, present, shipped_config(DEFAULT_PARAMS[m]))
            else:
                extractors[m].features(as_volume(image), arr.reshape((-1, *arr.shape[-2:])), present)
    return time.perf_counter() - t0


def _height_errors(cohort: Path, wide: pd.DataFrame) -> dict[str, dict[str, float]]:
    truth = pd.read_csv(cohort / "truth" / "levels.csv")
    truth = truth[truth["structure"] == "disc"]
    w = wide.set_index("patient_id")
    out: dict[str, dict[str, float]] = {}
    for m in DEFAULT_PARAMS:
        errs: dict[str, list[float]] = {f: [] for f in HEIGHTS}
        for _, r in truth.iterrows():
            for f in HEIGHTS:
                col = f"{m}__{r['level']}__{f}"
                if col in w.columns and np.isfinite(w.loc[r["patient_id"], col]):
                    errs[f].append(abs(w.loc[r["patient_id"], col] - r[f]))
        allv = [e for v in errs.values() for e in v]
        out[m] = {
            "mean_abs_error_mm": round(float(np.mean(allv)), 3),
            **{f"{f}_mae": round(float(np.mean(v)), 3) for f, v in errs.items()},
            "n_values": len(allv),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="patients in the synthetic cohort")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "extract.json")
    args = ap.parse_args()
    os.environ.setdefault("CDEG_NO_PROGRESS", "1")

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        cohort = synthesize(work / "cohort", profile="neck", n=args.n, seed=args.seed, progress=False)
        patients = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str})["patient_id"].tolist()
        load_before = os.getloadavg()
        timings = {}
        results = {}
        for jobs in (1, 2):
            t0 = time.perf_counter()
            results[jobs] = extract(cohort, work / f"out{jobs}", jobs=jobs, progress=False)
            timings[jobs] = time.perf_counter() - t0
        identical = all(
            (work / "out1" / f).read_bytes() == (work / "out2" / f).read_bytes()
            for f in ("features_long.parquet", "features.parquet", "features.csv")
        )
        t_cdeg_rad = _radiomics_only(cohort, patients, naive=False)
        t_naive = _radiomics_only(cohort, patients, naive=True)
        load_after = os.getloadavg()
        report = {
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "cohort": {
                "profile": "neck",
                "patients": args.n,
                "seed": args.seed,
                "modalities": ["mri", "xray"],
            },
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "seconds_per_patient_1_job": round(timings[1] / args.n, 2),
            "seconds_per_patient_2_jobs": round(timings[2] / args.n, 2),
            "speedup_2_jobs": round(timings[1] / timings[2], 2),
            "tables_identical_1_vs_2_jobs": identical,
            "radiomics_only_seconds_per_patient": {
                "cdeg_cropped_one_extractor": round(t_cdeg_rad / args.n, 2),
                "pyradiomics_execute_loop": round(t_naive / args.n, 2),
                "speedup": round(t_naive / t_cdeg_rad, 2),
            },
            "disc_height_error_vs_truth": _height_errors(cohort, results[1].features),
            "features_per_patient": int(results[1].features.shape[1] - 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
