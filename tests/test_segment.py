"""Fast tests of cdeg segment: label mapping, presets, geometry, level repair, metrics, prepare, CLI.

The real nnU-Net runs (train, predict, resume) are in test_segment_nnunet.py (marked slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cdeg.segmentation import geometry, labelmap
from cdeg.segmentation.dataset import check_training_cases, prepare_dataset
from cdeg.segmentation.evaluate import dice, evaluate, evaluate_case, hd95
from cdeg.segmentation.phantom import phantom_case, write_phantom_cohort
from cdeg.segmentation.postprocess import check_levels
from cdeg.segmentation.presets import (
    DEVICE_KINDS,
    PRESETS,
    TRAINER_NAMES,
    PostprocessOptions,
    load_segment_config,
)
from click.testing import CliRunner

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import CANONICAL_DIRECTION, Cohort, image_path, mask_path
from cdeg.config import ConfigError
from cdeg.errors import CdegError
from cdeg.io import image_from_array, write_image, write_json

XRAY_SPACING = (1.2, 1.2)


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("seg") / "cohort", n=4, seed=3)


@pytest.fixture(scope="module")
def xray_mask() -> np.ndarray:
    _, mask = phantom_case(np.random.default_rng(0), "xray")
    return mask


# --- label mapping -------------------------------------------------------------------------------


def test_training_labels_are_consecutive_in_craniocaudal_order():
    mapping = labelmap.training_labels()
    assert list(mapping.values()) == list(range(1, len(labels.STRUCTURES) + 1))
    assert list(mapping) == [s.label for s in labels.STRUCTURES]
    assert mapping[labels.label_of("C2")] == 1 and mapping[labels.label_of("T1")] == 13
    js = labelmap.dataset_json_labels()
    assert js["background"] == 0 and js["C5-C6"] == mapping[105]


def test_label_mapping_round_trip_and_rejects_unknown_labels():
    conv = np.array([[0, 2, 102], [8, 107, 5]], dtype=np.uint8)
    train = labelmap.to_training(conv)
    assert train.max() <= 13 and np.array_equal(labelmap.from_training(train), conv)
    # a mapping read back from JSON has string keys
    as_json = {str(k): v for k, v in labelmap.training_labels().items()}
    assert np.array_equal(labelmap.from_training(train, as_json), conv)
    with pytest.raises(ValueError, match=r"\[9\]"):
        labelmap.to_training(np.array([0, 9]))


# --- presets ---------------------------------------------------------------------------------------


def test_shipped_config_covers_every_preset_device_and_modality():
    cfg = load_segment_config()
    for preset in PRESETS:
        for kind in DEVICE_KINDS:
            for modality in ("mri", "xray"):
                s = cfg.settings(preset, kind, modality)
                assert s.trainer in TRAINER_NAMES
    full = cfg.settings("full", "cuda", "mri")
    assert full.epochs is None and full.iterations_per_epoch is None and not full.reduced  # nnU-Net defaults
    assert (
        cfg.settings("fast", "cpu", "mri").reduced and cfg.settings("fast", "cpu", "mri").time_budget_s <= 600
    )
    with pytest.raises(ValueError, match="valid: full, fast, smoke"):
        cfg.settings("quick", "cpu", "mri")


def test_trainer_registry_matches_the_torch_free_table():
    from cdeg.segmentation.trainers import TRAINERS

    assert set(TRAINERS) == set(TRAINER_NAMES)
    for name, cls in TRAINERS.items():
        assert bool(getattr(cls, "uses_settings", False)) == TRAINER_NAMES[name]


def test_config_errors_name_the_key(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("postprocess: {gap_penaltyy: 1.0}\n")
    with pytest.raises(ConfigError, match="gap_penaltyy"):
        load_segment_config(bad)
    bad.write_text("presets: {fast: {cpu: {mri: {trainer: nnUNetTrainer, epochs: 5}}}}\n")
    with pytest.raises(ConfigError, match="need a trainer that reads them"):
        load_segment_config(bad)


# --- geometry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "flips"),
    [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, True)), ((1, 2, 0), (False, True, False))],
)
def test_reorientation_round_trip_is_exact_3d(axes, flips):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1000, (5, 7, 9)).astype(np.int16)
    canonical = image_from_array(
        arr, (0.7, 0.8, 3.0), origin=(3.0, -2.0, 7.0), direction=CANONICAL_DIRECTION["mri"]
    )
    other = geometry._apply(canonical, axes, flips)  # the same voxels stored differently
    back, plan = geometry.to_canonical(other, "mri")
    assert geometry.same_grid(back, canonical) is None
    assert np.array_equal(sitk.GetArrayFromImage(back), arr)
    # the voxel at a physical point is the same in both storages
    pt = other.TransformIndexToPhysicalPoint((1, 2, 3))
    assert other[1, 2, 3] == back[back.TransformPhysicalPointToIndex(pt)]
    mask = geometry.from_canonical(back, plan, other)
    assert geometry.same_grid(mask, other) is None
    assert np.array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(other))


def test_reorientation_2d_and_oblique():
    img = image_from_array(
        np.arange(12, dtype=np.int16).reshape(3, 4), (0.5, 0.5), direction=(-1.0, 0.0, 0.0, 1.0)
    )
    can, plan = geometry.to_canonical(img, "xray")
    assert plan.flips == (True, False) and np.array_equal(sitk.GetArrayFromImage(can)[0], [3, 2, 1, 0])
    theta = np.radians(12)
    rot = (np.cos(theta), -np.sin(theta), np.sin(theta), np.cos(theta))
    img.SetDirection(rot)
    _, plan = geometry.to_canonical(img, "xray")
    assert plan.is_identity and plan.oblique_deg == pytest.approx(12, abs=0.01)


# --- level consistency -----------------------------------------------------------------------------


def _relabel(mask: np.ndarray, changes: dict[int, int]) -> np.ndarray:
    out = mask.copy()
    for old, new in changes.items():
        out[mask == old] = new
    return out


def test_consistent_mask_is_untouched(xray_mask):
    out, findings = check_levels(xray_mask, XRAY_SPACING, 0)
    assert np.array_equal(out, xray_mask) and findings == []


@pytest.mark.parametrize(
    ("name", "changes", "check"),
    [
        ("swapped neighbours", {4: 5, 5: 4}, "level_name"),
        ("vertebra counted twice", {6: 5}, "duplicate"),
        ("disc misnamed between correct vertebrae", {104: 107}, "duplicate"),
        ("disc misnamed, no duplicate", {104: 106, 106: 0}, "level_name"),
    ],
)
def test_level_errors_are_repaired(xray_mask, name, changes, check):
    broken = _relabel(xray_mask, changes)
    expected = xray_mask.copy()
    expected[broken == 0] = 0  # removed structures stay removed
    out, findings = check_levels(broken, XRAY_SPACING, 0)
    assert np.array_equal(out, expected), name
    assert any(f.check == check and f.repaired for f in findings), findings


def test_skipped_name_is_renamed_by_the_majority(xray_mask):
    # From C6 down every structure carries the name two positions further down (C6 and C6-C7 skipped)
    # although the structures touch: there is no room for the skipped levels, so the three shifted
    # structures are renamed rather than the ten consistent ones above them.
    broken = _relabel(xray_mask, {6: 7, 106: 107, 7: 8, 107: 0, 8: 0})
    expected = _relabel(xray_mask, {107: 0, 8: 0})
    out, findings = check_levels(broken, XRAY_SPACING, 0)
    assert np.array_equal(out, expected)
    assert sum(f.check == "level_name" for f in findings) == 3


def test_missing_level_with_room_is_reported_not_invented(xray_mask):
    broken = _relabel(xray_mask, {4: 0})
    out, findings = check_levels(broken, XRAY_SPACING, 0)
    assert np.array_equal(out, broken)
    (f,) = findings
    assert (
        f.check == "missing_level" and not f.repaired and "C4 not found between C3-C4 and C4-C5" in f.detail
    )


def test_fragments_removed_detached_parts_kept(xray_mask):
    noisy = xray_mask.copy()
    noisy[105:107, 70:72] = labels.label_of("C3")  # a 4-pixel speck far away
    out, findings = check_levels(noisy, XRAY_SPACING, 0)
    assert np.array_equal(out, xray_mask) and findings[0].check == "fragments_removed"
    # cut the C4 body from its posterior elements: both pieces stay C4
    cut = xray_mask.copy()
    c4 = np.nonzero(xray_mask == 4)
    cut[c4[0].min() : c4[0].max() + 1, c4[1].max() - 8] = 0
    out, findings = check_levels(cut, XRAY_SPACING, 0)
    assert (out == 4).sum() == (cut == 4).sum() and not findings


def test_report_only_mode_and_empty_mask(xray_mask):
    broken = _relabel(xray_mask, {4: 5, 5: 4})
    out, findings = check_levels(broken, XRAY_SPACING, 0, opts=PostprocessOptions(repair=False))
    assert np.array_equal(out, broken) and all(not f.repaired for f in findings)
    out, findings = check_levels(np.zeros_like(xray_mask), XRAY_SPACING, 0)
    assert findings[0].check == "empty" and not out.any()


def test_confidence_anchors_the_sequence(xray_mask):
    # C3 and C4 both called C4: the confident one keeps its name.
    broken = _relabel(xray_mask, {3: 4})
    conf = np.full(xray_mask.shape, 0.9, np.float32)
    out, _ = check_levels(broken, XRAY_SPACING, 0, confidence=conf)
    assert np.array_equal(out, xray_mask)


def test_3d_repair():
    _, mask = phantom_case(np.random.default_rng(2), "mri")
    out, findings = check_levels(_relabel(mask, {4: 5, 5: 4}), (3.0, 1.2, 1.2), 1)
    assert np.array_equal(out, mask) and len(findings) == 2


# --- metrics -------------------------------------------------------------------------------------------


def test_dice_of_shifted_boxes_is_analytic():
    a = np.zeros((40, 40), bool)
    b = np.zeros((40, 40), bool)
    a[10:30, 10:30] = True
    b[14:34, 10:30] = True  # 20x20 box shifted by 4 rows: overlap 16x20
    assert dice(a, b) == pytest.approx(2 * 16 * 20 / (2 * 400))
    assert dice(a, a) == 1.0 and dice(a, np.zeros_like(a)) == 0.0


def test_hd95_matches_brute_force():
    from cdeg.segmentation.evaluate import _surface
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(4)
    a = np.zeros((12, 30, 30), bool)
    b = np.zeros_like(a)
    a[3:9, 5:20, 6:22] = True
    b[4:10, 8:24, 5:20] = True
    b[rng.random(b.shape) < 0.01] = True
    spacing = (3.0, 0.7, 0.9)
    pa = np.argwhere(_surface(a)) * spacing
    pb = np.argwhere(_surface(b)) * spacing
    d = cdist(pa, pb)
    expected = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    assert hd95(a, b, spacing) == pytest.approx(expected, rel=1e-6)
    shifted = np.roll(a, 2, axis=2)
    assert hd95(a, shifted, spacing) == pytest.approx(
        2 * 0.9
    )  # a pure shift: every far point is 2 voxels off
    assert hd95(a, np.zeros_like(a), spacing) is None


def test_level_identification_on_known_masks(xray_mask):
    img = image_from_array(xray_mask, XRAY_SPACING)
    ok = evaluate_case(img, img)
    assert ok["correct"] and ok["labels"]["C4"]["dice"] == 1.0 and ok["labels"]["C4"]["hd95_mm"] == 0.0
    swapped = evaluate_case(image_from_array(_relabel(xray_mask, {4: 5, 5: 4}), XRAY_SPACING), img)
    assert not swapped["correct"]
    assert {"predicted": "C5", "lies_on": "C4"} in swapped["misnamed"]
    missed = evaluate_case(image_from_array(_relabel(xray_mask, {4: 0}), XRAY_SPACING), img)
    assert missed["correct"] and missed["levels_missed"] == ["C4"] and missed["labels"]["C4"]["dice"] == 0.0


def test_verse_identification_judges_position_not_outline(xray_mask):
    img = image_from_array(xray_mask, XRAY_SPACING)
    n = len([v for v in np.unique(xray_mask) if v])
    assert (
        evaluate_case(img, img)["not_identified"] == []
        and evaluate_case(img, img)["n_reference_structures"] == n
    )
    # The C4-C5 disc drawn 3 pixels (3.6 mm) too low: it now lies mostly on C5 (strict naming fails), but its
    # centroid is still nearest to the reference C4-C5 disc (VerSe identifies it).
    low = xray_mask.copy()
    rows, cols = np.nonzero(xray_mask == 104)
    low[low == 104] = 0
    low[rows + 3, cols] = 104
    shifted = evaluate_case(image_from_array(low, XRAY_SPACING), img)
    assert {"predicted": "C4-C5", "lies_on": "C5"} in shifted["misnamed"]
    assert shifted["not_identified"] == []
    swapped = evaluate_case(image_from_array(_relabel(xray_mask, {4: 5, 5: 4}), XRAY_SPACING), img)
    assert swapped["not_identified"] == ["C4", "C5"]
    missed = evaluate_case(image_from_array(_relabel(xray_mask, {4: 0}), XRAY_SPACING), img)
    assert missed["not_identified"] == ["C4"]


def test_evaluate_folders(tmp_path: Path, phantom_cohort: Path):
    pred = tmp_path / "pred"
    coh = Cohort.open(phantom_cohort)
    ids = coh.patient_ids()
    for pid in ids[:-1]:  # the last patient has no prediction
        ref = sitk.ReadImage(str(coh.mask_path(pid, "xray")))
        arr = sitk.GetArrayFromImage(ref)
        if pid == ids[0]:
            arr = _relabel(arr, {4: 5, 5: 4})
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(ref)
        write_image(mask_path(pred, pid, "xray"), out)
    report = evaluate(pred=pred, ref=phantom_cohort, out=tmp_path / "m.json", modality="xray")
    s = report["summary"]["xray"]
    assert s["n_evaluated"] == len(ids) - 1 and s["n_missing_prediction"] == 1
    assert s["level_identification"] == pytest.approx((len(ids) - 2) / len(ids))
    assert s["per_level"]["C4"]["dice_mean"] < 1.0 and s["per_level"]["C3"]["dice_mean"] == 1.0
    # per structure over the evaluated patients: only the swapped C4 and C5 of the first one are not identified
    assert s["n_structures_identified"] == s["n_reference_structures"] - 2
    assert s["identification_rate_verse"] == pytest.approx(1 - 2 / s["n_reference_structures"], abs=1e-5)
    assert json.loads((tmp_path / "m.json").read_text())["summary"]["xray"]["n_evaluated"] == len(ids) - 1


# --- prepare and input checks ----------------------------------------------------------------------


def test_prepare_writes_nnunet_dataset_and_reports_problems(tmp_path: Path, phantom_cohort: Path):
    cohort = tmp_path / "cohort"
    shutil.copytree(phantom_cohort, cohort)
    ids = Cohort.open(cohort).patient_ids()
    # patient 1: stored with flipped rows and swapped axes; patient 2: a bad label; patient 3: no mask
    img = sitk.ReadImage(str(image_path(cohort, ids[1], "mri")))
    msk = sitk.ReadImage(str(mask_path(cohort / "masks", ids[1], "mri")))
    write_image(image_path(cohort, ids[1], "mri"), geometry._apply(img, (1, 0, 2), (True, False, False)))
    write_image(
        mask_path(cohort / "masks", ids[1], "mri"), geometry._apply(msk, (1, 0, 2), (True, False, False))
    )
    bad = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(cohort / "masks", ids[2], "mri"))))
    bad[0, 0, 0] = 42
    write_image(
        mask_path(cohort / "masks", ids[2], "mri"),
        image_from_array(bad, img.GetSpacing(), direction=img.GetDirection()),
    )
    mask_path(cohort / "masks", ids[3], "mri").unlink()

    out = tmp_path / "raw"
    result = prepare_dataset(cohort=cohort, modality="mri", out=out)
    assert result["cases"] == [ids[0], ids[1]] and result["unlabelled"] == [ids[3]]
    assert [p["check"] for p in result["problems"]] == ["labels"]  # found by the cohort check (cdeg.check)
    js = json.loads((out / "dataset.json").read_text())
    assert js["numTraining"] == 2 and js["channel_names"] == {"0": "T2"}
    assert js["overwrite_image_reader_writer"] == "SimpleITKIO" and js["labels"]["T1"] == 13
    reoriented = sitk.ReadImage(str(out / "imagesTr" / f"{ids[1]}_0000.nii.gz"))
    assert np.allclose(reoriented.GetDirection(), CANONICAL_DIRECTION["mri"])
    assert np.array_equal(sitk.GetArrayFromImage(reoriented), sitk.GetArrayFromImage(img))
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / f"{ids[1]}.nii.gz")))
    assert set(np.unique(lab)) <= set(range(14)) and lab.max() == 13
    # radiographs stay 2D with their pixel spacing, channel not CT
    result = prepare_dataset(cohort=cohort, modality="xray", out=tmp_path / "raw_x")
    x = sitk.ReadImage(str(tmp_path / "raw_x" / "imagesTr" / f"{ids[0]}_0000.nii.gz"))
    assert x.GetDimension() == 2 and x.GetSpacing() == pytest.approx((1.2, 1.2))
    assert json.loads((tmp_path / "raw_x" / "dataset.json").read_text())["channel_names"]["0"] != "CT"
    with pytest.raises(ValueError, match="inside the cohort"):
        prepare_dataset(cohort=cohort, modality="mri", out=cohort / "raw")


def test_training_check_flags_2d_3d_confusion_and_skips_missing(tmp_path: Path, phantom_cohort: Path):
    cohort = tmp_path / "cohort"
    shutil.copytree(phantom_cohort, cohort)
    ids = Cohort.open(cohort).patient_ids()
    shutil.copy(image_path(cohort, ids[0], "xray"), image_path(cohort, ids[0], "mri"))  # a radiograph as MRI
    image_path(cohort, ids[1], "mri").unlink()
    mask_path(cohort / "masks", ids[1], "mri").unlink()
    usable, problems, unlabelled = check_training_cases(Cohort.open(cohort), "mri")
    assert [(p.patient, p.check) for p in problems] == [(ids[0], "dimensions"), (ids[0], "geometry")]
    assert "2D" in problems[0].detail and f"images/{ids[0]}/mri.nii.gz" in problems[0].detail
    assert usable == ids[2:] and unlabelled == []  # a missing modality is no problem, just not used


def test_predict_refuses_a_model_of_the_other_modality(tmp_path: Path, phantom_cohort: Path):
    from cdeg.segmentation.predict import predict
    from cdeg.segmentation.train import MANIFEST, MANIFEST_FORMAT

    model = tmp_path / "model"
    write_json(model / MANIFEST, {"format": MANIFEST_FORMAT, "modality": "xray", "status": "complete"})
    with pytest.raises(ValueError, match="trained on xray images and cannot segment mri"):
        predict(cohort=phantom_cohort, modality="mri", model=model, out=tmp_path / "masks", device="cpu")
    with pytest.raises(CdegError, match="not a cdeg segmentation model folder"):
        predict(cohort=phantom_cohort, modality="mri", model=tmp_path, out=tmp_path / "masks", device="cpu")
    r = CliRunner().invoke(
        cli,
        [
            "segment",
            "predict",
            "--cohort",
            str(phantom_cohort),
            "--modality",
            "mri",
            "--model",
            str(model),
            "--out",
            str(tmp_path / "masks"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 2 and "cannot segment mri" in r.output
    assert not (tmp_path / "masks").exists()  # refused before writing anything


def test_train_refuses_a_foreign_folder(tmp_path: Path, phantom_cohort: Path):
    from cdeg.segmentation.train import train

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        train(cohort=phantom_cohort, modality="mri", out=tmp_path / "model", preset="smoke", device="cpu")
    with pytest.raises(ValueError, match="fold"):
        train(cohort=phantom_cohort, modality="mri", out=tmp_path / "m2", preset="smoke", fold="7")
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"


# --- CLI -------------------------------------------------------------------------------------------------


def test_cli_help_presets_and_prepare(tmp_path: Path, phantom_cohort: Path):
    runner = CliRunner()
    r = runner.invoke(cli, ["segment", "--help"])
    assert r.exit_code == 0 and all(c in r.output for c in ("prepare", "train", "predict", "evaluate"))
    r = runner.invoke(cli, ["segment", "presets"])
    assert r.exit_code == 0 and "nnUNetTrainer_cdegBudget" in r.output and "smoke:" in r.output
    r = runner.invoke(
        cli,
        [
            "segment",
            "prepare",
            "--cohort",
            str(phantom_cohort),
            "--modality",
            "xray",
            "--out",
            str(tmp_path / "raw"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "4 case(s) written" in r.output and (tmp_path / "raw" / "dataset.json").is_file()
    r = runner.invoke(
        cli, ["segment", "train", "--cohort", str(phantom_cohort), "--modality", "ct", "--out", "x"]
    )
    assert r.exit_code == 2


def test_more_copies_than_levels_drops_the_smallest_copies(xray_mask):
    # Every vertebra called C4 and every disc C4-C5: no naming fits 7 + 6 structures into the
    # sequence without extra copies being renamed; the sequence repair renames them all.
    broken = np.where(np.isin(xray_mask, labels.VERTEBRA_LABELS), 4, np.where(xray_mask > 0, 104, 0)).astype(
        np.uint8
    )
    out, findings = check_levels(broken, XRAY_SPACING, 0)
    assert np.array_equal(out, xray_mask)
    # eight vertebra-sized specks far apart cannot all be levels: extra copies are dropped, no crash
    specks = np.zeros((200, 20), np.uint8)
    for k in range(8):
        specks[k * 25 : k * 25 + 6, 5:12] = 4
    out, findings = check_levels(specks, XRAY_SPACING, 0)
    assert (out > 0).sum() == 7 * 42 and any("more structures than levels" in f.detail for f in findings)


def test_vertebra_reaching_over_the_disc_below_keeps_its_name(xray_mask):
    # An undertrained network's C7 that reaches down in front of the C7-T1 disc (seen in the demo's
    # radiographs): by their anterior columns C7-T1 sorts above C7, and no naming of that order keeps both C7
    # and T1. The two overlap cranio-caudally, so they are named in the other order instead of C7 being dropped.
    from cdeg.segmentation.postprocess import find_instances

    mask = xray_mask.copy()
    mask[66:81, 14:24] = labels.label_of("C7")
    instances, _ = find_instances(mask, XRAY_SPACING, 0, None, PostprocessOptions())
    names = [labels.name_of(i.label) for i in instances]
    assert names[-3:] == ["C7-T1", "C7", "T1"]  # the premise: sorted out of order
    out, findings = check_levels(mask, XRAY_SPACING, 0)
    assert np.array_equal(out, mask) and findings == []


def test_structure_out_of_sequence_is_dropped_not_the_whole_mask():
    # T1 predicted above C2: no naming keeps every structure, so that one structure is left out and
    # the other twelve keep their names.
    _, mask = phantom_case(np.random.default_rng(5), "xray")
    mask = np.concatenate([np.zeros((12, mask.shape[1]), np.uint8), mask])
    broken = mask.copy()
    broken[2:8, 30:40] = labels.label_of("T1")
    broken[mask == labels.label_of("T1")] = 0
    out, findings = check_levels(broken, XRAY_SPACING, 0)
    assert np.array_equal(out, np.where(mask == labels.label_of("T1"), 0, mask))
    assert any(f.check == "sequence" and "T1" in f.detail and f.repaired for f in findings)
