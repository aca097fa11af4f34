"""`cdeg segment predict --devices`: patients split over worker processes give the files of one process.

Real nnU-Net (smoke preset, CPU) on a tiny synthetic cohort, as in test_segment_nnunet.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cdeg.segmentation.predict import parse_devices, predict
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.cohort import Cohort

MODALITY = "xray"  # 2D: the cheapest smoke model to train


@pytest.fixture(scope="module")
def cohort(xray_cohort5: Path) -> Path:
    return xray_cohort5


@pytest.fixture(scope="module")
def model(smoke_xray_models: dict[str, Path]) -> Path:
    """A smoke model trained once per session (conftest.py); which fold does not matter here."""
    return smoke_xray_models["0"]


def _files(folder: Path) -> dict[str, bytes]:
    """Every mask and qc.csv (the manifest holds timings and the worker list, so it is left out)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (p.name.endswith(".nii.gz") or p.name == "qc.csv")
    }


@pytest.mark.slow
def test_two_cpu_workers_write_the_files_of_one_process(cohort: Path, model: Path, tmp_path: Path):
    calls: list[tuple[str, int, int]] = []
    # One tile per network call, as nnU-Net: the convolutions then give the same bits with the one process's two
    # threads and each worker's one. A batch of tiles may be computed another way per thread count (float
    # rounding; test_batched_tiles_give_nnunets_logits), which a smoke network's near-tied logits turn into
    # other voxels.
    config = tmp_path / "one_tile.yaml"
    config.write_text("predict: {batch_tiles: 1}\n")
    one = predict(
        cohort=cohort,
        modality=MODALITY,
        model=model,
        out=tmp_path / "one",
        device="cpu",
        config=config,
        progress=lambda *a: calls.append(a),
    )
    r = CliRunner().invoke(
        cli,
        ["--no-progress", "segment", "predict", "--cohort", str(cohort), "--modality", MODALITY,
         "--model", str(model), "--out", str(tmp_path / "two"), "--devices", "cpu:2", "--config", str(config)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    two = json.loads((tmp_path / "two" / f"segment_predict_{MODALITY}.json").read_text())

    a, b = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert set(a) == set(b) and "qc.csv" in a
    assert a == b
    assert two["devices"] == ["cpu", "cpu"]
    assert one["counts"] == two["counts"]
    # Every patient was segmented once, by one of the two workers, in cohort order.
    assert list(two["patients"]) == list(one["patients"]) == Cohort.open(cohort).patient_ids()
    assert {p["device"] for p in two["patients"].values() if "device" in p} == {"cpu"}
    # Progress: each patient segmented is reported once, from 0 of n to n of n.
    n = len(calls) - 1
    assert calls == [(f"segment {MODALITY}", i, n) for i in range(n + 1)]
    assert n == sum(v["status"] != "skipped" for v in one["patients"].values())


def test_devices_are_checked_before_the_model_loads(cohort: Path, tmp_path: Path):
    assert parse_devices("cpu:3") == ["cpu"] * 3
    assert parse_devices("cpu") == ["cpu"]
    for bad, match in (
        ("cpu:0", "cpu:N"),
        ("0,cpu", "cannot be mixed"),
        ("0,0", "twice"),
        ("gpu1", "CUDA indices"),
        ("99", "does not exist"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_devices(bad)
    # Before anything else (the model folder does not even exist).
    with pytest.raises(ValueError, match="not both"):
        predict(cohort=cohort, modality=MODALITY, model=tmp_path / "none", out=tmp_path / "o", device="cpu",
                devices="cpu:2")  # fmt: skip
    r = CliRunner().invoke(
        cli,
        ["segment", "predict", "--cohort", str(cohort), "--modality", MODALITY, "--model", str(tmp_path),
         "--out", str(tmp_path / "o"), "--devices", "cpu:x"],
    )  # fmt: skip
    assert r.exit_code == 2 and "cpu:N" in r.output


def test_batched_tiles_give_nnunets_logits(cohort: Path, model: Path):
    """`predict.batch_tiles` runs several sliding-window tiles per network call; the logits are nnU-Net's own
    (one tile per call) up to float rounding, and so are the masks. bfloat16 (`cpu_bf16`) changes the logits by
    more, but barely the mask."""
    import numpy as np
    from cdeg.segmentation import geometry
    from cdeg.segmentation.predict import _load_predictor, _preprocess, resolve_model
    from cdeg.segmentation.presets import load_segment_config

    from cdeg.io import read_image

    spec = resolve_model(model, MODALITY)
    pid = Cohort.open(cohort).patient_ids()[0]
    image, _ = geometry.to_canonical(read_image(Cohort.open(cohort).image_path(pid, MODALITY)), MODALITY)

    def logits(**predict_options):
        cfg = load_segment_config({"predict": {"use_mirroring": False, **predict_options}})
        predictor = _load_predictor(spec, "cpu", cfg)
        data = _preprocess(predictor, image)["data"]
        n_tiles = len(predictor._internal_get_sliding_window_slicers(data.shape[1:]))
        return predictor.predict_sliding_window_return_logits(data).float().numpy(), n_tiles

    one, n_tiles = logits(batch_tiles=1)
    assert n_tiles > 3  # the test means something only with several tiles
    batched, _ = logits(batch_tiles=4)  # the last batch is a partial one when n_tiles is not a multiple of 4
    np.testing.assert_allclose(batched, one, atol=2e-2)
    assert (batched.argmax(0) == one.argmax(0)).mean() > 0.999
    bf16, _ = logits(batch_tiles=4, cpu_bf16=True)
    assert np.abs(bf16 - one).max() > 0  # it did run in another precision
    assert (bf16.argmax(0) == one.argmax(0)).mean() > 0.98
