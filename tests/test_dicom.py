"""DICOM export and import: geometry round trip, de-identification, skipped-file reporting, overrides."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

pydicom = pytest.importorskip("pydicom")

from dicom_leaks import identifying_values, output_bytes  # noqa: E402

from cdeg.cli import cli  # noqa: E402
from cdeg.cohort import CANONICAL_DIRECTION, ID_COLUMN, Cohort  # noqa: E402
from cdeg.dicom import deid  # noqa: E402
from cdeg.dicom.api import IMAGES_CSV, REPORT_CSV, import_dicom  # noqa: E402
from cdeg.dicom.convert import reorient  # noqa: E402
from cdeg.dicom.write import write_cohort_dicom  # noqa: E402
from cdeg.io import image_from_array, write_image  # noqa: E402


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from cdeg.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("src") / "neck3", profile="neck", n=3, seed=3, progress=False)


@pytest.fixture(scope="module")
def export(source, tmp_path_factory):
    return write_cohort_dicom(source, tmp_path_factory.mktemp("pacs") / "export", seed=11)


@pytest.fixture(scope="module")
def imported(export, tmp_path_factory):
    """Import with every log record captured (DEBUG, all loggers)."""
    base = tmp_path_factory.mktemp("imp")
    handler = _Collect()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)  # warnings (pydicom's quote tag values) become log records too
    try:
        summary = import_dicom(
            export.root,
            base / "cohort",
            clinical=export.root / "clinical.csv",
            id_map=base / "private" / "id_map.csv",
            progress=False,
        )
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(old)
    return summary, base / "private" / "id_map.csv", handler.lines


def _id_map(path: Path) -> dict[str, str]:
    """Original PatientID -> pseudonym."""
    return deid.read_id_map(path)


def test_round_trip_gives_identical_voxels_and_geometry(source, export, imported):
    summary, id_map, _ = imported
    mapping = _id_map(id_map)
    src = Cohort.open(source)
    n_images = 0
    for pid, ident in export.identities.items():
        pseudo = mapping[ident.patient_id]
        for modality in ("mri", "xray"):
            if not src.has_image(pid, modality):
                continue
            a = sitk.ReadImage(str(src.image_path(pid, modality)))
            b = sitk.ReadImage(str(summary.cohort / "images" / pseudo / f"{modality}.nii.gz"))
            np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
            assert a.GetPixelID() == b.GetPixelID()
            np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
            np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
            np.testing.assert_allclose(b.GetDirection(), CANONICAL_DIRECTION[modality], atol=1e-5)
            n_images += 1
    assert n_images == summary.n_mri + summary.n_xray >= 5


def test_id_map_and_clinical_translation(source, export, imported):
    summary, id_map, _ = imported
    mapping = _id_map(id_map)
    assert set(mapping) == {i.patient_id for i in export.identities.values()}
    assert sorted(mapping.values()) == ["P0001", "P0002", "P0003"]
    cohort = Cohort.open(summary.cohort)
    assert cohort.meta.profile == "external" and cohort.meta.synthetic is False and cohort.meta.seed is None
    assert cohort.meta.name == "cohort"
    assert sorted(p.name for p in (summary.cohort / "images").iterdir()) == sorted(mapping.values())
    original = pd.read_csv(Path(source) / "clinical.csv", dtype={ID_COLUMN: str}).set_index(ID_COLUMN)
    translated = cohort.clinical().set_index(ID_COLUMN)
    for pid, ident in export.identities.items():
        pd.testing.assert_series_equal(
            original.loc[pid], translated.loc[mapping[ident.patient_id]], check_names=False
        )


def test_no_identifying_value_reaches_output_or_logs(export, imported):
    summary, _, log_lines = imported
    values = identifying_values(export.root)
    expected = {v for i in export.identities.values() for v in i.identifying_values()}
    assert expected <= values  # the DICOM really holds what the generator says it wrote
    export_text = output_bytes(export.root)
    assert all(v.lower().encode() in export_text for v in expected)  # the search does find them
    text = output_bytes(summary.cohort)
    logs = "\n".join(log_lines).lower()
    assert log_lines, "no log captured"
    for v in sorted(values):
        assert v.lower().encode() not in text, f"{v!r} leaked into the cohort"
        assert v.lower() not in logs, f"{v!r} leaked into the log"
    # The private side holds the link, and only there.
    assert any(
        i.patient_id.lower().encode() in output_bytes(imported[1].parent) for i in export.identities.values()
    )


def test_every_file_is_imported_or_reported(export, imported):
    summary, id_map, _ = imported
    report = pd.read_csv(summary.cohort / REPORT_CSV, dtype=str).fillna("")
    used = pd.read_csv(summary.cohort / IMAGES_CSV)
    n_files = sum(1 for p in export.root.rglob("*") if p.is_file())
    reported_files = report[report["file_key"] != ""]
    assert summary.n_files == n_files == int(used["n_files"].sum()) + len(reported_files)
    assert reported_files["file_key"].is_unique
    files = pd.read_csv(deid.files_table_path(id_map), dtype=str).set_index("file_key")["relative_path"]
    reasons = {files[k]: r for k, r in zip(reported_files["file_key"], reported_files["reason"], strict=True)}
    assert reasons["clinical.csv"] == reasons["README.TXT"] == "not_dicom"
    assert sum(r == "not_image" for r in reasons.values()) == 3  # one SR report per patient
    decoys = [rel for rel, r in reasons.items() if r == "not_selected"]
    assert (
        any("T1_SAG" in d for d in decoys)
        and any("T2_AX" in d for d in decoys)
        and any("_AP/" in d for d in decoys)
    )
    assert set(used["spacing"]) >= {"ImagerPixelSpacing", "PixelSpacing"}  # CR and DX patients


def test_imported_cohort_passes_check(imported):
    from cdeg.check import check_cohort

    assert [f for f in check_cohort(imported[0].cohort) if f.severity == "error"] == []


def test_import_is_deterministic(export, imported, tmp_path):
    summary, id_map, _ = imported
    # The salt is random per import unless an id map stores one: a copy of the map gives the same salt.
    shutil.copy(id_map, tmp_path / "map.csv")
    again = import_dicom(
        export.root,
        tmp_path / "again",
        clinical=export.root / "clinical.csv",
        id_map=tmp_path / "map.csv",
        progress=False,
    )
    for name in ("clinical.csv", REPORT_CSV, IMAGES_CSV):
        assert (again.cohort / name).read_bytes() == (summary.cohort / name).read_bytes()


def test_cli_import_prints_summary_without_identifiers(export, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "import-dicom",
            "--dicom",
            str(export.root),
            "--out",
            str(tmp_path / "c"),
            "--id-map",
            str(tmp_path / "map.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "imported 3 patients" in result.output
    for v in identifying_values(export.root):
        assert v.lower() not in result.output.lower()


# --- de-identification rules ---------------------------------------------------------------------


def test_pseudonyms_are_deterministic_salted_and_stable():
    ids = [f"H{i:07d}" for i in range(20)]
    a = deid.assign_pseudonyms(ids)
    assert a == deid.assign_pseudonyms(list(reversed(ids)))
    assert sorted(a.values()) == [f"P{i:04d}" for i in range(1, 21)]
    salted = deid.assign_pseudonyms(ids, salt="secret")
    assert salted != a and sorted(salted.values()) == sorted(a.values())
    grown = deid.assign_pseudonyms([*ids, "H9999999"], existing=a)
    assert {k: grown[k] for k in ids} == a and grown["H9999999"] == "P0021"


def test_id_map_inside_cohort_or_dicom_is_refused(export, tmp_path):
    out = tmp_path / "cohort"
    with pytest.raises(ValueError, match="inside the cohort"):
        import_dicom(export.root, out, id_map=out / "id_map.csv", progress=False)
    with pytest.raises(ValueError, match="inside the DICOM folder"):
        import_dicom(export.root, out, id_map=export.root / "id_map.csv", progress=False)
    assert not out.exists()
    result = CliRunner().invoke(
        cli,
        ["import-dicom", "--dicom", str(export.root), "--out", str(out), "--id-map", str(out / "map.csv")],
    )
    assert result.exit_code == 2 and "inside the cohort" in result.output and "Traceback" not in result.output


# --- harder inputs: damaged files, ambiguity, overrides, spacing fallbacks ------------------------


def _patient_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def _set_tags(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path)


def _undecodable_syntax() -> str:
    """A compressed transfer syntax no installed pixel decoder handles."""
    import pydicom.pixels

    for uid in (pydicom.uid.JPEGLSLossless, pydicom.uid.HTJ2K, pydicom.uid.JPEGLosslessSV1):
        if not pydicom.pixels.get_decoder(uid).is_available:
            return uid
    pytest.skip("every candidate transfer syntax has a decoder installed")


def test_damaged_files_are_reported_and_the_rest_imported(export, tmp_path, caplog):
    dicom = tmp_path / "dicom"
    shutil.copytree(export.root, dicom)
    a, b, _ = _patient_folders(dicom)
    lateral = next(a.rglob("S001_C-SPINE_LAT/*.dcm"))
    lateral.write_bytes(lateral.read_bytes()[:-5000])  # pixel data cut short
    ap = next(a.rglob("S002_C-SPINE_AP/*.dcm"))
    ds = pydicom.dcmread(ap)
    ds.file_meta.TransferSyntaxUID = _undecodable_syntax()
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds.save_as(ap, enforce_file_format=True)
    slices = sorted(b.rglob("S003_T2_SAG/IM*"))
    slices[len(slices) // 2].write_bytes(b"garbage, not a DICOM file" * 10)  # a hole in the series
    c = _patient_folders(dicom)[2]
    named = next(c.rglob("S001_C-SPINE_LAT/*.dcm"))
    # An invalid InstanceNumber (IS) holding a name: pydicom's reading warning would quote it.
    raw = named.read_bytes()
    at = raw.index(b"\x20\x00\x13\x00IS\x02\x001 ")
    named.write_bytes(raw[:at] + b"\x20\x00\x13\x00IS\x0a\x00SECRETNAME" + raw[at + 10 :])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        summary = import_dicom(dicom, tmp_path / "cohort", id_map=tmp_path / "map.csv", progress=False)
    heard = "\n".join([str(w.message) for w in caught] + [r.getMessage() for r in caplog.records])
    assert "secretname" not in heard.lower()
    report = pd.read_csv(summary.cohort / REPORT_CSV, dtype=str).fillna("")
    files = pd.read_csv(deid.files_table_path(tmp_path / "map.csv"), dtype=str).set_index("file_key")[
        "relative_path"
    ]
    reason = {files[k]: r for k, r in zip(report["file_key"], report["reason"], strict=True) if k}
    rel = lambda p: p.relative_to(dicom).as_posix()  # noqa: E731
    assert reason[rel(lateral)] == "unreadable"
    assert reason[rel(ap)] == "unsupported_transfer_syntax"
    assert reason[rel(slices[len(slices) // 2])] == "not_dicom"
    assert reason[rel(slices[0])] == "bad_geometry"  # the rest of the holed series
    mapping = _id_map(tmp_path / "map.csv")
    pa, pb = (mapping[f.name.rsplit("_", 1)[1]] for f in (a, b))
    assert not (summary.cohort / "images" / pa / "xray.nii.gz").exists()
    assert (summary.cohort / "images" / pa / "mri.nii.gz").exists()
    assert not (summary.cohort / "images" / pb / "mri.nii.gz").exists()
    assert (summary.cohort / "images" / pb / "xray.nii.gz").exists()
    assert summary.n_patients == 3


def test_ambiguous_series_then_override(export, tmp_path):
    dicom = tmp_path / "dicom"
    shutil.copytree(export.root, dicom)
    first = _patient_folders(dicom)[0]
    hospital_id = first.name.rsplit("_", 1)[1]
    t2 = next(first.rglob("S003_T2_SAG"))
    repeat = t2.with_name("S005_T2_SAG_REPEAT")
    shutil.copytree(t2, repeat)
    new_uid = pydicom.uid.generate_uid(entropy_srcs=["repeat"])
    for i, f in enumerate(sorted(repeat.iterdir())):
        _set_tags(
            f,
            SeriesInstanceUID=new_uid,
            SeriesNumber=5,
            SOPInstanceUID=pydicom.uid.generate_uid(entropy_srcs=["repeat", str(i)]),
        )
    summary = import_dicom(dicom, tmp_path / "c1", id_map=tmp_path / "map.csv", progress=False)
    pseudo = _id_map(tmp_path / "map.csv")[hospital_id]
    report = pd.read_csv(summary.cohort / REPORT_CSV, dtype=str).fillna("")
    amb = report[(report["reason"] == "ambiguous_series") & (report["patient_id"] == pseudo)]
    assert len(amb) == 1 and amb["modality"].iloc[0] == "mri"
    key = deid.series_key(new_uid, deid.read_salt(tmp_path / "map.csv"))  # the import's random salt
    assert key in amb["detail"].iloc[0]
    assert not (summary.cohort / "images" / pseudo / "mri.nii.gz").exists()
    # Override by pseudonym and series key (what the report shows) ...
    override = tmp_path / "series.csv"
    override.write_text(f"patient,series_instance_uid,modality\n{pseudo},{key},mri\n")
    s2 = import_dicom(dicom, tmp_path / "c2", id_map=tmp_path / "map.csv", series=override, progress=False)
    used = pd.read_csv(s2.cohort / IMAGES_CSV)
    row = used[(used["patient_id"] == pseudo) & (used["modality"] == "mri")]
    assert row["series_key"].tolist() == [key] and row["rule"].iloc[0].startswith("override")
    # ... or by hospital id and full UID.
    override.write_text(f"patient,series_instance_uid,modality\n{hospital_id},{new_uid},mri\n")
    s3 = import_dicom(dicom, tmp_path / "c3", id_map=tmp_path / "map.csv", series=override, progress=False)
    assert (s3.cohort / "images" / pseudo / "mri.nii.gz").exists()


def test_bad_override_file_is_rejected_before_scanning(export, tmp_path):
    override = tmp_path / "series.csv"
    override.write_text("patient,series,modality\nX,1.2.3,mri\n")
    with pytest.raises(Exception, match="series_instance_uid"):
        import_dicom(export.root, tmp_path / "c", series=override, progress=False)
    assert not (tmp_path / "c").exists()


def _tiny_cohort(root: Path, mri_spacing, mri_direction, xray_spacing) -> Path:
    from cdeg.cohort import CohortMeta, write_cohort_json

    rng = np.random.default_rng(0)
    mri = rng.integers(-50, 3000, size=(5, 30, 20)).astype(np.int16)
    xray = rng.integers(0, 4000, size=(40, 24)).astype(np.uint16)
    write_image(
        root / "images" / "A1" / "mri.nii.gz",
        image_from_array(mri, mri_spacing, (3.0, -7.5, 12.25), mri_direction),
    )
    write_image(
        root / "images" / "A1" / "xray.nii.gz", image_from_array(xray, xray_spacing, (0, 0), (1, 0, 0, 1))
    )
    pd.DataFrame({ID_COLUMN: ["A1"], "age": [50]}).to_csv(root / "clinical.csv", index=False)
    write_cohort_json(root, CohortMeta(name="tiny", profile="external", n_patients=1))
    return root


def test_anisotropic_oblique_geometry_round_trip(tmp_path):
    angle = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    direction = tuple((rot @ np.asarray(CANONICAL_DIRECTION["mri"]).reshape(3, 3)).ravel())
    src = _tiny_cohort(tmp_path / "src", (0.7, 0.9, 3.3), direction, (0.2, 0.3))
    export = write_cohort_dicom(src, tmp_path / "dicom", seed=1)
    summary = import_dicom(export.root, tmp_path / "out", progress=False)
    for modality in ("mri", "xray"):
        a = sitk.ReadImage(str(src / "images" / "A1" / f"{modality}.nii.gz"))
        b = sitk.ReadImage(str(summary.cohort / "images" / "P0001" / f"{modality}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


def test_imager_pixel_spacing_fallback_and_magnification(tmp_path):
    from cdeg.dicom.convert import radiograph
    from cdeg.dicom.scan import read_header

    src = _tiny_cohort(tmp_path / "src", (1.0, 1.0, 3.0), CANONICAL_DIRECTION["mri"], (0.2, 0.3))
    export = write_cohort_dicom(src, tmp_path / "dicom", seed=0)  # patient 0: CR, ImagerPixelSpacing only
    lateral = next(export.root.rglob("S001_C-SPINE_LAT/*.dcm"))
    assert "PixelSpacing" not in pydicom.dcmread(lateral, stop_before_pixels=True)
    image, source = radiograph(read_header(lateral, "x"))
    assert source == "ImagerPixelSpacing"
    np.testing.assert_allclose(image.GetSpacing(), (0.2, 0.3))
    _set_tags(lateral, EstimatedRadiographicMagnificationFactor="1.25")
    image, source = radiograph(read_header(lateral, "x"))
    assert "Magnification" in source
    np.testing.assert_allclose(image.GetSpacing(), (0.16, 0.24))
    _set_tags(lateral, PatientOrientation=["A", "F"])  # patient facing image right: flipped to canonical
    flipped, _ = radiograph(read_header(lateral, "x"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(flipped), sitk.GetArrayFromImage(image)[:, ::-1])


def test_reorient_keeps_physical_positions():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1000, size=(4, 6, 5)).astype(np.int16)
    img = image_from_array(arr, (0.5, 0.8, 3.0), (10.0, -20.0, 30.0), CANONICAL_DIRECTION["mri"])
    other = reorient(img, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert other.GetSize() != img.GetSize()
    for idx in [(0, 0, 0), (4, 5, 3), (2, 1, 3)]:
        p = img.TransformIndexToPhysicalPoint(idx)
        assert other[other.TransformPhysicalPointToIndex(p)] == img[idx]
    back = reorient(other, CANONICAL_DIRECTION["mri"])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin())
    np.testing.assert_allclose(back.GetDirection(), img.GetDirection())
