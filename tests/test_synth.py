"""The synthetic cohort writer (`cdeg synth`): layout, geometry, determinism, CLI."""

import hashlib

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from click.testing import CliRunner

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import CANONICAL_DIRECTION, Cohort
from cdeg.io import read_table
from cdeg.synth import synthesize


def _digest(root):
    h = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_cohort_layout_is_complete(tiny_cohort):
    c = Cohort.open(tiny_cohort)
    assert c.meta.profile == "neck" and c.meta.n_patients == 6 and c.meta.synthetic
    clin = c.clinical()
    assert clin.columns[0] == "patient_id" and len(clin) == 6
    assert "accelerated" in clin
    levels = read_table(c.truth_levels_path)
    patients = read_table(c.truth_patients_path)
    assert {"p_oracle", "predisposition_u"} <= set(patients.columns)
    assert len(levels) == 6 * len(labels.STRUCTURES)
    for pid, has_mri, has_xray in zip(patients.patient_id, patients.has_mri, patients.has_xray, strict=True):
        assert c.has_image(pid, "mri") == bool(has_mri) == c.has_mask(pid, "mri")
        assert c.has_image(pid, "xray") == bool(has_xray) == c.has_mask(pid, "xray")


def test_images_and_masks_share_geometry(tiny_cohort):
    c = Cohort.open(tiny_cohort)
    checked = 0
    for pid in c.patient_ids():
        for modality, dims in (("mri", 3), ("xray", 2)):
            if not c.has_image(pid, modality):
                continue
            img = sitk.ReadImage(str(c.image_path(pid, modality)))
            msk = sitk.ReadImage(str(c.mask_path(pid, modality)))
            assert img.GetDimension() == dims == msk.GetDimension()
            assert img.GetSize() == msk.GetSize()
            assert np.allclose(img.GetSpacing(), msk.GetSpacing()) and np.allclose(
                img.GetOrigin(), msk.GetOrigin()
            )
            assert np.allclose(img.GetDirection(), CANONICAL_DIRECTION[modality])
            values = np.unique(sitk.GetArrayViewFromImage(msk))
            assert labels.invalid_labels(values) == []
            assert len(values) > 5, f"{pid} {modality}: almost empty mask"
            checked += 1
    assert checked >= 8


def test_presence_columns_match_masks(tiny_cohort):
    c = Cohort.open(tiny_cohort)
    levels = read_table(c.truth_levels_path)
    for pid, rows in levels.groupby("patient_id"):
        if not c.has_mask(pid, "mri"):
            assert rows["present_mri"].sum() == 0
            continue
        present = {
            int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(c.mask_path(pid, "mri")))))
        }
        assert set(rows.loc[rows.present_mri == 1, "label"]) == present - {0}


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = synthesize(tmp_path / "a", n=3, seed=11, jobs=1, progress=False)
    b = synthesize(tmp_path / "b", n=3, seed=11, jobs=2, progress=False)
    da, db = _digest(a), _digest(b)
    da.pop("cohort.json"), db.pop("cohort.json")  # holds the cohort name (folder name)
    assert da == db
    c = synthesize(tmp_path / "c", n=3, seed=12, progress=False)
    assert _digest(c)["clinical.csv"] != da["clinical.csv"]


def test_refuses_to_overwrite_without_flag(tmp_path):
    out = synthesize(tmp_path / "c", n=1, seed=1, modalities="xray", progress=False)
    with pytest.raises(ValueError, match="already holds a cohort"):
        synthesize(out, n=1, seed=1, progress=False)
    synthesize(out, n=2, seed=1, modalities="xray", overwrite=True, progress=False)
    assert Cohort.open(out).meta.n_patients == 2


def test_bad_options_are_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        synthesize(tmp_path / "x", profile="icu", n=2)
    with pytest.raises(ValueError, match="modality"):
        synthesize(tmp_path / "x", modalities="ct")
    assert not (tmp_path / "x").exists()


def test_cli_help_explains_every_option():
    r = CliRunner().invoke(cli, ["synth", "--help"])
    assert r.exit_code == 0
    for opt in (
        "--profile",
        "--n",
        "--seed",
        "--out",
        "--config",
        "--modality",
        "--jobs",
        "--overwrite",
        "--ceiling",
        "--print-config",
    ):
        assert opt in r.output
    top = CliRunner().invoke(cli, ["--help"])
    assert top.exit_code == 0 and "synth" in top.output


def test_cli_print_config_and_run(tmp_path):
    r = CliRunner().invoke(cli, ["synth", "--print-config"])
    assert r.exit_code == 0, r.output
    assert set(yaml.safe_load(r.output)) == {"model", "render", "ceiling"}
    r = CliRunner().invoke(
        cli,
        [
            "synth",
            "--profile",
            "population",
            "--n",
            "2",
            "--seed",
            "3",
            "--modality",
            "xray",
            "--out",
            str(tmp_path / "pop"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert Cohort.open(tmp_path / "pop").meta.profile == "population"
    r = CliRunner().invoke(cli, ["synth", "--n", "2", "--out", str(tmp_path / "pop")])
    assert r.exit_code == 2 and "already holds a cohort" in r.output


def test_summary_reports_cohort(tiny_cohort, tmp_path):
    r = CliRunner().invoke(cli, ["summary", "--cohort", str(tiny_cohort), "--out", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    assert "6 patients" in r.output and "C5-C6" in r.output
    r = CliRunner().invoke(cli, ["summary", "--cohort", str(tmp_path / "none")])
    assert r.exit_code == 1 and "does not exist" in r.output and "Traceback" not in r.output


def test_dicom_format_writes_an_export_that_imports(tmp_path):
    from cdeg.dicom import import_dicom

    r = CliRunner().invoke(
        cli, ["synth", "--n", "2", "--seed", "4", "--format", "dicom", "--out", str(tmp_path / "dcm")]
    )
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "dcm" / "cohort.json").exists()
    assert any(
        p.suffix == ".dcm" or p.name.startswith("IM") for p in (tmp_path / "dcm").rglob("*") if p.is_file()
    )
    import_dicom(tmp_path / "dcm", tmp_path / "imported", id_map=tmp_path / "idmap.csv")
    c = Cohort.open(tmp_path / "imported")
    assert len(c.patient_ids()) == 2 and all(c.has_image(p, "mri") for p in c.patient_ids())
