"""`cdeg check`: a clean cohort passes, each planted problem is found, nothing crashes on odd tables."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdeg.check import (
    CheckConfig,
    Finding,
    check_cohort,
    load_check_config,
    nifti_truncation,
    raise_on_errors,
)
from cdeg.cli import cli
from cdeg.cohort import ID_COLUMN, CohortMeta, read_clinical, write_cohort_json
from cdeg.errors import CdegError, CohortError


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    from cdeg.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("check") / "neck4", profile="neck", n=4, seed=5, progress=False)


@pytest.fixture
def cohort(clean, tmp_path):
    """A private copy of the clean cohort to plant problems in."""
    return Path(shutil.copytree(clean, tmp_path / "c"))


def _pid(root: Path, i: int = 0) -> str:
    return sorted(p.name for p in (root / "images").iterdir())[i]


def _with_image(root: Path, modality: str) -> str:
    return next(
        p
        for p in sorted(p.name for p in (root / "images").iterdir())
        if (root / "images" / p / f"{modality}.nii.gz").exists()
    )


def _edit_clinical(root: Path, row: int, column: str, value: str) -> None:
    df = pd.read_csv(root / "clinical.csv", dtype=str)
    df.loc[row, column] = value
    df.to_csv(root / "clinical.csv", index=False)


def _found(findings: list[Finding], check: str, patient: str | None = None) -> list[Finding]:
    return [f for f in findings if f.check == check and (patient is None or f.patient == patient)]


def test_clean_cohort_passes(clean):
    assert check_cohort(clean) == []
    result = CliRunner().invoke(cli, ["check", "--cohort", str(clean)])
    assert result.exit_code == 0 and "no problems found" in result.output


def test_shipped_config_validates_and_rejects_unknown_keys(tmp_path):
    cfg = load_check_config()
    assert cfg.ranges["ndi_*"] == (0.0, 100.0) and cfg.ranges["age"] == (0.0, 120.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rangez: {}\n")
    with pytest.raises(CdegError, match="rangez"):
        load_check_config(bad)


def test_truncated_nifti(cohort):
    pid = _with_image(cohort, "mri")
    path = cohort / "images" / pid / "mri.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert nifti_truncation(path)
    f = _found(check_cohort(cohort), "truncated", pid) + _found(check_cohort(cohort), "unreadable", pid)
    assert f and f[0].severity == "error" and f[0].file == f"images/{pid}/mri.nii.gz"


def test_geometry_mismatch(cohort):
    pid = _with_image(cohort, "xray")
    path = cohort / "masks" / pid / "xray.nii.gz"
    mask = sitk.ReadImage(str(path))
    mask.SetOrigin((5.0, 0.0))
    sitk.WriteImage(mask, str(path), useCompression=True)
    f = _found(check_cohort(cohort), "geometry", pid)
    assert len(f) == 1 and "origin" in f[0].message


def test_label_outside_convention(cohort):
    pid = _with_image(cohort, "mri")
    path = cohort / "masks" / pid / "mri.nii.gz"
    mask = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(mask)
    arr[0, 0, 0] = 9
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(mask)
    sitk.WriteImage(out, str(path), useCompression=True)
    f = _found(check_cohort(cohort), "labels", pid)
    assert len(f) == 1 and "9" in f[0].message and f[0].severity == "error"


def test_2d_mri(cohort):
    pid = _with_image(cohort, "mri")
    path = cohort / "images" / pid / "mri.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(path))[:, :, 0], str(path), useCompression=True)
    f = _found(check_cohort(cohort), "dimensions", pid)
    assert len(f) == 1 and "3D" in f[0].message
    (cohort / "masks" / pid / "mri.nii.gz").unlink()


def test_duplicate_id(cohort):
    _edit_clinical(cohort, 1, ID_COLUMN, pd.read_csv(cohort / "clinical.csv", dtype=str)[ID_COLUMN][0])
    f = _found(check_cohort(cohort), "duplicate_id")
    assert len(f) == 1 and "lines 2, 3" in f[0].message


def test_orphan_image_folder(cohort):
    shutil.copytree(cohort / "images" / _pid(cohort), cohort / "images" / "ORPHAN01")
    f = _found(check_cohort(cohort), "image_without_clinical")
    assert [x.patient for x in f] == ["ORPHAN01"]


def test_text_in_numeric_column_names_patient_and_value(cohort):
    _edit_clinical(cohort, 2, "age", "abc")
    pid = pd.read_csv(cohort / "clinical.csv", dtype=str)[ID_COLUMN][2]
    f = _found(check_cohort(cohort), "non_numeric", pid)
    assert len(f) == 1 and "age" in f[0].message and "'abc'" in f[0].message


def test_out_of_range_score(cohort):
    _edit_clinical(cohort, 1, "ndi_0", "130")
    pid = pd.read_csv(cohort / "clinical.csv", dtype=str)[ID_COLUMN][1]
    f = _found(check_cohort(cohort), "out_of_range", pid)
    assert len(f) == 1 and "ndi_0 = 130" in f[0].message and "[0, 100]" in f[0].message


def test_user_config_changes_a_range(cohort, tmp_path):
    _edit_clinical(cohort, 1, "ndi_0", "130")
    cfg = tmp_path / "check.yaml"
    cfg.write_text('ranges:\n  "ndi_*": [0, 150]\n')
    assert _found(check_cohort(cohort, config=cfg), "out_of_range") == []


def test_cli_reports_errors_without_traceback_and_strict_warnings(cohort):
    _edit_clinical(cohort, 1, "ndi_0", "130")
    result = CliRunner().invoke(cli, ["check", "--cohort", str(cohort)])
    assert result.exit_code == 1 and "out_of_range" in result.output and "Traceback" not in result.output
    assert "1 errors" in result.output and any(
        ln.startswith("patient_id ") for ln in result.output.splitlines()
    )
    _edit_clinical(cohort, 1, "ndi_0", "30")
    pid = _with_image(cohort, "xray")
    (cohort / "images" / pid / "xray.nii.gz").unlink()
    (cohort / "masks" / pid / "xray.nii.gz").unlink()
    assert CliRunner().invoke(cli, ["check", "--cohort", str(cohort)]).exit_code == 0  # a warning only
    strict = CliRunner().invoke(cli, ["check", "--cohort", str(cohort), "--strict", "--format", "csv"])
    assert strict.exit_code == 1 and "missing_image" in strict.output
    missing = CliRunner().invoke(cli, ["check", "--cohort", str(cohort / "nope")])
    assert missing.exit_code == 1 and "does not exist" in missing.output and "Traceback" not in missing.output


def test_external_mask_folder(cohort, tmp_path):
    pid = _with_image(cohort, "mri")
    pred = tmp_path / "pred"
    (pred / pid).mkdir(parents=True)
    mask = sitk.ReadImage(str(cohort / "masks" / pid / "mri.nii.gz"))
    sitk.WriteImage(mask[:, :, :-1], str(pred / pid / "mri.nii.gz"))
    f = check_cohort(cohort, masks=pred)
    assert [(x.check, x.patient) for x in f if x.severity == "error"] == [("geometry", pid)]
    assert f[0].file.endswith(f"{pid}/mri.nii.gz")


def test_raise_on_errors_summarises():
    findings = [
        Finding("P1", "clinical.csv", "out_of_range", "error", "age = 130 is outside [0, 120]"),
        Finding("P2", "", "missing_image", "warning", "no mri image"),
    ]
    with pytest.raises(CohortError, match="1 patients with problems"):
        raise_on_errors(findings)
    raise_on_errors(findings[1:])
    with pytest.raises(CohortError):
        raise_on_errors(findings[1:], strict=True)
    with pytest.raises(ValueError):
        Finding("", "", "x", "fatal", "")


def test_hundred_patients_in_a_few_seconds(clean, tmp_path):
    """Header reads only (plus small masks): 100 patients in well under 10 s of CPU (CPU time, not wall time, so
    that other jobs on the machine cannot fail it)."""
    root = tmp_path / "big"
    src = _with_image(clean, "mri")
    ids = [f"B{i:04d}" for i in range(100)]
    for kind in ("images", "masks"):
        for pid in ids:
            (root / kind / pid).mkdir(parents=True)
            for f in (clean / kind / src).iterdir():
                os.symlink(f, root / kind / pid / f.name)
    pd.DataFrame({ID_COLUMN: ids, "age": 50}).to_csv(root / "clinical.csv", index=False)
    write_cohort_json(root, CohortMeta(name="big", profile="external", n_patients=100))
    t0 = time.process_time()
    findings = check_cohort(root)
    elapsed = time.process_time() - t0
    assert findings == [] and elapsed < 10, elapsed


# --- property-based: odd clinical tables never crash ----------------------------------------------

_values = st.one_of(st.text(max_size=12), st.integers(-(10**6), 10**6), st.floats(allow_nan=True), st.none())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(st.one_of(st.text(max_size=10), st.none()), min_size=0, max_size=6),
    ages=st.lists(_values, min_size=6, max_size=6),
)
def test_odd_clinical_tables_only_raise_cohort_errors(tmp_path, ids, ages):
    root = tmp_path / "prop"
    root.mkdir(exist_ok=True)
    df = pd.DataFrame(
        {
            ID_COLUMN: pd.Series(ids, dtype=object),
            "age": pd.Series(ages[: len(ids)], dtype=object),
            "ndi_0": pd.Series(ages[::-1][: len(ids)], dtype=object),
        }
    )
    df.to_csv(root / "clinical.csv", index=False)
    write_cohort_json(root, CohortMeta(name="p", profile="external", n_patients=len(ids)))
    try:
        read_clinical(root / "clinical.csv")
    except CdegError:
        pass
    findings = check_cohort(root, config=CheckConfig(ranges={"ndi_*": (0.0, 100.0)}))
    assert all(isinstance(f, Finding) and "\n" not in f.message for f in findings)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_file_content_only_raises_cohort_errors(tmp_path, text):
    root = tmp_path / "raw"
    root.mkdir(exist_ok=True)
    (root / "clinical.csv").write_text(text, encoding="utf-8")
    write_cohort_json(root, CohortMeta(name="p", profile="external", n_patients=0))
    try:
        read_clinical(root / "clinical.csv")
    except CdegError:
        pass
    findings = check_cohort(root)
    assert all(f.severity in ("error", "warning") for f in findings)
    runner = CliRunner().invoke(cli, ["check", "--cohort", str(root)])
    assert (runner.exit_code in (0, 1) and runner.exception is None) or isinstance(
        runner.exception, SystemExit
    )
    assert "Traceback" not in runner.output


def test_gzip_trailer_check_handles_multi_member_files(tmp_path):
    import gzip

    img = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    plain = tmp_path / "a.nii"
    sitk.WriteImage(img, str(plain))
    data = plain.read_bytes()
    multi = tmp_path / "m.nii.gz"
    multi.write_bytes(gzip.compress(data[:200]) + gzip.compress(data[200:]))
    assert nifti_truncation(multi) == ""
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(multi))).sum() == 276
    multi.write_bytes(gzip.compress(data[:200]) + gzip.compress(data[200:])[:-12])
    assert "truncated" in nifti_truncation(multi)
    plain.write_bytes(data[:-10])
    assert "truncated" in nifti_truncation(plain)
