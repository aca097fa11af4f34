"""`cdeg extract` end to end on small phantom cohorts: outputs, provenance, resume, jobs, failures, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cdeg.features.extract import extract
from click.testing import CliRunner
from conftest import FAST_RADIOMICS
from phantoms import write_phantom_cohort

from cdeg.cli import cli
from cdeg.io import file_sha256
from cdeg.outputs import FeatureFolder

TABLES = (FeatureFolder.LONG, FeatureFolder.FEATURES, FeatureFolder.FEATURES_CSV)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three phantom patients, both modalities (read-only: copy before changing)."""
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "cohort", n=3, seed=1)


@pytest.fixture(scope="module")
def first_run(cohort, fast_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    return extract(cohort, out, params=fast_params, jobs=1, progress=False)


def _copy(cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(cohort, dst)
    return dst


def test_outputs_and_naming(first_run, fast_params):
    out = first_run.out
    for name in (*TABLES, "provenance.json"):
        assert (out / name).is_file()
    assert not (out / "errors.csv").exists()
    long = pd.read_parquet(out / "features_long.parquet")
    assert list(long.columns) == ["patient_id", "modality", "structure", "level", "feature", "value"]
    assert set(long.structure) == {"vertebra", "disc", "spine"}
    wide = pd.read_parquet(out / "features.parquet")
    assert list(wide.patient_id) == ["P000", "P001", "P002"]
    for col in (
        "mri__C5-C6__original_shape_MeshVolume",
        "xray__C5-C6__disc_height_middle_mm",
        "mri__C5__body_depth_mm",
        "xray__C2-C7__cobb_c2c7_deg",
    ):
        assert col in wide.columns
        assert wide[col].notna().all()
    # Every column is <modality>__<level>__<feature> with a level of the convention (or C2-C7).
    from cdeg import labels

    levels = {s.name for s in labels.STRUCTURES} | {"C2-C7"}
    for col in wide.columns[1:]:
        m, level, feat = col.split("__")
        assert m in ("mri", "xray") and level in levels and feat
    csv = pd.read_csv(out / "features.csv", dtype={"patient_id": str})
    assert np.allclose(csv.iloc[:, 1:].to_numpy(float), wide.iloc[:, 1:].to_numpy(float), equal_nan=True)


def test_disc_heights_match_phantom_truth(first_run, cohort):
    truth = pd.read_csv(cohort / "truth" / "phantom_levels.csv")
    wide = first_run.features.set_index("patient_id")
    err = []
    for _, r in truth.dropna(subset=["disc_height_middle_mm"]).iterrows():
        for m in ("mri", "xray"):
            for f in ("disc_height_anterior_mm", "disc_height_middle_mm", "disc_height_posterior_mm"):
                err.append(wide.loc[r.patient_id, f"{m}__{r.level}__{f}"] - r[f])
    assert np.nanmean(np.abs(err)) < 0.3


def test_provenance(first_run, fast_params, cohort):
    prov = json.loads((first_run.out / "provenance.json").read_text())
    import radiomics

    assert prov["pyradiomics_version"] == radiomics.__version__
    assert prov["parameters"]["mri"]["sha256"] == file_sha256(fast_params)
    assert prov["parameters"]["xray"]["path"] == str(fast_params)
    assert prov["mask_source"]["path"] == str(cohort / "masks")
    assert prov["patients"]["P001"]["mri"]["status"] == "ok"
    assert prov["units"]["extracted"] == 6


def test_params_passed_through_unchanged(cohort, tmp_path):
    p = tmp_path / "firstorder.yaml"
    p.write_text("featureClass:\n  firstorder: [Mean, Maximum]\nsetting:\n  binWidth: 10\n")
    res = extract(cohort, tmp_path / "out", params=p, modality="xray", jobs=1, progress=False)
    rad = res.long[res.long.feature.str.startswith("original_")]
    assert set(rad.feature) == {"original_firstorder_Mean", "original_firstorder_Maximum"}
    assert res.provenance["parameters"]["xray"]["sha256"] == file_sha256(p)
    assert list(res.provenance["parameters"]) == ["xray"]


def test_default_parameters_give_texture(cohort, tmp_path):
    res = extract(cohort, tmp_path / "out", modality="xray", jobs=1, progress=False)
    feats = set(res.long.feature)
    for cls in ("shape2D", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"):
        assert any(f.startswith(f"original_{cls}_") for f in feats), cls
    assert not any(f.startswith("original_shape_") for f in feats)  # radiographs: 2D shape only
    assert res.provenance["parameters"]["xray"]["shipped"] is True


def test_jobs_do_not_change_outputs(first_run, cohort, fast_params, tmp_path):
    res2 = extract(cohort, tmp_path / "j2", params=fast_params, jobs=2, progress=False)
    for name in TABLES:
        assert (first_run.out / name).read_bytes() == (res2.out / name).read_bytes(), name


def test_a_parameter_mapping_equals_its_file_and_reuses_its_cache(first_run, cohort, tmp_path):
    import yaml

    mapping = yaml.safe_load(FAST_RADIOMICS)
    # A file holding the mapping as cdeg run used to write it: the same hash, so finished units are reused.
    written = tmp_path / "written.yaml"
    written.write_text(yaml.safe_dump(mapping, sort_keys=False))
    from_file = extract(cohort, tmp_path / "file", params=written, jobs=1, progress=False)
    out = tmp_path / "mapping"
    shutil.copytree(from_file.out, out)
    res = extract(cohort, out, params=mapping, jobs=1, progress=False)
    assert res.provenance["units"]["reused_from_cache"] == 6
    assert res.provenance["parameters"]["mri"]["sha256"] == file_sha256(written)
    assert res.provenance["parameters"]["mri"]["inline"] == mapping
    fresh = extract(cohort, tmp_path / "fresh", params=mapping, jobs=1, progress=False)
    assert fresh.provenance["units"]["extracted"] == 6
    for name in TABLES:
        assert (first_run.out / name).read_bytes() == (fresh.out / name).read_bytes(), name


def test_resume_recomputes_only_missing_units(first_run, cohort, fast_params, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(first_run.out, out)
    # An interrupted run: one unit's cache is gone, another's is half written (table without its JSON),
    # and the final tables were never written.
    (out / "cache" / "P001" / "mri.json").unlink()
    (out / "cache" / "P001" / "mri.parquet").unlink()
    (out / "cache" / "P002" / "xray.json").unlink()
    for name in TABLES:
        (out / name).unlink()
    res = extract(cohort, out, params=fast_params, jobs=1, progress=False)
    assert res.provenance["units"] == {"extracted": 2, "reused_from_cache": 4, "status_ok": 6}
    assert res.provenance["patients"]["P001"]["mri"]["cached"] is False
    assert res.provenance["patients"]["P000"]["mri"]["cached"] is True
    for name in TABLES:
        assert (first_run.out / name).read_bytes() == (out / name).read_bytes(), name
    # Changed parameters invalidate every unit.
    p2 = tmp_path / "p2.yaml"
    p2.write_text(FAST_RADIOMICS.replace("binWidth: 5", "binWidth: 7"))
    res = extract(cohort, out, params=p2, jobs=1, progress=False)
    assert res.provenance["units"]["extracted"] == 6


def test_progress_reports_each_extracted_unit(first_run, cohort, fast_params, tmp_path):
    out = tmp_path / "progress"
    shutil.copytree(first_run.out, out)
    for unit in ("P000/xray", "P002/mri"):
        (out / "cache" / f"{unit}.json").unlink()
    calls: list[tuple[str, int, int]] = []
    res = extract(cohort, out, params=fast_params, jobs=1, progress=lambda *a: calls.append(a))
    # Units reused from the cache are not reported: only the two extracted.
    assert calls == [("extract", 0, 2), ("extract", 1, 2), ("extract", 2, 2)]
    # What extract returns is what provenance.json holds, with the library versions of the stage.
    assert json.loads(FeatureFolder(out).manifest.read_text()) == res.provenance
    assert res.provenance["versions"]["pyradiomics"] is not None


def test_changed_input_invalidates_its_unit(first_run, cohort, fast_params, tmp_path):
    c2 = _copy(cohort, tmp_path)
    out = tmp_path / "out"
    shutil.copytree(first_run.out, out)
    img = sitk.ReadImage(str(c2 / "images" / "P000" / "xray.nii.gz"))
    sitk.WriteImage(img * 2.0, str(c2 / "images" / "P000" / "xray.nii.gz"))
    res = extract(c2, out, params=fast_params, jobs=1, progress=False)
    assert res.provenance["units"]["extracted"] == 1
    assert res.provenance["patients"]["P000"]["xray"]["cached"] is False


def test_missing_files_and_levels(cohort, fast_params, tmp_path):
    c2 = _copy(cohort, tmp_path)
    (c2 / "images" / "P001" / "mri.nii.gz").unlink()
    # P002's radiograph mask lacks C6-C7: missing values, not a failure.
    mpath = c2 / "masks" / "P002" / "xray.nii.gz"
    m = sitk.ReadImage(str(mpath))
    arr = sitk.GetArrayFromImage(m)
    arr[arr == 106] = 0
    m2 = sitk.GetImageFromArray(arr)
    m2.CopyInformation(m)
    sitk.WriteImage(m2, str(mpath))
    res = extract(c2, tmp_path / "out", params=fast_params, jobs=1, progress=False)
    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert list(errors.columns) == ["patient_id", "modality", "structure", "message"]
    assert errors.patient_id.tolist() == ["P001"]
    assert "image missing" in errors.message[0]
    assert res.provenance["patients"]["P001"]["mri"]["status"] == "missing"
    assert res.provenance["patients"]["P001"]["xray"]["status"] == "ok"
    wide = res.features.set_index("patient_id")
    assert wide.filter(like="mri__").loc["P001"].isna().all()
    assert wide.filter(like="xray__").loc["P001"].notna().any()
    assert np.isnan(wide.loc["P002", "xray__C6-C7__disc_height_middle_mm"])
    assert np.isnan(wide.loc["P002", "xray__C6-C7__original_firstorder_Mean"])
    assert np.isfinite(wide.loc["P002", "xray__C5-C6__disc_height_middle_mm"])


def _shift_mask(path: Path, dx: float) -> None:
    m = sitk.ReadImage(str(path))
    o = list(m.GetOrigin())
    o[0] += dx
    m.SetOrigin(o)
    sitk.WriteImage(m, str(path))


def test_geometry_mismatch(cohort, fast_params, tmp_path, caplog):
    c2 = _copy(cohort, tmp_path)
    _shift_mask(c2 / "masks" / "P000" / "xray.nii.gz", 0.2)  # within the 1 mm tolerance: resampled
    _shift_mask(c2 / "masks" / "P001" / "xray.nii.gz", 5.0)  # beyond: that unit is skipped by the input check
    with caplog.at_level("WARNING"):
        res = extract(c2, tmp_path / "out", params=fast_params, modality="xray", jobs=1, progress=False)
    pat = res.provenance["patients"]
    assert pat["P000"]["xray"]["status"] == "ok"
    assert "resampled nearest-neighbour" in pat["P000"]["xray"]["warnings"][0]
    assert any("resampled nearest-neighbour" in r.message for r in caplog.records)
    assert pat["P001"]["xray"]["status"] == "skipped"
    assert "beyond the 1 mm tolerance" in pat["P001"]["xray"]["errors"][0]
    assert pat["P002"]["xray"]["status"] == "ok"
    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert errors.patient_id.tolist() == ["P001"]


def test_wrong_dimension_is_a_problem_found_before_extraction(cohort, fast_params, tmp_path, caplog):
    c2 = _copy(cohort, tmp_path)
    shutil.copy(c2 / "images" / "P000" / "xray.nii.gz", c2 / "images" / "P000" / "mri.nii.gz")
    with caplog.at_level("INFO"):
        res = extract(c2, tmp_path / "out", params=fast_params, modality="mri", jobs=1, progress=False)
    assert any("1 of 3 patients with a missing or unusable file" in r.message for r in caplog.records)
    assert "mri must be 3D" in res.provenance["patients"]["P000"]["mri"]["errors"][0]


def test_option_errors(cohort, tmp_path):
    with pytest.raises(ValueError, match="unknown modality"):
        extract(cohort, tmp_path / "o", modality="ct", progress=False)
    with pytest.raises(ValueError, match="jobs"):
        extract(cohort, tmp_path / "o", jobs=-1, progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("featureClass:\n  nosuch:\n")
    from cdeg.errors import CdegError

    with pytest.raises(CdegError, match="PyRadiomics"):
        extract(cohort, tmp_path / "o", params=bad, progress=False)
    assert not (tmp_path / "o" / "cache").exists()  # nothing extracted


def test_cli(cohort, fast_params, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    r = runner.invoke(
        cli,
        [
            "--no-progress",
            "extract",
            "--cohort",
            str(cohort),
            "--modality",
            "xray",
            "--params",
            str(fast_params),
            "--jobs",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (out / "features.parquet").is_file()
    r = runner.invoke(cli, ["extract", "--cohort", str(cohort), "--modality", "ct", "--out", str(out)])
    assert r.exit_code == 2 and "unknown modality" in r.output
    r = runner.invoke(cli, ["extract", "--cohort", str(tmp_path / "nowhere"), "--out", str(out)])
    assert r.exit_code == 1 and "Error:" in r.output
    r = runner.invoke(cli, ["extract", "--print-params"])
    assert r.exit_code == 0 and "resampledPixelSpacing" in r.output


def test_pyradiomics_is_not_imported_by_the_cli_or_package():
    code = "import sys, cdeg, cdeg.cli, cdeg.features; assert 'radiomics' not in sys.modules, 'radiomics imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
