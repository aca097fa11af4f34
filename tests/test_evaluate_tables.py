"""`cdeg segment evaluate` against hand-computed answers: both HD95 definitions, ASSD, missed and spurious
structures, a missing prediction, and the tidy per-structure CSV next to the JSON. Fast, no nnU-Net.

The masks are small 2D squares (radiographs) and one 3D cube (MRI) written in the cdeg layout, so every
expected value below is worked out by hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cdeg.segmentation.evaluate import CSV_COLUMNS, distance_metrics, evaluate
from click.testing import CliRunner

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import mask_path
from cdeg.io import image_from_array, write_image

C3, C4, C5, C3_C4, C2 = (labels.label_of(n) for n in ("C3", "C4", "C5", "C3-C4", "C2"))

# Anisotropic radiograph pixels, SimpleITK (x, y) order: 2.0 mm across columns, 0.5 mm down rows.
XRAY_SPACING_XY = (2.0, 0.5)
ROW_MM, COL_MM = XRAY_SPACING_XY[1], XRAY_SPACING_XY[0]

# 10x10 square offset by 2 rows, 0.5 mm rows and 2 mm columns. Each surface has 36 pixels. From A's surface to
# B's: the top row (10 px) and the 8 inner pixels of the bottom row lie 2 rows = 1.0 mm from B's top / bottom
# row (B's side columns are >= 1 column = 2 mm away); the two side pixels of A's second row are 1 row = 0.5 mm
# from B's top corners; the other 16 side pixels lie on B's side columns (0). B to A is the mirror image.
# Both HD95s: 1.0 mm. ASSD: (18 x 1.0 + 2 x 0.5) / 36 = 19/36 mm. Swapped spacing would give 4 mm.
OFFSET_HD95 = 2 * ROW_MM
OFFSET_ASSD = (18 * 2 * ROW_MM + 2 * ROW_MM) / 36

# A 10x10 square (reference) and the same square with a 1-pixel spur of 10 pixels sticking out of its top row
# (prediction), 1 mm pixels. The top-row pixel under the spur stops being surface (all 4 neighbours inside),
# so pred->ref = 35 zeros and 1, 2, ..., 10 (spur pixels); ref->pred = 35 zeros and one 1 (that pixel).
# numpy's linear percentile: pred->ref at 0.95 x 44 = 41.8 -> 7 + 0.8 = 7.8; ref->pred at 0.95 x 35 -> 0;
# pooled (81 values: 70 zeros, 1, 1, 2, ..., 10) at 0.95 x 80 = 76 -> 6. ASSD = (55 + 1) / 81.
SPUR_HD95_MAX_DIRECTED = 7.8
SPUR_HD95_POOLED = 6.0
SPUR_ASSD = 56 / 81


def _squares(shift_rows: int = 0, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    a = np.zeros(shape, bool)
    a[10 + shift_rows : 20 + shift_rows, 10:20] = True
    return a


def _spur_pair() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((40, 40), bool)
    ref[15:25, 10:20] = True
    pred = ref.copy()
    pred[5:15, 14] = True
    return pred, ref


def test_offset_squares_with_anisotropic_spacing():
    spacing = (ROW_MM, COL_MM)  # numpy (row, column) order
    d = distance_metrics(_squares(2), _squares(0), spacing)
    assert d["hd95_mm"] == pytest.approx(OFFSET_HD95)
    assert d["hd95_max_directed_mm"] == pytest.approx(OFFSET_HD95)
    assert d["assd_mm"] == pytest.approx(OFFSET_ASSD)
    assert distance_metrics(_squares(2), _squares(0), spacing[::-1])["hd95_mm"] == pytest.approx(2 * COL_MM)


def test_pooled_and_max_directed_hd95_differ_on_a_spur():
    pred, ref = _spur_pair()
    d = distance_metrics(pred, ref, (1.0, 1.0))
    assert d["hd95_max_directed_mm"] == pytest.approx(SPUR_HD95_MAX_DIRECTED)
    assert d["hd95_mm"] == pytest.approx(SPUR_HD95_POOLED)
    assert d["assd_mm"] == pytest.approx(SPUR_ASSD)
    # symmetric in its arguments, and undefined when a mask is empty
    assert distance_metrics(ref, pred, (1.0, 1.0)) == pytest.approx(d)
    assert distance_metrics(pred, np.zeros_like(ref), (1.0, 1.0)) == dict.fromkeys(d)


def _write(root: Path, pid: str, modality: str, arr: np.ndarray, spacing: tuple[float, ...]) -> None:
    write_image(mask_path(root, pid, modality), image_from_array(arr.astype(np.uint8), spacing))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path, Path]:
    """Reference and prediction folders of three patients, evaluated once.

    P01 radiograph: C3 predicted 2 rows low (the offset squares), C4 exact, the C3-C4 disc missed, a spurious
    C5. P01 MRI: one exact C2 cube. P02 radiograph: C3 with the spur. P03 radiograph: no prediction file.
    """
    base = tmp_path_factory.mktemp("evaluate_tables")
    ref, pred = base / "ref", base / "pred"
    r = np.zeros((60, 40), np.uint8)
    r[_squares(0, r.shape)] = C3
    r[22:24, 10:20] = C3_C4
    r[26:36, 10:20] = C4
    p = np.zeros_like(r)
    p[_squares(2, p.shape)] = C3
    p[26:36, 10:20] = C4
    p[45:50, 10:20] = C5  # lies on no reference structure
    _write(ref, "P01", "xray", r, XRAY_SPACING_XY)
    _write(pred, "P01", "xray", p, XRAY_SPACING_XY)
    cube = np.zeros((6, 12, 12), np.uint8)
    cube[1:5, 3:9, 3:9] = C2
    _write(ref, "P01", "mri", cube, (1.0, 1.0, 3.0))
    _write(pred, "P01", "mri", cube, (1.0, 1.0, 3.0))
    spur_pred, spur_ref = _spur_pair()
    _write(ref, "P02", "xray", spur_ref * C3, (1.0, 1.0))
    _write(pred, "P02", "xray", spur_pred * C3, (1.0, 1.0))
    _write(ref, "P03", "xray", r, XRAY_SPACING_XY)  # no prediction
    out = base / "out" / "evaluation.json"
    report = evaluate(pred=pred, ref=ref, out=out)
    return report, out, pred, ref


def _csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out.with_suffix(".csv"), dtype={"patient_id": str}, keep_default_na=True)


def test_csv_next_to_json_has_exact_columns_and_is_tidy(evaluated):
    report, out, _, _ = evaluated
    csv = out.with_suffix(".csv")
    assert report["csv"] == str(csv.resolve()) and csv.is_file()
    df = _csv(out)
    assert tuple(df.columns) == CSV_COLUMNS
    assert not df.duplicated(["patient_id", "modality", "level"]).any()
    got = set(zip(df.patient_id, df.modality, df.level, strict=True))
    assert got == {
        ("P01", "xray", "C3"),
        ("P01", "xray", "C3-C4"),
        ("P01", "xray", "C4"),
        ("P01", "xray", "C5"),
        ("P01", "mri", "C2"),
        ("P02", "xray", "C3"),
        ("P03", "xray", "C3"),
        ("P03", "xray", "C3-C4"),
        ("P03", "xray", "C4"),
    }
    assert all(df.structure == [labels.structure(lv).kind for lv in df.level])


def _row(df: pd.DataFrame, pid: str, mod: str, level: str) -> pd.Series:
    hit = df[(df.patient_id == pid) & (df.modality == mod) & (df.level == level)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_csv_distances_use_the_monai_hd95_and_keep_the_pooled_one(evaluated):
    df = _csv(evaluated[1])
    c3 = _row(df, "P01", "xray", "C3")
    assert c3.dice == pytest.approx(2 * 8 * 10 / 200)  # 8 of 10 rows overlap
    assert c3.hd95_mm == pytest.approx(OFFSET_HD95) and c3.hd95_pooled_mm == pytest.approx(OFFSET_HD95)
    assert c3.assd_mm == pytest.approx(OFFSET_ASSD, abs=1e-3)
    spur = _row(df, "P02", "xray", "C3")
    assert spur.hd95_mm == pytest.approx(SPUR_HD95_MAX_DIRECTED)
    assert spur.hd95_pooled_mm == pytest.approx(SPUR_HD95_POOLED)
    assert spur.assd_mm == pytest.approx(SPUR_ASSD, abs=1e-3)
    mri = _row(df, "P01", "mri", "C2")
    assert (mri.dice, mri.hd95_mm, mri.hd95_pooled_mm, mri.assd_mm) == (1.0, 0.0, 0.0, 0.0)


def test_json_states_definitions_and_keeps_both_hd95(evaluated):
    report, out, _, _ = evaluated
    written = json.loads(out.read_text())
    assert written["csv"] == report["csv"]
    assert {"hd95_mm", "hd95_max_directed_mm", "assd_mm"} <= set(written["definitions"])
    assert "MedPy" in written["definitions"]["hd95_mm"]
    assert "MONAI" in written["definitions"]["hd95_max_directed_mm"]
    m = written["patients"]["P02"]["xray"]["labels"]["C3"]
    # the JSON's hd95_mm keeps its earlier meaning (pooled, MedPy); the MONAI one sits next to it
    assert m["hd95_mm"] == pytest.approx(SPUR_HD95_POOLED)
    assert m["hd95_max_directed_mm"] == pytest.approx(SPUR_HD95_MAX_DIRECTED)
    assert m["assd_mm"] == pytest.approx(SPUR_ASSD, abs=1e-3)


def test_missed_and_spurious_structures_are_counted(evaluated):
    report, out, _, _ = evaluated
    df = _csv(out)
    disc = _row(df, "P01", "xray", "C3-C4")
    assert bool(disc.present_in_ref) and not bool(disc.present_in_pred)
    assert (
        disc.dice == 0 and np.isnan(disc.hd95_mm) and np.isnan(disc.hd95_pooled_mm) and np.isnan(disc.assd_mm)
    )
    c5 = _row(df, "P01", "xray", "C5")
    assert bool(c5.present_in_pred) and not bool(c5.present_in_ref) and c5.dice == 0
    s = report["summary"]["xray"]
    # missed: P01's disc, and all three structures of P03 (no prediction); spurious: P01's C5
    assert (s["n_missed_vertebrae"], s["n_missed_discs"], s["n_missed"]) == (2, 2, 4)
    assert (s["n_false_positive_vertebrae"], s["n_false_positive_discs"], s["n_false_positive"]) == (1, 0, 1)
    assert s["per_level"]["C3-C4"]["n_missed"] == 2 and s["per_level"]["C3-C4"]["n_reference"] == 2
    assert s["per_level"]["C5"]["n_false_positive"] == 1 and s["per_level"]["C5"]["n_reference"] == 0
    # the summary counts are the CSV's
    x = df[df.modality == "xray"]
    assert s["n_missed"] == int((x.present_in_ref & ~x.present_in_pred).sum())
    assert s["n_false_positive"] == int((x.present_in_pred & ~x.present_in_ref).sum())


def test_distance_means_are_over_detected_structures_only(evaluated):
    s = evaluated[0]["summary"]["xray"]
    # detected vertebrae: P01 C3 (offset), P01 C4 (exact), P02 C3 (spur); the missed ones have no distance
    assert s["hd95_max_directed_vertebrae_mean_mm"] == pytest.approx((OFFSET_HD95 + 0 + 7.8) / 3, abs=1e-4)
    assert s["hd95_vertebrae_mean_mm"] == pytest.approx((OFFSET_HD95 + 0 + 6.0) / 3, abs=1e-4)
    assert s["assd_vertebrae_mean_mm"] == pytest.approx((OFFSET_ASSD + 0 + SPUR_ASSD) / 3, abs=1e-3)
    assert s["hd95_max_directed_discs_mean_mm"] is None and s["assd_discs_mean_mm"] is None
    # Dice means stay over the evaluated patients (P03 counts as missing, not as Dice 0)
    assert s["dice_discs_mean"] == 0.0 and s["per_level"]["C3-C4"]["n"] == 1


def test_missing_prediction_file_gets_rows_and_a_problem_line(evaluated):
    report, out, pred, _ = evaluated
    df = _csv(out)
    p03 = df[df.patient_id == "P03"]
    assert sorted(p03.level) == ["C3", "C3-C4", "C4"]
    assert not p03.present_in_pred.any() and p03.present_in_ref.all() and (p03.dice == 0).all()
    assert p03[["hd95_mm", "assd_mm", "hd95_pooled_mm"]].isna().all().all()
    s = report["summary"]["xray"]
    assert s["n_missing_prediction"] == 1 and s["n_evaluated"] == 2
    (line,) = report["problems"]
    assert "P03" in line and str(mask_path(pred, "P03", "xray")) in line


def test_out_must_not_be_the_csv(evaluated, tmp_path: Path):
    _, _, pred, ref = evaluated
    with pytest.raises(ValueError, match="JSON"):
        evaluate(pred=pred, ref=ref, out=tmp_path / "evaluation.csv")
    assert not (tmp_path / "evaluation.csv").exists()


def test_cli_line_names_the_csv_and_the_missed_count(evaluated, tmp_path: Path):
    _, _, pred, ref = evaluated
    out = tmp_path / "cli.json"
    args = [
        "segment",
        "evaluate",
        "--pred",
        str(pred),
        "--ref",
        str(ref),
        "--out",
        str(out),
        "--modality",
        "xray",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "4 reference structures missed, 1 spurious" in r.output
    assert str(out.with_suffix(".csv").resolve()) in r.output


def test_worker_processes_give_the_same_tables(evaluated, tmp_path: Path):
    """`jobs` spreads the patients over processes; the metrics, the problems and the CSV stay the same."""
    report, out, pred, ref = evaluated
    out2 = tmp_path / "evaluation.json"
    parallel = evaluate(pred=pred, ref=ref, out=out2, jobs=2)
    for key in ("summary", "patients", "problems"):
        assert parallel[key] == report[key]
    pd.testing.assert_frame_equal(_csv(out2), _csv(out))
