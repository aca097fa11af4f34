"""`cdeg extract`: interpretable per-level features, PyRadiomics plus the measurements clinicians use.

:func:`extract` is the API; ``cdeg extract`` (:mod:`cdeg.features.cli`) only parses options and calls it.

For every patient x modality x structure present in the mask (vertebrae C2..T1, discs C2-C3..C7-T1):
PyRadiomics shape, first-order and texture features (:mod:`cdeg.features.radiomics_features`), and the
clinical measurements of :mod:`cdeg.measures` (:mod:`cdeg.features.measurements`). Outputs in `out`:

* ``features_long.parquet``: patient_id, modality, structure (vertebra / disc / spine), level, feature, value
* ``features.parquet`` / ``features.csv``: one row per patient, columns ``<modality>__<level>__<feature>``
* ``provenance.json``: versions, parameter files and hashes, mask source, per-patient status
* ``errors.csv``: patient_id, modality, structure, message (only when something failed)
* ``cache/<patient>/<modality>.parquet`` + ``.json``: finished units; a re-run skips them unless the
  parameters, the measurement method or an input file changed.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from cdeg.features.distributed import ExecutorSpec, executor_spec, run_on_dask

from cdeg import __version__, labels
from cdeg.cohort import ID_COLUMN, Cohort, mask_path, parse_modalities
from cdeg.config import shipped_config
from cdeg.errors import CdegError, CohortError
from cdeg.grid import conform_mask, within_tolerance
from cdeg.io import file_sha256, read_image, read_json, remove_stale_temporaries, write_json, write_table
from cdeg.outputs import FeatureFolder, write_manifest
from cdeg.progress import Bars, ProgressArg, as_progress, track

if TYPE_CHECKING:
    from cdeg.check import StageCheck

log = logging.getLogger(__name__)

#: Shipped PyRadiomics parameter file per modality.
DEFAULT_PARAMS: dict[str, str] = {"mri": "radiomics_mri.yaml", "xray": "radiomics_xray.yaml"}
LONG_COLUMNS = (ID_COLUMN, "modality", "structure", "level", "feature", "value")
ERROR_COLUMNS = (ID_COLUMN, "modality", "structure", "message")
SEPARATOR = "__"
#: Where masks of another tool converted by ``--label-map`` go inside the output folder.
IMPORTED_MASKS = FeatureFolder.IMPORTED_MASKS_DIR
#: Bumped when cached unit results would no longer match what this code computes.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ExtractResult:
    """What :func:`extract` produced.

    Attributes
    ----------
    out : Path
        The output folder.
    features : pandas.DataFrame
        One row per patient (``patient_id`` column first), columns ``<modality>__<level>__<feature>``.
    long : pandas.DataFrame
        The long table (features_long.parquet).
    errors : pandas.DataFrame
        One row per problem (errors.csv); empty when none.
    provenance : dict
        The contents of provenance.json.
    """

    out: Path
    features: Any
    long: Any
    errors: Any
    provenance: dict[str, Any]


@dataclass
class UnitResult:
    """The outcome of one patient x modality (picklable: returned by worker processes)."""

    patient_id: str
    modality: str
    status: str  # ok | partial | failed | missing | skipped (a problem found by the cohort check)
    rows: list[tuple[str, str, str, float]] = field(default_factory=list)  # structure, level, feature, value
    errors: list[tuple[str, str]] = field(default_factory=list)  # structure (level), message
    warnings: list[str] = field(default_factory=list)
    cached: bool = False
    seconds: float = 0.0


# --- options and the cohort check ---------------------------------------------------------------------


#: A PyRadiomics parameter set: a file, or its contents as a mapping.
ParamSource = Path | dict[str, Any]


def _resolve_params(
    params: str | Path | Mapping[str, Any] | None, modalities: tuple[str, ...]
) -> dict[str, ParamSource]:
    """The parameter set of each modality, validated against PyRadiomics' schema."""
    from cdeg.features.radiomics_features import validate_params

    if isinstance(params, Mapping):
        validate_params(params)
        return {m: dict(params) for m in modalities}
    if params is not None:
        files = {m: Path(params) for m in modalities}
    else:
        files = {m: shipped_config(DEFAULT_PARAMS[m]) for m in modalities}
    for path in sorted(set(files.values())):
        validate_params(path)
    return dict(files)


def _params_sha256(params: ParamSource) -> str:
    from cdeg.features.radiomics_features import params_sha256

    return file_sha256(params) if isinstance(params, Path) else params_sha256(params)


def _input_signature(path: Path, with_hash: bool = True) -> dict[str, Any]:
    st = path.stat()
    sig: dict[str, Any] = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        sig["sha256"] = file_sha256(path)
    return sig


def _check_unit(image: Path, mask: Path) -> str | None:
    """Which file of this patient x modality is missing, or None (their contents are checked by cdeg.check)."""
    if not image.is_file() and not mask.is_file():
        return "no image and no mask"
    if not image.is_file():
        return f"image missing ({image})"
    if not mask.is_file():
        return f"mask missing ({mask})"
    return None


# --- one unit (runs in a worker) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    patient_id: str
    modality: str
    image: str
    mask: str
    params: str | dict[str, Any]  # a parameter file, or the parameters themselves
    params_sha256: str
    tolerance_mm: float
    cache_dir: str
    key: dict[str, Any]


def _structure_kind(level: str) -> str:
    from cdeg.features.measurements import COBB_LEVEL

    return "spine" if level == COBB_LEVEL else labels.structure(level).kind


_EXTRACTORS: dict[tuple[str, str], Any] = {}


def _extractor(params: str | dict[str, Any], sha: str) -> Any:
    """One PyRadiomics extractor per parameter set and process, reused for every image."""
    from cdeg.features.radiomics_features import StructureExtractor

    key = (params if isinstance(params, str) else "", sha)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = StructureExtractor(params)
    return _EXTRACTORS[key]


def run_unit(task: _Task) -> UnitResult:
    """Extract one patient x modality and write its cache entry (atomically); never raises for bad input."""
    import SimpleITK as sitk
    from cdeg.features.measurements import measure
    from cdeg.features.radiomics_features import as_volume

    t0 = time.perf_counter()
    res = UnitResult(task.patient_id, task.modality, "ok")
    try:
        image = read_image(task.image, patient=task.patient_id)
        mask = read_image(task.mask, patient=task.patient_id)
        mask, warning = conform_mask(image, mask, task.tolerance_mm, task.patient_id, Path(task.mask))
    except CdegError as e:
        res.status = "failed"
        res.errors.append(("", e.one_line()))
        res.seconds = time.perf_counter() - t0
        return res
    if warning:
        log.warning("patient %s %s: %s", task.patient_id, task.modality, warning)
        res.warnings.append(warning)
    mask_arr = sitk.GetArrayFromImage(mask)
    present = set(np.unique(mask_arr).tolist())
    unknown = labels.invalid_labels(present)
    if unknown:
        res.warnings.append(
            f"labels {unknown} are not in the {labels.CONVENTION_NAME} convention and were ignored"
        )
    structures = [s.label for s in labels.STRUCTURES if s.label in present]

    extractor = _extractor(task.params, task.params_sha256)
    vol = as_volume(image)
    rad, rad_errors = extractor.features(
        vol, mask_arr.reshape(sitk.GetArrayViewFromImage(vol).shape), structures
    )
    for label, msg in rad_errors:
        res.errors.append((labels.name_of(label), msg))
    try:
        meas, problems = measure(mask, image, task.modality)
    except Exception as e:  # a measurement bug must not lose the radiomics of the whole unit
        log.exception("measurements failed for %s %s", task.patient_id, task.modality)
        meas, problems = {}, [("", f"measurements failed: {type(e).__name__}: {e}")]
    res.errors.extend(problems)
    for s in labels.STRUCTURES:
        for feature, value in rad.get(s.label, {}).items():
            res.rows.append((s.kind, s.name, feature, value))
        for feature, value in meas.get(s.name, {}).items():
            res.rows.append((s.kind, s.name, feature, float(value)))
    for level, vals in meas.items():
        if _structure_kind(level) == "spine":
            for feature, value in vals.items():
                res.rows.append(("spine", level, feature, float(value)))
    if res.errors:
        res.status = "partial"
    res.seconds = time.perf_counter() - t0
    _write_cache(task, res)
    return res


_THREAD_LIMITS: list[Any] = []


def _init_worker() -> None:
    import SimpleITK as sitk

    # Parallelism comes from --jobs: one thread per worker process, so N jobs use N cores.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not _THREAD_LIMITS:
        from threadpoolctl import threadpool_limits

        # NumPy's and SciPy's OpenBLAS pools were sized for every core when they were imported (before the
        # fork): without a cap N workers run N x cores BLAS threads. Measured on 2 cores with light
        # parameters (benchmarks/bench_extract_dask.py): the 2-process pool ran at half the throughput of
        # Dask's single-threaded workers without the cap, at the same throughput with it.
        _THREAD_LIMITS.append(threadpool_limits(1))


# --- cache ---------------------------------------------------------------------------------------------------------


def _cache_paths(cache_dir: str | Path, modality: str) -> tuple[Path, Path]:
    d = Path(cache_dir)
    return d / f"{modality}.parquet", d / f"{modality}.json"


def _write_cache(task: _Task, res: UnitResult) -> None:
    import pandas as pd

    table, meta = _cache_paths(task.cache_dir, task.modality)
    df = pd.DataFrame(res.rows, columns=["structure", "level", "feature", "value"]).astype(
        {"value": "float64"}
    )
    write_table(table, df)
    # The JSON is written last: its presence marks a complete entry.
    write_json(
        meta,
        {
            **task.key,
            "status": res.status,
            "errors": [list(e) for e in res.errors],
            "warnings": res.warnings,
            "seconds": res.seconds,
            "table_sha256": file_sha256(table),
        },
    )


def _inputs_match(saved: dict[str, Any], path: Path) -> bool:
    if not path.is_file() or not saved:
        return False
    st = path.stat()
    if saved.get("size") == st.st_size and saved.get("mtime_ns") == st.st_mtime_ns:
        return True
    # Touched or copied: compare content.
    return saved.get("size") == st.st_size and saved.get("sha256") == file_sha256(path)


def _load_cache(task: _Task) -> UnitResult | None:
    """The cached result of a unit, or None when absent, incomplete or stale."""
    import pandas as pd

    table, meta = _cache_paths(task.cache_dir, task.modality)
    if not meta.is_file() or not table.is_file():
        return None
    try:
        saved = read_json(meta)
    except CdegError:
        return None
    for k in (
        "cache_format",
        "cdeg_version",
        "pyradiomics_version",
        "params_sha256",
        "measure_options",
        "tolerance_mm",
    ):
        if saved.get(k) != task.key.get(k):
            return None
    if not (
        _inputs_match(saved.get("image", {}), Path(task.image))
        and _inputs_match(saved.get("mask", {}), Path(task.mask))
    ):
        return None
    if saved.get("table_sha256") != file_sha256(table):
        return None
    df = pd.read_parquet(table)
    rows = list(df.itertuples(index=False, name=None))
    return UnitResult(
        task.patient_id,
        task.modality,
        saved.get("status", "ok"),
        rows=[(str(a), str(b), str(c), float(v)) for a, b, c, v in rows],
        errors=[tuple(e) for e in saved.get("errors", [])],
        warnings=list(saved.get("warnings", [])),
        cached=True,
        seconds=float(saved.get("seconds", 0.0)),
    )


def _unit_key(image: Path, mask: Path, params_sha: str, tolerance_mm: float) -> dict[str, Any]:
    from cdeg.features.measurements import MeasureOptions
    from cdeg.features.radiomics_features import pyradiomics_version

    return {
        "cache_format": CACHE_FORMAT,
        "cdeg_version": __version__,
        "pyradiomics_version": pyradiomics_version(),
        "params_sha256": params_sha,
        "measure_options": dataclasses.asdict(MeasureOptions()),
        "tolerance_mm": tolerance_mm,
        "image": _input_signature(image),
        "mask": _input_signature(mask),
    }


# --- assembling the tables -----------------------------------------------------------------------------------------


def _level_order() -> dict[str, int]:
    from cdeg.features.measurements import COBB_LEVEL

    order = {s.name: s.order for s in labels.STRUCTURES}
    order[COBB_LEVEL] = len(order)
    return order


def _tables(patients: list[str], modalities: tuple[str, ...], results: dict[tuple[str, str], UnitResult]):
    """Long, wide and error tables in a fixed order (patients as in clinical.csv, then modality, level, feature)."""
    import pandas as pd
    from cdeg.features.measurements import COBB_LEVEL

    long_rows = []
    errors = []
    for pid in patients:
        for m in modalities:
            r = results.get((pid, m))
            if r is None:
                continue
            long_rows.extend((pid, m, *row) for row in r.rows)
            errors.extend((pid, m, s or "all", msg) for s, msg in r.errors)
    long = pd.DataFrame(long_rows, columns=list(LONG_COLUMNS)).astype(
        {
            ID_COLUMN: "str",
            "modality": "str",
            "structure": "str",
            "level": "str",
            "feature": "str",
            "value": "float64",
        }
    )
    # Columns: per modality and structure kind, every feature seen for that kind, for every level of the kind
    # in the convention (a level missing in every patient still gets its columns, all missing).
    features_by_kind: dict[tuple[str, str], dict[str, None]] = {}
    for m, kind, feat in long[["modality", "structure", "feature"]].itertuples(index=False, name=None):
        features_by_kind.setdefault((m, kind), {})[feat] = None
    columns = []
    for m in modalities:
        for level in [s.name for s in labels.STRUCTURES] + [COBB_LEVEL]:
            kind = _structure_kind(level)
            for feat in features_by_kind.get((m, kind), {}):
                columns.append(SEPARATOR.join((m, level, feat)))
    keys = long["modality"] + SEPARATOR + long["level"] + SEPARATOR + long["feature"]
    wide = (
        pd.DataFrame({ID_COLUMN: long[ID_COLUMN], "key": keys, "value": long["value"]})
        .pivot(index=ID_COLUMN, columns="key", values="value")
        .reindex(index=patients, columns=columns)
    )
    wide.columns.name = None
    wide = wide.astype("float64").rename_axis(ID_COLUMN).reset_index()
    err = pd.DataFrame(errors, columns=list(ERROR_COLUMNS)).astype("str")
    return long, wide, err


# --- the API -----------------------------------------------------------------------------------------------------------


def _import_foreign(
    coh: Cohort,
    masks: Path,
    dest: Path,
    label_map: str | Path,
    mods: tuple[str, ...],
    tolerance: float,
    strict: bool,
) -> Path:
    """Convert another tool's masks into ``dest`` (cdeg layout) for the modalities it has masks of."""
    from cdeg.segmentation.import_masks import import_masks

    for m in mods:
        try:
            import_masks(
                coh.root, masks, dest, label_map, modality=m, geometry_tolerance_mm=tolerance, strict=strict
            )
        except CohortError as e:  # no mask of this modality at all: extract reports the missing masks itself
            log.warning("%s masks: %s", m, e.one_line())
    return dest


@dataclass(frozen=True)
class _Run:
    """The validated options of one :func:`extract` call and the inputs they name."""

    cohort: Cohort
    folder: FeatureFolder
    masks_root: Path
    reference_masks: bool  # the cohort's own masks/ (no `masks` given)
    modalities: tuple[str, ...]
    param_files: dict[str, ParamSource]
    param_sha: dict[str, str]
    executor: ExecutorSpec
    tolerance_mm: float
    strict: bool
    patients: tuple[str, ...] | None = None  # a subset of the cohort's patients (None: all)


@dataclass
class _Plan:
    """The units of a run: those to extract, and the outcome of every unit (filled in as they finish)."""

    patients: list[str]
    check: StageCheck
    status: dict[tuple[str, str], UnitResult] = field(default_factory=dict)
    todo: list[_Task] = field(default_factory=list)
    n_run: int = 0
    n_cached: int = 0


def extract(
    cohort: str | Path,
    out: str | Path,
    masks: str | Path | None = None,
    modality: str | list[str] | tuple[str, ...] | None = None,
    params: str | Path | Mapping[str, Any] | None = None,
    jobs: int | None = None,
    geometry_tolerance_mm: float = 1.0,
    progress: ProgressArg = None,
    scheduler: str | None = None,
    cluster: str | None = None,
    strict: bool = False,
    label_map: str | Path | None = None,
    patients: str | Sequence[str] | None = None,
) -> ExtractResult:
    """Extract PyRadiomics features and clinical measurements per patient, modality and level.

    The cohort and the mask folder are checked once before any extraction, with the checks of
    ``cdeg check`` (:func:`cdeg.check.check_stage_cohort`, images and masks of the chosen modalities). The
    rule: cohort.json, clinical.csv or id problems stop the stage; an unreadable or truncated image or
    mask, a wrong dimension, mask labels outside the convention, or a mask grid beyond
    `geometry_tolerance_mm` skips that patient x modality (status ``skipped`` in provenance.json, a row
    in errors.csv, one log line naming the file) and the rest is extracted; clinical values are not this
    stage's concern (an out-of-range score never skips a patient). With `strict`, the first such problem
    stops the stage before anything is written.

    Parameters
    ----------
    cohort : path
        Cohort folder (:mod:`cdeg.cohort` layout).
    out : path
        Output folder; created if needed. Finished units in ``out/cache`` are reused (resume).
    masks : path, optional
        Mask folder in the ``<patient_id>/<modality>.nii.gz`` layout (e.g. ``cdeg segment`` output);
        default the cohort's reference ``masks/``.
    modality : "mri,xray" or list, optional
        Modalities to extract (default both).
    params : path or mapping, optional
        One PyRadiomics parameter file used for every modality, passed through unchanged, or its contents as
        a mapping (the dict PyRadiomics reads from such a file). Default: ``configs/radiomics_mri.yaml`` and
        ``configs/radiomics_xray.yaml``.
    jobs : int, optional
        Local worker processes over patient x modality units (None or 0: all cores). Results do not depend
        on it. Not used with `scheduler` / `cluster`.
    geometry_tolerance_mm : float
        A mask whose grid differs from its image's by at most this (field-of-view corners, mm) is
        resampled nearest-neighbour with a warning; beyond it that patient/modality fails.
    progress : bool, callable or None
        Progress of the units (:mod:`cdeg.progress`): None or False shows nothing, True draws a bar, a
        callable is called ``progress("extract", done, total)`` after each unit.
    scheduler : str, optional
        Run the units on an existing Dask cluster instead of the local pool: its scheduler's address
        (``tcp://host:8786``) or scheduler file (.json). The workers must see the cohort and `out` at the
        same paths. Results are byte-for-byte those of a local run (:mod:`cdeg.features.distributed`).
    cluster : str, optional
        ``local:N``: start a local Dask cluster of N worker processes for this run (``local``: one per core).
    strict : bool
        Stop (CdegError) at the first problem with an input file instead of skipping that patient x
        modality.
    label_map : str or Path, optional
        `masks` is another tool's output in its own layout and labels (``spineps``, ``totalspineseg``, ...,
        or a label map file; see :mod:`cdeg.label_maps`): it is converted first with
        :func:`cdeg.segmentation.import_masks.import_masks` into ``out/masks/`` (with its import_masks.csv
        and QC overlays), and features are extracted from there.
    patients : "id1,id2" or list, optional
        Extract only these patients of the cohort (default: every patient of clinical.csv); the rows of the
        tables keep the cohort's order. The input check still covers the whole cohort.

    Returns
    -------
    ExtractResult

    Raises
    ------
    ValueError
        An empty patient list.
    CohortError
        A patient of `patients` that is not in the cohort's clinical.csv.
    """
    run = _resolve_run(
        cohort,
        out,
        masks,
        modality,
        params,
        jobs,
        geometry_tolerance_mm,
        scheduler,
        cluster,
        strict,
        label_map,
        patients,
    )
    t0 = time.perf_counter()
    plan = _plan_units(run, _check_inputs(run))
    tasks = _reuse_cached(run, plan)
    _run_units(run, plan, tasks, progress)
    long, wide, err = _tables(plan.patients, run.modalities, plan.status)
    _write_tables(run.folder, long, wide, err)
    prov = _write_provenance(run, plan, long, wide, len(err), time.perf_counter() - t0)
    _log_done(run, plan, wide, time.perf_counter() - t0)
    return ExtractResult(run.folder.root, wide, long, err, prov)


def _resolve_run(
    cohort: str | Path,
    out: str | Path,
    masks: str | Path | None,
    modality: str | list[str] | tuple[str, ...] | None,
    params: str | Path | Mapping[str, Any] | None,
    jobs: int | None,
    tolerance_mm: float,
    scheduler: str | None,
    cluster: str | None,
    strict: bool,
    label_map: str | Path | None,
    patients: str | Sequence[str] | None = None,
) -> _Run:
    """Validate the options of :func:`extract` before anything expensive, then convert foreign masks."""
    mods = parse_modalities(modality)
    executor = executor_spec(jobs, scheduler, cluster)
    if not (isinstance(tolerance_mm, (int, float)) and tolerance_mm >= 0):
        raise ValueError(f"geometry_tolerance_mm must be >= 0, got {tolerance_mm!r}")
    coh = Cohort.open(cohort)
    masks_root = Path(masks) if masks is not None else coh.masks_root
    if not masks_root.is_dir():
        raise CohortError("mask folder does not exist", path=masks_root)
    out = Path(out)
    if out.resolve() == coh.root.resolve():
        raise ValueError("--out must not be the cohort folder (inputs are never modified)")
    if label_map is not None and masks is None:
        raise ValueError("--label-map needs --masks: the other tool's output folder")
    param_files = _resolve_params(params, mods)
    subset = _patient_subset(coh, patients)
    if label_map is not None:
        masks_root = _import_foreign(
            coh, masks_root, out / IMPORTED_MASKS, label_map, mods, tolerance_mm, strict
        )
    param_sha = {m: _params_sha256(p) for m, p in param_files.items()}
    return _Run(
        coh,
        FeatureFolder(out),
        masks_root,
        masks is None,
        mods,
        param_files,
        param_sha,
        executor,
        tolerance_mm,
        strict,
        subset,
    )


def _patient_subset(cohort: Cohort, patients: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The patients of `patients` in the cohort's order, checked against clinical.csv (None: every patient)."""
    if patients is None:
        return None
    items = patients.split(",") if isinstance(patients, str) else list(patients)
    wanted = {str(p).strip() for p in items if str(p).strip()}
    if not wanted:
        raise ValueError("patients: give at least one patient id (or none at all for every patient)")
    ids = cohort.patient_ids()
    unknown = sorted(wanted.difference(ids))
    if unknown:
        raise CohortError(
            f"{len(unknown)} patient(s) of the patient list not in clinical.csv: {', '.join(unknown[:10])}",
            path=cohort.clinical_path,
        )
    return tuple(p for p in ids if p in wanted)


def _check_inputs(run: _Run) -> StageCheck:
    """The checks of ``cdeg check`` on the cohort and the images and masks to extract, run once up front."""
    from cdeg.check import check_stage_cohort, finding_modality

    def tolerated(f: Any) -> bool:
        # A mask grid within the tolerance is no problem here: run_unit resamples it, with a warning.
        m = finding_modality(f)
        return (
            f.check == "geometry"
            and m is not None
            and within_tolerance(
                run.cohort.image_path(f.patient, m), mask_path(run.masks_root, f.patient, m), run.tolerance_mm
            )
        )

    return check_stage_cohort(
        "extract",
        run.cohort,
        masks=run.masks_root,
        modalities=run.modalities,
        strict=run.strict,
        tolerated=tolerated,
    )


def _plan_units(run: _Run, check: StageCheck) -> _Plan:
    """One task per patient x modality with usable files; the others get their status (skipped, missing).

    Raises
    ------
    CohortError
        No unit is left to extract.
    """
    ids = run.cohort.patient_ids() if run.patients is None else list(run.patients)
    plan = _Plan(ids, check)
    no_mask: list[str] = []
    for pid in plan.patients:
        for m in run.modalities:
            unit = _plan_unit(run, check, pid, m)
            if isinstance(unit, _Task):
                plan.todo.append(unit)
                continue
            plan.status[(pid, m)] = unit
            # A missing image was logged by the input check; a missing mask was not.
            if unit.status == "missing" and run.cohort.image_path(pid, m).is_file():
                no_mask.append(f"patient {pid} {m}: {unit.errors[0][1]}")
    _log_unusable(plan, no_mask)
    if not plan.todo:
        raise CohortError(
            f"no patient has a usable image and mask for {', '.join(run.modalities)} (masks from {run.masks_root})",
            path=run.cohort.root,
        )
    return plan


def _plan_unit(run: _Run, check: StageCheck, pid: str, m: str) -> _Task | UnitResult:
    """The task extracting one patient x modality, or the result of a unit its inputs rule out."""
    img, msk = run.cohort.image_path(pid, m), mask_path(run.masks_root, pid, m)
    found = check.problems(pid, m)
    if found:
        beyond = f", beyond the {run.tolerance_mm:g} mm tolerance"
        why = [check.line(f) + (beyond if f.check == "geometry" else "") for f in found]
        return UnitResult(pid, m, "skipped", errors=[("", w) for w in why])
    problem = _check_unit(img, msk)
    if problem is not None:
        return UnitResult(pid, m, "missing", errors=[("", problem)])
    return _Task(
        pid,
        m,
        str(img),
        str(msk),
        _task_params(run.param_files[m]),
        run.param_sha[m],
        float(run.tolerance_mm),
        str(run.folder.cache / pid),
        {},
    )


def _log_unusable(plan: _Plan, no_mask: list[str]) -> None:
    """Name the units ruled out before extraction (the first 20 missing masks; errors.csv lists all)."""
    bad = sorted({pid for (pid, _) in plan.status}, key=plan.patients.index)
    log.info("%d of %d patients with a missing or unusable file", len(bad), len(plan.patients))
    for line in no_mask[:20]:
        log.warning("%s", line)
    if len(no_mask) > 20:
        log.warning("%d more patients without a mask (errors.csv lists them)", len(no_mask) - 20)


def _reuse_cached(run: _Run, plan: _Plan) -> list[_Task]:
    """Take the finished units from the cache into `plan`; return the tasks left to extract."""
    # Left by a killed run (only this stage writes in out/ and its cache).
    remove_stale_temporaries(run.folder.root, ".*.tmp*")
    remove_stale_temporaries(run.folder.cache, "*/.*.tmp*")
    tasks: list[_Task] = []
    for t in plan.todo:
        keyed = dataclasses.replace(
            t, key=_unit_key(Path(t.image), Path(t.mask), t.params_sha256, t.tolerance_mm)
        )
        cached = _load_cache(keyed)
        if cached is not None:
            plan.status[(t.patient_id, t.modality)] = cached
        else:
            tasks.append(keyed)
    plan.n_run, plan.n_cached = len(tasks), len(plan.todo) - len(tasks)
    log.info(
        "%d of %d patient x modality units to extract (%d reused from %s)",
        len(tasks),
        len(plan.todo),
        plan.n_cached,
        run.folder.cache,
    )
    return tasks


def _run_units(run: _Run, plan: _Plan, tasks: list[_Task], progress: ProgressArg) -> None:
    """Extract `tasks` on the run's executor, recording each result in `plan` as it finishes."""
    for r in _run_all(tasks, run.executor, progress):
        plan.status[(r.patient_id, r.modality)] = r
        _log_unit_problems(r)


def _log_unit_problems(r: UnitResult) -> None:
    """Name the problems found while extracting (the input check passed) on the console, not only in errors.csv."""
    if r.status == "failed":
        log.warning("patient %s %s: %s", r.patient_id, r.modality, r.errors[0][1] if r.errors else "failed")
    elif r.status == "partial":
        log.info(
            "patient %s %s: %d problem(s), e.g. %s%s (errors.csv)",
            r.patient_id,
            r.modality,
            len(r.errors),
            f"{r.errors[0][0]}: " if r.errors[0][0] else "",
            r.errors[0][1],
        )


def _write_tables(folder: FeatureFolder, long: Any, wide: Any, err: Any) -> None:
    """Write the long, wide and error tables (no errors: no errors.csv)."""
    write_table(folder.long, long)
    write_table(folder.features, wide)
    write_table(folder.features_csv, wide)
    if len(err):
        write_table(folder.errors, err)
    else:
        folder.errors.unlink(missing_ok=True)  # a stale file from an earlier run would mislead


def _write_provenance(
    run: _Run, plan: _Plan, long: Any, wide: Any, n_errors: int, seconds: float
) -> dict[str, Any]:
    """Write provenance.json; return what was written."""
    prov = _provenance(run, plan, long, wide, n_errors, seconds)
    prov["input_check"] = plan.check.summary()
    return write_manifest(run.folder.manifest, prov, stage="extract")


def _log_done(run: _Run, plan: _Plan, wide: Any, seconds: float) -> None:
    """One line summing up the run: features, patients, units reused and units without features."""
    n_failed = sum(r.status in ("failed", "missing", "skipped") for r in plan.status.values())
    log.info(
        "extracted %d features for %d patients (%d units, %d reused, %d failed/missing/skipped) in %.1f s -> %s",
        wide.shape[1] - 1,
        len(plan.patients),
        len(plan.status),
        plan.n_cached,
        n_failed,
        seconds,
        run.folder.root,
    )


def _task_params(params: ParamSource) -> str | dict[str, Any]:
    return str(params) if isinstance(params, Path) else params


def _params_provenance(params: ParamSource, sha: str, modality: str) -> dict[str, Any]:
    """Where a modality's parameters came from: a file (shipped or not), or a mapping given inline."""
    if not isinstance(params, Path):
        return {"path": None, "sha256": sha, "shipped": False, "inline": params}
    return {
        "path": str(params),
        "sha256": sha,
        "shipped": params.parent == shipped_config(DEFAULT_PARAMS[modality]).parent,
    }


def _run_all(tasks: list[_Task], executor: ExecutorSpec, progress: ProgressArg) -> Iterator[UnitResult]:
    """Run units, reporting each one done to `progress` (task "extract"), in any order."""
    if not tasks:
        return
    results = _unit_results(tasks, executor)
    report = as_progress(progress)
    try:
        yield from track(results, report, "extract", total=len(tasks))
    finally:
        results.close()  # stops the pool or the Dask tasks when the caller stops early
        if isinstance(report, Bars) and progress is True:  # our own bars: none may stay on screen
            report.close()


def _unit_results(tasks: list[_Task], executor: ExecutorSpec) -> Iterator[UnitResult]:
    """Run units on Dask workers, or in `jobs` local processes (here for one job)."""
    if executor.kind == "dask":
        yield from run_on_dask(tasks, executor)
        return
    if executor.jobs <= 1 or len(tasks) == 1:
        with _single_thread():
            for t in tasks:
                yield run_unit(t)
        return
    with cf.ProcessPoolExecutor(max_workers=min(executor.jobs, len(tasks)), initializer=_init_worker) as pool:
        futures = [pool.submit(run_unit, t) for t in tasks]
        try:
            for fut in cf.as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _provenance(
    run: _Run, plan: _Plan, long: Any, wide: Any, n_errors: int, seconds: float
) -> dict[str, Any]:
    """The contents of provenance.json (the input check's summary is added by the caller)."""
    import SimpleITK as sitk
    from cdeg.features.measurements import MeasureOptions
    from cdeg.features.radiomics_features import pyradiomics_version

    counts: dict[str, int] = {}
    for r in plan.status.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    mods, executor = run.modalities, run.executor
    return {
        "cdeg_version": __version__,
        # radiomics.__version__ as the unit cache keys record it (the package metadata's version is in
        # "versions", added by write_manifest).
        "pyradiomics_version": pyradiomics_version(),
        "simpleitk_version": sitk.Version.VersionString(),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "cohort": str(run.cohort.root),
        "mask_source": {
            "path": str(run.masks_root),
            "kind": "reference masks of the cohort" if run.reference_masks else "given folder",
        },
        "modalities": list(mods),
        "patient_subset": list(run.patients) if run.patients is not None else None,
        "parameters": {m: _params_provenance(run.param_files[m], run.param_sha[m], m) for m in mods},
        "measure_options": dataclasses.asdict(MeasureOptions()),
        "geometry_tolerance_mm": run.tolerance_mm,
        "jobs": executor.jobs if executor.kind == "pool" else None,
        "executor": executor.describe(),
        "units": {
            "extracted": plan.n_run,
            "reused_from_cache": plan.n_cached,
            **{f"status_{k}": v for k, v in sorted(counts.items())},
        },
        "patients": _patients_provenance(plan, mods),
        "outputs": {
            FeatureFolder.LONG: {"rows": len(long)},
            FeatureFolder.FEATURES: {"rows": len(wide), "columns": wide.shape[1]},
            FeatureFolder.FEATURES_CSV: {"rows": len(wide), "columns": wide.shape[1]},
            FeatureFolder.ERRORS: {"rows": n_errors},
        },
        "seconds": round(seconds, 2),
    }


def _patients_provenance(plan: _Plan, mods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per patient and modality: status, whether it came from the cache, its errors and warnings."""
    per_patient: dict[str, dict[str, Any]] = {}
    for pid in plan.patients:
        per_patient[pid] = {}
        for m in mods:
            r = plan.status[(pid, m)]
            entry: dict[str, Any] = {"status": r.status, "cached": r.cached}
            if r.errors:
                entry["errors"] = [f"{s}: {msg}" if s else msg for s, msg in r.errors]
            if r.warnings:
                entry["warnings"] = r.warnings
            per_patient[pid][m] = entry
    return per_patient
