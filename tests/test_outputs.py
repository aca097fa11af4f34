"""Stage output contracts (cdeg/outputs.py): every output of the tiny study is where its contract says, with the
manifest keys consumers rely on; each file name is spelled in one module only; `cdeg report --run` rebuilds
the report from the files alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdeg import outputs as O
from cdeg.cli import cli
from cdeg.cohort import MODALITIES

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("cdeg", "segmentation", "features", "modeling")


def _run(tiny_run: dict) -> O.RunFolder:
    return O.RunFolder(tiny_run["out"])


@pytest.mark.slow
def test_run_folder_records_the_resolved_study(tiny_run):
    record = _run(tiny_run).read()
    assert record["status"] == "complete"
    assert set(record["study"]["cohorts"]) == {"annotated", "development", "external"}
    assert [s["stage"] for s in record["stages"]][-1] == "report"


@pytest.mark.slow
def test_mask_folder_contract(tiny_run):
    masks = _run(tiny_run).masks("development")
    contents = masks.read()
    assert list(contents["qc"].columns) == list(O.MaskFolder.QC_COLUMNS)
    assert set(contents["manifests"]) == {"xray"}
    manifest = contents["manifests"]["xray"]
    assert set(O.MaskFolder.MANIFEST_KEYS) <= set(manifest)
    ok = [p for p, v in manifest["patients"].items() if v["status"] in ("ok", "flagged")]
    assert ok and all(masks.mask(p, "xray").is_file() and masks.qc_png(p, "xray").is_file() for p in ok)


@pytest.mark.slow
def test_segmentation_model_contract(tiny_run):
    model = _run(tiny_run).segment_model("xray")
    manifest = model.read()
    assert manifest["modality"] == "xray"
    assert model.nnunet_doc.is_file() and model.results.is_dir()
    assert set(manifest["versions"]) >= {"cdeg", "python", "nnunetv2", "torch"}


@pytest.mark.slow
def test_evaluation_contract(tiny_run):
    ev = _run(tiny_run).evaluation("development")
    data = ev.read()
    assert data is not None and set(O.Evaluation.MANIFEST_KEYS) <= set(data)
    assert ev.csv.is_file()


@pytest.mark.slow
def test_feature_folder_contract(tiny_run):
    folder = _run(tiny_run).features("development")
    table = folder.read()
    assert table is not None and len(table) == 30
    for path in (folder.features_csv, folder.long, folder.errors):
        assert path.is_file(), path
    assert set(O.FeatureFolder.MANIFEST_KEYS) <= set(O.read_manifest(folder.manifest))


@pytest.mark.slow
def test_fit_run_and_model_contract(tiny_run):
    fit = _run(tiny_run).fit("accelerated")
    metrics = fit.read()
    assert metrics is not None and set(O.FitRun.MANIFEST_KEYS) <= set(metrics)
    oof = fit.read_oof()
    assert oof is not None and "patient_id" in oof
    for name in ("roc", "calibration", "decision_curve", "shap_bar", "shap_beeswarm"):
        assert fit.plot(name).is_file(), name
    manifest = fit.model.read()
    assert manifest["target"] == "accelerated" and manifest["primary_model"] in manifest["models"]
    assert fit.model.oof_mean.is_file() and fit.model.dev_metrics.is_file()
    assert fit.optuna_db.is_file() and fit.report.is_file()
    # the explanations of the cross-validated risks: every patient explained once per repeat, a waterfall each
    shap = fit.read_oof_shap()
    assert shap is not None and set(shap["patient_id"]) == set(oof["patient_id"])
    assert (shap.groupby(["repeat", "patient_id"])["fold"].nunique() == 1).all()
    assert all(
        fit.waterfall(p).is_file() and fit.grouped_waterfall(p).is_file() for p in set(oof["patient_id"])
    )
    assert {"variables", "level", "how"} <= set(metrics["shap_stability"])


@pytest.mark.slow
def test_validation_and_prediction_contracts(tiny_run):
    run = _run(tiny_run)
    val = run.validation("accelerated")
    assert set(O.ValidationRun.MANIFEST_KEYS) <= set(val.read() or {})
    assert val.read_predictions() is not None and val.plot("roc").is_file()
    pred = run.predictions("accelerated")
    assert pred.read() is not None
    assert set(O.PredictionRun.MANIFEST_KEYS) <= set(O.read_manifest(pred.manifest))


def test_write_manifest_records_versions(tmp_path):
    written = O.write_manifest(tmp_path / "m.json", {"a": 1}, stage="extract")
    back = O.read_manifest(tmp_path / "m.json", required=("a", "cdeg_version", "created", "versions"))
    assert back == written and "pyradiomics" in back["versions"]
    with pytest.raises(O.CdegError, match="lacks b"):
        O.read_manifest(tmp_path / "m.json", required=("b",))


def _output_file_names() -> set[str]:
    """Every file name a contract declares (class attributes that look like file names)."""
    names = set()
    for cls in (
        O.MaskFolder,
        O.SegmentationModel,
        O.Evaluation,
        O.FeatureFolder,
        O.ModelFolder,
        O.FitRun,
        O.ValidationRun,
        O.PredictionRun,
        O.DicomImport,
        O.AgreementRun,
        O.EditorExport,
        O.RunFolder,
    ):
        for key, value in vars(cls).items():
            if key.isupper() and isinstance(value, str) and "." in value:
                names.add(value)
    return names


def test_each_output_file_name_is_spelled_in_one_module():
    names = _output_file_names()
    assert {"features.parquet", "metrics.json", "qc.csv", "cdeg_model.json", "run.json"} <= names
    owner = ROOT / "cdeg" / "outputs.py"
    offenders = []
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == owner:
                continue
            text = path.read_text()
            for name in names:
                # The literal as a string ("qc.csv", 'qc.csv'), not prose in a docstring or comment.
                if re.search(rf"[\"']{re.escape(name)}[\"']", text):
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


@pytest.mark.slow
def test_report_is_rebuilt_from_a_run_folder(tiny_run, tmp_path):
    out = tmp_path / "again.html"
    res = CliRunner().invoke(cli, ["report", "--run", str(tiny_run["out"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert Path(res.output.strip().splitlines()[-1]) == out
    stamp = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    rebuilt = stamp.sub("", out.read_text())
    original = stamp.sub("", _run(tiny_run).report.read_text())
    assert rebuilt == original


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["report", "--run", str(tmp_path)])
    assert res.exit_code == 1
    assert "not a cdeg run folder" in res.output and "Traceback" not in res.output


def test_every_modality_has_a_qc_png_name():
    assert {O.MaskFolder(Path("m")).qc_png("P1", m).name for m in MODALITIES} == {"mri_qc.png", "xray_qc.png"}
