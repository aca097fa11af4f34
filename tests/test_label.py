"""`cdeg label`: an operational target label by a stated rule against a reference cohort's centiles."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling.label import derive_label
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.errors import CdegError
from cdeg.io import file_sha256
from cdeg.outputs import LabelRun


def test_exactly_the_top_decile_of_the_reference_is_labelled(label_tables, tmp_path):
    ref_f, ref_c = label_tables("ref", n_per_sex=100, seed=1)
    res = derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "out", centile=90)
    rows = res.labels.merge(pd.read_csv(ref_c, dtype={"patient_id": str}), on="patient_id")
    # Distinct scores and the linear centile: exactly 10 of each sex's 100 lie above their threshold.
    assert rows.groupby("sex")["label"].sum().to_dict() == {"F": 10, "M": 10}
    assert set(res.manifest["thresholds"]) == {"female", "male"}
    above = rows[rows["label"] == 1]
    assert (above["reference_centile"] > 90).all()
    assert (rows.loc[rows["label"] == 0, "reference_centile"] <= 90).all()


def test_by_sex_uses_sex_specific_norms(label_tables, tmp_path):
    # Men vary three times as much as women around the same age curve: pooled norms (one SD) flag mostly men.
    ref_f, ref_c = label_tables("ref", n_per_sex=150, seed=2, male_spread=3.0)
    sexes = pd.read_csv(ref_c, dtype={"patient_id": str}).set_index("patient_id")["sex"]
    per_sex = derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "a", by_sex=True).labels
    pooled = derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "b", by_sex=False).labels
    count = lambda t: t.assign(sex=t["patient_id"].map(sexes)).groupby("sex")["label"].sum()  # noqa: E731
    assert count(per_sex).to_dict() == {"F": 15, "M": 15}
    assert count(pooled)["M"] > 2 * count(pooled)["F"]
    assert set(pooled["stratum"]) == {"all"}


def test_labels_a_cohort_against_the_reference(label_tables, tmp_path):
    ref_f, ref_c = label_tables("ref", n_per_sex=100, seed=3)
    dev_f, dev_c = label_tables("dev", n_per_sex=30, seed=4)
    before = {p: file_sha256(p) for p in (dev_f, dev_c, ref_f, ref_c)}
    res = derive_label(dev_f, dev_c, ref_f, ref_c, tmp_path / "out", name="accelerated_op")
    run = LabelRun(res.out)
    clinical = pd.read_csv(run.clinical)
    assert list(clinical.columns) == ["patient_id", "age", "sex", "bmi", "accelerated_op"]
    assert clinical["accelerated_op"].isin([0, 1]).all()
    manifest = json.loads(run.manifest.read_text())
    assert manifest["reference"]["features"]["sha256"] == before[ref_f]
    assert manifest["reference"]["clinical"]["sha256"] == before[ref_c]
    assert manifest["reference"]["n_patients"] == 200
    assert manifest["rule"]["centile"] == 90 and "90th centile" in manifest["rule"]["words"]
    assert {p: file_sha256(p) for p in before} == before  # inputs never modified


def test_patients_without_a_scan_or_discs_get_no_label(label_tables, tmp_path, caplog):
    ref_f, ref_c = label_tables("ref", n_per_sex=100, seed=5)
    dev_f, dev_c = label_tables("dev", n_per_sex=10, seed=6)
    feats = pd.read_csv(dev_f)
    feats = feats[feats["patient_id"] != "dev0000"]  # no scan at all
    disc_cols = [c for c in feats.columns if "C3-C4" not in c and c != "patient_id"]
    feats.loc[feats["patient_id"] == "dev0001", disc_cols] = np.nan  # one disc measured only
    feats.to_csv(dev_f, index=False)
    with caplog.at_level("WARNING", logger="cdeg"):
        res = derive_label(dev_f, dev_c, ref_f, ref_c, tmp_path / "out")
    rows = res.labels.set_index("patient_id")
    assert pd.isna(rows.loc["dev0000", "label"]) and rows.loc["dev0000", "why_missing"] == "no features"
    assert (
        pd.isna(rows.loc["dev0001", "label"]) and "fewer than 2 discs" in rows.loc["dev0001", "why_missing"]
    )
    assert rows["label"].notna().sum() == 18
    assert "dev0000" in caplog.text and "dev0001" in caplog.text
    clinical = pd.read_csv(LabelRun(res.out).clinical, dtype={"patient_id": str}).set_index("patient_id")
    assert pd.isna(clinical.loc["dev0000", "accelerated_operational"])


def test_a_missing_measurement_column_names_the_file(label_tables, tmp_path):
    ref_f, ref_c = label_tables("ref", n_per_sex=30, seed=7)
    dev_f, dev_c = label_tables("dev", n_per_sex=5, seed=8, columns=("disc_height_index",))
    with pytest.raises(CdegError, match="disc_csf_signal_ratio") as err:
        derive_label(dev_f, dev_c, ref_f, ref_c, tmp_path / "out")
    assert err.value.path == str(dev_f)


def test_bad_rule_and_existing_column_are_refused(label_tables, tmp_path):
    ref_f, ref_c = label_tables("ref", n_per_sex=30, seed=9)
    with pytest.raises(ValueError, match="disc_angle_deg"):
        derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "o", measurements="disc_angle_deg")
    with pytest.raises(CdegError, match="already has a column 'bmi'") as err:
        derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "o", name="bmi")
    assert err.value.path == str(ref_c)


def test_cli_end_to_end(label_tables, tmp_path):
    ref_f, ref_c = label_tables("ref", n_per_sex=60, seed=10)
    dev_f, dev_c = label_tables("dev", n_per_sex=20, seed=11)
    out = tmp_path / "out"
    args = ["label", "--features", dev_f, "--clinical", dev_c, "--reference-features", ref_f]
    args += [
        "--reference-clinical",
        ref_c,
        "--out",
        out,
        "--centile",
        "80",
        "--measurements",
        "disc_height_index",
    ]
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "80th centile" in r.output and "labelled patients are 1" in r.output
    manifest = LabelRun(out).read()
    assert manifest["rule"]["measurements"] == ["disc_height_index"]
    assert manifest["counts"]["labelled"] == 40
    bad = CliRunner().invoke(cli, [str(a) for a in [*args[:-2], "--measurements", "nope"]])
    assert bad.exit_code == 2 and "nope" in bad.output


def _study_with_label(tmp_path, label: dict, **cohorts):
    """A study of two real cohorts (folders with a clinical table) whose target `accel_op` has a label section."""
    import yaml

    from cdeg.pipeline.config import load_run_config

    data = {
        "out": str(tmp_path / "run"),
        "cohorts": {k: {"path": str(v)} for k, v in cohorts.items()},
        "segmentation": {"enabled": False},
        "extract": {"modalities": ["mri"]},
        "targets": {"accel_op": {"development": "dev", "external": "pop", "label": label}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_run_config(path)


@pytest.mark.parametrize(
    "label, message",
    [
        ({"reference": "pop", "centiel": 90}, "targets.accel_op.label.centiel"),
        ({"reference": "rotterdam"}, "targets.accel_op.label.reference = 'rotterdam' is not a cohort"),
        (
            {"reference": "pop", "modality": "xray"},
            "targets.accel_op.label.modality = 'xray' is not extracted",
        ),
        (
            {"reference": "pop", "measurements": ["body_depth_mm"]},
            "targets.accel_op.label: label measurements",
        ),
        ({"reference": "pop", "centile": 100}, "targets.accel_op.label.centile = 100"),
    ],
)
def test_study_label_section_is_validated(tmp_path, label, message):
    from cdeg.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        _study_with_label(tmp_path, label, dev=tmp_path, pop=tmp_path)


def test_study_derives_the_label_before_fit_and_validate(label_tables, tmp_path):
    from cdeg.pipeline.stages import Context, build_stages, clinical_table

    ref_f, ref_c = label_tables("pop", n_per_sex=60, seed=12)
    dev_f, dev_c = label_tables("dev", n_per_sex=20, seed=13)
    cfg = _study_with_label(tmp_path, {"reference": "pop", "centile": 75}, dev=dev_c.parent, pop=ref_c.parent)
    ctx = Context(cfg=cfg, out=tmp_path / "run", jobs=1, device="cpu", progress=None)
    stages = {s.name: s for s in build_stages(ctx)}
    names = list(stages)
    assert names.index("extract:pop") < names.index("label:accel_op:dev") < names.index("fit:accel_op")
    assert stages["fit:accel_op"].deps["label dev"] == "label:accel_op:dev"
    assert stages["validate:accel_op"].deps["label pop"] == "label:accel_op:pop"
    for key, feats in (("dev", dev_f), ("pop", ref_f)):  # stand-ins for the extract stages' outputs
        folder = ctx.run.features(key)
        folder.root.mkdir(parents=True)
        pd.read_csv(feats, dtype={"patient_id": str}).to_parquet(folder.features, index=False)
    stage = stages["label:accel_op:dev"]
    summary = stage.call(stage, ctx, stage.params(ctx))
    assert summary["labelled"] == 40
    labelled = pd.read_csv(clinical_table(ctx, "accel_op", "dev"))
    assert labelled["accel_op"].notna().all()
    assert LabelRun(stage.folder).read()["rule"]["centile"] == 75


def test_outcome_definition_says_when_the_label_is_read_from_the_model_s_images(label_tables, tmp_path):
    from cdeg.modeling.label import outcome_definition
    from cdeg.modeling.report import outcome_block
    from cdeg.modeling.tripod import limitations, outcome_answer

    ref_f, ref_c = label_tables("ref", n_per_sex=30, seed=14)
    run = LabelRun(derive_label(ref_f, ref_c, ref_f, ref_c, tmp_path / "out", name="accel_op").out)
    mri = outcome_definition(run.clinical, "accel_op", ["age", "mri__C5-C6__disc_height_index"])
    assert mri["operational"] and mri["rule"]["modality"] == "mri"
    assert mri["reference"]["features"]["sha256"] == file_sha256(ref_f)
    assert "same MRI images the model reads" in mri["circularity"]
    fit = {"target": "accel_op", "n_patients": 60, "events": 6, "outcome_definition": mri}
    assert outcome_answer(fit) == f"{mri['text']} (6 events in 60 patients)"  # TRIPOD+AI 8a
    assert any("automates that reading" in s for s in limitations(fit))  # TRIPOD+AI 26
    html = outcome_block(mri)
    assert "Outcome definition" in html and "not whether images predict a clinical course" in html
    xray_only = outcome_definition(run.clinical, "accel_op", ["age", "xray__C5-C6__disc_height_index"])
    assert xray_only["operational"] and xray_only["circularity"] == ""
    plain = outcome_definition(ref_c, "accelerated", ["mri__C5-C6__disc_height_index"])
    assert not plain["operational"] and not plain["circular"] and outcome_block(plain) == ""
    assert "its definition is the authors'" in outcome_answer(
        {"target": "accelerated", "outcome_definition": plain}
    )
    assert not outcome_definition(run.clinical, "another_target")["operational"]


def test_fit_records_the_outcome_definition(label_tables, tmp_path):
    from cdeg.modeling.fit import fit

    ref_f, ref_c = label_tables("ref", n_per_sex=60, seed=15)
    dev_f, dev_c = label_tables("dev", n_per_sex=25, seed=16)
    run = LabelRun(
        derive_label(dev_f, dev_c, ref_f, ref_c, tmp_path / "lab", name="accel_op", centile=60).out
    )
    cfg = tmp_path / "inner2.yaml"
    cfg.write_text("inner_folds: 2\nstartup_trials: 2\n")
    fast = {"trials": 2, "outer_folds": 2, "repeats": 1, "jobs": 1, "permutations": 0, "tiers": "none"}
    res = fit(dev_f, run.clinical, "accel_op", tmp_path / "fit", config=cfg, progress=False, **fast)
    definition = json.loads(res.out.joinpath("metrics.json").read_text())["outcome_definition"]
    assert definition["operational"] and definition["circular"] and "60th centile" in definition["text"]
    assert "same MRI images" in definition["circularity"]
    assert "same MRI images the model reads" in res.out.joinpath("report.html").read_text()


def test_patients_outside_the_reference_ages_are_counted(label_tables, tmp_path, caplog):
    ref_f, ref_c = label_tables("ref", n_per_sex=40, seed=17)
    dev_f, dev_c = label_tables("dev", n_per_sex=10, seed=18, ages=(25, 50))
    with caplog.at_level("WARNING", logger="cdeg"):
        res = derive_label(dev_f, dev_c, ref_f, ref_c, tmp_path / "out")
    ages = res.manifest["ages"]
    young = pd.read_csv(dev_c).query("age < @ages['reference'][0]")
    assert ages["n_outside"] == len(young) > 0 and sorted(ages["outside"]) == sorted(young["patient_id"])
    assert "outside the reference cohort's ages" in caplog.text
