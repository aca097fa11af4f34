"""`cdeg segment predict` on the CPU: seconds per image and the masks' quality, per inference setting.

Settings compared on the same trained model and the same patients (one process, all cores):

* ``nnunet``: nnU-Net's own sliding window (one tile per network call), float32: ``batch_tiles: 1``;
* ``batched``: ``batch_tiles: 16``, float32;
* ``batched_bf16``: ``batch_tiles: 16`` with ``cpu_bf16: true`` (bfloat16 autocast, channels-last);
* ``batched_bf16_torchres``: and ``torch_resampling: true`` (the logits go back to the image grid with nnU-Net's
  torch resampling instead of its per-slice scikit-image one); the first three set it false;
* ``batched_bf16_torchres_2proc``: the same in two one-thread worker processes (``--devices cpu:2``).

For each: wall seconds for the cohort, mean seconds per image (qc.csv), and `cdeg segment evaluate` against the
reference masks (Dice of vertebrae and discs, level identification), so that a faster setting that changes the
masks shows it. Test-time mirroring is off, as in the demo.

Run: .venv/bin/python benchmarks/bench_inference.py --model-root RUN/segmentation --cohort COHORT [--out DIR]
where RUN/segmentation holds train-mri/model and train-xray/model (a `cdeg run` folder). Writes
benchmarks/results/inference.json (or --result). Run it on an otherwise idle machine: the load average before
and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from cdeg.segmentation.evaluate import evaluate
from cdeg.segmentation.predict import predict

SETTINGS = {
    "nnunet": {"batch_tiles": 1, "cpu_bf16": False, "torch_resampling": False},
    "batched": {"batch_tiles": 16, "cpu_bf16": False, "torch_resampling": False},
    "batched_bf16": {"batch_tiles": 16, "cpu_bf16": True, "torch_resampling": False},
    "batched_bf16_torchres": {"batch_tiles": 16, "cpu_bf16": True, "torch_resampling": True},
    # the same in two worker processes of one thread each (`--devices cpu:2`), model loading included
    "batched_bf16_torchres_2proc": {
        "batch_tiles": 16,
        "cpu_bf16": True,
        "torch_resampling": True,
        "devices": "cpu:2",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-root", type=Path, required=True)
    ap.add_argument("--cohort", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("bench_inference_out"))
    ap.add_argument("--modalities", default="mri,xray")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "inference.json")
    a = ap.parse_args()
    res: dict = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "load_before": os.getloadavg(),
        "cohort": str(a.cohort),
        "runs": {},
    }
    for modality in a.modalities.split(","):
        for name in a.settings.split(","):
            out = a.out / f"{modality}_{name}"
            shutil.rmtree(out, ignore_errors=True)
            setting = dict(SETTINGS[name])
            devices = setting.pop("devices", None)
            cfg = {"predict": {"use_mirroring": False, "qc_png": True, **setting}}
            t0 = time.perf_counter()
            s = predict(
                a.cohort,
                modality,
                a.model_root / f"train-{modality}" / "model",
                out,
                device="cpu" if devices is None else "auto",
                devices=devices,
                config=cfg,
            )
            wall = time.perf_counter() - t0
            ev = evaluate(out, a.cohort, out / "evaluation.json", modality=modality)
            summary = ev["summary"][modality]
            res["runs"][f"{modality}/{name}"] = {
                "setting": SETTINGS[name],
                "wall_s": round(wall, 1),
                "seconds_per_case_mean": s.get("seconds_per_case_mean"),
                "images": s["counts"],
                "evaluation": {k: v for k, v in summary.items() if k != "per_level"},
            }
            print(modality, name, round(wall, 1), s.get("seconds_per_case_mean"), flush=True)
    res["load_after"] = os.getloadavg()
    a.result.parent.mkdir(parents=True, exist_ok=True)
    a.result.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(json.dumps(res, indent=2, default=str)[:3000])


if __name__ == "__main__":
    main()
