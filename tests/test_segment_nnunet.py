"""Real nnU-Net runs on CPU (smoke preset, tiny synthetic cohort): train, resume, predict, evaluate, CLI.

No mocks: nnU-Net plans, preprocesses, trains a few iterations and predicts. The smoke model is not
meant to segment well; these tests check the pipeline, the files and the robustness rules.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cdeg.segmentation import geometry
from cdeg.segmentation.train import MANIFEST, train
from click.testing import CliRunner

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import Cohort, image_path, mask_path
from cdeg.io import file_sha256, write_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cdeg.synth import synthesize

    root = tmp_path_factory.mktemp("segnn") / "cohort"
    synthesize(root, n=4, seed=11, progress=False)
    return root


@pytest.fixture(scope="module")
def mri_model(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("segnn_model") / "mri_model"
    train(
        cohort=cohort, modality="mri", out=out, preset="smoke", device="cpu", keep_work=True, progress=False
    )
    return out


def test_smoke_train_writes_a_self_contained_model(mri_model: Path):
    m = json.loads((mri_model / MANIFEST).read_text())
    assert m["status"] == "complete" and m["modality"] == "mri" and m["preset"] == "smoke"
    assert m["epochs_completed"] == 1 and m["configuration"] == "2d_cdeg"
    assert m["labels"]["convention_to_training"]["102"] == 2 and m["versions"]["nnunetv2"]
    results = mri_model / m["results_folder"]
    for f in ("plans.json", "dataset.json", "fold_all/checkpoint_final.pth"):
        assert (results / f).is_file(), f
    plans = json.loads((results / "plans.json").read_text())
    assert plans["configurations"]["2d_cdeg"]["architecture"]["arch_kwargs"]["features_per_stage"][0] == 4
    assert (mri_model / "nnunet_ext" / "cdeg_nnunet_trainers.py").is_file()


def test_resume_continues_an_interrupted_training(mri_model: Path, cohort: Path, tmp_path: Path):
    # Make a copy look like a run stopped after epoch 0 of 2: status "training", only a latest checkpoint.
    model = tmp_path / "model"
    shutil.copytree(mri_model, model)
    manifest = json.loads((model / MANIFEST).read_text())
    manifest["status"] = "training"
    (model / MANIFEST).write_text(json.dumps(manifest))
    fold = model / manifest["results_folder"] / "fold_all"
    (fold / "checkpoint_final.pth").rename(fold / "checkpoint_latest.pth")
    # nnU-Net names its log by the second training started; a resumed run started within the same second
    # appends to the copied log, so compare what was written after the copy rather than which files exist.
    logs_before = {p: p.stat().st_size for p in fold.glob("training_log_*.txt")}
    cfg = tmp_path / "two_epochs.yaml"
    cfg.write_text("presets: {smoke: {cpu: {mri: {epochs: 2}}}}\n")

    m = train(
        cohort=cohort, modality="mri", out=model, preset="smoke", device="cpu", config=cfg, progress=False
    )
    assert m["status"] == "complete" and m["epochs_completed"] == 2
    text = "".join(
        p.read_bytes()[logs_before.get(p, 0) :].decode() for p in sorted(fold.glob("training_log_*.txt"))
    )
    assert "Epoch 1" in text and "Epoch 0" not in text  # continued, did not restart
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "checkpoint_latest.pth").exists()
    # a complete folder is left alone
    stamp = (fold / "checkpoint_final.pth").stat().st_mtime_ns
    assert (
        train(cohort=cohort, modality="mri", out=model, preset="smoke", device="cpu", config=cfg)["status"]
        == "complete"
    )
    assert (fold / "checkpoint_final.pth").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="preset 'smoke', not 'fast'"):
        train(cohort=cohort, modality="mri", out=model, preset="fast", device="cpu")


def test_predict_handles_orientation_missing_and_2d_images(mri_model: Path, cohort: Path, tmp_path: Path):
    from cdeg.segmentation.predict import predict

    work = tmp_path / "cohort"
    shutil.copytree(cohort, work)
    ids = [p for p in Cohort.open(work).patient_ids() if image_path(work, p, "mri").is_file()]
    assert len(ids) >= 4
    a, b, c, d = ids[:4]
    img_b = sitk.ReadImage(str(image_path(work, b, "mri")))
    write_image(image_path(work, b, "mri"), geometry._apply(img_b, (1, 0, 2), (True, False, True)))
    shutil.copy(
        image_path(work, c, "xray"), image_path(work, c, "mri")
    )  # a 2D radiograph given to the MRI model
    image_path(work, d, "mri").unlink()
    before = {p: file_sha256(p) for p in work.rglob("*") if p.is_file()}

    out = tmp_path / "masks"
    s = predict(cohort=work, modality="mri", model=mri_model, out=out, device="cpu")
    assert s["patients"][c]["status"] == "skipped" and "2D" in s["patients"][c]["reason"]
    assert s["patients"][d]["status"] == "skipped"
    assert {p for p, v in s["patients"].items() if v["status"] != "skipped"} == {a, b} | (set(ids[4:]))
    qc = (out / "qc.csv").read_text()
    assert f"{c},mri,dimension" in qc and f"{d},mri,missing_image" in qc and f"{b},mri,orientation" in qc
    for pid in (a, b):
        mpath = mask_path(out, pid, "mri")
        if not mpath.is_file():  # a smoke model may find nothing; that is reported, not fatal
            assert s["patients"][pid]["status"] == "empty"
            continue
        mask, image = sitk.ReadImage(str(mpath)), sitk.ReadImage(str(image_path(work, pid, "mri")))
        assert geometry.same_grid(mask, image) is None  # same geometry as the input, even when reoriented
        assert not labels.invalid_labels(np.unique(sitk.GetArrayViewFromImage(mask)).tolist())
        assert (out / pid / "mri_qc.png").stat().st_size > 1000
    assert before == {p: file_sha256(p) for p in work.rglob("*") if p.is_file()}  # inputs untouched


def test_xray_train_predict_evaluate_through_the_cli(cohort: Path, tmp_path: Path):
    runner = CliRunner()
    model, masks = tmp_path / "xray_model", tmp_path / "masks"
    r = runner.invoke(
        cli,
        [
            "--no-progress",
            "segment",
            "train",
            "--cohort",
            str(cohort),
            "--modality",
            "xray",
            "--out",
            str(model),
            "--preset",
            "smoke",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert not (model / "work").exists()  # removed once training completed
    r = runner.invoke(
        cli,
        [
            "segment",
            "predict",
            "--cohort",
            str(cohort),
            "--modality",
            "xray",
            "--model",
            str(model),
            "--out",
            str(masks),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        [
            "segment",
            "predict",
            "--cohort",
            str(cohort),
            "--modality",
            "mri",
            "--model",
            str(model),
            "--out",
            str(masks),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 2 and "trained on xray" in r.output
    r = runner.invoke(
        cli,
        [
            "segment",
            "evaluate",
            "--pred",
            str(masks),
            "--ref",
            str(cohort),
            "--out",
            str(tmp_path / "metrics.json"),
            "--modality",
            "xray",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "metrics.json").read_text())
    s = report["summary"]["xray"]
    assert s["n_evaluated"] + s["n_missing_prediction"] == len(Cohort.open(cohort).patient_ids())
    assert 0.0 <= (s["level_identification"] or 0.0) <= 1.0


def test_cpu_bf16_trains_in_bfloat16_and_keeps_float32_weights(cohort: Path, tmp_path: Path):
    import torch

    cfg = tmp_path / "bf16.yaml"
    cfg.write_text("presets: {smoke: {cpu: {xray: {cpu_bf16: true, epochs: 2}}}}\n")
    model = tmp_path / "model"
    m = train(
        cohort=cohort, modality="xray", out=model, preset="smoke", device="cpu", config=cfg, progress=False
    )
    assert m["status"] == "complete" and m["settings"]["cpu_bf16"] is True
    fold = model / m["results_folder"] / "fold_all"
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "bfloat16 autocast, channels-last" in log
    assert (fold / "progress.png").is_file()  # drawn at the end (no longer after every epoch)
    losses = [float(v) for v in re.findall(r"train_loss (\S+)", log)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)[
        "network_weights"
    ]
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_a_training_without_augmentation_workers_is_repeatable(cohort: Path, tmp_path: Path):
    """Seeded (the trainer seeds the generators nnU-Net draws from): the same training twice gives the same
    weights; the smoke preset augments in the main process (n_proc_da 0)."""
    import torch

    weights = []
    for run in ("a", "b"):
        m = train(
            cohort=cohort, modality="xray", out=tmp_path / run, preset="smoke", device="cpu", progress=False
        )
        ckpt = tmp_path / run / m["results_folder"] / "fold_all" / "checkpoint_final.pth"
        weights.append(torch.load(ckpt, map_location="cpu", weights_only=False)["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
