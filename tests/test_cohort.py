"""The cohort layout and the clinical table reader."""

import json

import pytest

from cdeg.cohort import (
    Cohort,
    CohortMeta,
    image_path,
    mask_path,
    parse_modalities,
    read_clinical,
    write_cohort_json,
)
from cdeg.errors import CohortError


def test_paths_follow_the_layout(tmp_path):
    assert image_path(tmp_path, "P1", "mri") == tmp_path / "images" / "P1" / "mri.nii.gz"
    assert mask_path(tmp_path / "pred", "P1", "xray") == tmp_path / "pred" / "P1" / "xray.nii.gz"
    with pytest.raises(ValueError, match="valid: mri, xray"):
        image_path(tmp_path, "P1", "ct")


def test_parse_modalities_canonical_order():
    assert parse_modalities("xray,mri") == ("mri", "xray")
    assert parse_modalities(None) == ("mri", "xray")
    with pytest.raises(ValueError):
        parse_modalities("mri,pet")


def test_open_roundtrip(tmp_path):
    write_cohort_json(tmp_path, CohortMeta(name="t", profile="neck", seed=1, n_patients=2))
    (tmp_path / "clinical.csv").write_text("patient_id,age\nA1,40\nA2,50\n")
    c = Cohort.open(tmp_path)
    assert c.meta.profile == "neck" and c.patient_ids() == ["A1", "A2"]
    assert not c.is_synthetic and not c.has_image("A1", "mri")


def test_open_reports_missing_parts(tmp_path):
    with pytest.raises(CohortError, match="does not exist"):
        Cohort.open(tmp_path / "nope")
    with pytest.raises(CohortError, match="cohort.json is missing"):
        Cohort.open(tmp_path)
    (tmp_path / "cohort.json").write_text(
        json.dumps({"name": "x", "profile": "neck", "n_patients": 1, "label_convention": "other"})
    )
    with pytest.raises(CohortError, match="not supported"):
        Cohort.open(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("id,age\nA,1\n", "no 'patient_id' column"),
        ("patient_id,age\nA,1\nA,2\n", "duplicate patient_id: A"),
        ("patient_id,age\nA,1\n,2\n", "empty patient_id on line"),
    ],
)
def test_clinical_problems_name_the_file(tmp_path, text, message):
    p = tmp_path / "clinical.csv"
    p.write_text(text)
    with pytest.raises(CohortError, match=message) as e:
        read_clinical(p)
    assert str(p) in str(e.value)


def test_ids_stay_strings(tmp_path):
    p = tmp_path / "clinical.csv"
    p.write_text("patient_id,age\n007,1\n010,2\n")
    assert list(read_clinical(p)["patient_id"]) == ["007", "010"]


def test_parquet_clinical_table(tmp_path):
    import pandas as pd

    pd.DataFrame({"patient_id": ["A", "B"], "age": [1, 2]}).to_parquet(tmp_path / "c.parquet")
    assert list(read_clinical(tmp_path / "c.parquet")["patient_id"]) == ["A", "B"]
