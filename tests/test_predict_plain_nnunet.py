"""`cdeg segment predict --model` with a plain nnU-Net results folder, and the NNUNET.md of a cdeg model folder.

Real nnU-Net on the CPU (smoke preset, 2D radiographs: the cheapest model to train) on a tiny synthetic
cohort: two trainings of the same plans give fold 0 and fold 1, copied into a plain results folder
``Dataset502_cdegXray/<Trainer>__nnUNetPlans__<configuration>`` without any cdeg file. The smoke model does
not segment well; these tests check which model is loaded and how its values are named.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from cdeg.segmentation.predict import (
    CHECKPOINTS,
    label_map_from_names,
    model_output_values,
    parse_folds,
    resolve_model,
)
from cdeg.segmentation.train import MANIFEST, NNUNET_DOC, train
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.cohort import Cohort, mask_path
from cdeg.errors import CdegError
from cdeg.io import write_image

MODALITY = "xray"
FOLDS = ("0", "1")


def _invoke(*args: object):
    return CliRunner().invoke(cli, ["--no-progress", *[str(a) for a in args]])


def _predict(cohort: Path, model: Path, out: Path, *options: object):
    return _invoke("segment", "predict", "--cohort", cohort, "--modality", MODALITY, "--model", model,
                   "--out", out, "--device", "cpu", *options)  # fmt: skip


def _manifest(out: Path) -> dict:
    return json.loads((out / f"segment_predict_{MODALITY}.json").read_text())


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # a copy: a view dies with its image


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): _array(p) for p in sorted(folder.rglob(f"{MODALITY}.nii.gz"))}


def _one_line_error(r) -> str:
    """The CLI's message for a user mistake: exit 1, one line, no traceback."""
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    return lines[0]


# --- fast: option parsing and label names --------------------------------------------------------------------


def test_folds_are_parsed_and_checkpoint_choices_match_the_api():
    assert (
        parse_folds("0, 1") == ("0", "1") and parse_folds("all") == ("all",) and parse_folds(["03"]) == ("3",)
    )
    for bad, match in (("x", "fold numbers"), ("0,0", "twice"), ("", "fold numbers"), ("-1", "fold numbers")):
        with pytest.raises(ValueError, match=match):
            parse_folds(bad)
    from cdeg.segmentation.cli import predict_command

    param = next(p for p in predict_command.params if p.name == "checkpoint")
    assert list(param.type.choices) == list(CHECKPOINTS)


def test_dataset_json_names_become_a_label_map_only_when_all_are_level_names(tmp_path: Path):
    lmap = label_map_from_names(
        {"background": 0, "C3": 4, "C3-C4": 9, "ignore": 10}, tmp_path / "dataset.json"
    )
    assert [(e.value, e.cdeg_label) for e in lmap.labels] == [(4, 3), (9, 103)]
    with pytest.raises(CdegError, match=r"cord, C1 are not cdeg level names.*--label-map"):
        label_map_from_names({"background": 0, "C2": 1, "cord": 2, "C1": 3}, tmp_path / "dataset.json")
    with pytest.raises(CdegError, match="region-based"):
        label_map_from_names({"background": 0, "C2": [1, 2]}, tmp_path / "dataset.json")
    regions = {"labels": {"background": 0, "a": [1, 2], "b": 2}, "regions_class_order": [1, 2]}
    assert model_output_values(regions, tmp_path) == [1, 2]


# --- slow: real models -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(xray_cohort5: Path) -> Path:
    """Five patients with radiographs (conftest.py; folds 0-4 need >= 5 cases). Read-only."""
    return xray_cohort5


@pytest.fixture(scope="module")
def models(smoke_xray_models: dict[str, Path]) -> dict[str, Path]:
    """cdeg model folders of fold 0 and fold 1 (conftest.py: same data, so the same plans). Read-only."""
    assert tuple(smoke_xray_models) == FOLDS
    return smoke_xray_models


@pytest.fixture(scope="module")
def plain(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain nnU-Net results folder holding fold_0 and fold_1 (final checkpoints only, no cdeg file)."""
    results = {f: m / json.loads((m / MANIFEST).read_text())["results_folder"] for f, m in models.items()}
    assert filecmp.cmp(results["0"] / "plans.json", results["1"] / "plans.json", shallow=False)
    rel = Path(*results["0"].parts[-2:])  # Dataset502_cdegXray/<Trainer>__nnUNetPlans__<configuration>
    folder = tmp_path_factory.mktemp("plainnn_results") / rel
    folder.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(results["0"] / name, folder / name)
    for f, res in results.items():
        (folder / f"fold_{f}").mkdir()
        shutil.copy(res / f"fold_{f}" / "checkpoint_final.pth", folder / f"fold_{f}")
    return folder


@pytest.fixture(scope="module")
def varied_cohort(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cohort with its last radiograph replaced by a single pixel (5 mm, canonical direction).

    The smoke network writes much the same values into every real radiograph; into a one-pixel image it
    writes exactly one value, so any other value of the real radiographs' masks is in some masks only.
    """
    root = tmp_path_factory.mktemp("plainnn_varied") / "cohort"
    shutil.copytree(cohort, root)
    coh = Cohort.open(root)
    path = coh.image_path(coh.patient_ids()[-1], MODALITY)
    image = sitk.ReadImage(str(path))
    pixel = sitk.Image([1, 1], image.GetPixelID()) + 100  # not 0: nnU-Net crops images to their non-zero box
    pixel.SetSpacing([5.0, 5.0])  # coarser than the plans (2.4 mm): resampled, it keeps >= 1 pixel
    pixel.SetOrigin(image.GetOrigin())
    pixel.SetDirection(image.GetDirection())
    write_image(path, pixel)
    return root


@pytest.fixture(scope="module")
def raw_outputs(
    varied_cohort: Path, models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """nnUNetv2_predict, run with the command of fold 0's NNUNET.md on every image of `varied_cohort`."""
    doc = (models["0"] / NNUNET_DOC).read_text()
    command = re.search(r"```bash\n(.*?)```", doc, re.S).group(1)
    assert " -i IN -o OUT " in command and "-f 0 -chk checkpoint_final.pth" in command
    root = tmp_path_factory.mktemp("plainnn_raw")
    (root / "in").mkdir()
    coh = Cohort.open(varied_cohort)
    for pid in coh.patient_ids():  # nnU-Net's input naming; synthetic images are in the canonical orientation
        shutil.copy(coh.image_path(pid, MODALITY), root / "in" / f"{pid}_0000.nii.gz")
    command = command.replace(" -i IN -o OUT ", f" -i {root / 'in'} -o {root / 'out'} ")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("nnUNet_extTrainer", None)
    # -device cpu as NNUNET.md says without a GPU; sequential preprocessing and export: 2 shared cores
    r = subprocess.run(["bash", "-c", command.strip() + " -device cpu -npp 0 -nps 0 --disable_progress_bar"],
                       env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return root / "out"


@pytest.mark.slow
def test_plain_folder_with_a_label_map_gives_the_masks_of_the_cdeg_folder(
    cohort: Path, models: dict[str, Path], plain: Path, tmp_path: Path
):
    r = _predict(cohort, models["0"], tmp_path / "cdeg")
    assert r.exit_code == 0, r.output
    r = _predict(cohort, plain, tmp_path / "plain", "--label-map", "cdeg_nnunet", "--folds", "0")
    assert r.exit_code == 0, r.output

    a, b = _masks(tmp_path / "cdeg"), _masks(tmp_path / "plain")
    assert a and a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    m = _manifest(tmp_path / "plain")
    assert m["model_manifest"] is None and m["counts"] == _manifest(tmp_path / "cdeg")["counts"]
    assert (
        m["nnunet"]["kind"] == "nnunet"
        and m["nnunet"]["folds"] == ["0"]
        and m["nnunet"]["parameter_sets"] == 1
    )
    assert m["nnunet"]["label_map"] == {"name": "cdeg_nnunet", "source": "--label-map cdeg_nnunet"}
    assert _manifest(tmp_path / "cdeg")["nnunet"]["kind"] == "cdeg"


@pytest.mark.slow
def test_two_folds_are_ensembled_with_names_from_dataset_json(cohort: Path, plain: Path, tmp_path: Path):
    assert resolve_model(plain, MODALITY).folds == FOLDS  # default: every fold holding the checkpoint
    r = _predict(cohort, plain, tmp_path / "ens", "--folds", "0,1")  # output: the log too (stderr)
    assert r.exit_code == 0, r.output
    m = _manifest(tmp_path / "ens")
    assert m["nnunet"]["folds"] == list(FOLDS) and m["nnunet"]["parameter_sets"] == 2
    assert m["nnunet"]["label_map"]["source"] == "dataset.json label names"
    assert "2 parameter set(s): fold(s) 0, 1" in r.output and "ensembled (mean logits)" in r.output
    assert "1 = C2, 2 = C2-C3, 3 = C3" in r.output  # the mapping derived from the names is logged
    written = [p for p, s in m["patients"].items() if s["status"] in ("ok", "flagged")]
    assert written and all(mask_path(tmp_path / "ens", p, MODALITY).is_file() for p in written)


@pytest.mark.slow
def test_model_mistakes_fail_in_one_line_before_anything_is_written(
    cohort: Path, models: dict[str, Path], plain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "masks"
    line = _one_line_error(_predict(cohort, plain, out, "--checkpoint", "best"))
    assert str(plain / "fold_0" / "checkpoint_best.pth") in line and "checkpoint_final.pth" in line
    line = _one_line_error(_predict(cohort, plain, out, "--folds", "0,3"))
    assert str(plain / "fold_3") in line and "folds present: 0, 1" in line
    line = _one_line_error(_predict(cohort, plain.parent, out))
    assert "nor an nnU-Net results folder" in line and str(plain) in line  # the dataset folder: a hint
    r = _predict(cohort, models["0"], out, "--label-map", "cdeg_nnunet")
    assert r.exit_code == 2 and "plain nnU-Net results folders" in r.output

    # dataset.json label names that are not cdeg level names, without --label-map
    named = tmp_path / "named" / plain.name
    shutil.copytree(plain, named)
    ds = json.loads((named / "dataset.json").read_text())
    ds["labels"] = {("vertebra_2" if k == "C2" else k): v for k, v in ds["labels"].items()}
    (named / "dataset.json").write_text(json.dumps(ds))
    line = _one_line_error(_predict(cohort, named, out))
    assert "vertebra_2 are not cdeg level names" in line and "--label-map" in line

    # a custom trainer class nnU-Net cannot find, then found through the user's nnUNet_extTrainer
    mine = tmp_path / "mine" / plain.name.replace(plain.name.split("__")[0], "nnUNetTrainer_Mine")
    shutil.copytree(plain, mine)
    line = _one_line_error(_predict(cohort, mine, out))
    assert "trainer class nnUNetTrainer_Mine" in line and "nnUNet_extTrainer" in line
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "mine.py").write_text(
        "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
        "class nnUNetTrainer_Mine(nnUNetTrainer):\n    pass\n"
    )
    monkeypatch.setenv("nnUNet_extTrainer", str(ext))
    assert resolve_model(mine, MODALITY).trainer == "nnUNetTrainer_Mine"
    assert not out.exists()


@pytest.mark.slow
def test_nnunet_md_command_runs_with_nnunetv2_predict(
    cohort: Path, varied_cohort: Path, models: dict[str, Path], raw_outputs: Path, tmp_path: Path
):
    coh = Cohort.open(varied_cohort)
    foreground = []
    for pid in coh.patient_ids():
        seg, image = (
            sitk.ReadImage(str(raw_outputs / f"{pid}.nii.gz")),
            sitk.ReadImage(str(coh.image_path(pid, MODALITY))),
        )
        assert seg.GetSize() == image.GetSize() and seg.GetSpacing() == image.GetSpacing()
        values = set(np.unique(sitk.GetArrayFromImage(seg)).tolist())
        assert values <= set(range(14)), values  # training labels (1..13)
        foreground += [pid] if values - {0} else []
    assert foreground
    # the follow-up NNUNET.md names: convert the training labels into cdeg's convention
    r = _invoke("segment", "import-masks", "--from", "cdeg_nnunet", "--masks", raw_outputs, "--cohort",
                varied_cohort, "--modality", MODALITY, "--out", tmp_path / "imported")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert all(mask_path(tmp_path / "imported", p, MODALITY).is_file() for p in foreground)

    # train on a complete folder that lacks NNUNET.md (trained before cdeg wrote it) only writes it
    old = tmp_path / "old_model"
    shutil.copytree(models["0"], old)
    (old / NNUNET_DOC).unlink()
    weights = next(old.rglob("checkpoint_final.pth")).stat().st_mtime_ns
    train(cohort=cohort, modality=MODALITY, out=old, preset="smoke", device="cpu", fold="0", progress=False)
    assert f"MODEL_DIR={old.resolve()}\n" in (old / NNUNET_DOC).read_text()
    assert next(old.rglob("checkpoint_final.pth")).stat().st_mtime_ns == weights


@pytest.mark.slow
def test_a_value_the_label_map_lacks_fails_only_the_patients_whose_mask_holds_it(
    varied_cohort: Path, plain: Path, raw_outputs: Path, tmp_path: Path
):
    # nnUNetv2_predict's fold-0 output says which patients' masks hold each value: pick one that some hold.
    holds = {
        path.name.removesuffix(".nii.gz"): set(np.unique(_array(path)).tolist()) - {0}
        for path in sorted(raw_outputs.glob("*.nii.gz"))
    }
    counts = {v: sum(v in h for h in holds.values()) for v in range(1, 14)}
    candidates = [v for v, n in counts.items() if 0 < n < len(holds)]
    assert candidates, f"every value is in all or no patient's mask: {counts}"  # see varied_cohort
    value = min(candidates, key=counts.get)
    user_map = tmp_path / "my_map.yaml"
    shipped = (Path(__file__).parents[1] / "configs" / "label_maps" / "cdeg_nnunet.yaml").read_text()
    kept = [line for line in shipped.splitlines() if not line.strip().startswith(f"- {{value: {value},")]
    user_map.write_text("\n".join(kept).replace("name: cdeg_nnunet", "name: my_map") + "\n")

    r = _predict(varied_cohort, plain, tmp_path / "masks", "--label-map", user_map, "--folds", "0")
    assert r.exit_code == 0, r.output  # the other patients go on
    assert f"does not list value(s) {value}" in r.output  # warned before the first patient
    status = _manifest(tmp_path / "masks")["patients"]
    failed = {p for p, s in status.items() if s["status"] == "failed"}
    assert failed == {p for p, h in holds.items() if value in h}  # the same network as nnUNetv2_predict
    assert 0 < len(failed) < len(status)
    errors = [line for line in r.output.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == len(failed) and "Traceback" not in r.output
    for pid in failed:
        (line,) = [e for e in errors if f": patient {pid} / " in e]
        assert (
            str(user_map.resolve()) in line and f"value(s) {value} are not in the label map 'my_map'" in line
        )
        assert not mask_path(tmp_path / "masks", pid, MODALITY).exists()
    assert all(s["status"] in ("ok", "flagged", "empty") for p, s in status.items() if p not in failed)
