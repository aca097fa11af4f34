"""Shared fixtures: tiny synthetic cohorts made once per test session."""

from __future__ import annotations

import os

import pytest

# Progress bars and torch.compile are noise in tests; the tests' results do not depend on them.
os.environ.setdefault("CDEG_NO_PROGRESS", "1")
os.environ.setdefault("nnUNet_compile", "f")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    """A 6-patient neck cohort (both modalities, masks, truth), seed 7. Read-only: copy before changing."""
    from cdeg.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("cohorts") / "neck6", profile="neck", n=6, seed=7, progress=False
    )


@pytest.fixture(scope="session")
def tiny_population_cohort(tmp_path_factory):
    """A 6-patient population cohort, seed 8. Read-only."""
    from cdeg.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("cohorts") / "pop6", profile="population", n=6, seed=8, progress=False
    )
