"""benchmarks/bench_public_radiomics.py: radMLBench files in, cdeg fit, the JSON and the missing-data message."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_public_radiomics.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("bench_public_radiomics", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def write_radmlbench(folder: Path, name: str, n: int = 40, n_features: int = 12, seed: int = 0) -> Path:
    """A fake dataset in radMLBench's file format: gzip CSV with ID, Target and feature columns."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    X = rng.normal(size=(n, n_features))
    X[:, 0] += 1.5 * y  # a planted signal, so both models have something to find
    names = [f"original_firstorder_F{i}" for i in range(n_features)]
    table = pd.DataFrame(X, columns=names)
    table.insert(0, "Target", y)
    table.insert(0, "ID", [f"{name}-{i:03d}" for i in range(n)])
    path = folder / f"{name}.gz"
    table.to_csv(path, compression="gzip", index=False)
    return path


def test_convert_keeps_ids_target_and_features(bench, tmp_path):
    src = write_radmlbench(tmp_path, "Fake")
    features, clinical = bench.convert(src, tmp_path / "tables")
    f = pd.read_csv(features, dtype={"patient_id": str})
    c = pd.read_csv(clinical, dtype={"patient_id": str})
    assert list(c.columns) == ["patient_id", "target"]
    assert f.columns[0] == "patient_id" and "Target" not in f.columns and "ID" not in f.columns
    assert f.shape == (40, 13)
    assert list(f["patient_id"]) == list(c["patient_id"])
    assert c["target"].sum() == 20


def test_checks_definitions(bench):
    pub = bench.Published(0.80, None, "test")
    primary = {"auc": 0.70, "auc_ci": [0.60, 0.81]}
    baseline = {"auc": 0.75, "auc_ci": [0.65, 0.85]}  # half-width 0.10: 0.70 >= 0.65
    assert bench.checks(primary, baseline, pub) == {
        "at_least_published": True,
        "not_worse_than_baseline": True,
    }
    primary = {"auc": 0.60, "auc_ci": [0.50, 0.79]}
    assert bench.checks(primary, baseline, pub) == {
        "at_least_published": False,
        "not_worse_than_baseline": False,
    }
    assert bench.checks(primary, baseline, bench.UNPUBLISHED)["at_least_published"] is None


def test_main_fits_and_writes_json(bench, tmp_path, capsys):
    write_radmlbench(tmp_path, "WORC-Lipo")
    out = tmp_path / "res.json"
    argv = ["--data", str(tmp_path), "--datasets", "WORC-Lipo", "--out", str(out)]
    argv += ["--trials", "2", "--outer-folds", "2", "--repeats", "1", "--jobs", "1"]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["machine"]["cpu_cores"] >= 1 and len(res["machine"]["load_average_1min_before_after"]) == 2
    r = res["datasets"]["WORC-Lipo"]
    assert r["n_patients"] == 40 and r["n_features"] == 12 and r["primary_model"] == "xgboost"
    for m in ("xgboost", "logistic"):
        lo, hi = r["auc_ci"][m]
        assert 0.0 <= lo <= r["auc"][m] <= hi <= 1.0
    assert r["published"]["auc"] == 0.83 and r["published"]["source"].startswith("Starmans")
    assert set(r["checks"]) == {"at_least_published", "not_worse_than_baseline"}
    assert all(isinstance(v, bool) for v in r["checks"].values())
    assert "WORC-Lipo" in capsys.readouterr().out


def test_missing_folder_one_line_exit_2(bench, tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "github.com/aydindemircioglu/radMLBench" in err
    assert not (tmp_path / "r.json").exists()


def test_missing_file_names_its_url(bench, tmp_path, capsys):
    write_radmlbench(tmp_path, "WORC-Lipo")
    assert bench.main(["--data", str(tmp_path), "--datasets", "WORC-Lipo,WORC-GIST"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "WORC-GIST.gz" in err and "WORC-Lipo.gz" not in err
