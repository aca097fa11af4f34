"""`cdeg run --force`: which stages a user's list names (no stage runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdeg.pipeline.runner import _parse_force
from cdeg.pipeline.stages import Stage


def _stages() -> list[Stage]:
    def none(*_a):
        return {}

    names = ["synth:dev", "extract:dev", "fit:accelerated", "fit:poor_outcome_2y", "report"]
    return [Stage(n, n.split(":")[0], Path("/x") / n, {}, {}, none, none) for n in names]


@pytest.mark.parametrize(
    "force",
    [("extract,fit:accelerated",), ("extract", "fit:accelerated"), "extract, fit:accelerated"],
)
def test_force_takes_commas_and_repeats_alike(force):
    assert _parse_force(force, _stages()) == {"extract:dev", "fit:accelerated"}


def test_force_by_kind_all_and_unknown():
    assert _parse_force(("fit",), _stages()) == {"fit:accelerated", "fit:poor_outcome_2y"}
    assert _parse_force(("all",), _stages()) == {s.name for s in _stages()}
    with pytest.raises(ValueError, match="unknown stage 'fitt'"):
        _parse_force(("extract,fitt",), _stages())
