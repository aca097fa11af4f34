"""`cdeg run`: configuration checks, fingerprints and manifests, and the whole study end to end (tiny).

The end-to-end test runs tests/run_tiny.yaml (the session fixture `tiny_run` of conftest.py) (synthetic cohorts of 4 / 30 / 24 patients, radiographs only,
the `smoke` segmentation preset, 2 Optuna trials, 2 outer folds) three times: a first run where every stage
runs, a second with nothing changed (nothing runs, manifests byte-identical), and a third with one option of one
target changed (only that fit and what depends on it run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import TINY_RUN_CONFIG, manifests

from cdeg.cli import cli
from cdeg.config import ConfigError, shipped_config
from cdeg.pipeline import cache
from cdeg.pipeline.config import load_run_config

RUN_CONFIGS = ("demo.yaml", "study_template.yaml")


# --- configuration ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [shipped_config(n) for n in RUN_CONFIGS] + [TINY_RUN_CONFIG])
@pytest.mark.radiomics
def test_shipped_run_configs_are_valid(path: Path) -> None:
    cfg = load_run_config(path)
    assert cfg.targets and cfg.cohorts


def test_demo_config_is_the_study_in_miniature() -> None:
    cfg = load_run_config(shipped_config("demo.yaml"))
    dev, ext = cfg.cohorts["development"].synth, cfg.cohorts["external"].synth
    assert dev is not None and ext is not None
    # NECK's 109 surgical patients; a population cohort of at least 150 (the demo's time budget, issue #18)
    assert (dev.profile, dev.n, ext.profile) == ("neck", 109, "population") and ext.n >= 150
    train = cfg.cohorts[cfg.segmentation.train_cohort or ""].synth
    assert train is not None and train.seed not in (dev.seed, ext.seed)
    assert {"accelerated", "poor_outcome_2y"} <= set(cfg.targets)
    assert cfg.targets["accelerated"].external == "external" and cfg.segmentation.preset == "fast"
    # an operational target derived by `cdeg label` against the population cohort, validated there
    labelled = [t for t, spec in cfg.targets.items() if spec.label is not None]
    assert labelled and all(cfg.targets[t].label.reference == "external" for t in labelled)


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_unknown_key_names_its_dotted_path(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY_RUN_CONFIG.read_text())
    data["fit"]["trails"] = 3
    with pytest.raises(ConfigError, match=r"trails.*valid: config, trials"):
        load_run_config(_write(tmp_path, data))


def test_segmenting_the_training_patients_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY_RUN_CONFIG.read_text())
    data["targets"]["accelerated"]["development"] = "annotated"
    with pytest.raises(ConfigError, match="trains the segmentation"):
        load_run_config(_write(tmp_path, data))


def test_undefined_cohort_is_refused(tmp_path: Path) -> None:
    data = yaml.safe_load(TINY_RUN_CONFIG.read_text())
    data["targets"]["accelerated"]["external"] = "rotterdam"
    with pytest.raises(ConfigError, match="'rotterdam' is not a cohort"):
        load_run_config(_write(tmp_path, data))


# --- fingerprints and manifests ---------------------------------------------------------------------------------
def test_fingerprint_uses_content_for_tables_and_mtime_for_images(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    table, image = tmp_path / "clinical.csv", tmp_path / "images" / "mri.nii.gz"
    table.write_text("patient_id,age\nA,50\n")
    image.write_bytes(b"x" * 100)
    fp = cache.path_fingerprint(tmp_path)
    os.utime(table, ns=(1, 1))  # re-saved, same content: same fingerprint
    assert cache.path_fingerprint(tmp_path) == fp
    os.utime(image, ns=(1, 1))  # an image touched: it may have changed
    fp2 = cache.path_fingerprint(tmp_path)
    assert fp2 != fp
    table.write_text("patient_id,age\nA,51\n")
    assert cache.path_fingerprint(tmp_path) != fp2
    assert cache.path_fingerprint(tmp_path / "nothing") == "missing"


def test_why_stale(tmp_path: Path) -> None:
    assert cache.why_stale(tmp_path, "k") == "never run"
    m = cache.write_running(tmp_path, "fit:x", "fit", "k", {}, {})
    assert cache.why_stale(tmp_path, "k") == "interrupted"
    (tmp_path / "metrics.json").write_text("{}")
    m = cache.write_complete(m, tmp_path, 1.0, {})
    assert m["outputs"] == ["metrics.json"] and cache.why_stale(tmp_path, "k") is None
    assert cache.why_stale(tmp_path, "other") == "inputs or options changed"
    (tmp_path / "metrics.json").unlink()
    assert "missing" in (cache.why_stale(tmp_path, "k") or "")


# --- end to end -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_stage_ran_and_wrote_its_outputs(tiny_run: dict) -> None:
    out, first = tiny_run["out"], tiny_run["first"]
    assert [s["status"] for s in first.stages] == ["ran"] * len(first.stages)
    kinds = {s["stage"].split(":")[0] for s in first.stages}
    assert kinds == {
        "synth",
        "segment-train",
        "segment-predict",
        "segment-evaluate",
        "extract",
        "extract-reference",
        "agreement",
        "fit",
        "validate",
        "predict",
        "report",
    }
    for rel in (
        "segmentation/train-xray/model/cdeg_model.json",
        "masks/development/qc.csv",
        "segmentation/evaluate-external/evaluation.json",
        "features/external/features.parquet",
        "reference-features/development/features.parquet",
        "agreement/development/agreement.json",
        "models/accelerated/metrics.json",
        "models/poor_outcome_2y/model/model.json",
        "validation/accelerated/metrics.json",
        "predictions/accelerated/predictions.csv",
        "report/report.html",
        "run.json",
    ):
        assert (out / rel).is_file(), rel
    assert not (out / "validation" / "poor_outcome_2y").exists()  # no external cohort for this question
    for p in out.rglob(cache.MANIFEST):
        m = json.loads(p.read_text())
        assert m["status"] == "complete" and m["outputs"] and m["hash"]
        assert all((p.parent / rel).is_file() for rel in m["outputs"])


@pytest.mark.slow
def test_report_answers_the_reviewers_questions(tiny_run: dict) -> None:
    """Ceilings beside the models for both questions, the tiers, the permutation test, grouped explanations
    and the checklist: the report of the study pipeline shows them all."""
    html = (tiny_run["out"] / "report" / "report.html").read_text()
    # A row of each question's table (accelerated and poor_outcome_2y), beside the models.
    assert html.count("<td>latent oracle (true degeneration, synthetic truth)</td>") == 2
    assert html.count("<td>observable ceiling (what images and clinical scores show)</td>") == 2
    assert "What each kind of variable adds" in html and "clinical + measurements" in html
    assert "Permutation test" in html
    assert "summed per level" in html
    assert "TRIPOD+AI" in html and "PROBAST+AI" in html
    fit = json.loads((tiny_run["out"] / "models" / "accelerated" / "metrics.json").read_text())
    assert fit["permutation_test"]["n_permutations"] == 2
    assert set(fit["tiers"]["cv"]) >= {"clinical", "measurements", "all"}


@pytest.mark.slow
def test_features_of_predicted_and_reference_masks_are_compared(tiny_run: dict) -> None:
    """The first 6 development patients by id (``agreement.patients: 6``) are extracted again from their
    reference masks and compared with their predicted-mask features; the report shows the comparison."""
    import pandas as pd

    from cdeg.outputs import RunFolder

    run = RunFolder(tiny_run["out"])
    clinical = pd.read_csv(run.cohort("development") / "clinical.csv", dtype={"patient_id": str})
    first = sorted(clinical["patient_id"])[:6]
    reference = run.reference_features("development").read()
    assert sorted(reference["patient_id"]) == first
    manifest = run.agreement("development").read()
    assert manifest["patients"]["matched"] == 6 and manifest["patients"]["listed"] == 6
    assert manifest["patients"]["only_in_first"] == manifest["patients"]["only_in_second"] == []
    table = run.agreement("development").read_table()
    assert len(table) == manifest["columns"]["compared"] > 0 and (table["n"] <= 6).all()
    assert "measurement" in set(table["feature_class"]) and set(table["modality"]) == {"xray"}
    html = run.report.read_text()
    assert html.count("Do features from the predicted masks agree with features from reference masks?") == 1
    assert "a feature with low ICC measures the segmentation as much as the patient" in html
    assert 'href="#agreement"' in html and "ICC ≥ 0.75" in html
    # The smoke network's masks may leave no measurement in two patients of both sets: then a note says so.
    assert "bias (automatic minus reference)" in html or "No clinical measurement was found" in html


@pytest.mark.radiomics
def test_extract_refuses_a_patient_list_outside_the_cohort(tiny_cohort: Path, tmp_path: Path) -> None:
    from cdeg.features.extract import extract

    from cdeg.errors import CohortError

    out = tmp_path / "features"
    with pytest.raises(CohortError, match=r"1 patient\(s\) of the patient list not in clinical.csv: NOPE"):
        extract(tiny_cohort, out, modality="xray", patients=["NECK0001", "NOPE"])
    with pytest.raises(ValueError, match="at least one patient id"):
        extract(tiny_cohort, out, modality="xray", patients=" , ")
    assert not out.exists()  # refused before anything is written


@pytest.mark.slow
def test_patient_ids_agree_across_stages(tiny_run: dict) -> None:
    import pandas as pd

    out = tiny_run["out"]
    for cohort, target in (("development", "accelerated"), ("external", None)):
        ids = pd.read_csv(out / "cohorts" / cohort / "clinical.csv", dtype={"patient_id": str})["patient_id"]
        ids = set(ids)
        with_xray = {p for p in ids if (out / "cohorts" / cohort / "images" / p / "xray.nii.gz").is_file()}
        masks = {p.name for p in (out / "masks" / cohort).iterdir() if (p / "xray.nii.gz").is_file()}
        assert masks == with_xray and len(with_xray) >= len(ids) - 3
        feats = pd.read_parquet(out / "features" / cohort / "features.parquet")
        assert set(feats["patient_id"]) == ids
        ev = json.loads((out / "segmentation" / f"evaluate-{cohort}" / "evaluation.json").read_text())
        assert set(ev["patients"]) == with_xray
        if target:
            oof = pd.read_csv(out / "models" / target / "oof_predictions.csv", dtype={"patient_id": str})
            assert set(oof["patient_id"]) == ids
            pred = pd.read_csv(out / "predictions" / target / "predictions.csv", dtype={"patient_id": str})
            assert set(pred["patient_id"]) == ids
            # the cards' waterfalls are the fit's (cross-validated risk); the final model's are not drawn again
            assert {p.stem for p in (out / "models" / target / "waterfalls").glob("*.svg")} == ids
            assert not list((out / "predictions" / target).glob("waterfalls/*.svg"))
    val = pd.read_csv(out / "validation" / "accelerated" / "predictions.csv", dtype={"patient_id": str})
    ext = pd.read_csv(out / "cohorts" / "external" / "clinical.csv", dtype={"patient_id": str})
    assert set(val["patient_id"]) == set(ext["patient_id"])
    # external validation uses only variables both cohorts have
    # (fit itself leaves out what the external table lacks: `exclude_missing_in`, recorded in metrics.json)
    fit = json.loads((out / "models" / "accelerated" / "metrics.json").read_text())
    excluded = fit["data"]["missing_in_other_table"]["columns"]
    assert {"arm", "index_level", "symptom_duration_months"} <= set(excluded)


@pytest.mark.slow
def test_second_run_with_nothing_changed_runs_nothing(tiny_run: dict) -> None:
    second = tiny_run["second"]
    assert second.ran == []
    assert tiny_run["manifests_after"] == tiny_run["manifests_before"]
    assert tiny_run["second_s"] < 30, tiny_run["second_s"]


@pytest.mark.slow
def test_changed_option_reruns_only_that_stage_and_downstream(tiny_run: dict, tmp_path: Path) -> None:
    from cdeg.pipeline import run

    out = tiny_run["out"]
    data = yaml.safe_load(Path(tiny_run["config"]).read_text())
    data["targets"]["poor_outcome_2y"]["exclude"] = ["bmi"]
    changed = _write(tmp_path, data)
    before = manifests(out)
    res = run(changed, out=out, progress=False)
    assert set(res.ran) == {"fit:poor_outcome_2y", "predict:poor_outcome_2y", "report"}
    after = manifests(out)
    untouched = [
        k
        for k in before
        if not k.startswith(("models/poor_outcome_2y", "predictions/poor_outcome_2y", "report"))
    ]
    assert untouched and all(after[k] == before[k] for k in untouched)
    # and back: the original options are a change again
    res = run(tiny_run["config"], out=out, progress=False)
    assert set(res.ran) == {"fit:poor_outcome_2y", "predict:poor_outcome_2y", "report"}


@pytest.mark.slow
def test_cli_dry_run_lists_nothing_to_do(tiny_run: dict) -> None:
    from click.testing import CliRunner

    from cdeg.cli import cli

    r = CliRunner().invoke(
        cli,
        [
            "--no-progress",
            "run",
            "--config",
            str(tiny_run["config"]),
            "--out",
            str(tiny_run["out"]),
            "--dry-run",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "0 stage(s) ran" in r.output and "would run" not in r.output


@pytest.mark.slow
def test_fit_command_reproduces_the_pipelines_model(tiny_run: dict, tmp_path: Path) -> None:
    """The study's choices are fit options: the same `cdeg fit` command by hand gives the pipeline's model."""
    from cdeg.outputs import RunFolder

    run = RunFolder(tiny_run["out"])
    dev, ext = run.cohort("development"), run.cohort("external")
    out = tmp_path / "fit"
    args = [
        "--no-progress", "fit",
        "--features", str(run.features("development").features), "--clinical", str(dev / "clinical.csv"),
        "--target", "accelerated", "--out", str(out), "--exclude-missing-in", str(ext / "clinical.csv"),
        "--trials", "2", "--outer-folds", "2", "--repeats", "1", "--seed", "7", "--permutations", "2",
        "--waterfalls",  # the study's report shows patient cards
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    ours, theirs = out / "model", run.fit("accelerated").model.root
    names = sorted(p.name for p in theirs.glob("*.json") if p.name != "model.json")
    assert names and names == sorted(p.name for p in ours.glob("*.json") if p.name != "model.json")
    for name in names:
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    mine, pipeline = (json.loads((d / "model.json").read_text()) for d in (ours, theirs))
    for key in ("created", "development", "versions"):
        mine.pop(key, None), pipeline.pop(key, None)
    assert mine == pipeline
