"""Where a time-budgeted training spends its budget: planning and preprocessing, epochs, and the time between
epochs (nnU-Net's epoch end: logging, checkpoints, progress plot).

Run: .venv/bin/python benchmarks/bench_train_budget.py --cohort DIR --out DIR [--modalities mri,xray]
     [--budget mri=120,xray=180] [--result FILE]
Trains the ``fast`` preset on the CPU with the demo's settings (configs/demo.yaml: bfloat16, the budgets above)
and writes FILE (default benchmarks/results/train_budget.json): per modality the manifest's timings, epochs
completed, epoch times and the gaps between epochs read from nnU-Net's training log, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d+-\d+ \d+:\d+:\d+\.\d+): (.*)$")


def _log_times(log: str) -> dict:
    """Epoch durations (nnU-Net's "Epoch time") and the gaps from the end of one epoch's work to the start of
    the next (the epoch end hooks and cdeg's re-planning)."""
    epoch_s, gaps, end = [], [], None
    for line in log.splitlines():
        m = STAMP.match(line.strip())
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        text = m.group(2).strip()
        if text.startswith("Epoch time:"):
            epoch_s.append(float(text.split()[2]))
            end = t
        elif re.fullmatch(r"Epoch \d+", text) and end is not None:
            gaps.append(round(t - end, 3))
        elif text.startswith("Training done") and end is not None:
            gaps.append(round(t - end, 3))
    return {"epoch_s": epoch_s, "gap_after_epoch_s": gaps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--out", required=True, help="work folder (one model folder per modality)")
    ap.add_argument("--modalities", default="mri,xray")
    ap.add_argument("--budget", default="mri=120,xray=180")
    ap.add_argument("--result", default=str(Path(__file__).parent / "results" / "train_budget.json"))
    a = ap.parse_args()
    from cdeg.segmentation.train import read_manifest, train

    budgets = dict(kv.split("=") for kv in a.budget.split(","))
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    rows = {}
    for m in a.modalities.split(","):
        load_before = os.getloadavg()
        cfg = {"presets": {"fast": {"cpu": {m: {"time_budget_s": float(budgets[m]), "cpu_bf16": True}}}}}
        out = Path(a.out) / m
        train(cohort=a.cohort, modality=m, out=out, preset="fast", device="cpu", config=cfg, progress=False)
        man = read_manifest(out)
        fold = out / man["results_folder"] / "fold_all"
        log = "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))
        t = _log_times(log)
        rows[m] = {
            "budget_s": float(budgets[m]),
            "timings_s": man["timings_s"],
            "epochs_completed": man["epochs_completed"],
            "epoch_s_mean": round(sum(t["epoch_s"]) / len(t["epoch_s"]), 2),
            "gap_after_epoch_s_mean": round(sum(t["gap_after_epoch_s"]) / len(t["gap_after_epoch_s"]), 3),
            "gaps_s_total": round(sum(t["gap_after_epoch_s"]), 1),
            **t,
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
        print(m, {k: v for k, v in rows[m].items() if k not in ("epoch_s", "gap_after_epoch_s")}, flush=True)
    Path(a.result).write_text(
        json.dumps({"commit": commit, "cpu_count": os.cpu_count(), "modalities": rows}, indent=1)
    )


if __name__ == "__main__":
    sys.exit(main())
