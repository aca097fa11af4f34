"""`cdeg run` checks every stage configuration in a study before its first stage runs.

A misspelt key in any section (segmentation overrides or file, inline PyRadiomics parameters or file, fit
file, a synthetic cohort's generator file) is a ConfigError naming the key by its dotted path, from
`load_run_config`, and a one-line error from `cdeg run --dry-run` that synthesises nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cdeg.cli import cli
from cdeg.config import ConfigError, load_yaml, shipped_config
from cdeg.pipeline.config import load_run_config
from cdeg.registry import REGISTRY, load_radiomics, load_segment, load_stage_config

TINY = Path(__file__).parent / "run_tiny.yaml"


def _study(tmp_path: Path, edit: Any) -> Path:
    """The tiny test study with `edit(data, tmp_path)` applied, written to tmp_path/study.yaml."""
    data = yaml.safe_load(TINY.read_text())
    data["out"] = str(tmp_path / "run")
    edit(data, tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _file(tmp_path: Path, name: str, data: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _overrides(data: dict, tmp: Path) -> None:
    data["segmentation"]["overrides"]["presets"] = {"fast": {"cpu": {"mri": {"time_budget_z": 60}}}}


def _segment_file(data: dict, tmp: Path) -> None:
    data["segmentation"]["config"] = _file(tmp, "seg.yaml", {"predict": {"tile_stepsize": 0.5}})


def _radiomics(data: dict, tmp: Path) -> None:
    data["extract"]["radiomics"]["setting"]["binWidht"] = 5


def _params(data: dict, tmp: Path) -> None:
    params = load_yaml(shipped_config("radiomics_xray.yaml"))
    params["featureClas"] = params.pop("featureClass")
    data["extract"]["params"] = _file(tmp, "radiomics.yaml", params)


def _fit(data: dict, tmp: Path) -> None:
    data["fit"]["config"] = _file(tmp, "fit.yaml", {"preprocess": {"max_misssing": 0.4}})


def _synth(data: dict, tmp: Path) -> None:
    data["cohorts"]["development"]["synth"]["config"] = _file(
        tmp, "synth.yaml", {"model": {"profiles": {"neck": {"male_fractionn": 0.5}}}}
    )


#: Edit of the study -> the dotted key the error must name.
TYPOS = {
    "segmentation.overrides": (_overrides, "segmentation.overrides.presets.fast.cpu.mri.time_budget_z"),
    "segmentation.config": (_segment_file, "segmentation.config: unknown key predict.tile_stepsize"),
    "extract.radiomics": (_radiomics, "extract.radiomics.setting.binWidht"),
    "extract.params": (_params, "extract.params: .*featureClas"),
    "fit.config": (_fit, "fit.config: unknown key preprocess.max_misssing"),
    "cohorts.synth.config": (
        _synth,
        "cohorts.development.synth.config: unknown key model.profiles.neck.male_fractionn",
    ),
}


@pytest.mark.parametrize("section", sorted(TYPOS))
@pytest.mark.radiomics
def test_a_typo_in_any_section_is_named_by_its_dotted_key(tmp_path: Path, section: str):
    edit, key = TYPOS[section]
    with pytest.raises(ConfigError, match=key):
        load_run_config(_study(tmp_path, edit))


@pytest.mark.parametrize("section", ["segmentation.overrides", "extract.radiomics", "cohorts.synth.config"])
@pytest.mark.radiomics
def test_cdeg_run_reports_a_typo_in_one_line_before_any_stage(tmp_path: Path, section: str):
    edit, key = TYPOS[section]
    study = _study(tmp_path, edit)
    r = CliRunner().invoke(cli, ["run", "--config", str(study), "--dry-run"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.exception is not None and isinstance(r.exception, SystemExit)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and re.search(key, errors[0]), r.output
    assert not (tmp_path / "run").exists()  # nothing synthesised, no folder made


@pytest.mark.radiomics
def test_the_tiny_study_validates():
    cfg = load_run_config(TINY)
    assert cfg.segmentation.overrides and cfg.extract.radiomics


def test_typo_suggests_the_close_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"did you mean time_budget_s\?"):
        load_run_config(_study(tmp_path, _overrides))


def test_a_cross_field_rule_of_the_overrides_names_its_key(tmp_path: Path):
    def edit(data: dict, tmp: Path) -> None:
        data["segmentation"]["overrides"]["presets"] = {
            "fast": {"cpu": {"xray": {"configuration": "3d_fullres"}}}
        }

    with pytest.raises(
        ConfigError, match=r"segmentation.overrides.presets.fast.cpu.xray.configuration must be 2d"
    ):
        load_run_config(_study(tmp_path, edit))


# --- the registry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
@pytest.mark.radiomics
def test_every_entry_resolves_its_shipped_configuration(name: str):
    entry = REGISTRY[name]
    assert all(shipped_config(f).is_file() for f in entry.shipped)
    assert load_stage_config(name) is not None


def test_a_mapping_and_a_file_resolve_alike(tmp_path: Path):
    keys = {"predict": {"tile_step_size": 0.25}, "postprocess": {"repair": False}}
    from_mapping = load_segment(keys)
    from_file = load_segment(_file(tmp_path, "seg.yaml", keys))
    assert from_mapping == from_file and from_mapping.predict.tile_step_size == 0.25
    assert load_segment(from_mapping) is from_mapping  # a resolved configuration passes through


def test_a_file_error_names_the_file_and_the_study_key(tmp_path: Path):
    path = _file(tmp_path, "fit.yaml", {"trails": 3})
    with pytest.raises(
        ConfigError, match=r"fit.yaml: fit.config: unknown key trails \(did you mean trials\?\)"
    ):
        load_stage_config("fit", path, where="fit.config")


@pytest.mark.radiomics
def test_inline_radiomics_parameters_are_returned_validated():
    params = load_yaml(shipped_config("radiomics_mri.yaml"))
    assert load_radiomics(params, where="extract.radiomics") == params
    with pytest.raises(ConfigError, match=r"extract.radiomics.imageTyp\b"):
        load_radiomics({**params, "imageTyp": {}}, where="extract.radiomics")


def test_an_unknown_registry_name_is_refused():
    with pytest.raises(ValueError, match="valid: synth, segment, radiomics, fit, check"):
        load_stage_config("segmentation")


# --- the agreement of predicted-mask and reference-mask features -----------------------------------------


def _agreement(**keys: Any) -> Any:
    def edit(data: dict, tmp: Path) -> None:
        data["agreement"] = keys

    return edit


def _context(cfg: Any, tmp_path: Path) -> Any:
    from cdeg.pipeline.stages import Context

    return Context(cfg=cfg, out=tmp_path / "run", jobs=1, device="cpu", progress=None)


@pytest.mark.parametrize(
    "cohort, message",
    [
        (
            "rotterdam",
            "agreement.cohort = 'rotterdam' is not a cohort; cohorts: annotated, development, external",
        ),
        ("annotated", "agreement.cohort = 'annotated' is not segmented by the study"),
    ],
)
def test_the_agreement_cohort_must_be_a_segmented_cohort(tmp_path: Path, cohort: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_run_config(_study(tmp_path, _agreement(cohort=cohort)))


def test_cdeg_run_reports_a_bad_agreement_cohort_in_one_line(tmp_path: Path):
    study = _study(tmp_path, _agreement(cohort="rotterdam", patients=6))
    r = CliRunner().invoke(cli, ["run", "--config", str(study), "--dry-run"])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "agreement.cohort = 'rotterdam' is not a cohort" in errors[0], r.output
    assert not (tmp_path / "run").exists()


def test_agreement_without_segmentation_is_refused(tmp_path: Path):
    def edit(data: dict, tmp: Path) -> None:
        data["segmentation"]["enabled"] = False
        data["agreement"] = {"enabled": True}

    with pytest.raises(ConfigError, match="agreement.enabled = true needs segmentation.enabled"):
        load_run_config(_study(tmp_path, edit))


@pytest.mark.radiomics
def test_agreement_stages_follow_the_extraction_of_the_development_cohort(tmp_path: Path):
    from cdeg.outputs import RunFolder
    from cdeg.pipeline.config import agreement_cohort
    from cdeg.pipeline.stages import build_stages

    cfg = load_run_config(_study(tmp_path, _agreement()))  # every key at its default
    assert agreement_cohort(cfg) == "development" and cfg.agreement.patients == 30
    ctx = _context(cfg, tmp_path)
    stages = {s.name: s for s in build_stages(ctx)}
    names = list(stages)
    ref, compare = stages["extract-reference:development"], stages["agreement:development"]
    assert compare.deps == {"predicted features": "extract:development", "reference features": ref.name}
    assert ref.folder == RunFolder(ctx.out).reference_features("development").root
    assert compare.folder == RunFolder(ctx.out).agreement("development").root
    assert names.index("extract:development") < names.index(ref.name) < names.index(compare.name)
    assert compare.name in stages["report"].deps
    assert not any(n.startswith(("extract-reference:external", "agreement:external")) for n in names)


@pytest.mark.parametrize(
    "edit",
    [_agreement(enabled=False), lambda data, tmp: data["segmentation"].update(enabled=False)],
    ids=["disabled", "no segmentation"],
)
@pytest.mark.radiomics
def test_no_agreement_stage_when_off(tmp_path: Path, edit: Any):
    from cdeg.pipeline.config import agreement_cohort
    from cdeg.pipeline.stages import build_stages

    cfg = load_run_config(_study(tmp_path, edit))
    assert agreement_cohort(cfg) is None
    kinds = {s.kind for s in build_stages(_context(cfg, tmp_path))}
    assert not kinds & {"extract-reference", "agreement"}


def _real_development(cohort: Path, **agreement: Any) -> Any:
    """Edit: the development cohort is the folder `cohort` (real data), with these agreement keys."""

    def edit(data: dict, tmp: Path) -> None:
        data["cohorts"]["development"] = {"path": str(cohort)}
        data["agreement"] = agreement

    return edit


@pytest.mark.radiomics
def test_agreement_patients_are_the_first_ids_with_a_reference_mask(tmp_path: Path, tiny_cohort: Path):
    import shutil

    from cdeg.cohort import Cohort
    from cdeg.pipeline.stages import agreement_patients

    cohort = shutil.copytree(tiny_cohort, tmp_path / "cohort")
    c = Cohort.open(cohort)
    ids = sorted(c.patient_ids())
    for m in ("mri", "xray"):
        c.mask_path(ids[0], m).unlink(missing_ok=True)  # the first patient was never outlined
    cfg = load_run_config(_study(tmp_path, _real_development(cohort, patients=3)))
    ctx = _context(cfg, tmp_path)
    assert agreement_patients(ctx, "development", ("xray",)) == ids[1:4]
    cfg = load_run_config(_study(tmp_path, _real_development(cohort, patients=0)))
    assert agreement_patients(_context(cfg, tmp_path), "development", ("xray",)) == ids[1:]


@pytest.mark.radiomics
def test_a_cohort_without_reference_masks_has_no_agreement_unless_required(tmp_path: Path, tiny_cohort: Path):
    import shutil

    from cdeg.cohort import MASKS_DIR
    from cdeg.errors import CdegError
    from cdeg.pipeline.stages import build_stages

    cohort = shutil.copytree(tiny_cohort, tmp_path / "cohort")
    shutil.rmtree(cohort / MASKS_DIR)
    cfg = load_run_config(_study(tmp_path, _real_development(cohort)))
    assert not any(s.kind == "agreement" for s in build_stages(_context(cfg, tmp_path)))
    cfg = load_run_config(_study(tmp_path, _real_development(cohort, enabled=True)))
    with pytest.raises(
        CdegError, match="agreement.enabled is true but cohort 'development' has no reference masks"
    ):
        build_stages(_context(cfg, tmp_path))


def test_predict_workers_is_checked_before_any_work(tmp_path: Path):
    def workers(n: Any) -> Any:
        return lambda data, tmp: data["segmentation"].__setitem__("predict_workers", n)

    assert load_run_config(_study(tmp_path, workers(2))).segmentation.predict_workers == 2
    with pytest.raises(ConfigError, match="segmentation.predict_workers"):
        load_run_config(_study(tmp_path, workers(-1)))
