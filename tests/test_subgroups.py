"""External performance by subgroup and the limit on imputed inputs (transport of a model)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cdeg.modeling.subgroups import age_band, subgroup_table, subgroups_of
from cdeg.modeling.validate import validate
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.io import write_table


def test_age_bands_cover_every_age_once():
    assert [age_band(a) for a in (18, 39.9, 40, 49, 50, 59, 60, 65, 66, 90)] == [
        "<40", "<40", "40-49", "40-49", "50-59", "50-59", "60-65", "60-65", "66+", "66+"
    ]  # fmt: skip
    assert age_band(float("nan")) is None


def test_subgroup_rows_count_patients_and_leave_auc_out_without_both_outcomes():
    clin = pd.DataFrame(
        {
            "age": [30, 35, 45, 45, 47, 70, 72, 75, np.nan],
            "sex": ["F", "M", "F", "M", "F", "M", None, "F", "M"],
        }
    )
    y = np.array([0, 1, 0, 1, 1, 0, 1, 1, 0])
    p = np.array([0.1, 0.8, 0.2, 0.7, 0.9, 0.3, 0.4, 0.6, 0.5])
    groups = subgroups_of(clin, "age", "sex", "index_level")
    assert set(groups) == {"age", "sex"}  # no index-level column
    rows = subgroup_table(y, p, groups, clin["age"], development_ages=(18.0, 65.0))
    by = {(r["variable"], r["group"]): r for r in rows}
    assert [g for v, g in by if v == "age"][:3] == ["<40", "40-49", "66+"]
    r = by[("age", "40-49")]
    assert (r["n"], r["events"], r["auc"]) == (3, 2, None)  # one patient without the outcome: no AUC
    assert r["mean_risk"] == pytest.approx(0.6) and r["observed"] == pytest.approx(2 / 3)
    assert by[("sex", "F")]["n"] == 4 and by[("sex", "M")]["n"] == 4  # the patient without sex is in neither
    outside = by[("age", "outside the development range (18-65)")]
    assert outside["n"] == 3 and outside["events"] == 2


@pytest.fixture
def fitted(small_fit, tmp_path):
    """The shared small fit (conftest.py) seen from this test's own folder, where its outputs go."""
    for name in ("run", "f.csv", "c.csv"):
        (tmp_path / name).symlink_to(small_fit["dir"] / name)
    return tmp_path, small_fit["features"], small_fit["clinical"]


def test_validate_reports_subgroups_and_the_development_age_range(fitted):
    tmp, _, clin = fitted
    older = clin.assign(age=clin["age"] + 30)  # most external patients older than any development patient
    write_table(tmp / "c_old.csv", older)
    res = validate(
        tmp / "run" / "model", tmp / "f.csv", tmp / "c_old.csv", "accelerated", tmp / "val", progress=False
    )
    rows = res.metrics["subgroups"]
    assert {r["variable"] for r in rows} == {"age", "sex", "index level"}
    assert sum(r["n"] for r in rows if r["variable"] == "sex") == len(clin)
    lo, hi = json.loads((tmp / "run" / "model" / "model.json").read_text())["development"]["age_range"]
    assert (lo, hi) == (clin["age"].min(), clin["age"].max())
    outside = [r for r in rows if r["group"].startswith("outside the development range")]
    assert outside and outside[0]["n"] == int((older["age"] > hi).sum())
    share = (older["age"] > hi).mean()
    page = (tmp / "val" / "report.html").read_text()
    assert f"external patients ({share:.0%}) are outside the development range" in page
    assert "never saw such patients" in page
    # The development baselines travel in model.json to the validation report.
    assert res.metrics["development"]["baselines"]["degeneration_count"]["n"] == len(clin)


def test_validate_stops_when_too_many_inputs_are_missing(fitted):
    tmp, feat, _ = fitted
    write_table(tmp / "f_few.csv", feat[["patient_id", feat.columns[1]]])
    args = ["--no-progress", "validate", "--model", str(tmp / "run" / "model"), "--features",
            str(tmp / "f_few.csv"), "--clinical", str(tmp / "c.csv"), "--target", "accelerated"]  # fmt: skip
    r = CliRunner().invoke(cli, [*args, "--max-imputed", "0.2", "--out", str(tmp / "val_few")])
    assert r.exit_code != 0
    line = r.output.strip().splitlines()[-1]
    assert "input values are missing in the external cohort (limit 20%" in line and "f_few.csv" in line
    assert not (tmp / "val_few" / "metrics.json").exists()
    r = CliRunner().invoke(cli, [*args, "--max-imputed", "1", "--out", str(tmp / "val_all")])
    assert r.exit_code == 0, r.output
