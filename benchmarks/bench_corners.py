"""Corner points on synthetic radiographs, where the true corners are known (truth/corners.csv).

(a) Measurements: every patient of a synthetic radiograph cohort is measured from its true corners
(:func:`cdeg.features.measurements.measure_corners`) and compared with truth/levels.csv (truth/patients.csv
for the Cobb angle): n, bias, MAE and max |error| per measurement, and whether max |error| is within the
extract tolerance (:data:`TOLERANCE`). Heights are also compared after removing the endplate concavity
that chords cannot see (``*_less_concavity``): in the synthetic anatomy each endplate is a parabola through
its corners, so a disc's chord-to-chord height at t is its true height less 4 t (1 - t) S, with S the two
endplates' sag, S = (middle - mean(anterior, posterior)) / 0.64 (:mod:`cdeg.synth.anatomy`).

(b) ``--train`` (long: two nnU-Net trainings): the `fast` radiograph preset trained once on the full
reference masks and once on masks drawn from the true corners (`cdeg segment masks-from-corners`), both
scored on a held-out cohort against its full reference masks and against its corner masks (posterior
elements left out): disc and vertebra Dice, level identification.

Run::

    .venv/bin/python benchmarks/bench_corners.py [--n 30] [--seed 11]
    .venv/bin/python benchmarks/bench_corners.py --train [--n-train 80] [--n-test 20] [--device cuda]

Writes benchmarks/results/corners.json ((a); with --train, (b) goes into corners_train_<device>.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from cdeg.features.measurements import COBB_LEVEL, measure_corners

from cdeg import labels, measures
from cdeg.cohort import Cohort
from cdeg.corners import load_corners
from cdeg.synth import synthesize

#: Largest |error| accepted, per unit: the extract tolerance of 0.5 mm (and 0.5 deg); the disc height index
#: as 0.5 mm over a 15 mm deep body.
TOLERANCE = {"mm": 0.5, "deg": 0.5, "ratio": 0.5 / 15.0}
DISC = ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm", "disc_height_index")
DISC += ("disc_angle_deg", "segmental_angle_deg")
BODY = ("body_depth_mm", "body_wedge_deg", "body_height_anterior_mm", "body_height_middle_mm")
BODY += ("body_height_posterior_mm",)
_T = measures.POSITIONS


def _truth_value(row: pd.Series, feature: str, depth_above: float) -> float:
    if feature == "disc_height_index":
        return float(row["disc_height_middle_mm"]) / depth_above
    return float(row.get(feature, np.nan))


def _disc_sag(row: pd.Series) -> float:
    a, m, p = (float(row[f"disc_height_{k}_mm"]) for k in ("anterior", "middle", "posterior"))
    return (m - 0.5 * (a + p)) / 0.64


def measurement_errors(cohort: Path) -> pd.DataFrame:
    """measured - truth for every measurement with a true value: patient_id, level, feature, truth, measured."""
    coh = Cohort.open(cohort)
    cs, _ = load_corners(coh.truth_corners_path, coh, strict=True)
    levels = pd.read_csv(coh.truth_levels_path, dtype={"patient_id": str})
    cobb = pd.read_csv(coh.truth_patients_path, dtype={"patient_id": str}).set_index("patient_id")
    rows = []
    for pid in cs.patients:
        got = measure_corners(cs.points(pid))
        t = levels[levels["patient_id"] == pid].set_index("level")
        for level, feats in got.items():
            if level == COBB_LEVEL:
                rows.append(
                    (
                        pid,
                        level,
                        "cobb_c2c7_deg",
                        float(cobb.loc[pid, "cobb_c2c7_deg"]),
                        feats["cobb_c2c7_deg"],
                    )
                )
                continue
            kind = labels.structure(level).kind
            up = labels.name_of(labels.vertebrae_of_disc(level)[0]) if kind == "disc" else level
            depth_above = float(t.loc[up, "body_depth_mm"])
            for f in DISC if kind == "disc" else BODY:
                if f not in feats:
                    continue
                truth = _truth_value(t.loc[level], f, depth_above)
                rows.append((pid, level, f, truth, feats[f]))
                if kind == "disc" and f.startswith("disc_height_") and f.endswith("_mm"):
                    tt = _T[f.split("_")[2]]
                    less = truth - 4 * tt * (1 - tt) * _disc_sag(t.loc[level])
                    rows.append((pid, level, f.replace("_mm", "_less_concavity_mm"), less, feats[f]))
    df = pd.DataFrame(rows, columns=["patient_id", "level", "feature", "truth", "measured"])
    return df.assign(error=df["measured"] - df["truth"])


def _unit(feature: str) -> str:
    return "ratio" if feature == "disc_height_index" else feature.rsplit("_", 1)[-1]


def summarise(err: pd.DataFrame) -> dict[str, dict[str, float | bool]]:
    out: dict[str, dict[str, float | bool]] = {}
    for f, e in err.groupby("feature", sort=True)["error"]:
        tol = TOLERANCE[_unit(str(f))]
        out[str(f)] = {
            "n": int(e.count()),
            "bias": round(float(e.mean()), 4),
            "mae": round(float(e.abs().mean()), 4),
            "max_abs": round(float(e.abs().max()), 4),
            "tolerance": round(tol, 4),
            "within_tolerance": bool(e.abs().max() < tol),
        }
    return out


def bench_measurements(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench_corners_"))
    try:
        t0 = time.perf_counter()
        cohort = synthesize(
            work / "cohort", n=args.n, seed=args.seed, modalities="xray", progress=False, ceiling=False
        )
        synth_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        err = measurement_errors(cohort)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = summarise(err)
    width = max(map(len, table))
    for f, r in table.items():
        print(
            f"{f:{width}s} n={r['n']:4d} bias={r['bias']:+.3f} mae={r['mae']:.3f} max={r['max_abs']:.3f} "
            f"{'ok' if r['within_tolerance'] else 'OUTSIDE'} (tol {r['tolerance']})"
        )
    return {
        "benchmark": "corners",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "source": {
            "profile": "neck",
            "patients": args.n,
            "seed": args.seed,
            "modalities": "xray",
            "corners": "truth/corners.csv (true corners)",
        },
        "synth_s": round(synth_s, 1),
        "measure_s_per_patient": round(seconds / args.n, 4),
        "accuracy": table,
    }


# --- (b) training on corner masks vs full masks ---------------------------------------------------------------


def _corner_cohort(src: Path, dst: Path, masks: Path) -> Path:
    """A copy of `src` whose reference masks are the corner masks in `masks`."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("masks"))
    shutil.copytree(masks, dst / "masks", ignore=shutil.ignore_patterns("*.json"))
    return dst


def _score(pred: Path, ref: Path, out: Path) -> dict:
    from cdeg.segmentation.evaluate import evaluate

    s = evaluate(pred=pred, ref=ref, out=out, modality="xray")["summary"]["xray"]
    keys = ("dice_discs_mean", "dice_vertebrae_mean", "hd95_discs_mean_mm", "level_identification")
    return {k: s[k] for k in (*keys, "identification_rate_verse")}


def bench_training(args: argparse.Namespace) -> dict:
    from cdeg.segmentation.corners import masks_from_corners
    from cdeg.segmentation.nnunet_env import resolve_device
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.train import train

    device = resolve_device(args.device)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_corners_train_"))
    jobs = os.cpu_count() or 1
    train_c, test_c = work / "train", work / "test"
    for root, n, seed in ((train_c, args.n_train, args.seed_train), (test_c, args.n_test, args.seed_test)):
        if not (root / "cohort.json").is_file():
            synthesize(root, n=n, seed=seed, modalities="xray", jobs=jobs, progress=False, ceiling=False)
    corner_train = _corner_cohort(
        train_c, work / "train_corners", _masks(masks_from_corners, train_c, work / "m_train")
    )
    corner_test = _corner_cohort(
        test_c, work / "test_corners", _masks(masks_from_corners, test_c, work / "m_test")
    )
    rows = {}
    for name, cohort in (("full_masks", train_c), ("corner_masks", corner_train)):
        t0 = time.perf_counter()
        model = work / f"model_{name}"
        manifest = train(
            cohort=cohort, modality="xray", out=model, preset="fast", device=device, progress=False
        )
        train_s = time.perf_counter() - t0
        pred = work / f"pred_{name}"
        predict(cohort=test_c, modality="xray", model=model, out=pred, device=device)
        rows[name] = {
            "train_s": round(train_s, 1),
            "epochs_completed": manifest["epochs_completed"],
            "vs_full_reference": _score(pred, test_c, work / f"eval_full_{name}.json"),
            "vs_corner_reference": _score(pred, corner_test, work / f"eval_corner_{name}.json"),
        }
        print(name, json.dumps(rows[name]))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "corners_train",
        "preset": "fast",
        "device": device,
        "cohorts": {
            "train": {"n": args.n_train, "seed": args.seed_train},
            "test": {"n": args.n_test, "seed": args.seed_test},
        },
        "models": rows,
    }


def _masks(fn, cohort: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    fn(Cohort.open(cohort).truth_corners_path, cohort, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="patients for (a)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--train", action="store_true", help="(b): train two fast-preset models (long)")
    ap.add_argument("--n-train", type=int, default=80)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--seed-train", type=int, default=101)
    ap.add_argument("--seed-test", type=int, default=202)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--work", type=Path, default=None, help="(b) work folder, kept (default: temporary)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("CDEG_NO_PROGRESS", "1")
    results = Path(__file__).parent / "results"
    if args.train:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        report = bench_training(args)
        out = args.out or results / f"corners_train_{report['device']}.json"
    else:
        report = bench_measurements(args)
        out = args.out or results / "corners.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
