"""Burned-in text in imported radiographs (attribute, heuristic, masking) and the random pseudonym salt."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

pydicom = pytest.importorskip("pydicom")

from dicom_leaks import output_bytes  # noqa: E402

from cdeg.cli import cli  # noqa: E402
from cdeg.cohort import Cohort  # noqa: E402
from cdeg.dicom import deid  # noqa: E402
from cdeg.dicom.api import IMAGES_CSV, REPORT_CSV, SALT_ENV, import_dicom  # noqa: E402
from cdeg.dicom.burned_in import REGIONS, find_text_regions, mask_regions, region_slices  # noqa: E402
from cdeg.dicom.write import write_cohort_dicom  # noqa: E402

#: Text as radiograph burn-ins place it: (text, anchor point as fractions of width and height, font
#: size as a fraction of the height, PIL anchor). A side marker, a name/date line, an accession number.
CORNER_MARKER = [("L", (0.03, 0.03), 0.04, "la")]
TOP_LINE = [("QUARENDON^OTTOLINE  1961-03-14  2021-06-02", (0.5, 0.015), 0.025, "ma")]
BOTTOM_LINE = [("ACC A48213377", (0.5, 0.985), 0.025, "md")]
#: Text differing from its background by this fraction of the image range counts as readable.
READABLE = 0.25


def burn(array: np.ndarray, items: list, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw anti-aliased text at grey `level` into a copy of a radiograph with PIL; returns it and the
    text's pixels."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = array.shape
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for text, (xf, yf), size, anchor in items:
        font = ImageFont.load_default(size=max(8, round(size * h)))
        draw.text((xf * w, yf * h), text, fill=255, font=font, anchor=anchor)
    cover = np.asarray(canvas, np.float32) / 255
    out = np.round(array.astype(np.float32) * (1 - cover) + level * cover).astype(array.dtype)
    return out, cover > 0


def readable_text(before: np.ndarray, after: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Text pixels that differ from the image under them by at least READABLE of its range."""
    lo, hi = np.percentile(before, [0.5, 99.5])
    return text & (np.abs(after.astype(np.float64) - before) >= READABLE * (hi - lo))


def fingerprints(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def radiographs(tmp_path_factory):
    """30 clean synthetic lateral radiographs (neck profile, seed 23): a cohort folder."""
    from cdeg.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("bi") / "xr30", n=30, seed=23, modalities="xray", progress=False
    )


@pytest.fixture(scope="module")
def arrays(radiographs):
    cohort = Cohort.open(radiographs)
    return {
        p: sitk.GetArrayFromImage(sitk.ReadImage(str(cohort.image_path(p, "xray"))))
        for p in cohort.patient_ids()
    }


@pytest.fixture(scope="module")
def export(radiographs, tmp_path_factory):
    """The 30 radiographs as a hospital DICOM export (read-only: copy before changing)."""
    return write_cohort_dicom(radiographs, tmp_path_factory.mktemp("bi_pacs") / "export", seed=5)


def _laterals(root: Path) -> list[Path]:
    """The lateral radiograph file of each patient folder, in folder order."""
    return [next(p.rglob("S001_C-SPINE_LAT/*.dcm")) for p in sorted(root.iterdir()) if p.is_dir()]


def _burn_file(path: Path, items: list, grey: float) -> tuple[np.ndarray, np.ndarray]:
    """Burn text into a DICOM file's pixels at `grey` x the largest stored value; returns before, text."""
    ds = pydicom.dcmread(path)
    before = ds.pixel_array.copy()
    after, text = burn(before, items, grey * float((1 << int(ds.BitsStored)) - 1))
    ds.PixelData = np.ascontiguousarray(after, dtype=before.dtype).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return before, text


def _hospital_id(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0].rsplit("_", 1)[1]  # folders end in the hospital id


def _xray(cohort: Path, pseudo: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / "images" / pseudo / "xray.nii.gz")))


def _burned_rows(cohort: Path) -> pd.DataFrame:
    report = pd.read_csv(cohort / REPORT_CSV, dtype=str).fillna("")
    return report[report["reason"] == "burned_in_text"]


# --- the heuristic on clean and burned radiographs ------------------------------------------------


def test_clean_radiographs_are_not_flagged(arrays):
    assert len(arrays) >= 30
    flagged = {p: r.regions for p, a in arrays.items() if (r := find_text_regions(a)).regions}
    assert flagged == {}


@pytest.mark.parametrize(
    ("items", "grey", "where"),
    [
        (CORNER_MARKER, 1.0, {"top_left"}),
        (CORNER_MARKER, 0.7, {"top_left"}),
        (TOP_LINE, 1.0, {"top", "top_left", "top_right"}),
        (BOTTOM_LINE, 0.0, {"bottom", "bottom_left", "bottom_right"}),
    ],
    ids=["corner-L-white", "corner-L-grey", "top-name-date-white", "bottom-accession-black"],
)
def test_burned_text_is_found_and_masking_leaves_none_readable(arrays, items, grey, where):
    """Found where it was drawn (a line across the top may be read only in the corners, where the
    background is dark), and after masking no readable text pixel is left."""
    n_readable = 0
    for pid, a in arrays.items():
        burned, text = burn(a, items, grey * float(a.max()))  # grey: fraction of the maximum
        found = find_text_regions(burned).regions
        readable = readable_text(a, burned, text)
        if readable.sum() < 10:
            continue  # white text on the saturated skull or shoulders cannot be read: nothing to find
        n_readable += 1
        assert found and set(found) <= where, (pid, found)
        masked = mask_regions(burned, found)
        untouched = np.ones(a.shape, bool)
        for name in found:
            untouched[region_slices(a.shape, name)] = False
        assert np.unique(masked[~untouched]).size == 1  # blanked: one grey level, no stroke left
        assert not (readable & untouched).any(), (pid, found)  # no readable text outside them
        np.testing.assert_array_equal(masked[untouched], burned[untouched])
    assert n_readable >= 25  # the text is readable in most images, so this tested something


def test_masking_fills_the_regions_with_their_median():
    rng = np.random.default_rng(0)
    a = rng.integers(100, 4000, size=(200, 160)).astype(np.uint16)
    out = mask_regions(a, ("top_left", "top"))
    inside = np.zeros(a.shape, bool)
    for name in ("top_left", "top"):
        inside[region_slices(a.shape, name)] = True
    assert np.unique(out[inside]).tolist() == [round(float(np.median(a[inside])))]
    np.testing.assert_array_equal(out[~inside], a[~inside])
    assert out.dtype == a.dtype and a.max() > out[:5, :5].max()  # the input array is not changed
    assert set(REGIONS) >= {"top_left", "top_right", "bottom_left", "bottom_right", "top", "bottom"}


# --- through the importer -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def burned_export(export, tmp_path_factory):
    """A copy of the export with text burned into three patients' lateral radiographs."""
    root = tmp_path_factory.mktemp("bi_burned") / "dicom"
    shutil.copytree(export.root, root)
    files = _laterals(root)
    cases = {}
    for path, (items, grey, region) in zip(
        files[:3],
        [(CORNER_MARKER, 1.0, "top_left"), (TOP_LINE, 1.0, "top"), (BOTTOM_LINE, 0.0, "bottom")],
        strict=True,
    ):
        before, text = _burn_file(path, items, grey)
        cases[_hospital_id(path, root)] = (path, region, before, text)
    return root, cases


def test_text_in_corner_and_bands_is_reported_and_masked_by_the_cli(burned_export, tmp_path, caplog):
    root, cases = burned_export
    before_inputs = fingerprints(root)
    id_map = tmp_path / "private" / "map.csv"
    with caplog.at_level(logging.WARNING, logger="cdeg.dicom.api"):
        plain = import_dicom(root, tmp_path / "plain", id_map=id_map, progress=False)
    result = CliRunner().invoke(
        cli,
        [
            "import-dicom",
            "--dicom",
            str(root),
            "--out",
            str(tmp_path / "masked"),
            "--id-map",
            str(id_map),
            "--mask-burned-in",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 images with burned-in text (3 masked)" in result.output
    assert fingerprints(root) == before_inputs, "an input file was modified"
    mapping = deid.read_id_map(id_map)
    files = pd.read_csv(deid.files_table_path(id_map), dtype=str).set_index("file_key")["relative_path"]
    masked_dir = tmp_path / "masked"
    rows = _burned_rows(masked_dir).set_index("patient_id")
    assert sorted(rows.index) == sorted(mapping[h] for h in cases)
    for hospital_id, (path, region, _, text) in cases.items():
        pseudo = mapping[hospital_id]
        row = rows.loc[pseudo]
        found = row["detail"].split("text found in ")[1].split("; ")[0].split(", ")
        assert row["modality"] == "xray" and region in found, row["detail"]
        assert files[row["file_key"]] == path.relative_to(root).as_posix()
        assert any(pseudo in r.getMessage() and row["file_key"] in r.getMessage() for r in caplog.records)
        burned = pydicom.dcmread(path).pixel_array
        unmasked, masked = _xray(plain.cohort, pseudo), _xray(masked_dir, pseudo)
        np.testing.assert_array_equal(unmasked, burned)  # without the flag nothing in the image changes
        untouched = np.ones(burned.shape, bool)
        for name in row["detail"].split("masked: ")[1].split(", "):
            untouched[region_slices(burned.shape, name)] = False
        assert np.unique(masked[~untouched]).size == 1, pseudo  # blanked
        np.testing.assert_array_equal(masked[untouched], burned[untouched])  # the rest, pixel for pixel
        assert not text[untouched].any()  # every text pixel was in a blanked region
    for pseudo in set(mapping.values()) - set(rows.index):  # clean patients: identical images
        np.testing.assert_array_equal(_xray(plain.cohort, pseudo), _xray(masked_dir, pseudo))
    used = pd.read_csv(masked_dir / IMAGES_CSV, dtype=str).fillna("").set_index("patient_id")
    assert (used.loc[rows.index, "masked"] != "").all() and (used.drop(rows.index)["masked"] == "").all()
    assert (used.loc[rows.index, "burned_in"] == "heuristic").all()
    assert json.loads((masked_dir / "cohort.json").read_text())["extra"]["mask_burned_in"] is True
    assert (
        _burned_rows(plain.cohort).shape[0] == 3
        and "not masked" in _burned_rows(plain.cohort)["detail"].iloc[0]
    )


def test_attribute_yes_is_flagged_for_radiograph_and_mri(tiny_cohort, tmp_path, caplog):
    root = write_cohort_dicom(tiny_cohort, tmp_path / "dicom", seed=2).root
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    lateral = next(folders[0].rglob("S001_C-SPINE_LAT/*.dcm"))
    t2 = sorted(folders[1].rglob("S003_T2_SAG/IM*"))
    for path in [lateral, *t2]:
        ds = pydicom.dcmread(path)
        ds.BurnedInAnnotation = "YES"
        ds.save_as(path, enforce_file_format=True)
    id_map = tmp_path / "map.csv"
    with caplog.at_level(logging.WARNING, logger="cdeg.dicom.api"):
        plain = import_dicom(root, tmp_path / "plain", id_map=id_map, progress=False)
    warned = [r.getMessage() for r in caplog.records if "burned-in" in r.getMessage()]
    masked = import_dicom(root, tmp_path / "masked", id_map=id_map, mask_burned_in=True, progress=False)
    mapping = deid.read_id_map(id_map)
    px, pm = (mapping[f.name.rsplit("_", 1)[1]] for f in folders[:2])
    rows = _burned_rows(plain.cohort)
    assert sorted(zip(rows["patient_id"], rows["modality"], strict=True)) == sorted(
        [(px, "xray"), (pm, "mri")]
    )
    assert rows["detail"].str.contains("BurnedInAnnotation YES").all()
    assert len(warned) == 2  # one log warning per image, naming the patient and the file's key
    for patient, key in zip(rows["patient_id"], rows["file_key"], strict=True):
        assert any(patient in w and key in w for w in warned)
    # No text in the pixels: the attribute alone blanks every region where burn-ins sit.
    burned = pydicom.dcmread(lateral).pixel_array
    np.testing.assert_array_equal(_xray(plain.cohort, px), burned)
    out = _xray(masked.cohort, px)
    inside = np.zeros(burned.shape, bool)
    for name in REGIONS:
        inside[region_slices(burned.shape, name)] = True
    np.testing.assert_array_equal(out[~inside], burned[~inside])
    assert not np.array_equal(out[inside], burned[inside])
    # MRI is reported, never changed.
    mri = [sitk.ReadImage(str(c / "images" / pm / "mri.nii.gz")) for c in (plain.cohort, masked.cohort)]
    np.testing.assert_array_equal(*(sitk.GetArrayFromImage(m) for m in mri))
    assert masked.n_burned_in == 2 and masked.n_masked == 1


# --- the pseudonym salt ---------------------------------------------------------------------------


def test_salt_is_random_per_import_and_kept_only_in_the_id_map(export, tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    maps = [tmp_path / "private" / f"map{i}.csv" for i in (1, 2)]
    with caplog.at_level(logging.DEBUG):
        cohorts = [
            import_dicom(export.root, tmp_path / f"c{i}", id_map=m, progress=False).cohort
            for i, m in zip((1, 2), maps, strict=True)
        ]
    salts = [deid.read_salt(m) for m in maps]
    assert all(s and len(s) == 32 for s in salts) and salts[0] != salts[1]
    first, second = (deid.read_id_map(m) for m in maps)
    assert set(first) == set(second) and first != second  # same patients, other pseudonyms (30! orders)
    logs = "\n".join(r.getMessage() for r in caplog.records).lower()
    for salt, cohort in zip(salts, cohorts, strict=True):
        assert salt.lower().encode() not in output_bytes(cohort), "the salt reached the cohort"
        assert salt.lower() not in logs
        assert json.loads((cohort / "cohort.json").read_text())["extra"]["salt_source"] == "random"
    assert salts[0] in maps[0].read_text()


def test_reimport_with_the_id_map_reuses_its_salt_and_a_given_salt_wins(export, tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV, raising=False)
    id_map = tmp_path / "map.csv"
    a = import_dicom(export.root, tmp_path / "a", id_map=id_map, progress=False)
    salt, mapping = deid.read_salt(id_map), deid.read_id_map(id_map)
    b = import_dicom(export.root, tmp_path / "b", id_map=id_map, progress=False)
    assert deid.read_salt(id_map) == salt and deid.read_id_map(id_map) == mapping
    for name in (REPORT_CSV, IMAGES_CSV, "clinical.csv"):  # file and series keys stable too
        assert (a.cohort / name).read_bytes() == (b.cohort / name).read_bytes()
    assert json.loads((b.cohort / "cohort.json").read_text())["extra"]["salt_source"] == "id_map"
    # A salt given (here through the environment, as the README advises) wins over the stored one.
    monkeypatch.setenv(SALT_ENV, "site-secret")
    fresh = tmp_path / "fresh.csv"
    result = CliRunner().invoke(
        cli,
        ["import-dicom", "--dicom", str(export.root), "--out", str(tmp_path / "c"), "--id-map", str(fresh)],
    )
    assert result.exit_code == 0, result.output
    assert deid.read_salt(fresh) == "site-secret"
    assert deid.read_id_map(fresh) == deid.assign_pseudonyms(mapping, "site-secret")
    assert b"site-secret" not in output_bytes(tmp_path / "c")


def test_id_map_without_salt_line_still_reads(tmp_path):
    legacy = tmp_path / "legacy.csv"
    legacy.write_text("pseudonym,patient_id\nP0001,H1234567\n")
    assert deid.read_id_map(legacy) == {"H1234567": "P0001"} and deid.read_salt(legacy) is None
    deid.write_id_map(legacy, {"H1234567": "P0001"}, salt='odd "salt", with\ttab')
    assert deid.read_salt(legacy) == 'odd "salt", with\ttab'
    assert deid.read_id_map(legacy) == {"H1234567": "P0001"}
