"""Shared fixtures: tiny synthetic cohorts made once per test session."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

# Progress bars and torch.compile are noise in tests; the tests' results do not depend on them.
os.environ.setdefault("CDEG_NO_PROGRESS", "1")
os.environ.setdefault("nnUNet_compile", "f")
os.environ.setdefault("MPLBACKEND", "Agg")


#: Session fixtures that cost minutes (a whole study, nnU-Net trainings). Under pytest-xdist (`make test` runs
#: `-n auto --dist loadgroup`) every test that uses one goes to the same worker, so each is built once.
_EXPENSIVE_FIXTURES = ("tiny_run", "smoke_xray_models")


#: Test modules and session fixtures that run PyRadiomics throughout (the `radiomics` extra); single tests
#: elsewhere carry the `radiomics` mark.
_RADIOMICS_MODULES = ("test_features_extract.py", "test_features_radiomics.py", "test_features_dask.py")
_RADIOMICS_FIXTURES = ("tiny_run",)


def _skip_without_pyradiomics(items: list[pytest.Item]) -> None:
    """Where PyRadiomics is not installed (Python 3.12+, or cdeg without the extra), its tests skip."""
    import importlib.util

    if importlib.util.find_spec("radiomics") is not None:
        return
    skip = pytest.mark.skip(reason="needs PyRadiomics (the radiomics extra)")
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if (
            "radiomics" in item.keywords
            or item.path.name in _RADIOMICS_MODULES
            or any(f in fixtures for f in _RADIOMICS_FIXTURES)
        ):
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run only where PyTorch sees a CUDA device (benchmarks/gpu/run.sh runs them).
    Tests sharing an expensive session fixture share an xdist group (see :data:`_EXPENSIVE_FIXTURES`).

    tryfirst: pytest-xdist reads the groups in its own pytest_collection_modifyitems (it appends
    ``@<group>`` to each node id); without it that hook runs before this one and sees no group, and every
    worker builds each expensive fixture again."""
    for item in items:
        used = [f for f in _EXPENSIVE_FIXTURES if f in getattr(item, "fixturenames", ())]
        if used:
            item.add_marker(pytest.mark.xdist_group(used[0]))
    _skip_without_pyradiomics(items)
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


#: A light PyRadiomics parameter file (shape and first order only): PyRadiomics really runs, quickly.
FAST_RADIOMICS = """\
featureClass:
  shape:
  firstorder:
setting:
  normalize: true
  force2D: true
  force2Ddimension: 0
  binWidth: 5
"""


@pytest.fixture(scope="session")
def fast_params(tmp_path_factory) -> Path:
    """FAST_RADIOMICS written to a file (read-only)."""
    p = tmp_path_factory.mktemp("params") / "fast.yaml"
    p.write_text(FAST_RADIOMICS)
    return p


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


@pytest.fixture(scope="session")
def xray_cohort5(tmp_path_factory) -> Path:
    """Five patients with radiographs only, seed 5 (nnU-Net folds 0-4 need >= 5 cases). Read-only."""
    from cdeg.synth import synthesize

    root = tmp_path_factory.mktemp("xray5") / "cohort"
    synthesize(root, n=5, seed=5, modalities="xray", progress=False)
    return root


@pytest.fixture(scope="session")
def smoke_xray_models(xray_cohort5, tmp_path_factory) -> dict[str, Path]:
    """cdeg model folders of the `smoke` preset (radiographs, CPU), folds 0 and 1, trained once per session on
    `xray_cohort5` (same data, so the same plans). Read-only: copy before changing."""
    from cdeg.segmentation.train import train

    root = tmp_path_factory.mktemp("smoke_xray_models")
    for fold in ("0", "1"):
        train(
            xray_cohort5,
            "xray",
            root / f"fold{fold}",
            preset="smoke",
            device="cpu",
            fold=fold,
            progress=False,
        )
    return {fold: root / f"fold{fold}" for fold in ("0", "1")}


@pytest.fixture(scope="session")
def small_fit(tmp_path_factory) -> dict[str, Any]:
    """A quick `cdeg fit` (60 simulated patients, 12 image features, an index level in the clinical table;
    2 trials, 2 folds, 1 repeat, no tiers): ``dir`` (features f.csv, clinical c.csv, run/ with model/ inside),
    ``features`` and ``clinical`` frames. Read-only: write new tables beside them, never over them."""
    import numpy as np
    from cdeg.modeling.fit import fit
    from cdeg.modeling.simulate import simulate

    from cdeg.io import write_table

    tmp = tmp_path_factory.mktemp("small_fit")
    feat, clin = simulate(n=60, n_features=12, signal=2.0, prevalence=0.35, seed=4)
    clin["index_level"] = np.random.default_rng(0).choice(["C5-C6", "C6-C7"], len(clin))
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    fit(tmp / "f.csv", tmp / "c.csv", "accelerated", tmp / "run", trials=2, outer_folds=2, repeats=1, jobs=1,
        tiers="none", progress=False)  # fmt: skip
    return {"dir": tmp, "features": feat, "clinical": clin}


#: The study in miniature that tests `cdeg run` end to end (a test fixture, not a shipped configuration).
TINY_RUN_CONFIG = Path(__file__).with_name("run_tiny.yaml")


def manifests(out: Path) -> dict[str, bytes]:
    from cdeg.pipeline import cache

    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob(cache.MANIFEST))}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tests/run_tiny.yaml run twice (the second with nothing changed), once per test session.

    Keys: out, config, first, second (run results), first_s, second_s, manifests_before, manifests_after.
    """
    from cdeg.pipeline import run

    out = tmp_path_factory.mktemp("tiny") / "run"
    t0 = time.perf_counter()
    first = run(TINY_RUN_CONFIG, out=out, progress=False)
    first_s = time.perf_counter() - t0
    before = manifests(out)
    t0 = time.perf_counter()
    second = run(TINY_RUN_CONFIG, out=out, progress=False)
    return {
        "out": out,
        "config": TINY_RUN_CONFIG,
        "first": first,
        "second": second,
        "first_s": first_s,
        "second_s": time.perf_counter() - t0,
        "manifests_before": before,
        "manifests_after": manifests(out),
    }


@pytest.fixture(autouse=True)
def _restore_cdeg_log_level():
    """An in-process CLI call with ``-q`` sets the ``cdeg`` logger to ERROR for the whole worker process; without
    this, a later test that reads log records (caplog) would depend on which test ran before it on its worker."""
    import logging

    logger = logging.getLogger("cdeg")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def label_tables(tmp_path: Path):
    """A factory of hand-made cohorts for `cdeg label`: ``make(name, n_per_sex, seed, male_spread=1.0,
    columns=None)`` writes ``<name>/features.csv`` and ``<name>/clinical.csv`` under tmp_path and returns their
    paths. Ages uniform in `ages` (40-80); MRI disc height index and disc/CSF signal ratio at four discs, falling with age, with
    noise whose spread is `male_spread` times larger in men; `columns` keeps only those measurements."""
    import numpy as np
    import pandas as pd

    def make(
        name: str, n_per_sex: int = 100, seed: int = 0, male_spread: float = 1.0, columns=None, ages=(40, 80)
    ):
        rng = np.random.default_rng(seed)
        n = 2 * n_per_sex
        sex = np.array(["F"] * n_per_sex + ["M"] * n_per_sex)
        age = rng.uniform(*ages, n)
        spread = np.where(sex == "M", male_spread, 1.0)
        ids = [f"{name}{i:04d}" for i in range(n)]
        feats = {"patient_id": ids}
        for disc in ("C3-C4", "C4-C5", "C5-C6", "C6-C7"):
            common = rng.normal(0, 1, n) * spread
            for m, base, slope, sd in (
                ("disc_height_index", 0.40, -0.002, 0.03),
                ("disc_csf_signal_ratio", 0.80, -0.004, 0.08),
            ):
                if columns is None or m in columns:
                    noise = (0.7 * common + 0.7 * rng.normal(0, 1, n) * spread) * sd
                    feats[f"mri__{disc}__{m}"] = base + slope * (age - 60) + noise
            feats[f"mri__{disc}__disc_angle_deg"] = rng.normal(5, 2, n)
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame(feats).to_csv(folder / "features.csv", index=False)
        clinical = pd.DataFrame({"patient_id": ids, "age": age.round(1), "sex": sex, "bmi": 25.0})
        clinical.to_csv(folder / "clinical.csv", index=False)
        return folder / "features.csv", folder / "clinical.csv"

    return make
