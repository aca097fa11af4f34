"""Does `cdeg segment suggest` find the worst masks? A weakly trained model segments a synthetic cohort; the
ranking is compared with the true per-patient Dice against the reference masks.

Run: .venv/bin/python benchmarks/bench_suggest.py [--modality xray|mri] [--n-train 40] [--n-test 50]
     [--preset fast] [--time-budget-s 300] [--device cpu] [--disagreement] [--work DIR] [--out FILE]
Writes benchmarks/results/suggest.json and prints the two numbers:

* Spearman's rho between suggest's score and the true per-patient mean Dice (over the reference
  structures; a structure the prediction misses counts 0, a patient without a mask 0). High score = bad
  mask, so a useful ranking has rho < 0.
* The share of the truly worst 10 % (lowest Dice) among the top 10 % of the ranking (chance: 10 %).

A short schedule (``--time-budget-s``, or the ``smoke`` preset) leaves the model weak, so that mask quality
varies between patients; per-component rhos show which evidence carries the ranking.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "suggest.json"


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modality", default="xray", choices=["mri", "xray"])
    ap.add_argument("--preset", default="fast", choices=["fast", "smoke", "full"])
    ap.add_argument("--time-budget-s", type=float, default=300.0, help="training budget (weak on purpose)")
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=50)
    ap.add_argument("--seed-train", type=int, default=301)
    ap.add_argument("--seed-test", type=int, default=302)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--disagreement", action="store_true", help="predict with predict.disagreement on")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def true_dice(evaluation: dict, modality: str) -> dict[str, float]:
    """patient -> mean Dice over its reference structures (evaluate's per-label Dice; missed = 0)."""
    out = {}
    for pid, by_mod in evaluation["patients"].items():
        case = by_mod.get(modality)
        if case is not None:
            ref = [m["dice"] for m in case["labels"].values() if m["in_reference"]]
            out[pid] = sum(ref) / len(ref) if ref else 0.0
    return out


def ranking_quality(score: dict[str, float], dice: dict[str, float]) -> dict[str, float | int | None]:
    """Spearman's rho (score vs Dice) and the share of the worst 10 % by Dice in the top 10 % by score."""
    from scipy.stats import spearmanr

    ids = sorted(set(score) & set(dice))
    k = max(1, math.ceil(0.1 * len(ids)))
    worst = set(sorted(ids, key=lambda p: (dice[p], p))[:k])
    top = set(sorted(ids, key=lambda p: (-score[p], p))[:k])
    rho = spearmanr([score[p] for p in ids], [dice[p] for p in ids]).statistic if len(ids) > 2 else None
    return {
        "n": len(ids),
        "k_top10": k,
        "spearman_score_vs_dice": None if rho is None or math.isnan(rho) else round(float(rho), 3),
        "worst10_in_top10": round(len(worst & top) / k, 3),
        "chance_worst10_in_top10": round(k / len(ids), 3) if ids else None,
    }


def main() -> None:
    args = _parse_args()
    from cdeg.segmentation.evaluate import evaluate
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.suggest import PART_COLUMNS, suggest
    from cdeg.segmentation.train import train

    from cdeg.synth import synthesize

    work = args.work or Path(tempfile.mkdtemp(prefix="cdeg_bench_suggest_"))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.time()
    for name, n, seed in (("train", args.n_train, args.seed_train), ("test", args.n_test, args.seed_test)):
        if not (work / name / "cohort.json").is_file():
            synthesize(work / name, n=n, seed=seed, modalities=args.modality, progress=False)
    timings["synth_s"] = time.time() - t
    budget = {"presets": {args.preset: {args.device: {args.modality: {"time_budget_s": args.time_budget_s}}}}}
    t = time.time()
    train(
        work / "train", args.modality, work / "model", preset=args.preset, device=args.device, config=budget
    )
    timings["train_s"] = time.time() - t
    t = time.time()
    predict_config = {"predict": {"disagreement": args.disagreement, "qc_png": False}}
    predict(
        work / "test",
        args.modality,
        work / "model",
        work / "masks",
        device=args.device,
        config=predict_config,
    )
    timings["predict_s"] = time.time() - t
    evaluation = evaluate(work / "masks", work / "test", work / "evaluation.json", modality=args.modality)
    dice = true_dice(evaluation, args.modality)
    t = time.time()
    table = suggest(work / "masks", modality=args.modality, out=work / "suggest.csv")
    timings["suggest_s"] = time.time() - t
    score = dict(zip(table["patient_id"], table["score"], strict=True))
    # Patients with a reference but no mask at all are not in evaluate's patients: Dice 0, and suggest
    # ranks them through the manifest.
    for pid in set(score) - set(dice):
        dice[pid] = 0.0
    result = {
        "modality": args.modality,
        "preset": args.preset,
        "time_budget_s": args.time_budget_s,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "disagreement": args.disagreement,
        "device": args.device,
        "machine": f"{os.cpu_count()}-core {platform.machine()}",
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "true_dice": {
            "mean": round(sum(dice.values()) / len(dice), 3),
            "min": round(min(dice.values()), 3),
            "max": round(max(dice.values()), 3),
        },
        **ranking_quality(score, dice),
        "component_spearman": {
            c: ranking_quality(dict(zip(table["patient_id"], table[c], strict=True)), dice)[
                "spearman_score_vs_dice"
            ]
            for c in PART_COLUMNS
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
