"""Every shipped file in configs/ loads and validates with the loader of the stage that reads it."""

from __future__ import annotations

from pathlib import Path

import cdeg.configs
import pytest
from cdeg.modeling.config import resolve_config
from cdeg.segmentation.presets import load_segment_config

from cdeg.check import load_check_config
from cdeg.label_maps import available, load_label_map
from cdeg.pipeline.config import load_run_config
from cdeg.synth import load_synth_config

CONFIGS = Path(cdeg.configs.__file__).parent


def _radiomics(path: Path) -> object:
    from cdeg.features.radiomics_features import validate_params

    return validate_params(path)


#: File name -> the loader its stage uses (each validates keys, types and ranges).
LOADERS = {
    "check.yaml": load_check_config,
    "demo.yaml": load_run_config,
    "study_template.yaml": load_run_config,
    "fit.yaml": resolve_config,
    "segment.yaml": load_segment_config,
    "synth.yaml": load_synth_config,
    "radiomics_mri.yaml": _radiomics,
    "radiomics_xray.yaml": _radiomics,
}


def test_every_shipped_config_has_a_loader():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(LOADERS)


@pytest.mark.parametrize("name", sorted(LOADERS))
@pytest.mark.radiomics
def test_shipped_config_validates(name: str):
    assert LOADERS[name](CONFIGS / name) is not None


@pytest.mark.parametrize("name", available())
def test_shipped_label_map_validates(name: str):
    assert load_label_map(CONFIGS / "label_maps" / f"{name}.yaml").name == name


def test_a_cohort_with_both_path_and_synth_is_refused(tmp_path: Path):
    import yaml

    from cdeg.config import ConfigError

    data = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    data["cohorts"]["development"]["path"] = "cohorts/mine"
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"cohorts.development: give a path .* not both"):
        load_run_config(p)
