"""`cdeg segment suggest`: damaged reference masks rank first and their reasons name the damage; the network's
doubt (uncertainty.csv of `cdeg segment predict`) is read and written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cdeg.segmentation.suggest import robust_z, suggest
from click.testing import CliRunner
from scipy import ndimage

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import ID_COLUMN, mask_path
from cdeg.io import read_table, write_image, write_table
from cdeg.outputs import MaskFolder

#: patient -> the damage done to its reference MRI mask (see `damaged`).
DAMAGE = {
    "NECK0002": "delete C5",
    "NECK0004": "erode C5-C6",
    "NECK0006": "merge C4-C5 and C5 into C4",
    "NECK0008": "fragment of C3",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten patients with MRI and reference masks, seed 21. Read-only."""
    from cdeg.synth import synthesize

    root = tmp_path_factory.mktemp("suggest") / "cohort"
    synthesize(root, n=10, seed=21, modalities="mri", progress=False)
    return root


def _damage(arr: np.ndarray, what: str) -> np.ndarray:
    out = arr.copy()
    if what == "delete C5":
        out[out == labels.label_of("C5")] = 0
    elif what == "erode C5-C6":
        disc = out == labels.label_of("C5-C6")
        out[disc & ~ndimage.binary_erosion(disc, iterations=2)] = 0
    elif what == "merge C4-C5 and C5 into C4":
        out[np.isin(out, [labels.label_of("C4-C5"), labels.label_of("C5")])] = labels.label_of("C4")
    elif what == "fragment of C3":
        out[:3, :3, :3] = labels.label_of("C3")  # a corner of the volume, far from the spine
    return out


@pytest.fixture
def damaged(cohort: Path, tmp_path: Path) -> Path:
    """A copy of the cohort's reference masks with the damage of DAMAGE done to four of them."""
    root = tmp_path / "masks"
    shutil.copytree(cohort / "masks", root)
    for pid, what in DAMAGE.items():
        path = mask_path(root, pid, "mri")
        image = sitk.ReadImage(str(path))
        new = sitk.GetImageFromArray(_damage(sitk.GetArrayFromImage(image), what))
        new.CopyInformation(image)
        write_image(path, new)
    return root


def test_damaged_masks_rank_first_and_the_reasons_name_the_damage(damaged: Path):
    table = suggest(damaged, modality="mri")
    assert list(table.columns[:5]) == list(MaskFolder.SUGGEST_COLUMNS) and len(table) == 10
    assert set(table[ID_COLUMN][:4]) == set(DAMAGE), table[[ID_COLUMN, "score", "reasons"]].to_string()
    assert table["score"].is_monotonic_decreasing and list(table["rank"]) == list(range(1, 11))
    reasons = dict(zip(table[ID_COLUMN], table["reasons"], strict=True))
    assert "C5 missing" in reasons["NECK0002"]
    assert "C5-C6 disc volume" in reasons["NECK0004"] and "below the median" in reasons["NECK0004"]
    assert "C4-C5 missing" in reasons["NECK0006"] and "C5 missing" in reasons["NECK0006"]
    assert "C4 volume" in reasons["NECK0006"] and "above the median" in reasons["NECK0006"]
    assert "C3: stray fragment (27 voxels)" in reasons["NECK0008"]
    written = read_table(MaskFolder(damaged).suggest_csv, dtype={ID_COLUMN: str})
    assert list(written[ID_COLUMN]) == list(table[ID_COLUMN])


def test_qc_findings_and_network_doubt_raise_a_mask(cohort: Path, tmp_path: Path):
    root = tmp_path / "masks"
    shutil.copytree(cohort / "masks", root)
    before = suggest(root).set_index(ID_COLUMN)
    rows = []
    for i, pid in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir())):
        for s in labels.STRUCTURES:
            conf = 0.62 if (pid, s.name) == ("NECK0003", "C6-C7") else 0.95 + 0.003 * i
            rows.append([pid, "mri", s.name, 100, conf, 0.02, None, None])
    write_table(MaskFolder(root).uncertainty_csv, pd.DataFrame(rows, columns=MaskFolder.UNCERTAINTY_COLUMNS))
    qc = [["NECK0005", "mri", "level_name", "C4 renamed C5 by the cranio-caudal sequence", True]]
    qc += [["NECK0007", "mri", "orientation", "not in the canonical orientation", True]]
    write_table(MaskFolder(root).qc_csv, pd.DataFrame(qc, columns=MaskFolder.QC_COLUMNS))
    table = suggest(root)
    assert table[ID_COLUMN][0] == "NECK0003" and table["confidence"][0] > 5
    assert table["reasons"][0].startswith("C6-C7 disc: low confidence (0.62)")
    after = table.set_index(ID_COLUMN)
    assert after.loc["NECK0005", "findings"] == before.loc["NECK0005", "findings"] + 2.0
    assert "QC level_name: C4 renamed C5" in after.loc["NECK0005", "reasons"]
    # A routine reorientation (weight 0) is no reason; flips and folds are absent: they add nothing.
    assert after.loc["NECK0007", "findings"] == before.loc["NECK0007", "findings"]
    assert "orientation" not in table["reasons"].str.cat() and not table[["flips", "folds"]].any().any()


def test_the_cli_writes_the_worst_n(damaged: Path, tmp_path: Path):
    out = tmp_path / "worst.csv"
    r = CliRunner().invoke(
        cli, ["segment", "suggest", "--masks", str(damaged), "--n", "3", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    written = read_table(out, dtype={ID_COLUMN: str})
    assert len(written) == 3 and set(written[ID_COLUMN]) <= set(DAMAGE)
    assert written[ID_COLUMN][0] in r.output
    r = CliRunner().invoke(cli, ["segment", "suggest", "--masks", str(damaged), "--n", "0"])
    assert r.exit_code != 0 and "--n" in r.output


def test_a_patient_without_a_mask_ranks_first_and_a_missing_image_not_at_all(damaged: Path):
    manifest = {
        "modality": "mri",
        "counts": {},
        "patients": {
            "NECK0011": {"status": "failed", "reason": "RuntimeError: out of memory"},
            "NECK0012": {"status": "skipped", "reason": "no mri image"},
        },
    }
    MaskFolder(damaged).predict_manifest("mri").write_text(json.dumps(manifest))
    qc = [["NECK0012", "mri", "missing_image", "no mri image", False]]
    write_table(MaskFolder(damaged).qc_csv, pd.DataFrame(qc, columns=MaskFolder.QC_COLUMNS))
    table = suggest(damaged)
    assert table[ID_COLUMN][0] == "NECK0011" and "no mask: RuntimeError" in table["reasons"][0]
    assert "NECK0012" not in set(table[ID_COLUMN])


def test_robust_z_is_in_standard_deviations_and_survives_no_spread():
    rng = np.random.default_rng(0)
    z = robust_z(rng.normal(10.0, 2.0, 20001))
    assert abs(np.median(z)) < 1e-9 and abs(np.std(z) - 1.0) < 0.03
    assert np.array_equal(
        robust_z(np.array([1.0, 1.0, np.nan])), np.array([0.0, 0.0, np.nan]), equal_nan=True
    )
    assert robust_z(np.array([1.0, 1.0, 1.0, 4.0]))[3] > 3  # the MAD is 0: the mean deviation takes over
    assert robust_z(np.array([1.0, 1.0, 2.0]), floor=0.5)[2] == pytest.approx(2.0)


# --- slow: a real model ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_writes_the_doubt_that_suggest_ranks(
    xray_cohort5: Path, smoke_xray_models: dict[str, Path], tmp_path: Path
):
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.train import MANIFEST

    # Folds 0 and 1 of the same plans in one plain nnU-Net results folder: an ensemble of two.
    results = {
        f: m / json.loads((m / MANIFEST).read_text())["results_folder"] for f, m in smoke_xray_models.items()
    }
    plain = tmp_path / "models" / Path(*results["0"].parts[-2:])
    plain.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(results["0"] / name, plain / name)
    for f, res in results.items():
        (plain / f"fold_{f}").mkdir()
        shutil.copy(res / f"fold_{f}" / "checkpoint_final.pth", plain / f"fold_{f}")
    common = {"cohort": xray_cohort5, "modality": "xray", "model": plain, "device": "cpu", "folds": "0,1"}
    predict(**common, out=tmp_path / "ensemble", label_map="cdeg_nnunet")
    predict(
        **common, out=tmp_path / "passes", label_map="cdeg_nnunet", config={"predict": {"disagreement": True}}
    )
    for pid in (p.name for p in (tmp_path / "ensemble").iterdir() if p.is_dir()):
        # The passes run one by one give nnU-Net's own ensemble (mean logits), voxel for voxel.
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(tmp_path / "ensemble", pid, "xray"))))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(tmp_path / "passes", pid, "xray"))))
        assert np.array_equal(a, b), pid
    plain_doubt = read_table(MaskFolder(tmp_path / "ensemble").uncertainty_csv, dtype={ID_COLUMN: str})
    doubt = read_table(MaskFolder(tmp_path / "passes").uncertainty_csv, dtype={ID_COLUMN: str})
    assert list(doubt.columns) == list(MaskFolder.UNCERTAINTY_COLUMNS) and len(doubt) > 0
    assert doubt["fold_dice"].between(0, 1).all() and plain_doubt["fold_dice"].isna().all()
    assert doubt["flip_dice"].isna().all()  # a 2D radiograph model allows no mirroring
    assert doubt["mean_confidence"].between(0, 1).all() and doubt["low_confidence_share"].between(0, 1).all()
    assert np.allclose(doubt["mean_confidence"], plain_doubt["mean_confidence"], atol=1e-3)
    table = suggest(tmp_path / "passes")
    assert len(table) == len(set(doubt[ID_COLUMN])) and table["score"].is_monotonic_decreasing
