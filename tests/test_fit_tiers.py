"""Feature tiers: the primary model's protocol on clinical / measurements / radiomics subsets, same outer folds."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cdeg.modeling.fit import fit
from click.testing import CliRunner
from tables import measurement_signal_tables

from cdeg.cli import cli

FAST = {"trials": 2, "outer_folds": 2, "repeats": 2, "jobs": 1, "permutations": 0}


def test_each_tier_is_cross_validated_on_the_same_folds_and_compared_with_all(tmp_path):
    f, c = measurement_signal_tables(tmp_path)
    res = fit(f, c, "accelerated", tmp_path / "run", progress=False, **FAST)
    tiers = res.metrics["tiers"]
    assert tiers["model"] == "xgboost"
    assert set(tiers["cv"]) == {"clinical", "measurements", "radiomics", "all"}
    auc = {t: s["auc"] for t, s in tiers["cv"].items()}
    # The planted signal is in the measurements: that tier finds it, the radiomics and clinical tiers do not.
    assert auc["measurements"] > 0.8
    assert auc["radiomics"] < 0.7 and auc["clinical"] < 0.7
    assert auc["all"] == pytest.approx(res.metrics["cv"]["xgboost"]["auc"])
    comp = tiers["comparison"]
    assert {(e["tier"], e["metric"]) for e in comp} >= {
        (t, "auc") for t in ("clinical", "measurements", "radiomics")
    }
    worse = next(e for e in comp if e["tier"] == "radiomics" and e["metric"] == "auc")
    assert worse["difference"] < 0 and worse["ci"][0] <= worse["difference"] <= worse["ci"][1]
    # Tier arms are cross-validated only: out-of-fold columns, no final model, not among the models.
    oof = pd.read_csv(res.out / "oof_predictions.csv")
    assert "xgboost@measurements" in oof.columns
    assert set(res.models) == {"xgboost", "logistic", "clinical_only"}
    manifest = json.loads((res.out / "model" / "model.json").read_text())
    assert set(manifest["models"]) == {"xgboost", "logistic", "clinical_only"}
    html = (res.out / "report.html").read_text()
    assert "What each kind of variable adds" in html and "clinical + measurements" in html


def _fit_args(features, clinical, out, *extra: str) -> list[str]:
    return ["fit", "--features", str(features), "--clinical", str(clinical), "--target", "accelerated",
            "--out", str(out), *extra]  # fmt: skip


def test_tiers_none_from_the_command_line_fits_no_tier(tmp_path):
    f, c = measurement_signal_tables(tmp_path, n=60)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        _fit_args(
            f,
            c,
            out,
            "--trials",
            "2",
            "--outer-folds",
            "2",
            "--repeats",
            "1",
            "--jobs",
            "1",
            "--tiers",
            "none",
        ),
    )
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["tiers"] == {}
    assert "tier " not in r.output


def test_an_unknown_tier_is_one_line(tmp_path):
    f, c = measurement_signal_tables(tmp_path, n=60)
    r = CliRunner().invoke(
        cli,
        _fit_args(f, c, tmp_path / "o", "--tiers", "radiomic"),
    )
    assert r.exit_code != 0
    assert "radiomic" in r.output and "Traceback" not in r.output
