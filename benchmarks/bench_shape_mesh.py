"""PyRadiomics' 3D mesh coefficients: its C function against `cdeg.features.shape_mesh`, on a run's MRI masks.

Each structure of the first N patients' predicted MRI masks is resampled as `cdeg extract` resamples it
(``configs/radiomics_mri.yaml``: 0.5 mm in-plane, slice spacing kept, B-spline, padDistance 5), padded by one
voxel, and handed to both ``radiomics.cShape.calculate_coefficients`` and
``cdeg.features.shape_mesh.mesh_coefficients``. Records the seconds of each (one process, one core), whether
the diameters are identical and the largest relative difference in area and volume. Run on an otherwise idle
machine (the load average before and after is recorded):

    .venv/bin/python benchmarks/bench_shape_mesh.py --run RUN --n 10 --result benchmarks/results/shape_mesh.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from cdeg.features.shape_mesh import mesh_coefficients
from radiomics import cShape, imageoperations


def _structures(path: Path):
    """(label, padded boolean array, spacing) of each structure of one MRI mask, resampled as extract does."""
    mask = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(mask)
    for label in (int(v) for v in np.unique(arr) if v):
        binary = sitk.GetImageFromArray((arr == label).astype(np.uint8))
        binary.CopyInformation(mask)
        _, resampled = imageoperations.resampleImage(
            sitk.Cast(binary, sitk.sitkFloat32),
            binary,
            resampledPixelSpacing=[0.5, 0.5, 0],
            interpolator=sitk.sitkBSpline,
            label=1,
            padDistance=5,
        )
        yield label, np.pad(sitk.GetArrayFromImage(resampled) == 1, 1), np.array(resampled.GetSpacing()[::-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `cdeg run` output folder")
    ap.add_argument("--cohort", default="development")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--result", type=Path, required=True)
    a = ap.parse_args()
    files = sorted((a.run / "masks" / a.cohort).glob("*/mri.nii.gz"))[: a.n]
    load_before = os.getloadavg()
    seconds_c = seconds_ours = 0.0
    worst, n, identical = 0.0, 0, True
    for f in files:
        for _, padded, spacing in _structures(f):
            t0 = time.perf_counter()
            area, volume, diameters = cShape.calculate_coefficients(padded, spacing)
            t1 = time.perf_counter()
            ours = mesh_coefficients(padded, spacing)
            t2 = time.perf_counter()
            seconds_c, seconds_ours, n = seconds_c + t1 - t0, seconds_ours + t2 - t1, n + 1
            identical &= tuple(diameters) == ours[2]
            worst = max(worst, abs(ours[0] - area) / area, abs(ours[1] - volume) / abs(volume))
    result = {
        "masks": len(files),
        "structures": n,
        "seconds_pyradiomics_c": round(seconds_c, 3),
        "seconds_shape_mesh": round(seconds_ours, 3),
        "ms_per_structure": {
            "pyradiomics_c": round(1000 * seconds_c / n, 1),
            "shape_mesh": round(1000 * seconds_ours / n, 1),
        },
        "speedup": round(seconds_c / seconds_ours, 2),
        "diameters_identical": bool(identical),
        "max_relative_difference_area_volume": worst,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    a.result.parent.mkdir(parents=True, exist_ok=True)
    a.result.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
