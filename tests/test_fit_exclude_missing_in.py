"""`cdeg fit --exclude-missing-in TABLE`: the development clinical columns another cohort lacks are left out
of the predictors, exactly as if they had been given with `--exclude`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cdeg.modeling.fit import fit, missing_columns
from cdeg.modeling.simulate import simulate
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.io import write_table

FAST = {"trials": 2, "outer_folds": 2, "repeats": 1, "jobs": 1, "progress": False}
#: Clinical columns the external cohort of these tests does not record.
LACKING = ["bmi", "smoking"]


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """Features and clinical tables of a development cohort, a clinical table lacking LACKING, a config."""
    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    write_table(tmp_path / "f.csv", feat)
    write_table(tmp_path / "c.csv", clin)
    ext = clin.drop(columns=LACKING).iloc[:10]
    write_table(tmp_path / "ext_clinical.csv", ext)
    cfg = tmp_path / "inner2.yaml"
    cfg.write_text("inner_folds: 2\nstartup_trials: 2\n")
    return tmp_path / "f.csv", tmp_path / "c.csv", tmp_path / "ext_clinical.csv", cfg


def test_missing_columns_are_those_the_other_table_lacks(tables):
    _, clin, ext, _ = tables
    assert missing_columns(clin, ext, "patient_id") == LACKING


def test_fit_excluding_missing_in_equals_fit_with_the_explicit_list(tables, tmp_path):
    feat, clin, ext, cfg = tables
    by_table = fit(feat, clin, "accelerated", tmp_path / "a", exclude_missing_in=ext, config=cfg, **FAST)
    by_list = fit(feat, clin, "accelerated", tmp_path / "b", exclude=LACKING, config=cfg, **FAST)
    data_a, data_b = by_table.metrics["data"], by_list.metrics["data"]
    assert data_a["user_excluded"] == data_b["user_excluded"] == LACKING
    assert data_a["missing_in_other_table"] == {"table": str(ext), "columns": LACKING}
    assert by_table.config.exclude == by_list.config.exclude == tuple(LACKING)
    # Same protocol, same data: the same run key, hence the same studies and the same numbers.
    assert by_table.metrics["protocol"]["run_key"] == by_list.metrics["protocol"]["run_key"]
    for m, s in by_list.metrics["cv"].items():
        assert by_table.metrics["cv"][m]["auc"] == pytest.approx(s["auc"])
        assert by_table.metrics["cv"][m]["brier"] == pytest.approx(s["brier"])
    pd.testing.assert_frame_equal(by_table.oof, by_list.oof)
    manifest = json.loads((tmp_path / "a" / "model" / "model.json").read_text())
    assert manifest["config"]["exclude"] == LACKING
    assert not set(LACKING) & set(manifest["models"]["xgboost"]["input_columns"])


def test_exclude_missing_in_comes_before_exclude(tables, tmp_path):
    feat, clin, ext, cfg = tables
    res = fit(
        feat, clin, "accelerated", tmp_path / "run", exclude="age", exclude_missing_in=ext, config=cfg, **FAST
    )
    assert res.config.exclude == (*LACKING, "age")


def test_print_config_shows_the_columns_left_out(tables):
    _, clin, ext, _ = tables
    r = CliRunner().invoke(
        cli, ["fit", "--print-config", "--clinical", str(clin), "--exclude-missing-in", str(ext)]
    )
    assert r.exit_code == 0, r.output
    assert "exclude: [bmi, smoking]" in r.output
