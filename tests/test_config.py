"""Layered configuration and the shipped configuration files."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cdeg.config import ConfigError, deep_merge, dump_yaml, from_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Inner:
    sd: float = field(default=1.0, metadata={"help": "spread", "range": (0, 10)})


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    n: int = 3
    kind: str = field(default="a", metadata={"choices": ["a", "b"]})
    inner: Inner = Inner()
    weights: tuple[float, ...] = (1.0, 2.0)


def test_layers_defaults_yaml_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("n: 5\ninner: {sd: 2}\n")
    cfg = load_config(Outer, p, overrides={"inner.sd": 3.5})
    assert cfg.n == 5 and cfg.inner.sd == 3.5 and cfg.name == "x"
    assert yaml.safe_load(dump_yaml(cfg))["inner"]["sd"] == 3.5


@pytest.mark.parametrize(
    "data, message",
    [
        ({"nn": 1}, "unknown key"),
        ({"n": "three"}, "must be an integer"),
        ({"kind": "c"}, "valid: a, b"),
        ({"inner": {"sd": 11}}, "outside"),
        ({"weights": "1,2"}, "must be a list"),
    ],
)
def test_invalid_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_deep_merge_keeps_unrelated_keys():
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_every_shipped_yaml_parses():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, "configs/ holds no YAML"
    for f in files:
        assert isinstance(yaml.safe_load(f.read_text()), dict), f


def test_shipped_synth_config_validates():
    from cdeg.synth import load_synth_config

    cfg = load_synth_config()
    assert cfg.model is not None and cfg.render is not None


def test_synth_config_rejects_unknown_key(tmp_path):
    from cdeg.synth import load_synth_config

    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  no_such_key: 1\n")
    with pytest.raises(ConfigError, match="no_such_key"):
        load_synth_config(p)
