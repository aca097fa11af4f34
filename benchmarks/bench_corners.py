"""Corner points on synthetic radiographs, where the true corners are known (truth/corners.csv).

(a) Measurements: every patient of a synthetic radiograph cohort is measured from its corners
(:func:`cdeg.features.measurements.measure_corners`) and compared with truth/levels.csv (truth/patients.csv
for the Cobb angle): n, bias, MAE and max |error| per measurement, and whether max |error| is within the
extract tolerance (:data:`TOLERANCE`).

* ``true_corners``: the corners of truth/corners.csv, read through :func:`cdeg.corners.load_corners` as a
  user's file would be, against the truth of the same name. Corner points define the angles, the body depth
  and the chord heights (:data:`cdeg.measures.CHORD_FEATURES`), whose truth the generator computes from its
  own anatomy (:func:`cdeg.synth.anatomy.chord_heights`), so what this checks is the path from an
  annotation file to the numbers.
* ``vs_surface_heights``: the chord heights against the surface heights of the same piece
  (``disc_height_middle_mm``...): how much a chord height differs from the height `cdeg extract` measures
  on masks, which is why they carry different names.
* ``vs_surface_less_concavity``: an independent check of the chord-height formulas: in the synthetic
  anatomy each endplate is a parabola through its corners, so a disc's chord height at t is its surface
  height less 4 t (1 - t) S, S the two endplates' sag, S = (middle - mean(anterior, posterior)) / 0.64
  (:mod:`cdeg.synth.anatomy`); only approximately, as the two bodies' depths differ.
* ``clicked``: the true corners displaced by N(0, ``--click-sd-mm``) in each coordinate, as a hand placing
  them would, against the same truth as ``true_corners``.

(b) ``--train`` (long: two nnU-Net trainings): the `fast` radiograph preset trained once on the full
reference masks and once on masks drawn from the true corners (`cdeg segment masks-from-corners`), both
scored on a held-out cohort against its full reference masks and against its corner masks (posterior
elements left out): disc and vertebra Dice, level identification.

Run::

    .venv/bin/python benchmarks/bench_corners.py [--n 30] [--seed 11] [--click-sd-mm 0.3]
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

from cdeg import measures
from cdeg.cohort import Cohort
from cdeg.corners import load_corners
from cdeg.synth import synthesize

#: Largest |error| accepted, per unit: the extract tolerance of 0.5 mm (and 0.5 deg); the disc height index
#: as 0.5 mm over a 15 mm deep body.
TOLERANCE = {"mm": 0.5, "deg": 0.5, "ratio": 0.5 / 15.0}
_T = measures.POSITIONS
#: chord height -> the surface height of the same piece and position.
SURFACE_OF = {chord: surface for surface, chord in measures.CHORD_FEATURES.items()}


def _disc_sag(row: pd.Series) -> float:
    a, m, p = (float(row[f"disc_height_{k}_mm"]) for k in ("anterior", "middle", "posterior"))
    return (m - 0.5 * (a + p)) / 0.64


def _clicked(points: dict, sd: float, rng: np.random.Generator) -> dict:
    return {lv: {k: p + rng.normal(0.0, sd, 2) for k, p in c.items()} for lv, c in points.items()}


def measurement_errors(cohort: Path, click_sd_mm: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """measured - truth per comparison (see the module docstring): comparison, patient_id, level, feature,
    truth, measured, error."""
    coh = Cohort.open(cohort)
    cs, _ = load_corners(coh.truth_corners_path, coh, strict=True)
    levels = pd.read_csv(coh.truth_levels_path, dtype={"patient_id": str})
    cobb = pd.read_csv(coh.truth_patients_path, dtype={"patient_id": str}).set_index("patient_id")
    rng = np.random.default_rng(seed)
    rows = []
    for pid in cs.patients:
        t = levels[levels["patient_id"] == pid].set_index("level")
        runs = [("true_corners", cs.points(pid))]
        if click_sd_mm > 0:
            runs.append(("clicked", _clicked(cs.points(pid), click_sd_mm, rng)))
        for comparison, points in runs:
            for level, feats in measure_corners(points).items():
                for f, value in feats.items():
                    truth = cobb.loc[pid, f] if level == COBB_LEVEL else t.loc[level].get(f, np.nan)
                    rows.append((comparison, pid, level, f, float(truth), value))
                    surface = SURFACE_OF.get(f, "")
                    if comparison != "true_corners" or surface not in t.columns:
                        continue
                    rows.append(("vs_surface_heights", pid, level, f, float(t.loc[level, surface]), value))
                    if f.startswith("disc_height_") and f.endswith("_mm"):
                        tt = _T[f.split("_")[2]]
                        less = float(t.loc[level, surface]) - 4 * tt * (1 - tt) * _disc_sag(t.loc[level])
                        rows.append(("vs_surface_less_concavity", pid, level, f, less, value))
    df = pd.DataFrame(rows, columns=["comparison", "patient_id", "level", "feature", "truth", "measured"])
    return df.assign(error=df["measured"] - df["truth"]).dropna(subset=["error"])


def _unit(feature: str) -> str:
    return measures.UNITS.get(feature, feature.rsplit("_", 1)[-1])


def summarise(err: pd.DataFrame) -> dict[str, dict[str, dict[str, float | bool]]]:
    out: dict[str, dict[str, dict[str, float | bool]]] = {}
    for (comparison, f), e in err.groupby(["comparison", "feature"], sort=True)["error"]:
        tol = TOLERANCE[_unit(str(f))]
        out.setdefault(str(comparison), {})[str(f)] = {
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
        err = measurement_errors(cohort, args.click_sd_mm, args.seed)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = summarise(err)
    for comparison, feats in table.items():
        print(f"== {comparison}")
        width = max(map(len, feats))
        for f, r in feats.items():
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
            "corners": "truth/corners.csv (true corners); clicked: + N(0, click_sd_mm) per coordinate",
            "click_sd_mm": args.click_sd_mm,
        },
        "synth_s": round(synth_s, 1),
        "measure_s_per_patient": round(seconds / args.n, 4),
        "all_within_tolerance": all(r["within_tolerance"] for r in table["true_corners"].values()),
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
        if name in args.reuse and (model / "cdeg_model.json").is_file():
            # trained by an earlier run in this work folder (--work): scored again, not retrained
            manifest = json.loads((model / "cdeg_model.json").read_text())
            train_s = float(sum(manifest.get("timings_s", {}).values()))
        else:
            manifest = train(
                cohort=cohort, modality="xray", out=model, preset="fast", device=device, progress=False
            )
            train_s = time.perf_counter() - t0
        pred = work / f"pred_{name}"
        predict(cohort=test_c, modality="xray", model=model, out=pred, device=device)
        rows[name] = {
            "train_s": round(train_s, 1),
            "reused": name in args.reuse,
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
    ap.add_argument("--click-sd-mm", type=float, default=0.3, help="(a) SD of the simulated click error")
    ap.add_argument("--train", action="store_true", help="(b): train two fast-preset models (long)")
    ap.add_argument("--n-train", type=int, default=80)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--seed-train", type=int, default=101)
    ap.add_argument("--seed-test", type=int, default=202)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--work", type=Path, default=None, help="(b) work folder, kept (default: temporary)")
    ap.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        choices=["full_masks", "corner_masks"],
        help="(b) models already trained in --work to score again instead of retraining",
    )
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
