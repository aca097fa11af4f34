"""Segmentation benchmark: train a preset on one synthetic cohort, segment a held-out one, measure.

Run: .venv/bin/python benchmarks/bench_segment.py [--device cpu|cuda|auto] [--modalities mri,xray]
     [--n-train 80] [--n-test 20] [--preset fast] [--work DIR] [--config FILE] [--synth-only]
Writes benchmarks/results/segment_<device>.json (training time, inference time per case, Dice, HD95,
level identification per modality, load average before and after) and prints a table. Runs unchanged on
a GPU machine with --device cuda.

Targets from the issue (fast preset): 2-core CPU: training <= 10 min per modality, Dice >= 0.85 on
vertebrae, level identification >= 95 %, inference <= 15 s per MRI case. GPU: Dice >= 0.95 / 0.92
(vertebrae / discs) on MRI, >= 0.93 / 0.88 on radiographs, level identification 100 %, < 1 s per case.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

TARGETS = {
    "cpu": {
        "train_s": 600,
        "dice_vertebrae": {"mri": 0.85, "xray": 0.85},
        "level_identification": 0.95,
        "infer_s_per_case": {"mri": 15.0},
    },
    "cuda": {
        "train_s": 600,
        "dice_vertebrae": {"mri": 0.95, "xray": 0.93},
        "dice_discs": {"mri": 0.92, "xray": 0.88},
        "level_identification": 1.0,
        "infer_s_per_case": {"mri": 1.0, "xray": 1.0},
    },
}


def _device_name(kind: str) -> str:
    if kind == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({platform.processor() or 'unknown'})"


def _check(kind: str, modality: str, row: dict) -> dict[str, bool]:
    t = TARGETS[kind]
    out = {
        "train_s": row["train_s"] <= t["train_s"],
        "dice_vertebrae": (row["dice_vertebrae"] or 0) >= t["dice_vertebrae"][modality],
        "level_identification": (row["level_identification"] or 0) >= t["level_identification"],
    }
    if modality in t.get("dice_discs", {}):
        out["dice_discs"] = (row["dice_discs"] or 0) >= t["dice_discs"][modality]
    if modality in t["infer_s_per_case"]:
        out["infer_s_per_case"] = (row["infer_s_per_case"] or 1e9) <= t["infer_s_per_case"][modality]
    return out


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--modalities", default="mri,xray")
    ap.add_argument("--preset", default="fast", choices=["fast", "smoke", "full"])
    ap.add_argument("--n-train", type=int, default=80)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--seed-train", type=int, default=101)
    ap.add_argument("--seed-test", type=int, default=202)
    ap.add_argument(
        "--work", type=Path, default=None, help="work folder (default: a fresh temporary one, removed)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default benchmarks/results/segment_<device>.json)",
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML overriding keys of configs/segment.yaml (e.g. a shorter time budget), as `cdeg segment "
        "train --config`; recorded in the result",
    )
    ap.add_argument(
        "--synth-only",
        action="store_true",
        help="only write the two cohorts into --work (so that several benchmark processes can share them)",
    )
    return ap.parse_args()


def _bench_modality(args: argparse.Namespace, kind: str, work: Path, modality: str) -> dict:
    """Train on the training cohort, predict and score the test cohort, for one modality."""
    from cdeg.segmentation.evaluate import evaluate
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.train import train

    train_cohort, test_cohort = work / "train", work / "test"
    load_before = os.getloadavg()
    model = work / f"model_{modality}"
    shutil.rmtree(model, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = train(
        cohort=train_cohort,
        modality=modality,
        out=model,
        preset=args.preset,
        device=kind,
        config=args.config,
        progress=False,
    )
    train_s = time.perf_counter() - t0
    masks = work / f"masks_{modality}"
    shutil.rmtree(masks, ignore_errors=True)
    t0 = time.perf_counter()
    summary = predict(
        cohort=test_cohort, modality=modality, model=model, out=masks, device=kind, config=args.config
    )
    predict_s = time.perf_counter() - t0
    report = evaluate(pred=masks, ref=test_cohort, out=work / f"metrics_{modality}.json", modality=modality)
    s = report["summary"][modality]
    row = {
        "n_train_cases": manifest["cohort"]["n_cases"],
        "n_test_cases": s["n_evaluated"] + s["n_missing_prediction"],
        "configuration": manifest["configuration"],
        "epochs_completed": manifest["epochs_completed"],
        "settings": manifest["settings"],
        "train_s": round(train_s, 1),
        "train_timings_s": manifest["timings_s"],
        "predict_total_s": round(predict_s, 1),
        "model_load_s": summary["model_load_s"],
        "infer_s_per_case": summary["seconds_per_case_mean"],
        "predict_counts": summary["counts"],
        "dice_vertebrae": s["dice_vertebrae_mean"],
        "dice_discs": s["dice_discs_mean"],
        "hd95_vertebrae_mm": s["hd95_vertebrae_mean_mm"],
        "hd95_discs_mm": s["hd95_discs_mean_mm"],
        "level_identification": s["level_identification"],
        "n_levels_missed": s["n_levels_missed"],
        "identification_rate_verse": s["identification_rate_verse"],
        "per_level": s["per_level"],
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
    }
    if args.preset == "fast":
        row["targets_met"] = _check(kind, modality, row)
    print(
        f"\n{modality}: train {row['train_s']:.0f} s ({row['epochs_completed']} epochs, {row['configuration']}), "
        f"inference {row['infer_s_per_case']} s/case, Dice vertebrae {row['dice_vertebrae']} discs "
        f"{row['dice_discs']}, HD95 vertebrae {row['hd95_vertebrae_mm']} mm, level identification "
        f"{row['level_identification']}, load before/after {row['load_before']} / {row['load_after']}"
    )
    return row


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from cdeg.segmentation.nnunet_env import resolve_device

    from cdeg.synth import synthesize

    kind = resolve_device(args.device)
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"cdeg_bench_segment_{os.getpid()}"
    out = args.out or Path(__file__).parent / "results" / f"segment_{kind}.json"
    train_cohort, test_cohort = work / "train", work / "test"
    jobs = os.cpu_count() or 1  # the cohorts are byte-identical whatever the number of jobs
    t0 = time.perf_counter()
    if not (train_cohort / "cohort.json").is_file():
        synthesize(
            train_cohort, n=args.n_train, seed=args.seed_train, jobs=jobs, progress=False, name="bench_train"
        )
    if not (test_cohort / "cohort.json").is_file():
        synthesize(
            test_cohort, n=args.n_test, seed=args.seed_test, jobs=jobs, progress=False, name="bench_test"
        )
    synth_s = time.perf_counter() - t0
    if args.synth_only:
        print(f"cohorts written to {work} in {synth_s:.1f} s")
        return

    rows = {m: _bench_modality(args, kind, work, m) for m in args.modalities.split(",")}
    result = {
        "benchmark": "segment",
        "preset": args.preset,
        "device": kind,
        "device_name": _device_name(kind),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "cohorts": {
            "train": {"n": args.n_train, "seed": args.seed_train},
            "test": {"n": args.n_test, "seed": args.seed_test},
        },
        "synth_s": round(synth_s, 1),
        "config_overrides": args.config.read_text() if args.config else None,
        "modalities": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| modality | train s | epochs | s/case | Dice vert | Dice disc | HD95 vert mm | level id |")
    print("|---|---|---|---|---|---|---|---|")
    for mod, r in rows.items():
        print(
            f"| {mod} | {r['train_s']:.0f} | {r['epochs_completed']} | {r['infer_s_per_case']} | {r['dice_vertebrae']} | "
            f"{r['dice_discs']} | {r['hd95_vertebrae_mm']} | {r['level_identification']} |"
        )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
