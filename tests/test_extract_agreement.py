"""`cdeg extract-agreement`: ICC(2,1), ICC(3,1) and Bland-Altman of two feature tables of the same patients, the
stable-features table `cdeg fit --stable-features` reads, and one-line errors for every user mistake."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cdeg.features.agreement import agreement, bland_altman, icc
from cdeg.modeling.preprocess import read_icc_table
from click.testing import CliRunner
from tables import measurement_signal_tables

from cdeg.cli import cli
from cdeg.errors import CdegError
from cdeg.outputs import AgreementRun, FeatureFolder, ModelFolder, read_manifest

ROOT = Path(__file__).resolve().parents[1]
#: Shrout & Fleiss (1979) example: 6 targets rated by 4 judges. R's psych::ICC on these ratings (as printed in
#: github.com/dwoll/RExRepos, interRaterICC): ICC2 0.290 [0.019, 0.76], ICC3 0.715 [0.342, 0.95] (DescTools
#: prints the estimates to three decimals: 0.290 and 0.715).
SHROUT_FLEISS = np.array(
    [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], dtype=float
)
#: The radiomics column given a low ICC in the fit test (the second rater measures it independently).
NOISY = "xray__C5-C6__original_glcm_Correlation"


def _two_raters(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return icc(np.stack([a, b], axis=1))


def _assert_ci_contains_estimate(stats: dict[str, np.ndarray]) -> None:
    for name in ("icc_2_1", "icc_3_1"):
        est, low, high = stats[name], stats[f"{name}_ci_low"], stats[f"{name}_ci_high"]
        assert np.all(low <= est + 1e-12) and np.all(est <= high + 1e-12), name


def test_icc_reproduces_the_shrout_fleiss_example():
    stats = icc(SHROUT_FLEISS[:, :, None])
    assert stats["n"][0] == 6
    assert stats["icc_2_1"][0] == pytest.approx(0.290, abs=1e-3)
    assert stats["icc_3_1"][0] == pytest.approx(0.715, abs=1e-3)
    assert stats["icc_2_1_ci_low"][0] == pytest.approx(0.019, abs=1e-3)
    assert stats["icc_2_1_ci_high"][0] == pytest.approx(0.76, abs=5e-3)
    assert stats["icc_3_1_ci_low"][0] == pytest.approx(0.342, abs=1e-3)
    assert stats["icc_3_1_ci_high"][0] == pytest.approx(0.95, abs=5e-3)


def test_icc_of_known_structures():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, size=(60, 5))
    same = _two_raters(x, x)
    np.testing.assert_allclose(same["icc_2_1"], 1.0)
    np.testing.assert_allclose(same["icc_3_1"], 1.0)
    _assert_ci_contains_estimate(same)
    # A constant offset: perfectly consistent (ICC(3,1) = 1) but not in absolute agreement (ICC(2,1) < 1).
    offset = _two_raters(x, x + 3.0)
    np.testing.assert_allclose(offset["icc_3_1"], 1.0)
    assert np.all(offset["icc_2_1"] < 0.8)
    _assert_ci_contains_estimate(offset)
    noise = _two_raters(x, rng.normal(10, 2, size=x.shape))
    assert np.all(np.abs(noise["icc_2_1"]) < 0.35) and np.all(np.abs(noise["icc_3_1"]) < 0.35)
    _assert_ci_contains_estimate(noise)
    close = _two_raters(x, x + rng.normal(0, 0.2, size=x.shape))
    assert np.all(close["icc_2_1"] > 0.98)
    _assert_ci_contains_estimate(close)


def test_icc_uses_complete_pairs_per_feature_and_nan_where_undefined():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    y = x + rng.normal(0, 0.1, size=x.shape)
    y[:5, 0] = np.nan
    x[:, 2] = y[:, 2] = 4.0  # no variation at all: undefined
    stats = _two_raters(x, y)
    assert stats["n"].tolist() == [15, 20, 20]
    expected = _two_raters(x[5:, :1], y[5:, :1])
    assert stats["icc_2_1"][0] == pytest.approx(expected["icc_2_1"][0])
    assert np.isnan(stats["icc_2_1"][2]) and np.isnan(stats["icc_3_1_ci_low"][2])


def test_bland_altman_of_a_known_offset():
    rng = np.random.default_rng(2)
    b = rng.normal(6, 1, size=(200, 2))
    noise = rng.normal(0, 0.5, size=b.shape)
    ba = bland_altman(b + 1.5 + noise, b)
    d = 1.5 + noise
    np.testing.assert_allclose(ba["ba_bias"], d.mean(axis=0))
    np.testing.assert_allclose(ba["ba_sd"], d.std(axis=0, ddof=1))
    np.testing.assert_allclose(ba["ba_loa_high"] - ba["ba_loa_low"], 2 * 1.96 * d.std(axis=0, ddof=1))
    assert np.all(np.abs(ba["ba_bias"] - 1.5) < 0.1)


# ----------------------------------------------------------------------------------------------------------
# the stage
# ----------------------------------------------------------------------------------------------------------


def _pair(tmp_path: Path, n: int = 90) -> tuple[Path, Path]:
    """features.csv of a cohort (the reference masks) and a second table of the same patients (the predicted
    masks): every column close to the reference, the disc heights 0.3 mm higher, NOISY measured independently,
    one patient only in each table."""
    ref, _ = measurement_signal_tables(tmp_path / "ref", n=n)
    a = pd.read_csv(ref)
    rng = np.random.default_rng(5)
    b = a.copy()
    cols = [c for c in a.columns if c != "patient_id"]
    b[cols] = a[cols] + rng.normal(0, 0.05, size=(len(a), len(cols)))
    heights = [c for c in cols if c.endswith("disc_height_middle_mm")]
    b[heights] += 0.3
    b[NOISY] = rng.normal(0, 1, size=len(a))
    a = a.iloc[:-1]
    b = b.iloc[1:]
    folder = tmp_path / "predicted"
    folder.mkdir()
    b.to_parquet(FeatureFolder(folder).features, index=False)
    a.to_csv(tmp_path / "reference.csv", index=False)
    return folder, tmp_path / "reference.csv"


def test_agreement_writes_the_contract(tmp_path):
    predicted, reference = _pair(tmp_path)
    before = reference.read_bytes()
    res = agreement([predicted, reference], tmp_path / "out")
    run = AgreementRun(tmp_path / "out")
    assert reference.read_bytes() == before
    table = run.read_table()
    assert len(table) == 16
    assert set(table["feature_class"]) == {"measurement", "glcm", "firstorder", "shape2D"}
    row = table.set_index("column").loc["xray__C4-C5__disc_height_middle_mm"]
    assert row["modality"] == "xray" and row["level"] == "C4-C5" and row["unit"] == "mm"
    assert row["n"] == 88
    assert row["ba_bias"] == pytest.approx(0.3, abs=0.02)  # first (predicted) minus second (reference)
    assert row["ba_loa_low"] < row["ba_bias"] < row["ba_loa_high"]
    assert row["icc_3_1"] > row["icc_2_1"]  # the offset costs absolute agreement only
    radiomics = table[table["feature_class"] != "measurement"]
    assert radiomics[["ba_bias", "ba_sd"]].isna().all().all()
    assert table.set_index("column").loc[NOISY, "icc_2_1"] < 0.4
    manifest = read_manifest(run.manifest, required=AgreementRun.MANIFEST_KEYS)
    assert manifest == res.manifest
    assert manifest["patients"] == {"matched": 88, "only_in_first": ["P089"], "only_in_second": ["P000"]}
    share = manifest["reliable_share"]["xray"]
    assert share["glcm"]["n_features"] == 4 and share["glcm"]["icc_ge_0.75"] == pytest.approx(0.75)
    assert share["firstorder"]["icc_ge_0.9"] == 1.0
    icc_back = read_icc_table(run.stable_features)
    assert icc_back == pytest.approx(dict(zip(table["column"], table["icc_2_1"], strict=True)))


def test_output_file_names_are_spelled_only_in_outputs():
    names = {AgreementRun.TABLE, AgreementRun.STABLE_FEATURES, AgreementRun.MANIFEST}
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("cdeg", "segmentation", "features", "modeling")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "cdeg" / "outputs.py"
        for name in names
        if re.search(rf"[\"']{re.escape(name)}[\"']", path.read_text())
    ]
    assert not offenders, offenders


def test_cli_end_to_end_and_fit_drops_the_unstable_feature(tmp_path):
    predicted, reference = _pair(tmp_path)
    out = tmp_path / "agreement"
    r = CliRunner().invoke(
        cli,
        ["extract-agreement", "--features", str(predicted), "--features", str(reference), "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "88 patients" in r.output and AgreementRun(out).table.is_file()
    stable = AgreementRun(out).stable_features
    _, clinical = measurement_signal_tables(tmp_path / "dev", n=90)
    fit_out = tmp_path / "fit"
    args = ["fit", "--features", str(reference), "--clinical", str(clinical), "--target", "accelerated"]
    args += ["--out", str(fit_out), "--stable-features", str(stable), "--min-icc", "0.75"]
    args += ["--trials", "2", "--outer-folds", "2", "--repeats", "1", "--jobs", "1", "--tiers", "none"]
    r = CliRunner().invoke(cli, ["--no-progress", *args])
    assert r.exit_code == 0, r.output
    model = ModelFolder(fit_out / "model")
    manifest = model.read()
    assert manifest["config"]["preprocess"]["stable_features"] == str(stable)
    radiomics_models = [m for m, info in manifest["models"].items() if NOISY in info["input_columns"]]
    assert radiomics_models  # the column reached the model, and the stability filter took it out
    for name in radiomics_models:
        assert NOISY not in manifest["models"][name]["used_columns"], name
        saved = json.loads((model.root / ModelFolder.model_files(name)["preprocess"]).read_text())
        (step,) = [s for s in saved["steps"] if s["class"] == "StableFeatureFilter"]
        assert list(step["state"]["dropped_"]) == [NOISY], name
        assert NOISY not in step["state"]["columns_"]


def test_print_config_shows_the_stability_options(tmp_path):
    icc_csv = tmp_path / "icc.csv"
    pd.DataFrame({"feature": [NOISY], "icc": [0.2]}).to_csv(icc_csv, index=False)
    r = CliRunner().invoke(
        cli, ["fit", "--print-config", "--stable-features", str(icc_csv), "--min-icc", "0.9"]
    )
    assert r.exit_code == 0, r.output
    assert f"stable_features: {icc_csv}" in r.output and "min_icc: 0.9" in r.output


# ----------------------------------------------------------------------------------------------------------
# one-line errors
# ----------------------------------------------------------------------------------------------------------


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line_error(result, *words: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_errors_are_one_line_naming_the_file(tmp_path):
    _, reference = _pair(tmp_path, n=12)
    out = str(tmp_path / "out")
    clinical = tmp_path / "dev" / "clinical.csv"
    measurement_signal_tables(tmp_path / "dev", n=12)
    r = _invoke("extract-agreement", "--features", str(clinical), "--features", str(reference), "--out", out)
    _one_line_error(r, "not a features table", str(clinical))
    other = tmp_path / "other.csv"
    pd.read_csv(reference).assign(patient_id=lambda d: "X" + d["patient_id"]).to_csv(other, index=False)
    r = _invoke("extract-agreement", "--features", str(other), "--features", str(reference), "--out", out)
    _one_line_error(r, "no patient in common", str(other))
    renamed = tmp_path / "renamed.csv"
    table = pd.read_csv(reference)
    table.rename(columns={c: c.replace("xray__", "mri__") for c in table.columns}).to_csv(
        renamed, index=False
    )
    r = _invoke("extract-agreement", "--features", str(renamed), "--features", str(reference), "--out", out)
    _one_line_error(r, "no feature column in common", str(renamed))
    dup = tmp_path / "dup.csv"
    pd.concat([table, table.iloc[[3]]]).to_csv(dup, index=False)
    r = _invoke("extract-agreement", "--features", str(dup), "--features", str(reference), "--out", out)
    _one_line_error(r, "duplicate", "P003", str(dup))
    text = tmp_path / "text.csv"
    table.assign(**{NOISY: table[NOISY].astype(object)}).pipe(_set_text, NOISY, 2).to_csv(text, index=False)
    r = _invoke("extract-agreement", "--features", str(text), "--features", str(reference), "--out", out)
    _one_line_error(r, "patient P002", NOISY, str(text))
    r = _invoke("extract-agreement", "--features", str(tmp_path), "--features", str(reference), "--out", out)
    _one_line_error(r, "not a feature folder", str(tmp_path))
    r = _invoke("extract-agreement", "--features", str(reference), "--out", out)
    _one_line_error(r, "exactly twice")
    assert not (tmp_path / "out").exists()
    with pytest.raises(CdegError, match="no patient in common"):
        agreement([other, reference], tmp_path / "out")


def _set_text(df: pd.DataFrame, column: str, row: int) -> pd.DataFrame:
    df.loc[row, column] = "n/a?"
    return df


def test_fit_with_a_missing_stability_table_is_one_line(tmp_path):
    feat, clin = measurement_signal_tables(tmp_path, n=30)
    missing = tmp_path / "nope.csv"
    r = _invoke(
        "fit", "--features", str(feat), "--clinical", str(clin), "--target", "accelerated",
        "--out", str(tmp_path / "fit"), "--stable-features", str(missing),
    )  # fmt: skip
    _one_line_error(r, "stable_features", "not found", str(missing))
    assert not (tmp_path / "fit").exists()
