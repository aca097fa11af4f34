"""Synthetic cohorts with known ground truth: the data behind the demo, the tests and the benchmarks.

:func:`synthesize` is the API (``cdeg synth`` is a thin shell over it). It draws patients and their true
per-level anatomy and degeneration from the generative model (:mod:`cdeg.synth.model`), renders a
sagittal T2 MRI and a lateral radiograph with reference masks for each (:mod:`cdeg.synth.render`), and
writes everything in the cohort layout (:mod:`cdeg.cohort`), truth tables included.

Parameters live in ``configs/synth.yaml`` (``cdeg synth --print-config`` shows the resolved file).

truth/corners.csv (with radiographs) holds the true corners of each vertebral body on the radiograph
(:data:`cdeg.corners.COLUMNS`, physical mm of xray.nii.gz), the ground truth for corner-point annotations.

truth/patients.csv holds :data:`cdeg.synth.model.PATIENT_COLUMNS`, then (unless ``ceiling.enabled`` is
false) the ceiling columns of :func:`cdeg.synth.ceiling.ceiling_columns`: per outcome with synthetic truth
(accelerated; poor_outcome_2y in the surgical profile), ``p_observable_<outcome>`` then ``p_latent_<outcome>``,
then ``accelerated_operational``: `cdeg label`'s operational label computed from the true measurements against
a large population-profile sample (:mod:`cdeg.synth.oplabel`).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import __version__
from cdeg.choices import SYNTH_PROFILES
from cdeg.cohort import (
    CLINICAL_CSV,
    COHORT_JSON,
    ID_COLUMN,
    MASKS_DIR,
    MODALITIES,
    TRUTH_CORNERS,
    TRUTH_DIR,
    TRUTH_LEVELS,
    TRUTH_PATIENTS,
    CohortMeta,
    image_path,
    mask_path,
    write_cohort_json,
)
from cdeg.config import ConfigError, deep_merge, dump_yaml, from_dict, load_yaml, shipped_config
from cdeg.io import write_image, write_table
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

PROFILES = SYNTH_PROFILES
# Seed streams: stream 0 is the model's (per patient), stream 1 the renderer's. Patient i's images depend
# only on (seed, i), never on the number of workers or patients.
_RENDER_STREAM = 1


#: The top-level sections of configs/synth.yaml.
SECTIONS: tuple[str, ...] = ("model", "render", "ceiling")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Resolved generator configuration: the model (who the patients are), the renderer (their images) and
    the ceiling columns of the truth (:mod:`cdeg.synth.ceiling`)."""

    model: Any
    render: Any
    ceiling: Any


def synth_config_from_data(
    data: dict[str, Any], where: str = "", source: str | Path | None = None
) -> SynthConfig:
    """Build the configuration from a complete mapping (the shipped file merged with the user's keys).

    `where` prefixes each key in error messages (a study's ``cohorts.x.synth.config``); `source` is the file
    the keys came from.
    """
    from cdeg.synth.ceiling import CeilingConfig
    from cdeg.synth.model import ModelConfig
    from cdeg.synth.render import RenderConfig

    prefix = f"{where}." if where else ""
    return SynthConfig(
        model=from_dict(ModelConfig, data.get("model") or {}, f"{prefix}model", source),
        render=from_dict(RenderConfig, data.get("render") or {}, f"{prefix}render", source),
        ceiling=from_dict(CeilingConfig, data.get("ceiling") or {}, f"{prefix}ceiling", source),
    )


def load_synth_config(path: str | Path | None = None) -> SynthConfig:
    """Resolve the generator configuration: shipped ``configs/synth.yaml`` < the user's YAML `path`.

    The user's file needs only the keys it changes; unknown keys are errors.
    """
    data = load_yaml(shipped_config("synth.yaml"))
    source: str | Path = shipped_config("synth.yaml")
    if path is not None:
        user = load_yaml(path)
        unknown = set(user) - set(SECTIONS)
        if unknown:
            raise ConfigError(
                f"unknown top-level key(s) {', '.join(sorted(unknown))}; valid: {', '.join(SECTIONS)}",
                path=path,
            )
        data = deep_merge(data, user)
        source = path
    return synth_config_from_data(data, source=source)


def config_hash(cfg: SynthConfig) -> str:
    """Short hash of the resolved configuration (recorded in cohort.json)."""
    return hashlib.sha256(dump_yaml(cfg).encode()).hexdigest()[:16]


def synthesize(
    out: str | Path,
    profile: str = "neck",
    n: int = 109,
    seed: int = 0,
    config: str | Path | None = None,
    modalities: tuple[str, ...] | list[str] | str | None = None,
    jobs: int = 1,
    name: str | None = None,
    overwrite: bool = False,
    format: str = "nifti",
    ceiling: bool | None = None,
    progress: ProgressArg = None,
) -> Path:
    """Generate a synthetic cohort in the cohort layout and return its folder.

    Parameters
    ----------
    out : path
        Cohort folder to create. It must not hold a cohort already unless `overwrite` is set.
    profile : {"neck", "population"}
        "neck": the surgical radiculopathy cohort (age 18-65, index level, outcomes at 1 and 2 years).
        "population": a population study (age 45-90, not operated).
    n : int
        Number of patients.
    seed : int
        Seed; the same seed, version and configuration give byte-identical files, whatever `jobs` is.
        Patient i is the same in a cohort of 10 and of 1000.
    config : path, optional
        YAML overriding keys of ``configs/synth.yaml``.
    modalities : "mri,xray" or a list, optional
        Which images to render (default both).
    jobs : int
        Worker processes for rendering (0 = all cores).
    name : str, optional
        Cohort name for cohort.json (default: the folder name).
    overwrite : bool
        Replace an existing cohort in `out`.
    format : {"nifti", "dicom"}
        "nifti": the cohort layout. "dicom": a hospital-style DICOM export in `out` (nested
        patient/study/series folders, realistic identifying tags, decoy series; no masks or truth), the
        input that ``cdeg import-dicom`` is tested with.
    ceiling : bool, optional
        Write the ceiling columns and the operational label into truth/patients.csv (:mod:`cdeg.synth.ceiling`,
        :mod:`cdeg.synth.oplabel`; the first cohort of a configuration fits the ceiling models and the label's
        reference, later ones load them from the cache). None: as
        ``ceiling.enabled`` of the configuration says. A DICOM export has no truth, hence no ceiling.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).
    """
    from cdeg.cohort import parse_modalities

    _check_arguments(profile, n, jobs, format)
    mods = parse_modalities(modalities)
    out = Path(out)
    if format == "dicom":
        return _synthesize_dicom(out, profile, n, seed, config, mods, jobs, overwrite, progress)
    if (out / COHORT_JSON).exists() and not overwrite:
        raise ValueError(f"{out} already holds a cohort; choose another folder or pass overwrite")
    if out.exists() and not (out / COHORT_JSON).exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty; synth writes only into a new or empty folder")
    cfg = load_synth_config(config)
    t0 = time.perf_counter()

    from cdeg.synth.model import sample_cohort

    tables = sample_cohort(cfg.model, profile, n, seed)
    patients = tables.patients.reset_index(drop=True)
    levels = tables.levels
    log.info("sampled %d %s patients in %.2f s", n, profile, time.perf_counter() - t0)
    if cfg.ceiling.enabled if ceiling is None else ceiling:
        from cdeg.synth.ceiling import ceiling_probabilities

        probs = ceiling_probabilities(cfg.model, profile, tables, n=cfg.ceiling.n)
        patients = patients.merge(probs, on=ID_COLUMN, how="left", validate="one_to_one")
        from cdeg.synth.oplabel import OPERATIONAL_COLUMN, operational_labels

        patients[OPERATIONAL_COLUMN] = operational_labels(cfg.model, tables, n=cfg.ceiling.n).to_numpy()

    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        (out / COHORT_JSON).unlink(missing_ok=True)  # cohort.json is written last: it marks a complete cohort
    by_patient = {pid: df for pid, df in levels.groupby(ID_COLUMN, sort=False)}
    tasks = [
        (cfg.render, patients.iloc[i].to_dict(), by_patient[pid], (seed, i), mods, str(out))
        for i, pid in enumerate(patients[ID_COLUMN])
    ]
    presence: dict[str, dict[str, tuple[int, ...]]] = {}
    corners: list[tuple[str, str, str, float, float]] = []
    chords: list[dict[str, Any]] = []
    workers = (os.cpu_count() or 1) if jobs == 0 else jobs
    t1 = time.perf_counter()
    for pid, present, xray_corners, chord in _map(
        _render_and_write, tasks, workers, progress, desc=f"synth {profile}"
    ):
        presence[pid] = present
        corners.extend((pid, *c) for c in xray_corners)
        chords.extend({ID_COLUMN: pid, "level": lv, **v} for lv, v in chord.items())
    log.info("rendered %d patients in %.1f s with %d worker(s)", n, time.perf_counter() - t1, workers)

    levels = _add_chord_heights(_add_presence(levels, presence, mods), chords)
    from cdeg.segmentation.editors import write_label_files

    # The reference masks open in Slicer and ITK-SNAP with level names and colours.
    write_label_files(out / MASKS_DIR)
    write_table(out / CLINICAL_CSV, _rounded(tables.clinical))
    _write_truth(out, patients, levels, corners if "xray" in mods else None)
    meta = CohortMeta(
        name=name or out.name,
        profile=profile,
        seed=seed,
        n_patients=n,
        cdeg_version=__version__,
        synthetic=True,
        extra={"generator_config_sha256": config_hash(cfg), "modalities": list(mods)},
    )
    write_cohort_json(out, meta)
    log.info("wrote cohort %s (%d patients) in %.1f s", out, n, time.perf_counter() - t0)
    return out


def _check_arguments(profile: str, n: int, jobs: int, format: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of patients, got {n!r}")
    if jobs < 0:
        raise ValueError(f"jobs must be >= 0 (0 = all cores), got {jobs}")
    if format not in ("nifti", "dicom"):
        raise ValueError(f"unknown format {format!r}; valid: nifti, dicom")


def _write_truth(
    out: Path, patients: Any, levels: Any, corners: list[tuple[str, str, str, float, float]] | None
) -> None:
    """truth/patients.csv, truth/levels.csv and (radiographs rendered) the true corners truth/corners.csv."""
    write_table(out / TRUTH_DIR / TRUTH_PATIENTS, _rounded(patients))
    write_table(out / TRUTH_DIR / TRUTH_LEVELS, _rounded(levels))
    if corners is not None:
        from cdeg.corners import corner_table

        write_table(out / TRUTH_DIR / TRUTH_CORNERS, _rounded(corner_table(corners)))


def _synthesize_dicom(
    out: Path,
    profile: str,
    n: int,
    seed: int,
    config: Any,
    mods: tuple[str, ...],
    jobs: int,
    overwrite: bool,
    progress: ProgressArg,
) -> Path:
    """Render a NIfTI cohort in a temporary folder, then export it as DICOM into `out`."""
    import shutil
    import tempfile

    from cdeg.dicom import write_cohort_dicom

    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; choose another folder or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cdeg_synth_", dir=out.parent))
    try:
        cohort = synthesize(
            tmp / "cohort",
            profile=profile,
            n=n,
            seed=seed,
            config=config,
            modalities=mods,
            jobs=jobs,
            ceiling=False,  # the export leaves the truth behind
            progress=progress,
        )
        write_cohort_dicom(cohort, out, seed=seed, overwrite=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _add_chord_heights(levels: Any, chords: list[dict[str, Any]]) -> Any:
    """The anatomy's true chord heights as columns of truth/levels.csv (NaN where not defined)."""
    import pandas as pd

    from cdeg.measures import CHORD_FEATURES

    table = pd.DataFrame(chords, columns=[ID_COLUMN, "level", *CHORD_FEATURES.values()])
    return levels.merge(table, on=[ID_COLUMN, "level"], how="left", validate="one_to_one")


def _render_and_write(task: tuple) -> tuple[str, dict[str, tuple[int, ...]], tuple, dict]:
    """Render one patient and write its images and masks (runs in a worker process).

    Returns the patient id, the labels present per modality, the radiograph's true corners and the
    anatomy's true chord heights.
    """
    from cdeg.synth.render import render_patient

    render_cfg, patient, levels, (seed, index), mods, out = task
    seq = np.random.SeedSequence([seed, index, _RENDER_STREAM])
    rendered = render_patient(render_cfg, patient, levels, seq, modalities=mods)
    pid = patient[ID_COLUMN]
    present = {}
    for modality, r in rendered.items():
        write_image(image_path(out, pid, modality), r.image)
        write_image(mask_path(Path(out) / MASKS_DIR, pid, modality), r.mask)
        present[modality] = tuple(int(v) for v in r.present)
    chords = next(iter(rendered.values())).chords if rendered else {}
    return pid, present, rendered["xray"].corners if "xray" in rendered else (), dict(chords)


def _map(func, tasks: list, workers: int, progress: ProgressArg, desc: str):
    """Apply `func` to tasks in order, in a process pool when workers > 1, reporting each one done."""
    if workers <= 1 or len(tasks) <= 1:
        yield from track(map(func, tasks), progress, desc, total=len(tasks))
        return
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        results = pool.map(func, tasks, chunksize=max(1, len(tasks) // (8 * workers)))
        yield from track(results, progress, desc, total=len(tasks))


def _rounded(df: Any, decimals: int = 4) -> Any:
    """Float columns rounded for readable tables (1e-4 mm is far below any voxel size)."""
    floats = df.select_dtypes(include=["float"]).columns
    return df.assign(**{c: df[c].round(decimals) for c in floats})


def _add_presence(levels: Any, presence: dict[str, dict[str, tuple[int, ...]]], mods: tuple[str, ...]) -> Any:
    """Add `present_<modality>` columns (0/1): is the structure in that patient's mask (field of view)."""
    levels = levels.copy()
    for m in MODALITIES:
        if m not in mods:
            continue
        levels[f"present_{m}"] = [
            int(label in presence.get(pid, {}).get(m, ()))
            for pid, label in zip(levels[ID_COLUMN], levels["label"], strict=True)
        ]
    return levels
