"""A bad clinical row costs only its patient, in every stage.

One patient id on two rows of clinical.csv, and a row without an id: the stages that read no clinical value
(segment prepare, extract) warn and process that patient once; the modelling stages (fit) leave every row of
the repeated id out, with one line naming the patient, the file and the lines, and go on with the others;
`--strict` stops them all before any work; `cdeg check` still fails on both rows.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

from cdeg.check import check_stage_cohort, check_stage_table
from cdeg.cli import cli
from cdeg.cohort import Cohort, read_clinical
from cdeg.errors import CohortError
from cdeg.io import write_table

# The light PyRadiomics parameters of the throughput benchmarks: PyRadiomics really runs, quickly.
LIGHT_PARAMS = Path(__file__).resolve().parents[1] / "benchmarks" / "radiomics_light.yaml"
# The smallest modelling protocol that runs every model (as in test_stage_checks.py).
FIT_ARGS = ["--trials", "2", "--outer-folds", "2", "--repeats", "1", "--jobs", "1"]


def _invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["--no-progress", *map(str, args)])


def _lines(result: Result, *parts: str) -> list[str]:
    """Output lines holding every one of `parts`; no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    return [ln for ln in result.output.splitlines() if all(p in ln for p in parts)]


def _errors(result: Result) -> list[str]:
    return [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]


def _spoil(table: Path, repeat: int, blank: int) -> tuple[str, str, str]:
    """Append a second row for the patient of data row `repeat` and a copy of row `blank` without its id.

    Returns (the repeated id, "lines a, b" as the check words it, the line of the row without an id).
    """
    header, *rows = table.read_text().splitlines()
    pid = rows[repeat].split(",", 1)[0]
    extra = [rows[repeat], "," + rows[blank].split(",", 1)[1]]
    table.write_text("\n".join([header, *rows, *extra]) + "\n")
    n = len(rows) + 1  # last line number of the original table (header = line 1)
    return pid, f"lines {repeat + 2}, {n + 1}", f"line {n + 2}"


@pytest.fixture
def spoiled(tiny_cohort: Path, tmp_path: Path) -> tuple[Path, str, str, str, list[str]]:
    """A copy of the 6-patient cohort, its 2nd patient on two rows and its 4th row repeated without an id."""
    c = Path(shutil.copytree(tiny_cohort, tmp_path / "c"))
    ids = list(pd.read_csv(c / "clinical.csv", dtype=str)["patient_id"])
    pid, lines, blank = _spoil(c / "clinical.csv", repeat=1, blank=3)
    return c, pid, lines, blank, ids


# --- the reader: one place decides -----------------------------------------------------------------------------


def test_read_clinical_rules(tmp_path: Path) -> None:
    p = tmp_path / "clinical.csv"
    p.write_text("patient_id,age\nA,1\nB,2\n,3\nA,4\n  ,5\nC,6\n")
    before = p.read_bytes()
    with pytest.raises(CohortError, match=r"clinical\.csv: empty patient_id on line\(s\) \[4, 6\]"):
        read_clinical(p)
    first = read_clinical(p, bad_ids="first")
    assert list(first["patient_id"]) == ["A", "B", "C"] and list(first["age"]) == [1, 2, 6]
    dropped = read_clinical(p, bad_ids="drop")
    assert list(dropped["patient_id"]) == ["B", "C"] and list(dropped["age"]) == [2, 6]
    assert p.read_bytes() == before
    with pytest.raises(ValueError, match="bad_ids"):
        read_clinical(p, bad_ids="last")  # type: ignore[arg-type]


def test_patient_ids_list_a_repeated_patient_once(spoiled) -> None:
    c, pid, _, _, ids = spoiled
    assert Cohort.open(c).patient_ids() == ids and ids.count(pid) == 1


def test_table_or_column_missing_still_stops(spoiled, tmp_path: Path) -> None:
    c, *_ = spoiled
    df = pd.read_csv(c / "clinical.csv", dtype=str).rename(columns={"patient_id": "id"})
    df.to_csv(c / "clinical.csv", index=False)
    with pytest.raises(CohortError, match=r"clinical\.csv: no 'patient_id' column"):
        check_stage_cohort("extract", c, modalities="xray")
    with pytest.raises(CohortError, match="no 'patient_id' column"):
        check_stage_table("fit", c / "clinical.csv")
    (c / "clinical.csv").unlink()
    with pytest.raises(CohortError, match="clinical.csv is missing"):
        check_stage_cohort("extract", c, modalities="xray")
    with pytest.raises(CohortError, match=r"clinical\.csv: clinical\.csv is missing"):
        check_stage_table("fit", c / "clinical.csv")


# --- the imaging stages: warn, process the patient once --------------------------------------------------------


@pytest.mark.radiomics
def test_extract_processes_the_repeated_patient_once(spoiled, tmp_path: Path) -> None:
    c, pid, lines, blank, ids = spoiled
    out = tmp_path / "features"
    args = ["extract", "--cohort", c, "--modality", "xray", "--params", LIGHT_PARAMS, "--jobs", "1"]
    r = _invoke(*args, "--out", out)
    assert r.exit_code == 0, r.output
    named = _lines(r, f"patient {pid} / ", "clinical.csv", lines)
    assert len(named) == 1 and "WARNING" in named[0] and "processed once" in named[0], r.output
    assert len(_lines(r, "clinical.csv", f"empty patient_id on {blank}", "row left out")) == 1, r.output
    wide = pd.read_parquet(out / "features.parquet")
    assert list(wide["patient_id"]) == ids  # every patient once, in clinical.csv order
    assert wide.set_index("patient_id").loc[pid].notna().sum() > 10
    long = pd.read_parquet(out / "features_long.parquet")
    per_patient = long.groupby("patient_id").size()
    assert per_patient[pid] == per_patient.drop(pid).max()  # not twice the features of the others

    strict_out = tmp_path / "features_strict"
    r = _invoke(*args, "--out", strict_out, "--strict")
    assert r.exit_code == 1 and len(_errors(r)) == 1, r.output
    assert "clinical.csv" in _errors(r)[0] and "strict" in _errors(r)[0]
    assert not strict_out.exists()


def test_segment_prepare_lists_the_repeated_patient_once(spoiled, tmp_path: Path) -> None:
    c, pid, lines, _, ids = spoiled
    out = tmp_path / "raw"
    r = _invoke("segment", "prepare", "--cohort", c, "--modality", "xray", "--out", out)
    assert r.exit_code == 0, r.output
    assert len(_lines(r, f"patient {pid} / ", "clinical.csv", lines)) == 1, r.output
    cases = json.loads((out / "dataset.json").read_text())["cdeg"]["cases"]
    assert cases == ids
    assert len(list((out / "labelsTr").iterdir())) == len(ids)


def test_check_still_fails(spoiled) -> None:
    c, pid, lines, blank, _ = spoiled
    r = _invoke("check", "--cohort", c)
    assert r.exit_code == 1, r.output
    assert len(_lines(r, pid, "clinical.csv", "duplicate_id", "error", lines)) == 1, r.output
    assert len(_lines(r, "clinical.csv", "patient_id", "error", f"empty patient_id on {blank}")) == 1


# --- the modelling stages: leave the repeated patient out ------------------------------------------------------


@pytest.fixture
def tables(tmp_path: Path) -> tuple[Path, Path, Path, str, str]:
    """Simulated features and clinical tables of 40 patients, P0004 on two rows and a row without an id."""
    from cdeg.modeling.simulate import simulate

    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    write_table(tmp_path / "f.csv", feat)
    write_table(tmp_path / "c.csv", clin)
    pid, lines, _ = _spoil(tmp_path / "c.csv", repeat=4, blank=9)
    (tmp_path / "fit.yaml").write_text("inner_folds: 2\nstartup_trials: 2\n")
    return tmp_path / "f.csv", tmp_path / "c.csv", tmp_path / "fit.yaml", pid, lines


def test_fit_strict_stops_before_any_work(tables, tmp_path: Path) -> None:
    feat, clin, cfg, _, _ = tables
    out = tmp_path / "run_strict"
    args = ["--features", feat, "--clinical", clin, "--target", "accelerated", "--config", cfg]
    r = _invoke("fit", *args, *FIT_ARGS, "--out", out, "--strict")
    assert r.exit_code == 1 and len(_errors(r)) == 1, r.output
    assert "c.csv" in _errors(r)[0] and "strict" in _errors(r)[0]
    assert not out.exists()


@pytest.mark.slow
def test_fit_leaves_the_repeated_patient_out(tables, tmp_path: Path) -> None:
    feat, clin, cfg, pid, lines = tables
    run = tmp_path / "run"
    args = ["--features", feat, "--clinical", clin, "--target", "accelerated", "--config", cfg]
    r = _invoke("fit", *args, *FIT_ARGS, "--out", run)
    assert r.exit_code == 0, r.output
    assert len(_lines(r, f"patient {pid} / ", "c.csv", lines)) == 1, r.output
    assert len(_lines(r, "c.csv", "empty patient_id on line", "row left out")) == 1, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_patients"] == 39 and list(metrics["data"]["skipped_patients"]) == [pid]
    oof = pd.read_csv(run / "oof_predictions.csv", dtype={"patient_id": str})
    assert pid not in set(oof["patient_id"]) and oof["patient_id"].nunique() == 39
