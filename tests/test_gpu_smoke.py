"""GPU smoke test: the smoke preset trains and predicts on CUDA, and its masks name levels like the CPU's.

Marked ``gpu``: skipped without a CUDA device (conftest.py). `benchmarks/gpu/run.sh` runs it first on the GPU
machine (``pytest -m gpu``), so a broken CUDA installation shows in seconds, not after the benchmark's budget.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdeg import labels
from cdeg.io import read_image
from cdeg.outputs import MaskFolder

pytestmark = pytest.mark.gpu
MODALITY = "xray"  # 2D: the cheapest model to train


def test_smoke_model_trains_and_predicts_on_cuda(tmp_path: Path):
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.train import train

    from cdeg.synth import synthesize

    cohort = Path(synthesize(tmp_path / "cohort", n=4, seed=11, modalities=MODALITY, progress=False))
    manifest = train(cohort, MODALITY, tmp_path / "model", preset="smoke", device="cuda")
    assert manifest["status"] == "complete" and manifest["device"] == "cuda"
    summary = predict(cohort, MODALITY, tmp_path / "model", tmp_path / "masks", device="cuda")
    assert summary["device"] == "cuda"
    done = [p for p, v in summary["patients"].items() if v["status"] in ("ok", "flagged")]
    assert done, summary["counts"]
    mask = read_image(MaskFolder(tmp_path / "masks").mask(done[0], MODALITY))
    values = set(np.unique(mask).tolist()) - {0}
    assert values and values <= {s.label for s in labels.STRUCTURES}
