"""Accuracy of the clinical measurements of `cdeg extract` against the synthetic truth.

Measures every patient x modality of a synthetic cohort on its reference masks with
:func:`cdeg.features.measurements.measure` only (no PyRadiomics, so it is quick) and compares each
quantity with truth/levels.csv (and truth/patients.csv for the C2-C7 Cobb angle). Reports, per modality and
quantity, the number of values, the bias (mean of measured - truth) and the mean absolute error.

The disc-to-CSF signal ratio has no truth on its own scale (the generator's ``t2_signal`` is the nucleus
signal relative to a healthy disc, before tissue, gain, contrast and coil variation): it is scored by rank
correlation with ``t2_signal``, across all discs and across patients (each patient's mean over the discs, the
reading the patient-level degeneration score uses), for both CSF references of
:class:`~cdeg.features.measurements.MeasureOptions` (``csf_reference``).

Run::

    .venv/bin/python benchmarks/measure_accuracy.py [--n 20] [--seed 5] [--cohort DIR] [--per-level]

Without ``--cohort`` a ``neck`` cohort of ``--n`` patients is synthesised in a temporary folder.
Writes benchmarks/results/measure_accuracy.json and prints a table.
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
from cdeg.features.measurements import COBB_LEVEL, MeasureOptions, measure

from cdeg.synth import synthesize

DISC_QUANTITIES = (
    "disc_height_anterior_mm",
    "disc_height_middle_mm",
    "disc_height_posterior_mm",
    "disc_angle_deg",
    "segmental_angle_deg",
)
BODY_QUANTITIES = (
    "body_height_anterior_mm",
    "body_height_middle_mm",
    "body_height_posterior_mm",
    "body_depth_mm",
    "body_wedge_deg",
)
HEIGHTS = DISC_QUANTITIES[:3]


def measurement_errors(
    cohort: Path, modalities: tuple[str, ...] = ("xray", "mri"), options: MeasureOptions | None = None
) -> pd.DataFrame:
    """measured - truth for every quantity with a true value, one row per patient x modality x level x feature.

    Columns: patient_id, modality, level, feature, truth, measured, error. A structure present in the
    mask but not measured gives a row with a NaN measurement (counted as missing in :func:`summarise`).
    """
    levels = pd.read_csv(cohort / "truth" / "levels.csv")
    patients = pd.read_csv(cohort / "truth" / "patients.csv").set_index("patient_id")
    rows = []
    for pid, t in levels.groupby("patient_id"):
        for m in modalities:
            mpath = cohort / "masks" / str(pid) / f"{m}.nii.gz"
            if not mpath.is_file():
                continue
            mask = sitk.ReadImage(str(mpath))
            image = sitk.ReadImage(str(cohort / "images" / str(pid) / f"{m}.nii.gz")) if m == "mri" else None
            values, _ = measure(mask, image, m, options)
            present = set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist())
            for _, r in t.iterrows():
                if int(r["label"]) not in present:
                    continue
                if r["level"] == "C2" and r["structure"] == "vertebra":
                    feats = ("body_depth_mm",)  # no superior endplate of its own (dens): depth only
                else:
                    feats = DISC_QUANTITIES if r["structure"] == "disc" else BODY_QUANTITIES
                for f in feats:
                    if f not in r or not np.isfinite(r[f]):
                        continue
                    got = values.get(r["level"], {}).get(f, np.nan)
                    rows.append((pid, m, r["level"], f, float(r[f]), got))
            if COBB_LEVEL in values:
                truth = float(patients.loc[pid, "cobb_c2c7_deg"])
                rows.append((pid, m, COBB_LEVEL, "cobb_c2c7_deg", truth, values[COBB_LEVEL]["cobb_c2c7_deg"]))
    df = pd.DataFrame(rows, columns=["patient_id", "modality", "level", "feature", "truth", "measured"])
    df["error"] = df["measured"] - df["truth"]
    return df


def signal_agreement(cohort: Path) -> dict[str, dict[str, float]]:
    """Spearman correlation of the MRI disc/CSF ratio with the true nucleus T2 signal, per CSF reference:
    over all discs (``discs``), over the patients' means of log values (``patients``), and the median
    within-patient correlation (``within_patient``)."""
    from scipy.stats import spearmanr

    levels = pd.read_csv(cohort / "truth" / "levels.csv")
    discs = levels[levels["structure"] == "disc"].set_index(["patient_id", "level"])["t2_signal"]
    out: dict[str, dict[str, float]] = {}
    for ref in ("patient", "level"):
        rows = []
        for pid in discs.index.get_level_values(0).unique():
            mpath = cohort / "masks" / str(pid) / "mri.nii.gz"
            if not mpath.is_file():
                continue
            image = sitk.ReadImage(str(cohort / "images" / str(pid) / "mri.nii.gz"))
            values, _ = measure(sitk.ReadImage(str(mpath)), image, "mri", MeasureOptions(csf_reference=ref))
            for level, v in values.items():
                if "disc_csf_signal_ratio" in v and (pid, level) in discs.index:
                    rows.append((pid, discs.loc[(pid, level)], v["disc_csf_signal_ratio"]))
        d = pd.DataFrame(rows, columns=["patient_id", "truth", "measured"]).dropna()
        d[["truth", "measured"]] = np.log(d[["truth", "measured"]])
        means = d.groupby("patient_id")[["truth", "measured"]].mean()
        within = [spearmanr(g["truth"], g["measured"])[0] for _, g in d.groupby("patient_id") if len(g) >= 3]
        out[ref] = {
            "n_discs": len(d),
            "discs": round(float(spearmanr(d["truth"], d["measured"])[0]), 3),
            "patients": round(float(spearmanr(means["truth"], means["measured"])[0]), 3),
            "within_patient": round(float(np.nanmedian(within)), 3),
        }
    return out


def summarise(err: pd.DataFrame, by: tuple[str, ...] = ("modality", "feature")) -> pd.DataFrame:
    """n, missing, bias, MAE, max |error| per group (heights pooled as ``disc_height_all_mm`` too)."""
    heights = err[err["feature"].isin(HEIGHTS)].assign(feature="disc_height_all_mm")
    e = pd.concat([err, heights], ignore_index=True)
    g = e.groupby(list(by))["error"]
    out = pd.DataFrame(
        {
            "n": g.count(),
            "missing": g.apply(lambda x: int(x.isna().sum())),
            "bias": g.mean(),
            "mae": g.apply(lambda x: float(x.abs().mean())),
            "max_abs": g.apply(lambda x: float(x.abs().max())),
        }
    )
    return out.round(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="patients in the synthetic cohort")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--cohort", type=Path, default=None, help="use an existing synthetic cohort")
    ap.add_argument("--per-level", action="store_true", help="also print bias/MAE per level")
    ap.add_argument("--errors", type=Path, default=None, help="write every error to this CSV")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "measure_accuracy.json")
    args = ap.parse_args()
    os.environ.setdefault("CDEG_NO_PROGRESS", "1")

    work = None
    try:
        if args.cohort is None:
            work = Path(tempfile.mkdtemp(prefix="measure_accuracy_"))
            cohort = synthesize(work / "cohort", profile="neck", n=args.n, seed=args.seed, progress=False)
            source = {"profile": "neck", "patients": args.n, "seed": args.seed}
        else:
            cohort = args.cohort
            source = {"cohort": str(cohort)}
        t0 = time.perf_counter()
        err = measurement_errors(cohort)
        seconds = time.perf_counter() - t0
        signal = signal_agreement(cohort)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if args.errors is not None:
        err.to_csv(args.errors, index=False)
    table = summarise(err)
    pd.set_option("display.width", 160)
    print(table.to_string())
    if args.per_level:
        print(summarise(err, ("modality", "feature", "level")).to_string())
    n_patients = err["patient_id"].nunique()
    report = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "source": source,
        "seconds_per_patient_both_modalities": round(seconds / max(n_patients, 1), 2),
        "signal_ratio_spearman_with_true_t2_signal": signal,
        "accuracy": {
            m: {f: {k: float(v) for k, v in table.loc[(m, f)].items()} for f in table.loc[m].index}
            for m in table.index.get_level_values("modality").unique()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("disc/CSF ratio vs true T2 signal (Spearman):", json.dumps(signal))
    print(f"{seconds / max(n_patients, 1):.2f} s per patient (both modalities); wrote {args.out}")


if __name__ == "__main__":
    main()
