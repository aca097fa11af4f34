"""Segmentation editors (segmentation/editors.py): masks go out to 3D Slicer and ITK-SNAP with level names and
colours and come back with names, not order or values, deciding the labels; geometry is kept to 1e-4 mm."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from cdeg.segmentation import editors
from cdeg.segmentation.dataset import prepare_dataset
from cdeg.segmentation.import_masks import import_masks
from cdeg.segmentation.qc import _colour
from click.testing import CliRunner

from cdeg import labels
from cdeg.cli import cli
from cdeg.cohort import Cohort
from cdeg.errors import CdegError
from cdeg.io import write_image, write_table
from cdeg.outputs import EditorExport, MaskFolder

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _patients(cohort: Path, n: int = 2) -> list[str]:
    return Cohort.open(cohort).patient_ids()[:n]


def _mask_folder(cohort: Path, root: Path, patients: list[str], modality: str) -> Path:
    """A mask folder holding the cohort's reference masks of `patients` (stands in for predicted masks)."""
    for pid in patients:
        dest = MaskFolder(root).mask(pid, modality)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Cohort.open(cohort).mask_path(pid, modality), dest)
    return root


def _export(cohort: Path, tmp: Path, editor: str, modality: str, n: int = 2) -> tuple[Path, list[str]]:
    pids = _patients(cohort, n)
    masks = _mask_folder(cohort, tmp / "masks", pids, modality)
    out = tmp / editor
    editors.export_masks(masks, cohort, out, editor, modality=modality)
    return out, pids


def _same_as_reference(cohort: Path, out: Path, pids: list[str], modality: str) -> None:
    for pid in pids:
        ref = Cohort.open(cohort).mask_path(pid, modality)
        got = MaskFolder(out).mask(pid, modality)
        assert np.array_equal(_array(got), _array(ref)), pid
        a, b = sitk.ReadImage(str(got)), sitk.ReadImage(str(ref))
        assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


# --- label files ---------------------------------------------------------------------------------------------


def test_label_files_name_every_level_in_the_qc_colours(tmp_path):
    ctbl, snap = editors.write_label_files(tmp_path)
    table = editors.read_slicer_color_table(ctbl)
    described = editors.read_itksnap_labels(snap)
    assert table[0][0] == "Background" and described[0][0] == "Clear Label"
    for s in labels.STRUCTURES:
        assert table[s.label] == (s.name, (*labels.COLOURS[s.label], 255))
        assert described[s.label] == (s.name, labels.COLOURS[s.label])
        assert np.allclose(np.array(_colour(s.label)) * 255, labels.COLOURS[s.label])  # the QC overlay's
    assert len(set(labels.COLOURS.values())) == len(labels.STRUCTURES)  # vertebrae and discs all distinct


def test_level_names_are_found_whatever_their_case_or_separator():
    assert labels.find_name("c5").name == "C5"
    assert {labels.find_name(t).label for t in ("C5-C6", "c5 - c6", "C5_C6", "c5/c6", "C5\u2013C6")} == {105}
    assert labels.find_name("Segment_1") is None and labels.find_name("C1") is None


def test_a_synthetic_cohorts_masks_carry_the_label_files(tiny_cohort):
    folder = MaskFolder(Path(tiny_cohort) / "masks")
    assert folder.slicer_ctbl.read_text() == editors.slicer_color_table()
    assert folder.itksnap_labels.read_text() == editors.itksnap_label_description()


# --- Slicer --------------------------------------------------------------------------------------------------


def test_slicer_export_keeps_names_colours_and_geometry(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "slicer", "mri", n=1)
    ex, pid = EditorExport(out), pids[0]
    data, header = nrrd.read(str(ex.slicer_segmentation(pid, "mri")), index_order="C")
    names = [header[f"Segment{n}_Name"] for n in range(len(labels.STRUCTURES))]
    assert names == [s.name for s in labels.STRUCTURES]
    for n, s in enumerate(labels.STRUCTURES):
        colour = np.array(header[f"Segment{n}_Color"].split(), float)
        assert np.allclose(colour * 255, labels.COLOURS[s.label], atol=1e-3)
        assert int(header[f"Segment{n}_LabelValue"]) == s.label
    assert header["space"] == "left-posterior-superior"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    # The NRRD's LPS geometry is the NIfTI's RAS affine with x and y negated (nibabel reads the affine itself).
    affine = nib.load(Cohort.open(tiny_cohort).image_path(pid, "mri")).affine
    for axis in range(3):
        assert np.allclose(header["space directions"][axis] * LPS_TO_RAS, affine[:3, axis], atol=1e-4)
    assert np.allclose(header["space origin"] * LPS_TO_RAS, affine[:3, 3], atol=1e-4)
    ref = _array(Cohort.open(tiny_cohort).mask_path(pid, "mri"))
    assert np.array_equal(data, ref)
    image = sitk.ReadImage(str(ex.slicer_image(pid, "mri")))
    assert np.allclose(image.GetOrigin(), header["space origin"], atol=1e-4)


def _rewrite_reordered(path: Path, rename: dict[str, str] | None = None) -> None:
    """Rewrite a .seg.nrrd as Slicer may save it: segments in reverse order, each under value index + 1."""
    data, header = nrrd.read(str(path), index_order="C")
    n = sum(1 for k in header if k.endswith("_LabelValue"))
    old = [
        {f: header.pop(f"Segment{i}_{f}") for f in ("ID", "Name", "LabelValue", "Color")} for i in range(n)
    ]
    for k in [k for k in header if k.startswith("Segment") and "_" in k]:
        header.pop(k)
    new = np.zeros_like(data)
    for i, seg in enumerate(reversed(old)):
        new[data == int(seg["LabelValue"])] = i + 1
        name = (rename or {}).get(seg["Name"], seg["Name"])
        header |= {
            f"Segment{i}_ID": f"Segment_{i}",
            f"Segment{i}_Name": name.lower(),
            f"Segment{i}_LabelValue": str(i + 1),
            f"Segment{i}_Layer": "0",
            f"Segment{i}_Color": seg["Color"],
        }
    nrrd.write(str(path), new, header, index_order="C")


def test_slicer_round_trip_names_decide_the_labels(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "slicer", "mri")
    for pid in pids:
        _rewrite_reordered(EditorExport(out).slicer_segmentation(pid, "mri"))
    corrected = tmp_path / "corrected"
    m = import_masks(tiny_cohort, out, corrected, "slicer", modality="mri", qc_png=False)
    assert m["counts"]["ok"] == len(pids) and m["label_map"]["name"] == "slicer"
    _same_as_reference(tiny_cohort, corrected, pids, "mri")
    assert MaskFolder(corrected).slicer_ctbl.is_file() and MaskFolder(corrected).itksnap_labels.is_file()


def test_slicer_radiograph_and_a_file_cropped_to_its_content(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "slicer", "xray", n=1)
    path = EditorExport(out).slicer_segmentation(pids[0], "xray")
    data, header = nrrd.read(str(path), index_order="C")
    assert data.shape[0] == 1  # a radiograph is one slice of a 3D segmentation
    # Slicer's "crop to minimum extent": only the box around the segments, its first voxel in space origin.
    k, j, i = (np.nonzero(data)[a] for a in range(3))
    lo = np.array([i.min(), j.min(), k.min()])
    header["space origin"] = header["space origin"] + np.asarray(header["space directions"]).T @ lo
    nrrd.write(str(path), data[:, j.min() : j.max() + 1, i.min() : i.max() + 1], header, index_order="C")
    corrected = tmp_path / "corrected"
    import_masks(tiny_cohort, out, corrected, "slicer", modality="xray", qc_png=False)
    _same_as_reference(tiny_cohort, corrected, pids, "xray")


def test_a_slicer_segment_with_an_unknown_name_names_patient_and_file(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "slicer", "mri", n=1)
    path = EditorExport(out).slicer_segmentation(pids[0], "mri")
    _rewrite_reordered(path, rename={"C4": "Segment_1"})
    image = sitk.ReadImage(str(Cohort.open(tiny_cohort).image_path(pids[0], "mri")))
    with pytest.raises(CdegError, match="'segment_1' is not a cdeg level name") as err:
        editors.read_edited(path, "slicer", image, pids[0])
    assert err.value.patient == pids[0] and err.value.path == str(path)
    m = import_masks(tiny_cohort, out, tmp_path / "corrected", "slicer", modality="mri", qc_png=False)
    assert m["patients"][pids[0]]["status"] == "failed" and "segment_1" in m["patients"][pids[0]]["reason"]


def test_a_layered_slicer_file_reads_each_segment_from_its_layer(tmp_path):
    # Overlapping segments: a 'list' axis first in the file, each segment in its own layer, both value 1.
    data = np.zeros((2, 4, 5, 6), np.uint8)  # (layer, i, j, k) in the file's order
    data[0, 1:3, 1:3, 1:3] = 1
    data[1, 2:4, 2:4, 2:4] = 1
    header = {
        "space": "left-posterior-superior",
        "space directions": np.array([[np.nan] * 3, [0.5, 0, 0], [0, 0.5, 0], [0, 0, 2.0]]),
        "space origin": np.array([1.0, 2.0, 3.0]),
        "kinds": ["list", "domain", "domain", "domain"],
    }
    for n, name in enumerate(("C3", "c3-c4")):
        header |= {f"Segment{n}_ID": f"S{n}", f"Segment{n}_Name": name, f"Segment{n}_LabelValue": "1"}
        header[f"Segment{n}_Layer"] = str(n)
    path = tmp_path / "layered.seg.nrrd"
    nrrd.write(str(path), data, header)  # Fortran order: the first axis is the file's first
    image, segments = editors.read_seg_nrrd(path)
    assert [s.name for s in segments] == ["C3", "c3-c4"]
    assert image.GetSize() == (4, 5, 6) and np.allclose(image.GetSpacing(), (0.5, 0.5, 2.0))
    arr = sitk.GetArrayFromImage(image)  # (k, j, i)
    assert arr[1, 1, 1] == 1 and arr[3, 3, 3] == 2 and arr[2, 2, 2] == 2  # the later segment where both are


# --- ITK-SNAP ------------------------------------------------------------------------------------------------


def test_itksnap_round_trip_label_names_decide(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "itksnap", "xray")
    ex = EditorExport(out)
    assert editors.read_itksnap_labels(ex.itksnap_labels)[105][0] == "C5-C6"
    # One patient renumbered in ITK-SNAP (values 1..13, reverse order) with its own label file.
    pid = pids[0]
    seg = sitk.ReadImage(str(ex.itksnap_segmentation(pid, "xray")))
    arr = sitk.GetArrayFromImage(seg)
    new = np.zeros_like(arr)
    lines = ['    0     0    0    0        0  0  0    "Clear Label"']
    for value, s in enumerate(reversed(labels.STRUCTURES), start=1):
        new[arr == s.label] = value
        lines.append(f'{value:>5}   10   20   30        1  1  1    "{s.name.lower()}"')
    renumbered = sitk.GetImageFromArray(new)
    renumbered.CopyInformation(seg)
    write_image(ex.itksnap_segmentation(pid, "xray"), renumbered)
    ex.itksnap_patient_labels(pid, "xray").write_text("# exported by ITK-SNAP\n" + "\n".join(lines) + "\n")
    corrected = tmp_path / "corrected"
    m = import_masks(tiny_cohort, out, corrected, "itksnap", modality="xray", qc_png=False)
    assert m["counts"]["ok"] == len(pids)
    _same_as_reference(tiny_cohort, corrected, pids, "xray")


def test_an_itksnap_label_with_an_unknown_name_names_patient_and_file(tiny_cohort, tmp_path):
    out, pids = _export(tiny_cohort, tmp_path, "itksnap", "mri", n=1)
    ex = EditorExport(out)
    text = ex.itksnap_labels.read_text().replace('"C3-C4"', '"Label 103"')
    ex.itksnap_patient_labels(pids[0], "mri").write_text(text)
    path = ex.itksnap_segmentation(pids[0], "mri")
    image = sitk.ReadImage(str(Cohort.open(tiny_cohort).image_path(pids[0], "mri")))
    with pytest.raises(CdegError, match="'Label 103' is not a cdeg level name") as err:
        editors.read_edited(path, "itksnap", image, pids[0])
    assert err.value.patient == pids[0] and err.value.path == str(path)


# --- export order, training on a mask folder -----------------------------------------------------------------


def test_export_writes_the_worst_qc_first(tiny_cohort, tmp_path):
    pids = _patients(tiny_cohort, 4)
    masks = _mask_folder(tiny_cohort, tmp_path / "masks", pids, "mri")
    qc = [
        {
            "patient_id": pids[2],
            "modality": "mri",
            "check": "missing_level",
            "detail": "C4 absent",
            "repaired": False,
        },
        {
            "patient_id": pids[2],
            "modality": "mri",
            "check": "fragment",
            "detail": "12 voxels",
            "repaired": True,
        },
        {
            "patient_id": pids[3],
            "modality": "mri",
            "check": "order",
            "detail": "C5 above C4",
            "repaired": True,
        },
        {
            "patient_id": pids[0],
            "modality": "xray",
            "check": "order",
            "detail": "other modality",
            "repaired": True,
        },
    ]
    write_table(MaskFolder(masks).qc_csv, pd.DataFrame(qc, columns=list(MaskFolder.QC_COLUMNS)))
    res = CliRunner().invoke(
        cli,
        ["segment", "export", "--masks", str(masks), "--cohort", str(tiny_cohort), "--format", "itksnap",
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    table = EditorExport(tmp_path / "out").read()
    assert list(table["patient_id"]) == [pids[2], pids[3], pids[0], pids[1]]
    assert list(table["findings"]) == [2, 1, 0, 0] and list(table["order"]) == [1, 2, 3, 4]
    assert "missing_level: C4 absent" in table["reasons"].iloc[0]
    assert set(EditorExport(tmp_path / "out").root.glob("*_seg.nii.gz")) == {
        EditorExport(tmp_path / "out").itksnap_segmentation(p, "mri") for p in pids
    }


def test_the_export_command_offers_every_editor():
    export = cli.get_command(None, "segment").get_command(None, "export")
    choice = next(p for p in export.params if p.name == "editor").type
    assert tuple(choice.choices) == editors.EDITORS


def test_prepare_with_masks_takes_the_labels_from_that_folder(tiny_cohort, tmp_path):
    pids = _patients(tiny_cohort, 2)
    masks = _mask_folder(tiny_cohort, tmp_path / "masks", pids, "mri")
    edited = MaskFolder(masks).mask(pids[0], "mri")
    img = sitk.ReadImage(str(edited))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == labels.label_of("C3")] = 0  # a correction the reference masks do not have
    fixed = sitk.GetImageFromArray(arr)
    fixed.CopyInformation(img)
    write_image(edited, fixed)
    r = prepare_dataset(tiny_cohort, "mri", tmp_path / "raw", masks=masks)
    assert r["cases"] == pids
    ref = prepare_dataset(tiny_cohort, "mri", tmp_path / "raw_ref")
    assert len(ref["cases"]) == len(Cohort.open(tiny_cohort).patient_ids())
    ours = _array(tmp_path / "raw" / "labelsTr" / f"{pids[0]}.nii.gz")
    theirs = _array(tmp_path / "raw_ref" / "labelsTr" / f"{pids[0]}.nii.gz")
    assert len(np.unique(ours)) == len(np.unique(theirs)) - 1
    assert np.array_equal(
        _array(tmp_path / "raw" / "labelsTr" / f"{pids[1]}.nii.gz"),
        _array(tmp_path / "raw_ref" / "labelsTr" / f"{pids[1]}.nii.gz"),
    )
