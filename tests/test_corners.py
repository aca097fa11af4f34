"""Radiographs annotated by vertebral body corners: the four formats, their checks, the measurements and the
training masks drawn from them (:mod:`cdeg.corners`, :mod:`cdeg.features.corners`,
:mod:`cdeg.segmentation.corners`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cdeg.features.measurements import measure_corners

from cdeg import labels, measures
from cdeg.cohort import Cohort
from cdeg.corners import COLUMNS, CORNERS, load_corners, parse_name
from cdeg.errors import CdegError

PID = "NECK0001"


@pytest.fixture(scope="module")
def cohort(xray_cohort5) -> Path:
    return xray_cohort5


@pytest.fixture(scope="module")
def truth(cohort) -> pd.DataFrame:
    return pd.read_csv(Cohort.open(cohort).truth_corners_path, dtype={"patient_id": str})


@pytest.fixture(scope="module")
def image(cohort) -> sitk.Image:
    return sitk.ReadImage(str(Cohort.open(cohort).image_path(PID, "xray")))


def _one(truth: pd.DataFrame, pid: str = PID) -> pd.DataFrame:
    return truth[truth["patient_id"] == pid].reset_index(drop=True)


def _pixels(image: sitk.Image, x: float, y: float) -> tuple[float, float]:
    """Pixel coordinates (top-left corner of the image at 0, 0) of a physical point."""
    i, j = image.TransformPhysicalPointToContinuousIndex((x, y))
    return i + 0.5, j + 0.5


def _expected(truth: pd.DataFrame) -> np.ndarray:
    return _one(truth)[["x_mm", "y_mm"]].to_numpy()


# --- the four formats --------------------------------------------------------------------------------------


def test_truth_corners_written_by_synth(cohort, truth, image):
    """truth/corners.csv: four corners per level, inside the radiograph, on the bodies of the reference mask."""
    assert tuple(truth.columns) == COLUMNS
    one = _one(truth)
    assert all(sorted(c) == sorted(CORNERS) for c in one.groupby("level")["corner"].apply(list))
    mask = sitk.ReadImage(str(Cohort.open(cohort).mask_path(PID, "xray")))
    arr = sitk.GetArrayViewFromImage(mask)
    for level, x, y, corner in one[["level", "x_mm", "y_mm", "corner"]].itertuples(index=False):
        # the corner itself may sit on the rounded-off edge; a point 1 mm inside the body is in its label
        c = one[one["level"] == level][["x_mm", "y_mm"]].to_numpy().mean(axis=0)
        p = np.array([x, y]) + _unit(c - np.array([x, y]))
        i, j = (round(v) for v in mask.TransformPhysicalPointToContinuousIndex(tuple(p)))
        assert arr[j, i] == labels.label_of(level), (level, corner)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_csv(cohort, truth, tmp_path):
    f = tmp_path / "corners.csv"
    _one(truth).to_csv(f, index=False)
    cs, problems = load_corners(f, cohort)
    assert problems == [] and cs.patients == [PID]
    np.testing.assert_allclose(cs.table[["x_mm", "y_mm"]].to_numpy(), _expected(truth))


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_slicer(cohort, truth, tmp_path, system):
    sign = -1 if system == "RAS" else 1
    points = [
        {"label": f"{lv}_{c}", "position": [sign * x, sign * y, 0.0]}
        for lv, c, x, y in _one(truth)[["level", "corner", "x_mm", "y_mm"]].itertuples(index=False)
    ]
    doc = {"markups": [{"type": "Fiducial", "coordinateSystem": system, "controlPoints": points}]}
    (tmp_path / PID).mkdir()
    f = tmp_path / PID / "xray.mrk.json"  # the patient is the folder when the file is named by modality
    f.write_text(json.dumps(doc))
    cs, _ = load_corners(tmp_path, cohort)
    assert cs.patients == [PID]
    np.testing.assert_allclose(cs.table[["x_mm", "y_mm"]].to_numpy(), _expected(truth), atol=1e-9)


def test_labelme(cohort, truth, image, tmp_path):
    shapes = [
        {"label": f"{lv}-{c.lower()}", "points": [list(_pixels(image, x, y))], "shape_type": "point"}
        for lv, c, x, y in _one(truth)[["level", "corner", "x_mm", "y_mm"]].itertuples(index=False)
    ]
    shapes.append({"label": "outline", "points": [[1, 1], [5, 5], [1, 5]], "shape_type": "polygon"})
    w, h = image.GetSize()
    doc = {"shapes": shapes, "imagePath": f"{PID}.png", "imageWidth": w, "imageHeight": h}
    (tmp_path / f"{PID}.json").write_text(json.dumps(doc))
    cs, _ = load_corners(tmp_path / f"{PID}.json", cohort)
    np.testing.assert_allclose(cs.table[["x_mm", "y_mm"]].to_numpy(), _expected(truth), atol=1e-6)


def test_cvat(cohort, truth, image, tmp_path):
    w, h = image.GetSize()
    pts = "".join(
        f'<points label="{lv}_{c}" occluded="0" source="manual" points="{px:.6f},{py:.6f}" z_order="0"/>'
        for lv, c, x, y in _one(truth)[["level", "corner", "x_mm", "y_mm"]].itertuples(index=False)
        for px, py in [_pixels(image, x, y)]
    )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
        f'<image id="0" name="{PID}/xray.png" width="{w}" height="{h}">{pts}</image></annotations>'
    )
    (tmp_path / "annotations.xml").write_text(xml)
    cs, _ = load_corners(tmp_path / "annotations.xml", cohort)
    assert cs.patients == [PID]
    np.testing.assert_allclose(cs.table[["x_mm", "y_mm"]].to_numpy(), _expected(truth), atol=1e-5)


# --- one clear message per problem -------------------------------------------------------------------------


def _csv_with(truth: pd.DataFrame, tmp_path: Path, change) -> Path:
    f = tmp_path / "corners.csv"
    change(_one(truth).copy()).to_csv(f, index=False)
    return f


def _problem(cohort, path: Path) -> str:
    with pytest.raises(CdegError) as e:
        load_corners(path, cohort, strict=True)
    line = e.value.one_line()
    assert f"patient {PID}" in line and str(path) in line and "\n" not in line
    return line


def test_missing_corner(cohort, truth, tmp_path):
    f = _csv_with(truth, tmp_path, lambda d: d[~((d.level == "C5") & (d.corner == "PI"))])
    assert "level C5 lacks corner(s) C5_PI" in _problem(cohort, f)


def test_level_twice(cohort, truth, tmp_path):
    f = _csv_with(truth, tmp_path, lambda d: pd.concat([d, d[d.level == "C4"]]))
    assert "C4_AS is given twice" in _problem(cohort, f)


def test_point_outside_image(cohort, truth, tmp_path):
    def away(d):
        d.loc[(d.level == "C6") & (d.corner == "AS"), "x_mm"] = -40.0
        return d

    assert "C6_AS at (-40.0" in _problem(cohort, _csv_with(truth, tmp_path, away))
    assert "outside the image" in _problem(cohort, _csv_with(truth, tmp_path, away))


def test_unknown_level(cohort, truth, tmp_path):
    f = _csv_with(truth, tmp_path, lambda d: d.replace({"level": {"C3": "C9"}}))
    assert "unknown point name 'C9_AS'" in _problem(cohort, f)


def test_bad_patient_left_out_not_the_others(cohort, truth, tmp_path):
    d = truth[truth.patient_id.isin([PID, "NECK0002"])]
    d = d[~((d.patient_id == PID) & (d.level == "C3") & (d.corner == "AS"))]
    d.to_csv(tmp_path / "c.csv", index=False)
    cs, problems = load_corners(tmp_path / "c.csv", cohort)
    assert cs.patients == ["NECK0002"] and [p.patient for p in problems] == [PID]


def test_point_names():
    assert parse_name("c5-as") == ("C5", "AS") and parse_name("T1 PI") == ("T1", "PI")
    with pytest.raises(ValueError, match="expected <level>_<corner>"):
        parse_name("C5_middle")


# --- formulas on a body of known geometry ------------------------------------------------------------------


def _rect(x0: float, y0: float, depth: float, height: float, angle_deg: float, front_extra: float = 0.0):
    """Corners of a depth x height body, its inferior chord turned by angle_deg (posterior end lower), the
    anterior wall `front_extra` mm taller; (x, y) with y downwards."""
    th = math.radians(angle_deg)
    a = np.array([math.cos(th), math.sin(th)])  # AP axis: posterior end lower for positive angles
    n = np.array([-a[1], a[0]])  # inferior
    ai = np.array([x0, y0])
    pi = ai + depth * a
    return {"AI": ai, "PI": pi, "AS": ai - (height + front_extra) * n, "PS": pi - height * n}


def test_formulas_on_known_bodies():
    """Two 15 x 20 mm bodies tilted by 10 deg, C5 wedged, a disc of known heights between them."""
    c6 = _rect(0.0, 0.0, 15.0, 20.0, 10.0)
    n = np.array([-math.sin(math.radians(10)), math.cos(math.radians(10))])
    # C5 sits on C6 with its inferior chord 5 mm above C6's superior one (parallel): a 5 mm disc
    c5 = _rect(*(c6["AS"] - 5.0 * n), 15.0, 20.0, 10.0, front_extra=2.0)
    out = measure_corners({"C5": c5, "C6": c6})
    assert out["C6"]["body_depth_mm"] == pytest.approx(15.0)
    for k in ("anterior", "middle", "posterior"):
        assert out["C6"][f"body_height_{k}_chord_mm"] == pytest.approx(20.0)
        assert out["C5-C6"][f"disc_height_{k}_chord_mm"] == pytest.approx(5.0)
    # corner points see chords, not endplate surfaces: no surface heights come out of them
    assert not any(f in out[lv] for lv in out for f in measures.HEIGHT_FEATURES)
    # C5's anterior wall is 2 mm taller: heights at t = 0.1 / 0.5 / 0.9 of the linear profile
    assert out["C5"]["body_height_anterior_chord_mm"] == pytest.approx(20.0 + 2.0 * 0.9)
    assert out["C5"]["body_height_middle_chord_mm"] == pytest.approx(21.0)
    assert out["C5"]["body_wedge_deg"] == pytest.approx(math.degrees(math.atan(2.0 / 15.0)))
    assert out["C5-C6"]["disc_angle_deg"] == pytest.approx(0.0, abs=1e-9)
    assert out["C5-C6"]["segmental_angle_deg"] == pytest.approx(0.0, abs=1e-9)
    assert out["C5-C6"]["disc_height_index_chord"] == pytest.approx(5.0 / 15.0)


def test_disc_angle_and_cobb_from_tilted_chords():
    """Every body 3 deg more lordotic than the one below: segmental angles 3 deg, Cobb C2-C7 15 deg."""
    bodies, y = {}, 0.0
    for i, name in enumerate(reversed(labels.VERTEBRA_NAMES[:-1])):  # C7 at the bottom, C2 on top
        bodies[name] = _rect(0.0, y, 15.0, 12.0, 3.0 * i)  # posterior end lower: lordotic
        y -= 18.0
    out = measure_corners(bodies)
    assert out["C2-C7"]["cobb_c2c7_deg"] == pytest.approx(15.0)
    for disc in ("C2-C3", "C5-C6"):
        assert out[disc]["segmental_angle_deg"] == pytest.approx(3.0)
        assert out[disc]["disc_angle_deg"] == pytest.approx(3.0)
    assert "body_height_middle_chord_mm" not in out["C2"]  # as from masks: C2 has no heights (dens)


# --- agreement with the synthetic truth ----------------------------------------------------------------------

EXACT = ("body_depth_mm", "body_wedge_deg", "disc_angle_deg", "segmental_angle_deg")


def test_true_corners_give_true_measurements(cohort, truth):
    """On 3 synthetic patients: angles, depth, Cobb and the chord heights equal truth (the generator's chord
    heights come from its own anatomy); the chord heights also equal the surface heights less the endplates'
    concavity, which chords do not see (parabolic endplates: sag sum S = concavity / 0.64, 4 t (1 - t) S
    missing at t), an independent check of the formulas."""
    coh = Cohort.open(cohort)
    cs, _ = load_corners(coh.truth_corners_path, coh)
    levels = pd.read_csv(coh.root / "truth" / "levels.csv", dtype={"patient_id": str})
    cobb = pd.read_csv(coh.truth_patients_path, dtype={"patient_id": str}).set_index("patient_id")
    checked = 0
    for pid in cs.patients[:3]:
        got = measure_corners(cs.points(pid))
        rows = levels[levels.patient_id == pid].set_index("level")
        assert got["C2-C7"]["cobb_c2c7_deg"] == pytest.approx(cobb.loc[pid, "cobb_c2c7_deg"], abs=0.01)
        for level, feats in got.items():
            if level == "C2-C7":
                continue
            r = rows.loc[level]
            for f in (*EXACT, *measures.CHORD_FEATURES.values()):
                if f in feats and np.isfinite(r.get(f, np.nan)):
                    assert feats[f] == pytest.approx(r[f], abs=0.01), (pid, level, f)
                    checked += 1
            if labels.structure(level).kind == "disc":
                a, m, p = (r[f"disc_height_{k}_mm"] for k in ("anterior", "middle", "posterior"))
                sag = (m - 0.5 * (a + p)) / 0.64
                for k, t in (("anterior", 0.1), ("middle", 0.5), ("posterior", 0.9)):
                    want = r[f"disc_height_{k}_mm"] - 4 * t * (1 - t) * sag
                    assert feats[f"disc_height_{k}_chord_mm"] == pytest.approx(want, abs=0.06), (
                        pid,
                        level,
                        k,
                    )
                    checked += 1
    assert checked > 100


# --- feature folder and masks --------------------------------------------------------------------------------


def test_extract_corners_feature_folder(cohort, truth, tmp_path):
    from cdeg.features.corners import extract_corners

    from cdeg.outputs import FeatureFolder

    f = tmp_path / "c.csv"
    truth[truth.patient_id.isin([PID, "NECK0002"])].to_csv(f, index=False)
    res = extract_corners(cohort, f, tmp_path / "feat")
    wide = FeatureFolder(tmp_path / "feat").read()
    assert list(wide["patient_id"]) == Cohort.open(cohort).patient_ids()  # every patient, as cdeg extract
    assert (
        "xray__C5-C6__disc_height_middle_chord_mm" in wide.columns
        and "xray__C2-C7__cobb_c2c7_deg" in wide.columns
    )
    assert wide.set_index("patient_id").loc[["NECK0003"]].isna().all(axis=None)
    assert res.provenance["measured_from"] == "corner points"


def test_masks_from_corners_and_ignore_label_in_dataset_json(cohort, truth, tmp_path):
    from cdeg.segmentation.corners import masks_from_corners
    from cdeg.segmentation.dataset import prepare_dataset

    manifest = masks_from_corners(Cohort.open(cohort).truth_corners_path, cohort, tmp_path / "masks")
    assert manifest["counts"]["written"] == 5
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "masks" / PID / "xray.nii.gz")))
    full = sitk.GetArrayFromImage(sitk.ReadImage(str(Cohort.open(cohort).mask_path(PID, "xray"))))
    assert labels.IGNORE in mask and 105 in mask and 5 in mask
    # the posterior elements of the full mask are unannotated, not background
    posterior = (full == 5) & (mask != 5)
    assert np.mean(mask[posterior] == labels.IGNORE) > 0.9
    # a cohort whose reference masks are the corner masks: the ignore label reaches dataset.json
    coh2 = tmp_path / "cohort"
    shutil.copytree(cohort, coh2, ignore=shutil.ignore_patterns("masks"))
    shutil.copytree(tmp_path / "masks", coh2 / "masks", ignore=shutil.ignore_patterns("*.json"))
    prepare_dataset(coh2, "xray", tmp_path / "ds")
    ds = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert ds["labels"]["ignore"] == max(ds["labels"].values()) == len(labels.STRUCTURES) + 1
    train = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds" / "labelsTr" / f"{PID}.nii.gz")))
    assert (train == ds["labels"]["ignore"]).sum() == (mask == labels.IGNORE).sum()
    # full masks keep dataset.json as before
    prepare_dataset(cohort, "xray", tmp_path / "ds_full")
    assert "ignore" not in json.loads((tmp_path / "ds_full" / "dataset.json").read_text())["labels"]


def test_concave_endplates_follow_the_full_mask_closer_than_chords(cohort, truth, tmp_path):
    """Drawn with the published mean concavity, the corner masks agree with the full masks on more of the
    disc and body pixels than straight chords do; the band around each endplate is unannotated."""
    from cdeg.segmentation.corners import CornerMaskOptions, corner_mask

    coh = Cohort.open(cohort)
    cs, _ = load_corners(coh.truth_corners_path, coh)
    image = sitk.ReadImage(str(coh.image_path(PID, "xray")))
    full = sitk.GetArrayFromImage(sitk.ReadImage(str(coh.mask_path(PID, "xray"))))
    no_band = {"endplate_band_mm": 0.0}
    curved = sitk.GetArrayFromImage(corner_mask(cs.points(PID), image, CornerMaskOptions(**no_band)))
    straight = CornerMaskOptions(superior_depth_mm=0.0, inferior_depth_mm=0.0, **no_band)
    chords = sitk.GetArrayFromImage(corner_mask(cs.points(PID), image, straight))
    disc = np.isin(full, labels.DISC_LABELS)

    def disc_dice(mask):
        m = np.isin(mask, labels.DISC_LABELS)
        return 2 * (m & disc).sum() / (m.sum() + disc.sum())

    assert disc_dice(curved) > disc_dice(chords) + 0.05
    banded = sitk.GetArrayFromImage(corner_mask(cs.points(PID), image))
    assert (banded == labels.IGNORE).sum() > (curved == labels.IGNORE).sum()
    for lab, share in ((5, 0.6), (105, 0.3)):  # most of each body, a good part of each disc stays annotated
        assert (banded == lab).sum() > share * (curved == lab).sum()
    with pytest.raises(ValueError, match="superior_apex"):
        CornerMaskOptions(superior_apex=1.0)


def test_evaluation_leaves_unannotated_pixels_out(cohort, tmp_path):
    """A prediction equal to the full mask scores Dice 1 against a reference that leaves the posterior
    elements unannotated, wherever the prediction puts them."""
    from cdeg.segmentation.evaluate import evaluate_case

    ref = sitk.ReadImage(str(Cohort.open(cohort).mask_path(PID, "xray")))
    arr = sitk.GetArrayFromImage(ref)
    cut = arr.copy()
    cut[:, arr.shape[1] // 2 :][arr[:, arr.shape[1] // 2 :] > 0] = labels.IGNORE
    ref_cut = sitk.GetImageFromArray(cut)
    ref_cut.CopyInformation(ref)
    res = evaluate_case(ref, ref_cut)
    assert all(v["dice"] == 1.0 for v in res["labels"].values())
    with pytest.raises(CdegError, match="not annotated"):
        evaluate_case(ref_cut, ref)


def test_cli(cohort, truth, tmp_path):
    """`cdeg extract --corners` and `cdeg segment masks-from-corners` in-process; a problem is one line."""
    from click.testing import CliRunner

    from cdeg.cli import cli

    f = tmp_path / "c.csv"
    _one(truth).to_csv(f, index=False)
    runner = CliRunner()
    r = runner.invoke(
        cli, ["extract", "--cohort", str(cohort), "--corners", str(f), "--out", str(tmp_path / "feat")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "feat" / "features.parquet").is_file()
    r = runner.invoke(
        cli, ["extract", "--cohort", str(cohort), "--corners", str(f), "--masks", str(tmp_path), "--out", "x"]
    )
    assert r.exit_code != 0 and "leave out --masks" in r.output
    args = ["segment", "masks-from-corners", "--cohort", str(cohort), "--corners", str(f)]
    r = runner.invoke(cli, [*args, "--out", str(tmp_path / "masks")])
    assert r.exit_code == 0 and "1 masks written" in r.output, r.output
    bad = _csv_with(truth, tmp_path, lambda d: d[d.corner != "AI"])
    r = runner.invoke(cli, [*args[:-1], str(bad), "--out", str(tmp_path / "m2"), "--strict"])
    assert r.exit_code != 0 and "lacks corner(s)" in r.output and "Traceback" not in r.output
