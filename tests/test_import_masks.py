"""Masks from other segmenters: label maps, `cdeg segment import-masks`, `extract --label-map`.

Fixtures in each foreign convention are built from cdeg's synthetic masks with the published label tables
(configs/label_maps/*.yaml): endplates carved out of the vertebrae (SPINEPS), C1 above C2, T2 below T1 with
the T1-T2 disc between them, cord and canal behind the spine where the convention has them, and one class
for every disc (TotalSegmentator total_mr). Converting them back must give the original voxel for voxel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

from cdeg import label_maps, labels
from cdeg.cli import cli
from cdeg.cohort import Cohort, image_path, mask_path
from cdeg.io import read_table

MRI_SI, MRI_AP = 1, 2  # canonical MRI arrays are [LR, SI, AP]


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["--no-progress", *[str(a) for a in args]])


def _value(lmap: label_maps.LabelMap, **kw: str) -> int:
    """The tool's value of one structure (a whole vertebra, a named disc, or a dropped class by name)."""
    for e in lmap.labels:
        if all(getattr(e, k) == v for k, v in kw.items()) and (e.part is None or "part" in kw):
            return e.value
    raise KeyError(kw)


def to_foreign(
    mask: np.ndarray, lmap: label_maps.LabelMap, extras: bool = True, endplates_by_disc: bool = False
) -> np.ndarray:
    """A cdeg mask written in `lmap`'s convention, with the extra structures that convention has."""
    out = np.zeros(mask.shape, dtype=np.uint16)
    any_disc = [e.value for e in lmap.labels if e.disc == "any"]
    for s in labels.STRUCTURES:
        sel = mask == s.label
        if not sel.any():
            continue
        if s.kind == "disc" and any_disc:
            out[sel] = any_disc[0]
        else:
            out[sel] = _value(lmap, **({"vertebra": s.name} if s.kind == "vertebra" else {"disc": s.name}))
    endplates = {e.vertebra: e.value for e in lmap.labels if e.part == "endplate"}
    if endplates:
        from scipy import ndimage

        discs = np.isin(mask, labels.DISC_LABELS)
        near_disc = ndimage.binary_dilation(discs, ndimage.generate_binary_structure(mask.ndim, 1))
        for s in labels.STRUCTURES:
            if s.kind == "vertebra":
                upper_disc = labels.neighbours(s.label)[0]
                # SPINEPS numbers an endplate after the disc below the vertebra above: the superior endplate of
                # C4 is 203 (C3), its inferior one 204 (C4). Both must come back as C4.
                sel = (mask == s.label) & near_disc
                below = ndimage.binary_dilation(mask == upper_disc) if upper_disc else np.zeros_like(sel)
                above_name = labels.name_of(upper_disc - 100) if upper_disc else s.name
                out[sel & below] = endplates[above_name if endplates_by_disc else s.name]
                out[sel & ~below] = endplates[s.name]
    if extras:
        _add_extras(out, mask, lmap)
    return out


def _add_extras(out: np.ndarray, mask: np.ndarray, lmap: label_maps.LabelMap) -> None:
    """C1 above C2; T1-T2 disc, T2, T2-T3 disc and T3 below T1; cord and canal behind everything.

    All on background, so converting back must give the original exactly."""
    si = MRI_SI if mask.ndim == 3 else 0
    ap = MRI_AP if mask.ndim == 3 else 1
    rows = np.flatnonzero(np.any(mask > 0, axis=tuple(i for i in range(mask.ndim) if i != si)))
    top, bottom = int(rows.min()), int(rows.max())
    cols = np.flatnonzero(
        np.any(mask == labels.label_of("C2"), axis=tuple(i for i in range(mask.ndim) if i != ap))
    )

    def box(r0: int, r1: int, c0: int, c1: int) -> tuple[slice, ...]:
        idx = [slice(None)] * mask.ndim
        idx[si], idx[ap] = slice(r0, r1), slice(c0, c1)
        return tuple(idx)

    def put(r0: int, r1: int, c0: int, c1: int, value: int) -> None:
        sel = box(max(r0, 0), min(r1, mask.shape[si]), c0, c1)
        assert not mask[sel].any()  # extras only on background, so converting back must give the original
        out[sel] = value

    c0, c1 = int(cols.min()), int(cols.min()) + 6
    if top >= 6:
        put(top - 5, top - 1, c0, c1, _value(lmap, vertebra="C1"))
    t1 = mask == labels.label_of("T1")
    t1_rows = np.flatnonzero(np.any(t1, axis=tuple(i for i in range(mask.ndim) if i != si)))
    if t1_rows.size and int(t1_rows.max()) == bottom and bottom + 16 < mask.shape[si]:
        # Below T1: the T1-T2 disc, T2, the T2-T3 disc and T3; each disc touches its two vertebrae only.
        a = int(np.flatnonzero(np.any(t1, axis=tuple(i for i in range(mask.ndim) if i != ap))).min())
        for r0, r1, kw in (
            (1, 3, {"disc": "T1-T2"}),
            (3, 8, {"vertebra": "T2"}),
            (8, 10, {"disc": "T2-T3"}),
            (10, 15, {"vertebra": "T3"}),
        ):
            any_disc = [e.value for e in lmap.labels if e.disc == "any"]
            if "disc" in kw and any_disc:
                put(bottom + r0, bottom + r1, a, a + 6, any_disc[0])
            elif "disc" not in kw or any(e.disc == kw["disc"] for e in lmap.labels):
                put(bottom + r0, bottom + r1, a, a + 6, _value(lmap, **kw))
    back = int(np.flatnonzero(np.any(mask > 0, axis=tuple(i for i in range(mask.ndim) if i != ap))).max()) + 3
    for name in ("spinal_canal", "spinal_cord"):
        if back + 2 < mask.shape[ap] and name in lmap.by_name():
            put(top, bottom, back, back + 2, lmap.by_name()[name].value)
            back += 3


@pytest.fixture(scope="module")
def neck(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tiny_cohort)


def _mask(cohort: Path, pid: str, modality: str = "mri") -> sitk.Image:
    return sitk.ReadImage(str(mask_path(Cohort.open(cohort).masks_root, pid, modality)))


def _write(arr: np.ndarray, like: sitk.Image, path: Path) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(like)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


# --- label maps as data ---------------------------------------------------------------------------------------


def test_every_shipped_map_loads_and_cdeg_nnunet_matches_the_training_labels():
    from cdeg.segmentation.labelmap import training_labels

    names = label_maps.available()
    assert {"spineps", "totalspineseg", "totalsegmentator", "totalsegmentator_total_mr"} <= set(names)
    for name in names:
        lmap = label_maps.load_label_map(name)
        assert lmap.source and lmap.labels
    cdeg_map = label_maps.load_label_map("cdeg_nnunet")
    assert {e.value: e.cdeg_label for e in cdeg_map.labels} == {t: c for c, t in training_labels().items()}
    # Published numbers, spot-checked against the tools' tables cited in the YAML files.
    assert label_maps.load_label_map("spineps").entry(107).cdeg_label == labels.label_of("C7-T1")
    assert label_maps.load_label_map("spineps").entry(205).part == "endplate"
    tss = label_maps.load_label_map("totalspineseg")
    assert tss.entry(2).drop and tss.entry(12).cdeg_label == 2 and tss.entry(71).cdeg_label == 107


def test_a_user_map_file_is_validated_with_the_key_named(tmp_path: Path):
    bad = tmp_path / "mine.yaml"
    bad.write_text(
        "name: mine\ndescription: x\nsource: y\nlabels:\n  - {value: 3, name: C3, vertebra: C33}\n"
    )
    with pytest.raises(label_maps.LabelMapError, match="C33"):
        label_maps.load_label_map(bad)
    r = _invoke("labels", "--map", "nosuchmap")
    assert r.exit_code != 0 and "spineps" in r.output and "Traceback" not in r.output
    r = _invoke("labels", "--map", "totalspineseg")
    assert r.exit_code == 0 and "2\tspinal_canal\t-\tdropped" in r.output


@pytest.mark.parametrize(
    "name", ["spineps", "totalspineseg", "totalsegmentator", "totalsegmentator_vertebrae_mr"]
)
@pytest.mark.parametrize("modality", ["mri", "xray"])
def test_foreign_masks_convert_back_voxel_for_voxel(neck: Path, name: str, modality: str):
    lmap = label_maps.load_label_map(name)
    original = sitk.GetArrayFromImage(_mask(neck, "NECK0001", modality))
    if name == "totalsegmentator_vertebrae_mr":  # no disc class: only the vertebrae come back
        original = np.where(np.isin(original, labels.DISC_LABELS), 0, original)
    foreign = to_foreign(original, lmap)
    assert not np.array_equal(foreign, original)
    conv = label_maps.convert(foreign, lmap)
    np.testing.assert_array_equal(conv.mask, original)
    actions = {r["action"] for r in conv.rows}
    assert "dropped" in actions  # C1, T2, cord/canal, the T1-T2 disc
    if name == "spineps":
        assert conv.count("merged") > 0 and {r["target"] for r in conv.rows if r["action"] == "merged"} >= {
            "C3",
            "C4",
        }
    if name == "totalsegmentator":
        named = {r["target"] for r in conv.rows if r["action"] == "named"}
        assert named == {labels.name_of(v) for v in np.unique(original) if labels.is_disc(int(v))}


def test_spineps_endplates_numbered_after_the_disc_go_back_to_their_own_body(neck: Path):
    """SPINEPS may give the superior endplate of X + 1 the number 200 + X (its FIXME): merged by contact."""
    lmap = label_maps.load_label_map("spineps")
    for pid in Cohort.open(neck).patient_ids():
        original = sitk.GetArrayFromImage(_mask(neck, pid))
        foreign = to_foreign(original, lmap, endplates_by_disc=True)
        moved = (foreign >= 200) & (foreign - 200 != original)  # superior endplates carrying the upper number
        assert moved.sum() > 50
        conv = label_maps.convert(foreign, lmap)
        assert (
            conv.mask != original
        ).sum() <= 1  # a one-voxel sliver where two bodies meet may go either way
        assert (conv.mask[moved] == original[moved]).mean() > 0.99


def test_an_unknown_value_is_an_error_naming_it():
    lmap = label_maps.load_label_map("spineps")
    arr = np.zeros((4, 4), np.uint16)
    arr[1, 1], arr[2, 2] = 2, 77
    with pytest.raises(label_maps.LabelMapError, match=r"value\(s\) 77 are not in the label map 'spineps'"):
        label_maps.convert(arr, lmap)


def test_the_canal_of_totalspineseg_never_becomes_c2(neck: Path):
    original = sitk.GetArrayFromImage(_mask(neck, "NECK0002"))
    lmap = label_maps.load_label_map("totalspineseg")
    foreign = to_foreign(original, lmap)
    canal = foreign == 2
    assert canal.any() and not (original[canal] == labels.label_of("C2")).any()
    conv = label_maps.convert(foreign, lmap)
    assert not conv.mask[canal].any()
    np.testing.assert_array_equal(conv.mask == 2, original == 2)


def test_a_disc_between_the_wrong_vertebrae_is_reported_not_guessed():
    lmap = label_maps.load_label_map("totalsegmentator")
    v = {n: lmap.by_name()[f"vertebrae_{n}"].value for n in ("C3", "C4", "C5")}
    disc = lmap.by_name()["intervertebral_discs"].value
    arr = np.zeros((40, 10), np.uint16)
    arr[2:8], arr[8:10], arr[10:16] = v["C3"], disc, v["C4"]  # C3-C4: named
    arr[18:20, :5] = disc  # touches nothing: reported
    arr[22:28], arr[28:30], arr[30:36] = v["C3"], disc, v["C5"]  # between C3 and C5: reported
    conv = label_maps.convert(arr, lmap)
    flagged = [r["detail"] for r in conv.flagged]
    assert len(flagged) == 2
    assert any("no vertebra" in d for d in flagged) and any("non-adjacent C3, C5" in d for d in flagged)
    assert set(np.unique(conv.mask[28:30])) == {0} and set(np.unique(conv.mask[8:10])) == {103}


# --- the command: layouts, geometry, one patient's problem -------------------------------------------------


def _spineps_tree(neck: Path, root: Path, pids: list[str]) -> None:
    lmap = label_maps.load_label_map("spineps")
    for pid in pids:
        m = _mask(neck, pid)
        _write(
            to_foreign(sitk.GetArrayFromImage(m), lmap),
            m,
            root / "derivatives_seg" / pid / f"{pid}_mod-T2w_seg-vert_msk.nii.gz",
        )
        # The semantic mask sits next to it and must not be taken for the instance mask.
        _write(
            np.full(sitk.GetArrayFromImage(m).shape, 61, np.uint16),
            m,
            root / "derivatives_seg" / pid / f"{pid}_mod-T2w_seg-spine_msk.nii.gz",
        )


def test_import_masks_spineps_layout_one_bad_patient_and_a_shifted_grid(neck: Path, tmp_path: Path):
    pids = Cohort.open(neck).patient_ids()
    tool = tmp_path / "spineps"
    _spineps_tree(neck, tool, pids)
    bad = tool / "derivatives_seg" / pids[1] / f"{pids[1]}_mod-T2w_seg-vert_msk.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(bad)))
    arr[0, 0, 0] = 77
    _write(arr, _mask(neck, pids[1]), bad)
    shifted = tool / "derivatives_seg" / pids[2] / f"{pids[2]}_mod-T2w_seg-vert_msk.nii.gz"
    img = sitk.ReadImage(str(shifted))
    img.SetOrigin(tuple(o + 0.4 for o in img.GetOrigin()))
    sitk.WriteImage(img, str(shifted))
    far = tool / "derivatives_seg" / pids[3] / f"{pids[3]}_mod-T2w_seg-vert_msk.nii.gz"
    img = sitk.ReadImage(str(far))
    img.SetOrigin(tuple(o + 6.0 for o in img.GetOrigin()))
    sitk.WriteImage(img, str(far))
    before = {p: p.stat().st_mtime_ns for p in tool.rglob("*.nii.gz")}

    out = tmp_path / "masks"
    r = _invoke(
        "segment", "import-masks", "--from", "spineps", "--masks", tool, "--cohort", neck, "--out", out
    )
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    assert any(
        f"patient {pids[1]} / " in ln and "77" in ln and bad.name in ln for ln in r.output.splitlines()
    )
    assert any(f"patient {pids[3]} / " in ln and "beyond" in ln for ln in r.output.splitlines())
    for pid in (pids[0], pids[4], pids[5]):
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(out, pid, "mri"))))
        np.testing.assert_array_equal(got, sitk.GetArrayFromImage(_mask(neck, pid)))
        assert (out / pid / "mri_qc.png").is_file()
    assert mask_path(out, pids[2], "mri").is_file()  # resampled within the tolerance, with a warning
    assert not mask_path(out, pids[1], "mri").exists() and not mask_path(out, pids[3], "mri").exists()
    table = read_table(out / "import_masks.csv", dtype={"patient_id": str})
    assert set(table["action"]) >= {"mapped", "merged", "dropped", "error", "geometry"}
    assert table.loc[table["action"] == "merged", "voxels"].sum() > 0
    assert {p: p.stat().st_mtime_ns for p in tool.rglob("*.nii.gz")} == before  # inputs untouched
    # Then check and extract accept the converted masks as they are.
    assert _invoke("check", "--cohort", neck, "--masks", out).exit_code in (0, 1)
    r = _invoke("check", "--cohort", neck, "--masks", out, "--format", "csv")
    assert ",labels," not in r.output


def test_class_folders_and_a_file_per_case_are_found_without_renaming(neck: Path, tmp_path: Path):
    pid = Cohort.open(neck).patient_ids()[0]
    m = _mask(neck, pid)
    original = sitk.GetArrayFromImage(m)
    ts = label_maps.load_label_map("totalsegmentator")
    combined = to_foreign(original, ts)
    case = tmp_path / "ts" / pid
    for e in ts.labels:
        if (combined == e.value).any():
            _write((combined == e.value).astype(np.uint8), m, case / f"{e.name}.nii.gz")
    _write(np.ones_like(original, dtype=np.uint8), m, case / "liver.nii.gz")  # another organ: ignored
    _write(
        np.ones_like(original, dtype=np.uint8), m, case / "vertebrae.nii.gz"
    )  # total_mr's all-levels class
    out = tmp_path / "out_ts"
    r = _invoke(
        "segment",
        "import-masks",
        "--from",
        "totalsegmentator",
        "--masks",
        tmp_path / "ts",
        "--cohort",
        neck,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(out, pid, "mri")))), original
    )

    tss = label_maps.load_label_map("totalspineseg")
    _write(to_foreign(original, tss), m, tmp_path / "tss" / "output" / "step2_output" / f"{pid}.nii.gz")
    _write(
        np.full(original.shape, 999, np.uint16),
        m,
        tmp_path / "tss" / "output" / "step1_output" / f"{pid}.nii.gz",
    )
    out = tmp_path / "out_tss"
    r = _invoke(
        "segment",
        "import-masks",
        "--from",
        "totalspineseg",
        "--masks",
        tmp_path / "tss",
        "--cohort",
        neck,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(out, pid, "mri")))), original
    )


# --- cohorts from plain folders, then segment and extract without clinical values ---------------------------


def _plain_folders(neck: Path, root: Path) -> tuple[Path, Path]:
    """A flat folder (<id>_T2w / <id>_xray) and a BIDS tree of the same scans, some stored non-canonically."""
    flat, bids = root / "flat", root / "bids"
    for i, pid in enumerate(Cohort.open(neck).patient_ids()[:3]):
        mri = sitk.ReadImage(str(image_path(neck, pid, "mri")))
        if i == 1:
            mri = sitk.DICOMOrient(mri, "RAS")
        flat.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(mri, str(flat / f"{pid}_T2w.nii.gz"))
        shutil.copy(image_path(neck, pid, "xray"), flat / f"{pid}_xray.nii.gz")
        anat = bids / f"sub-{i + 1:02d}" / "ses-1" / "anat"
        anat.mkdir(parents=True)
        sitk.WriteImage(mri, str(anat / f"sub-{i + 1:02d}_ses-1_T2w.nii.gz"))
    return flat, bids


def test_cohort_init_flat_and_bids(neck: Path, tmp_path: Path):
    flat, bids = _plain_folders(neck, tmp_path)
    r = _invoke("cohort", "init", "--images", flat, "--out", tmp_path / "c_flat")
    assert r.exit_code == 0, r.output
    coh = Cohort.open(tmp_path / "c_flat")
    assert coh.meta.synthetic is False and list(coh.clinical().columns) == ["patient_id"]
    pids = coh.patient_ids()
    assert pids == Cohort.open(neck).patient_ids()[:3]
    # The RAS-stored scan is written canonical: the same voxels as the original cohort's image.
    got = sitk.ReadImage(str(coh.image_path(pids[1], "mri")))
    ref = sitk.ReadImage(str(image_path(neck, pids[1], "mri")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(ref))
    assert np.allclose(got.GetDirection(), ref.GetDirection()) and np.allclose(
        got.GetOrigin(), ref.GetOrigin()
    )
    sources = read_table(tmp_path / "c_flat" / "sources.csv", dtype=str)
    assert list(sources["action"]).count("reoriented") == 1

    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t51\nsub-02\t62\nsub-03\t45\n")
    r = _invoke(
        "cohort",
        "init",
        "--images",
        bids,
        "--bids",
        "--clinical",
        bids / "participants.tsv",
        "--link",
        "--out",
        tmp_path / "c_bids",
    )
    assert r.exit_code == 0, r.output
    coh = Cohort.open(tmp_path / "c_bids")
    assert coh.patient_ids() == ["sub-01", "sub-02", "sub-03"] and list(coh.clinical()["age"]) == [51, 62, 45]
    assert coh.image_path("sub-01", "mri").is_symlink() and not coh.image_path("sub-02", "mri").is_symlink()
    # Refused: an existing non-empty folder, no match.
    r = _invoke("cohort", "init", "--images", bids, "--out", tmp_path / "c_bids")
    assert r.exit_code == 1 and "not empty" in r.output
    r = _invoke("cohort", "init", "--images", bids, "--out", tmp_path / "c_none")
    assert r.exit_code == 1 and "--pattern" in r.output


@pytest.mark.radiomics
def test_spineps_masks_of_original_files_enter_a_bids_cohort_and_extract_without_clinical_values(
    neck: Path, tmp_path: Path
):
    _, bids = _plain_folders(neck, tmp_path)
    cohort = tmp_path / "cohort"
    assert _invoke("cohort", "init", "--images", bids, "--bids", "--out", cohort).exit_code == 0
    # SPINEPS ran on the original BIDS files: its masks are on their grids (sub-02 is stored RAS).
    lmap = label_maps.load_label_map("spineps")
    neck_ids = Cohort.open(neck).patient_ids()
    for i, src in enumerate(sorted(bids.rglob("*_T2w.nii.gz"))):
        original_img = sitk.ReadImage(str(src))
        m = _mask(neck, neck_ids[i])
        if i == 1:
            m = sitk.DICOMOrient(m, "RAS")
        rel = src.relative_to(bids).parent
        name = src.name.replace("_T2w.nii.gz", "_mod-T2w_seg-vert_msk.nii.gz")
        _write(
            to_foreign(sitk.GetArrayFromImage(m), lmap), original_img, bids / "derivatives_seg" / rel / name
        )
    params = tmp_path / "light.yaml"
    params.write_text(
        "imageType: {Original: {}}\nfeatureClass: {shape: null, firstorder: null}\n"
        "setting: {normalize: true, force2D: true, force2Ddimension: 0, binWidth: 5, label: 1}\n"
    )
    out = tmp_path / "features"
    r = _invoke(
        "extract",
        "--cohort",
        cohort,
        "--masks",
        bids,
        "--label-map",
        "spineps",
        "--modality",
        "mri",
        "--params",
        params,
        "--jobs",
        "1",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    for j, pid in enumerate(["sub-01", "sub-02", "sub-03"]):
        got = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(out / "masks", pid, "mri"))))
        np.testing.assert_array_equal(got, sitk.GetArrayFromImage(_mask(neck, neck_ids[j])))
    wide = read_table(out / "features.csv", dtype={"patient_id": str})
    assert sorted(wide["patient_id"]) == ["sub-01", "sub-02", "sub-03"]
    assert any("disc_height" in c for c in wide.columns)


def test_evaluate_reads_foreign_masks_directly(neck: Path, tmp_path: Path):
    pids = Cohort.open(neck).patient_ids()
    tool = tmp_path / "spineps"
    _spineps_tree(neck, tool, pids[:4])
    out = tmp_path / "eval" / "evaluation.json"
    r = _invoke("segment", "evaluate", "--pred", tool, "--ref", neck, "--out", out, "--label-map", "spineps")
    assert r.exit_code == 0, r.output
    import json

    report = json.loads(out.read_text())
    assert list(report["summary"]) == ["mri"]  # the tool segmented MRI only: no radiograph rows
    s = report["summary"]["mri"]
    assert s["n_evaluated"] == 4 and s["n_missing_prediction"] == 2 and s["dice_vertebrae_mean"] == 1.0
    assert (tmp_path / "eval" / "evaluation.csv").is_file()
    assert (tmp_path / "eval" / "evaluation_masks" / "import_masks.csv").is_file()
    r = _invoke(
        "segment", "evaluate", "--pred", tool, "--ref", neck / "masks", "--out", out, "--label-map", "spineps"
    )
    assert r.exit_code == 2 and "cohort folder" in r.output


# --- QC overlays in the sagittal plane whatever the file's orientation ------------------------------------


def _oblique(img: sitk.Image, degrees: float) -> sitk.Image:
    """The same voxels with direction cosines rotated about the left-right axis (an oblique sagittal scan)."""
    a = np.radians(degrees)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    out = sitk.Image(img)
    out.SetDirection(tuple((rot @ np.asarray(img.GetDirection()).reshape(3, 3)).ravel()))
    return out


@pytest.mark.parametrize("orientation", ["PSR", "RAS", "LPI", "oblique"])
def test_qc_overlay_shows_the_sagittal_plane_whatever_the_orientation(
    neck: Path, tmp_path: Path, orientation: str
):
    from cdeg.segmentation.qc import write_qc_overlay
    from PIL import Image

    pid = Cohort.open(neck).patient_ids()[0]
    image = sitk.ReadImage(str(image_path(neck, pid, "mri")))
    mask = _mask(neck, pid)
    write_qc_overlay(tmp_path / "canonical.png", image, mask, "mri", "t")
    if orientation == "oblique":
        image2, mask2 = _oblique(image, 20.0), _oblique(mask, 20.0)
    else:
        image2, mask2 = sitk.DICOMOrient(image, orientation), sitk.DICOMOrient(mask, orientation)
        assert not np.array_equal(sitk.GetArrayFromImage(image2), sitk.GetArrayFromImage(image))
    write_qc_overlay(tmp_path / "other.png", image2, mask2, "mri", "t")
    a = np.asarray(Image.open(tmp_path / "canonical.png"))
    b = np.asarray(Image.open(tmp_path / "other.png"))
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_cohort_from_a_flat_folder_is_segmented_without_clinical_values(
    neck: Path, smoke_xray_models: dict[str, Path], tmp_path: Path
):
    """cohort init -> cdeg segment predict (smoke model, radiographs), with ids only in clinical.csv."""
    flat, _ = _plain_folders(neck, tmp_path)
    cohort = tmp_path / "cohort"
    assert _invoke("cohort", "init", "--images", flat, "--out", cohort).exit_code == 0
    model = smoke_xray_models["0"]  # any radiograph model: a smoke one trained once per session
    out = tmp_path / "pred"
    r = _invoke(
        "segment",
        "predict",
        "--cohort",
        cohort,
        "--modality",
        "xray",
        "--model",
        model,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.output
    import json

    manifest = json.loads((out / "segment_predict_xray.json").read_text())
    assert sorted(manifest["patients"]) == Cohort.open(cohort).patient_ids()
    assert all(p["status"] in ("ok", "flagged", "empty") for p in manifest["patients"].values())


# --- what a user runs into (found by trying it as one) -----------------------------------------------------


def test_patterns_take_the_right_id_and_report_unusable_names(tmp_path: Path):
    from cdeg.cohort_init import find_images, pattern_regex

    assert pattern_regex("**/*_T2w.nii.gz").match("A/P01_T2w.nii.gz").group("id") == "P01"
    with pytest.raises(ValueError, match="ambiguous"):
        pattern_regex("{id}*.nii.gz")
    for name in ("P01_T2w.nii.gz", "P02_T2w.nii", "NECK 0003_T2w.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    found, problems = find_images(tmp_path, {"mri": "{id}_T2w.nii*"}, "flat")
    assert sorted(f.patient_id for f in found) == ["P01", "P02"]
    assert len(problems) == 1 and "'NECK 0003' cannot be a patient id" in problems[0]


def test_shared_original_names_nested_layouts_and_wrong_dimensions(neck: Path, tmp_path: Path):
    """Originals all called t2_sag.nii.gz are matched by folder; an MRI mask is never a radiograph's."""
    pids = Cohort.open(neck).patient_ids()[:3]
    nested, seg = tmp_path / "nested", tmp_path / "seg"
    for pid in pids:
        (nested / pid).mkdir(parents=True)
        shutil.copy(image_path(neck, pid, "mri"), nested / pid / "t2_sag.nii.gz")
        shutil.copy(image_path(neck, pid, "xray"), nested / pid / "lat.nii.gz")
        m = _mask(neck, pid)
        _write(
            sitk.GetArrayFromImage(m).astype(np.uint16) * 0
            + to_foreign(sitk.GetArrayFromImage(m), label_maps.load_label_map("cdeg_nnunet"), extras=False),
            m,
            seg / pid / "t2_sag.nii.gz",
        )
    cohort = tmp_path / "cohort"
    r = _invoke(
        "cohort",
        "init",
        "--images",
        nested,
        "--pattern",
        "mri={id}/t2_sag.nii.gz",
        "--pattern",
        "xray={id}/lat.nii.gz",
        "--out",
        cohort,
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "masks"
    r = _invoke(
        "segment", "import-masks", "--from", "cdeg_nnunet", "--masks", seg, "--cohort", cohort, "--out", out
    )
    assert r.exit_code == 0, r.output
    for pid in pids:
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path(out, pid, "mri")))),
            sitk.GetArrayFromImage(_mask(neck, pid)),
        )
    # The same 3D masks offered for the radiographs: none matches (wrong dimension), one line, no traceback.
    r = _invoke(
        "segment",
        "import-masks",
        "--from",
        "cdeg_nnunet",
        "--masks",
        seg,
        "--cohort",
        cohort,
        "--out",
        out,
        "--modality",
        "xray",
    )
    assert r.exit_code == 1 and "no cdeg_nnunet xray mask matches" in r.output and "Traceback" not in r.output
    # Writing into the tool's folder is refused.
    r = _invoke(
        "segment",
        "import-masks",
        "--from",
        "cdeg_nnunet",
        "--masks",
        seg,
        "--cohort",
        cohort,
        "--out",
        seg / "conv",
    )
    assert r.exit_code == 2 and "lies in the tool's folder" in r.output


def test_a_failed_reimport_leaves_no_stale_mask_and_step2_output_can_be_given_directly(
    neck: Path, tmp_path: Path
):
    pid = Cohort.open(neck).patient_ids()[0]
    m = _mask(neck, pid)
    tss = label_maps.load_label_map("totalspineseg")
    step2 = tmp_path / "tss" / "step2_output"
    path = _write(to_foreign(sitk.GetArrayFromImage(m), tss), m, step2 / f"{pid}.nii.gz")
    out = tmp_path / "masks"
    r = _invoke(
        "segment", "import-masks", "--from", "totalspineseg", "--masks", step2, "--cohort", neck, "--out", out
    )
    assert r.exit_code == 0, r.output
    assert mask_path(out, pid, "mri").is_file() and (out / pid / "mri_qc.png").is_file()
    arr = to_foreign(sitk.GetArrayFromImage(m), tss)
    arr[0, 0, 0] = 150  # not a TotalSpineSeg value
    _write(arr, m, path)
    r = _invoke(
        "segment", "import-masks", "--from", "totalspineseg", "--masks", step2, "--cohort", neck, "--out", out
    )
    assert r.exit_code == 0 and "150" in r.output
    assert not mask_path(out, pid, "mri").exists() and not (out / pid / "mri_qc.png").exists()
    table = read_table(out / "import_masks.csv", dtype={"patient_id": str})
    assert str(table["value"].dtype) == "int64" or table["value"].dropna().map(float.is_integer).all()
    # evaluate --label-map against a cohort without reference masks: one line, before any import.
    cohort = tmp_path / "nomasks"
    shutil.copytree(neck, cohort, ignore=shutil.ignore_patterns("masks"))
    r = _invoke(
        "segment",
        "evaluate",
        "--pred",
        step2,
        "--label-map",
        "totalspineseg",
        "--ref",
        cohort,
        "--out",
        tmp_path / "e.json",
    )
    assert r.exit_code == 1 and "no reference masks" in r.output and "Traceback" not in r.output


def test_whole_spine_discs_across_variant_levels_are_named_not_flagged():
    lmap = label_maps.load_label_map("totalsegmentator")
    v = {n: lmap.by_name()[f"vertebrae_{n}"].value for n in ("T12", "L1")}
    disc = lmap.by_name()["intervertebral_discs"].value
    arr = np.zeros((20, 6), np.uint16)
    arr[2:8], arr[8:10], arr[10:16] = v["T12"], disc, v["L1"]
    conv = label_maps.convert(arr, lmap)
    assert not conv.flagged and [r["detail"] for r in conv.rows if r["class"] == "intervertebral_discs"] == [
        "T12-L1"
    ]
