"""Every stage checks its inputs with the checks of `cdeg check` before any work (issue #7).

For each command, a small cohort with one bad patient (a truncated NIfTI, a radiograph stored as a 3D
volume, a mask on another grid, a label outside the convention, a bad clinical value): without --strict
the command succeeds, prints one line naming the patient and the file, and the other patients' outputs
are there; with --strict it exits 1 with that line and writes nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk
from click.testing import CliRunner, Result

from cdeg.check import check_stage_cohort, check_stage_table
from cdeg.cli import cli
from cdeg.errors import CdegError, CohortError
from cdeg.io import write_table

# A light PyRadiomics file: PyRadiomics really runs, in well under a second per radiograph.
LIGHT_PARAMS = """\
imageType: {Original: {}}
featureClass: {shape2D: null, firstorder: null}
setting: {normalize: true, force2D: true, force2Ddimension: 0, binWidth: 5, label: 1}
"""
# The smallest modelling protocol that runs every model (seconds, not minutes).
FIT_ARGS = ["--trials", "2", "--outer-folds", "2", "--repeats", "1", "--jobs", "1"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--no-progress", *args])


def _named(result: Result, pid: str, file: str) -> list[str]:
    """The output lines naming patient `pid` and a path ending in `file`; no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    return [ln for ln in result.output.splitlines() if f"patient {pid} / " in ln and file in ln]


def _assert_strict_failure(result: Result, pid: str, file: str) -> None:
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and f"patient {pid} / " in errors[0] and file in errors[0], result.output
    assert "Traceback" not in result.output


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _as_3d(path: Path) -> None:
    """A radiograph saved as a 3D volume of two slices (a common export mistake)."""
    img = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([img, img]), str(path), useCompression=True)


def _shift(path: Path, mm: float) -> None:
    m = sitk.ReadImage(str(path))
    m.SetOrigin(tuple(o + (mm if i == 0 else 0.0) for i, o in enumerate(m.GetOrigin())))
    sitk.WriteImage(m, str(path), useCompression=True)


def _foreign_label(path: Path, value: int = 9) -> None:
    m = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(m)
    arr.flat[0] = value
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(m)
    sitk.WriteImage(out, str(path), useCompression=True)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four box-phantom patients P000-P003, radiographs with reference masks. Read-only."""
    from cdeg.segmentation.phantom import write_phantom_cohort

    root = write_phantom_cohort(
        tmp_path_factory.mktemp("stage") / "cohort", n=4, seed=3, modalities=("xray",)
    )
    # A clinical table with an out-of-range score: not the imaging stages' concern.
    (root / "clinical.csv").write_text("patient_id,ndi_0\nP000,130\nP001,20\nP002,30\nP003,40\n")
    return root


# --- the rule, on the API -------------------------------------------------------------------------------------


def test_cohort_level_problems_stop_and_file_problems_skip(phantoms: Path, tmp_path: Path, caplog) -> None:
    c = _copy(phantoms, tmp_path / "c")
    _truncate(c / "images" / "P001" / "xray.nii.gz")
    with caplog.at_level("WARNING"):
        check = check_stage_cohort("extract", c, modalities="xray")
    assert [f.patient for f in check.errors] == ["P001"]  # P000's NDI of 130 is not extraction's concern
    assert check.problems("P001", "xray") and not check.problems("P000", "xray")
    assert check.reason("P000", "xray") is None and "P001/xray.nii.gz" in (check.reason("P001", "xray") or "")
    assert any("patient P001 / " in r.getMessage() and str(c) in r.getMessage() for r in caplog.records)
    with pytest.raises(CdegError, match=r"^patient P001 / .*P001/xray\.nii\.gz: .*strict"):
        check_stage_cohort("extract", c, modalities="xray", strict=True)
    (c / "clinical.csv").write_text("patient_id\nP000\nP000\nP001\n")
    # A repeated id costs only its patient: extraction reads no clinical value, so only --strict stops.
    assert not check_stage_cohort("extract", c, modalities="xray").problems("P000", "xray")
    with pytest.raises(CdegError, match=r"clinical\.csv: patient_id P000 appears on lines 2, 3"):
        check_stage_cohort("extract", c, modalities="xray", strict=True)
    (c / "clinical.csv").unlink()
    with pytest.raises(CohortError, match="clinical.csv is missing"):
        check_stage_cohort("extract", c)


def test_table_check_counts_only_the_columns_a_stage_uses(tmp_path: Path) -> None:
    table = tmp_path / "c.csv"
    table.write_text("patient_id,age,ndi_2y\nA,50,30\nB,abc,40\nC,60,150\n")
    check = check_stage_table("fit", table, uses=lambda c: c != "ndi_2y")
    assert list(check.skipped) == ["B"] and "c.csv: age = 'abc' is not a number" in check.skipped["B"][0]
    assert [f.patient for f in check.ignored] == ["C"]  # NDI at 2 years is an outcome, never a predictor
    write_table(tmp_path / "c.parquet", pd.DataFrame({"patient_id": [1, 2], "age": [50.0, 300.0]}))
    assert list(check_stage_table("fit", tmp_path / "c.parquet").skipped) == ["2"]


# --- segment prepare / train / predict ------------------------------------------------------------------------


def test_segment_prepare(phantoms: Path, tmp_path: Path) -> None:
    c = _copy(phantoms, tmp_path / "c")
    _truncate(c / "images" / "P001" / "xray.nii.gz")
    out = tmp_path / "raw"
    r = _invoke("segment", "prepare", "--cohort", str(c), "--modality", "xray", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert _named(r, "P001", "images/P001/xray.nii.gz")
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["cdeg"]["cases"] == ["P000", "P002", "P003"] and list(ds["cdeg"]["skipped"]) == ["P001"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [
        "P000.nii.gz",
        "P002.nii.gz",
        "P003.nii.gz",
    ]

    strict_out = tmp_path / "raw_strict"
    r = _invoke(
        "segment", "prepare", "--cohort", str(c), "--modality", "xray", "--out", str(strict_out), "--strict"
    )
    _assert_strict_failure(r, "P001", "images/P001/xray.nii.gz")
    assert not strict_out.exists()


@pytest.fixture(scope="module")
def trained(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path, Path]:
    """`cdeg segment train` (smoke preset) on the phantoms, P002's reference mask holding label 9."""
    tmp = tmp_path_factory.mktemp("train")
    c = _copy(phantoms, tmp / "c")
    _foreign_label(c / "masks" / "P002" / "xray.nii.gz")
    model = tmp / "model"
    r = _invoke(
        "segment", "train", "--cohort", str(c), "--modality", "xray", "--out", str(model),
        "--preset", "smoke", "--device", "cpu",
    )  # fmt: skip
    return r, c, model


def test_segment_train_strict_writes_nothing(phantoms: Path, tmp_path: Path) -> None:
    c = _copy(phantoms, tmp_path / "c")
    _foreign_label(c / "masks" / "P002" / "xray.nii.gz")
    model = tmp_path / "model"
    r = _invoke(
        "segment", "train", "--cohort", str(c), "--modality", "xray", "--out", str(model),
        "--preset", "smoke", "--device", "cpu", "--strict",
    )  # fmt: skip
    _assert_strict_failure(r, "P002", "masks/P002/xray.nii.gz")
    assert "label value(s) 9" in r.output and not model.exists()


@pytest.mark.slow
def test_segment_train_leaves_the_bad_patient_out(trained: tuple[Result, Path, Path]) -> None:
    r, _, model = trained
    assert r.exit_code == 0, r.output
    assert _named(r, "P002", "masks/P002/xray.nii.gz") and "1 patient(s) skipped" in r.output
    manifest = json.loads((model / "cdeg_model.json").read_text())
    assert manifest["status"] == "complete" and manifest["cohort"]["n_cases"] == 3
    assert list(manifest["cohort"]["skipped"]) == ["P002"]


@pytest.mark.slow
def test_segment_predict(trained: tuple[Result, Path, Path], tmp_path: Path) -> None:
    _, trained_on, model = trained
    c = _copy(trained_on, tmp_path / "c")  # P002's mask has label 9: masks are not predict's concern
    _as_3d(c / "images" / "P001" / "xray.nii.gz")
    out = tmp_path / "masks"
    args = ["segment", "predict", "--cohort", str(c), "--modality", "xray", "--model", str(model)]
    r = _invoke(*args, "--out", str(out), "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert any("must be 2D" in ln for ln in _named(r, "P001", "images/P001/xray.nii.gz"))
    s = json.loads((out / "segment_predict_xray.json").read_text())
    assert s["patients"]["P001"]["status"] == "skipped" and s["input_check"]["errors"] == 1
    assert all(s["patients"][p]["status"] in ("ok", "flagged", "empty") for p in ("P000", "P002", "P003"))
    assert "P001,xray,dimensions" in (out / "qc.csv").read_text()

    strict_out = tmp_path / "masks_strict"
    r = _invoke(*args, "--out", str(strict_out), "--device", "cpu", "--strict")
    _assert_strict_failure(r, "P001", "images/P001/xray.nii.gz")
    assert not strict_out.exists()


# --- extract -------------------------------------------------------------------------------------------------


@pytest.mark.radiomics
def test_extract(phantoms: Path, tmp_path: Path) -> None:
    c = _copy(phantoms, tmp_path / "c")
    _shift(c / "masks" / "P001" / "xray.nii.gz", 5.0)  # beyond the 1 mm tolerance
    _shift(c / "masks" / "P002" / "xray.nii.gz", 0.2)  # within it: resampled with a warning, not skipped
    params = tmp_path / "light.yaml"
    params.write_text(LIGHT_PARAMS)
    args = ["extract", "--cohort", str(c), "--modality", "xray", "--params", str(params), "--jobs", "1"]
    out = tmp_path / "features"
    r = _invoke(*args, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert any("origin" in ln for ln in _named(r, "P001", "masks/P001/xray.nii.gz"))
    prov = json.loads((out / "provenance.json").read_text())
    status = {p: v["xray"]["status"] for p, v in prov["patients"].items()}
    assert status["P001"] == "skipped" and status["P000"] != "skipped" and status["P002"] != "skipped"
    assert list(prov["input_check"]["skipped"]) == ["P001"]
    wide = pd.read_parquet(out / "features.parquet").set_index("patient_id")
    assert wide.loc["P001"].isna().all()
    for pid in ("P000", "P002", "P003"):  # P000's NDI of 130 does not matter to extraction
        assert wide.loc[pid].notna().sum() > 10, pid
    assert pd.read_csv(out / "errors.csv").query("patient_id == 'P001'").shape[0] == 1

    strict_out = tmp_path / "features_strict"
    r = _invoke(*args, "--out", str(strict_out), "--strict")
    _assert_strict_failure(r, "P001", "masks/P001/xray.nii.gz")
    assert not strict_out.exists()


# --- fit / predict / validate -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Simulated features and clinical tables of 40 patients, and an inner-fold config for speed."""
    from cdeg.modeling.simulate import simulate

    tmp = tmp_path_factory.mktemp("tables")
    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    (tmp / "fit.yaml").write_text("inner_folds: 2\nstartup_trials: 2\n")
    return tmp / "f.csv", tmp / "c.csv", tmp / "fit.yaml"


def _edit(src: Path, dst: Path, pid: str, column: str, value: str) -> Path:
    df = pd.read_csv(src, dtype=str)
    df.loc[df["patient_id"] == pid, column] = value
    df.to_csv(dst, index=False)
    return dst


@pytest.fixture(scope="module")
def fitted(tables: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    """`cdeg fit` with text in P0005's age (a predictor) and in P0007's NDI at 2 years (an outcome)."""
    feat, clin, cfg = tables
    tmp = tmp_path_factory.mktemp("fit")
    bad = _edit(clin, tmp / "c.csv", "P0005", "age", "abc")
    bad = _edit(bad, bad, "P0007", "ndi_2y", "n/a")
    run = tmp / "run"
    args = ["--features", str(feat), "--clinical", str(bad), "--target", "accelerated", "--config", str(cfg)]
    r = _invoke("fit", *args, *FIT_ARGS, "--out", str(run))
    return r, run


@pytest.mark.slow
def test_fit(fitted: tuple[Result, Path], tables: tuple[Path, Path, Path], tmp_path: Path) -> None:
    r, run = fitted
    assert r.exit_code == 0, r.output
    assert any("age = 'abc'" in ln for ln in _named(r, "P0005", "c.csv"))
    assert not _named(r, "P0007", "c.csv")  # an outcome column is never a predictor: not fit's concern
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_patients"] == 39 and list(metrics["data"]["skipped_patients"]) == ["P0005"]
    oof = pd.read_csv(run / "oof_predictions.csv", dtype={"patient_id": str})
    assert "P0005" not in set(oof.patient_id) and len(set(oof.patient_id)) == 39

    feat, clin, cfg = tables
    bad = _edit(clin, tmp_path / "c.csv", "P0005", "age", "abc")
    out = tmp_path / "run_strict"
    args = ["--features", str(feat), "--clinical", str(bad), "--target", "accelerated", "--config", str(cfg)]
    r = _invoke("fit", *args, *FIT_ARGS, "--out", str(out), "--strict")
    _assert_strict_failure(r, "P0005", "c.csv")
    assert not out.exists()


@pytest.mark.slow
def test_predict_and_validate(
    fitted: tuple[Result, Path], tables: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, run = fitted
    feat, clin, _ = tables
    bad = _edit(clin, tmp_path / "c.csv", "P0003", "bmi", "500")  # outside [10, 80]
    bad = _edit(bad, bad, "P0004", "accelerated", "3")  # a target that is not 0/1
    common = ["--model", str(run / "model"), "--features", str(feat), "--clinical", str(bad)]

    r = _invoke("predict", *common, "--no-waterfalls", "--out", str(tmp_path / "pred"))
    assert r.exit_code == 0, r.output
    assert any("bmi = 500" in ln for ln in _named(r, "P0003", "c.csv"))
    assert not _named(r, "P0004", "c.csv")  # the target is not an input of predict
    preds = pd.read_csv(tmp_path / "pred" / "predictions.csv", dtype={"patient_id": str})
    assert len(preds) == 39 and "P0003" not in set(preds.patient_id)
    assert list(json.loads((tmp_path / "pred" / "predict.json").read_text())["skipped_patients"]) == ["P0003"]
    r = _invoke("predict", *common, "--no-waterfalls", "--out", str(tmp_path / "pred_s"), "--strict")
    _assert_strict_failure(r, "P0003", "c.csv")
    assert not (tmp_path / "pred_s").exists()

    r = _invoke("validate", *common, "--target", "accelerated", "--out", str(tmp_path / "val"))
    assert r.exit_code == 0, r.output
    assert _named(r, "P0003", "c.csv") and any("accelerated = 3" in ln for ln in _named(r, "P0004", "c.csv"))
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics["n_patients"] == 38 and sorted(metrics["skipped_patients"]) == ["P0003", "P0004"]
    r = _invoke("validate", *common, "--target", "accelerated", "--out", str(tmp_path / "val_s"), "--strict")
    _assert_strict_failure(r, "P0003", "c.csv")
    assert not (tmp_path / "val_s").exists()


# --- cdeg run -------------------------------------------------------------------------------------------------


def _study(tmp_path: Path, cohort: Path, **extra: object) -> Path:
    import yaml

    data = {
        "name": "stage checks",
        "out": str(tmp_path / "run"),
        "jobs": 1,
        "cohorts": {"development": {"path": str(cohort)}},
        "segmentation": {"enabled": False},
        "extract": {"modalities": ["xray"], "radiomics": yaml.safe_load(LIGHT_PARAMS)},
        "fit": {"trials": 2, "outer_folds": 2, "repeats": 1},
        "targets": {"accelerated": {"development": "development"}},
        "report": {"patient_cards": False},
        **extra,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.radiomics
def test_run_skips_the_patient_in_every_stage(tmp_path: Path) -> None:
    """A whole study (extract, fit, report) on ten phantoms, P001's radiograph truncated: nine analysed."""
    from cdeg.segmentation.phantom import write_phantom_cohort

    c = write_phantom_cohort(tmp_path / "c", n=10, seed=4, modalities=("xray",))
    rows = "".join(f"P{i:03d},{i % 2},{40 + i}\n" for i in range(10))
    (c / "clinical.csv").write_text("patient_id,accelerated,age\n" + rows)
    _truncate(c / "images" / "P001" / "xray.nii.gz")
    fit_cfg = tmp_path / "fit.yaml"
    fit_cfg.write_text("inner_folds: 2\nstartup_trials: 2\n")
    study = _study(tmp_path, c, fit={"trials": 2, "outer_folds": 2, "repeats": 1, "config": str(fit_cfg)})
    r = _invoke("run", "--config", str(study))
    assert r.exit_code == 0, r.output
    assert _named(r, "P001", "images/P001/xray.nii.gz") and "Report: " in r.output
    prov = json.loads((tmp_path / "run" / "features" / "development" / "provenance.json").read_text())
    assert prov["patients"]["P001"]["xray"]["status"] == "skipped"
    assert sum(v["xray"]["status"] != "skipped" for v in prov["patients"].values()) == 9
    stage = json.loads((tmp_path / "run" / "features" / "development" / "cdeg_stage.json").read_text())
    assert stage["result"]["skipped_for_bad_input"] == ["P001"]
    assert (tmp_path / "run" / "report" / "report.html").is_file()


@pytest.mark.radiomics
def test_run_strict_stops_in_the_first_stage_that_reads_the_file(phantoms: Path, tmp_path: Path) -> None:
    c = _copy(phantoms, tmp_path / "c")
    _truncate(c / "images" / "P001" / "xray.nii.gz")
    r = _invoke("run", "--config", str(_study(tmp_path, c)), "--strict")
    _assert_strict_failure(r, "P001", "images/P001/xray.nii.gz")
    assert not (tmp_path / "run" / "features" / "development" / "features.parquet").exists()
    r = _invoke("run", "--config", str(_study(tmp_path, c, strict=True)))  # the configuration key
    _assert_strict_failure(r, "P001", "images/P001/xray.nii.gz")
