"""`cdeg extract --corners`: the clinical measurements of radiographs annotated by vertebral body corners.

A study can run on corner points alone: the measurements of :func:`cdeg.features.measurements.measure_corners`
(the definitions of :mod:`cdeg.measures`, with each endplate its chord) go into a feature folder with the
tables, column names and manifest of `cdeg extract` (:class:`cdeg.outputs.FeatureFolder`), so `cdeg fit`
reads it unchanged. There is no PyRadiomics part: corner points outline no region to compute texture on.

Angles (disc, segmental, Cobb, body wedge) and body depth are the same quantities, under the same names, as
from masks. Heights are chord heights (:data:`cdeg.measures.CHORD_FEATURES`: ``disc_height_middle_chord_mm``
...): the concavity of the endplates is invisible to corner points, so they are lower than the surface heights
of masks for discs and higher for bodies (in the synthetic cohorts by about a third of the middle disc height;
benchmarks/results/corners.json), and they carry their own names so that no table mixes the two.
provenance.json records ``measured_from: corner points``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cdeg.features.extract import ExtractResult, UnitResult, _structure_kind, _tables, _write_tables
from cdeg.features.measurements import measure_corners

from cdeg.cohort import Cohort
from cdeg.corners import MODALITY, load_corners
from cdeg.outputs import FeatureFolder, write_manifest
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)

#: What provenance.json says of heights measured from corner points.
HEIGHTS_NOTE = (
    "heights are chord heights (*_chord_mm, disc_height_index_chord: between the straight lines through each "
    "endplate's corners); the endplates' concavity, which the surface heights of masks include, is not seen"
)


def extract_corners(
    cohort: str | Path,
    corners: str | Path,
    out: str | Path,
    strict: bool = False,
    progress: ProgressArg = None,
) -> ExtractResult:
    """Measure every patient's radiograph from its corner points and write a feature folder.

    Parameters
    ----------
    cohort : path
        The cohort (clinical.csv lists the patients; each patient's ``xray.nii.gz`` gives the geometry).
    corners : path
        A corner file or a folder of them (:func:`cdeg.corners.load_corners`: Slicer, CSV, labelme, CVAT).
    out : path
        Feature folder to write: features_long.parquet, features.parquet, features.csv, provenance.json and,
        when patients were left out, errors.csv.
    strict : bool
        Stop at the first problem with the corner points instead of leaving that patient out.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).

    Returns
    -------
    ExtractResult
        As :func:`cdeg.features.extract.extract`; patients of the cohort without corner points have an
        empty row.
    """
    t0 = time.perf_counter()
    coh = Cohort.open(cohort)
    folder = FeatureFolder(Path(out))
    cs, problems = load_corners(corners, coh, strict=strict)
    results: dict[tuple[str, str], UnitResult] = {}
    for pid in track(cs.patients, progress, "extract from corners"):
        values = measure_corners(cs.points(pid))
        rows = [
            (_structure_kind(level), level, feat, float(v))
            for level, feats in values.items()
            for feat, v in feats.items()
        ]
        results[(pid, MODALITY)] = UnitResult(pid, MODALITY, "ok", rows)
    for e in problems:
        pid = e.patient or ""
        results[(pid, MODALITY)] = UnitResult(pid, MODALITY, "failed", errors=[("", e.one_line())])
    patients = coh.patient_ids()
    long, wide, err = _tables(patients, (MODALITY,), results)
    Path(out).mkdir(parents=True, exist_ok=True)
    _write_tables(folder, long, wide, err)
    status = {
        pid: results[(pid, MODALITY)].status if (pid, MODALITY) in results else "missing" for pid in patients
    }
    prov = {
        "pyradiomics_version": None,
        "cohort": str(coh.root),
        "measured_from": "corner points",
        "corners": {"path": str(corners), "sources": cs.sources},
        "heights": HEIGHTS_NOTE,
        "modalities": [MODALITY],
        "patients": {pid: {MODALITY: {"status": s}} for pid, s in status.items()},
        "problems": [e.one_line() for e in problems],
        "outputs": {
            FeatureFolder.LONG: {"rows": len(long)},
            FeatureFolder.FEATURES: {"rows": len(wide), "columns": wide.shape[1]},
            FeatureFolder.FEATURES_CSV: {"rows": len(wide), "columns": wide.shape[1]},
            FeatureFolder.ERRORS: {"rows": len(err)},
        },
        "seconds": round(time.perf_counter() - t0, 2),
    }
    prov = write_manifest(folder.manifest, prov, stage="extract")
    log.info(
        "measured %d patients from corner points (%d left out) -> %s",
        len(cs.patients),
        len(problems),
        folder.root,
    )
    return ExtractResult(folder.root, wide, long, err, prov)
