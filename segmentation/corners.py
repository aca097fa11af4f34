"""`cdeg segment masks-from-corners`: training masks for nnU-Net drawn from vertebral body corner points.

Corner points (:mod:`cdeg.corners`) outline what a clinician annotates in two minutes: each vertebral body
as the quadrilateral of its four corners (AS, PS, PI, AI) and each disc as the quadrilateral between the
inferior corners of the vertebra above and the superior corners of the vertebra below. A full reference mask
labels more: the vertebra label covers the posterior elements (pedicles, pillars, laminae, spinous process)
and C2 includes the dens. Corner points say nothing about those, and calling them background would teach a
network that they are background. They are marked :data:`cdeg.labels.IGNORE` instead, nnU-Net's ignore
label (no loss there; :mod:`cdeg.segmentation.labelmap`):

* behind the bodies and discs, a band from the posterior walls (the line through the PS and PI corners of
  consecutive bodies) reaching ``posterior_mm`` further back along each body's AP axis, and on below the
  lowest body for half that (spinous processes slope downwards): canal, pedicles, pillars, laminae and
  spinous processes;
* above C2's superior endplate, ``dens_mm`` of the dens (and the atlas around it), across the body and its
  band;
* along every endplate chord, a lens reaching ``endplate_mm`` into the body at mid-chord (0.5 mm at the
  corners) and a tenth of that (at most 0.25 mm) into the disc: endplates are concave, so the true boundary
  between body and disc lies on the body's side of the chord, up to about the depth of the concavity, and a
  straight chord there would teach the network a straight endplate. With the lens unannotated, the network
  places the endplate where the image shows it.

Everything else is background. Bodies are painted over the unannotated band behind them, discs over the
bodies (as in the synthetic reference masks, a disc wins where it touches a body), the endplate bands last.
What stays different from a full mask: anterior osteophytes are background.

Output: a mask folder (:class:`cdeg.outputs.MaskFolder` layout, ``<patient_id>/xray.nii.gz`` on the grid of
the cohort's radiograph) with its manifest; ``cdeg segment train`` uses it as a cohort's ``masks/``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.cohort import Cohort
from cdeg.corners import MODALITY, CornerSet, load_corners
from cdeg.errors import CdegError
from cdeg.io import read_image, write_image
from cdeg.outputs import MaskFolder, write_manifest
from cdeg.progress import ProgressArg, track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CornerMaskOptions:
    """How far the unannotated regions reach (mm); modelling choices covering adult cervical anatomy.

    Parameters
    ----------
    posterior_mm : float
        Depth of the band behind the posterior walls: canal (~14 mm) plus pillars, laminae and the
        spinous processes, the longest (C7) reaching ~40-50 mm further.
    dens_mm : float
        Height above C2's superior endplate left unannotated: the dens (~15 mm) and the atlas.
    endplate_mm : float
        Reach of the unannotated band along each endplate chord into the body (0: no band). The middle of a
        cervical endplate lies 1-2.5 mm inside the chord in the synthetic anatomy (bench_corners:
        chord vs surface heights).
    """

    posterior_mm: float = 70.0
    dens_mm: float = 25.0
    endplate_mm: float = 2.5

    def __post_init__(self) -> None:
        for name in ("posterior_mm", "dens_mm", "endplate_mm"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 200):
                raise ValueError(f"{name} must be a number of mm in [0, 200], got {v!r}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / float(np.linalg.norm(v))


def _perp_down(chord: np.ndarray) -> np.ndarray:
    """Unit normal of a chord (anterior -> posterior) pointing inferior (y runs downwards)."""
    n = _unit(np.array([-chord[1], chord[0]]))
    return n if n[1] > 0 else -n


def _posterior_band(
    points: dict[str, dict[str, np.ndarray]], levels: list[int], opts: CornerMaskOptions
) -> np.ndarray:
    """One polygon behind the posterior walls of all levels, reaching `posterior_mm` back.

    Its front edge runs down the posterior corners (PS, PI of each body, consecutive levels), its back edge
    is that line moved back along each body's AP axis; below the lowest body it goes on for half the depth,
    where the spinous processes, which slope downwards, end.
    """
    front, back = [], []
    for v in levels:
        c = points[labels.name_of(v)]
        b = opts.posterior_mm * _unit((c["PS"] - c["AS"]) + (c["PI"] - c["AI"]))
        front += [c["PS"], c["PI"]]
        back += [c["PS"] + b, c["PI"] + b]
    last = points[labels.name_of(levels[-1])]
    tail = 0.5 * opts.posterior_mm * _perp_down(last["PI"] - last["AI"])
    return np.array([*front, front[-1] + tail, back[-1] + tail, *back[::-1]])


def _regions(
    points: dict[str, dict[str, np.ndarray]], opts: CornerMaskOptions
) -> list[tuple[int, np.ndarray]]:
    """(label value, polygon in mm) in painting order: unannotated regions, bodies, then discs."""
    levels = labels.sort_labels(labels.label_of(lv) for lv in points)
    regions = [(labels.IGNORE, _posterior_band(points, levels, opts))]
    top = labels.name_of(levels[0])
    if top == labels.VERTEBRA_NAMES[0]:
        c = points[top]
        back = opts.posterior_mm * _unit((c["PS"] - c["AS"]) + (c["PI"] - c["AI"]))
        up = -opts.dens_mm * _perp_down(c["PS"] - c["AS"])
        regions.append(
            (labels.IGNORE, np.array([c["AS"], c["PS"], c["PS"] + back, c["PS"] + back + up, c["AS"] + up]))
        )
    discs, bands = [], []
    for v in levels:
        c = points[labels.name_of(v)]
        regions.append((v, np.array([c[k] for k in ("AS", "PS", "PI", "AI")])))
        if v + 1 in levels:
            cl = points[labels.name_of(v + 1)]
            discs.append((labels.disc_between(v, v + 1), np.array([c["AI"], c["PI"], cl["PS"], cl["AS"]])))
        if opts.endplate_mm > 0:
            if labels.name_of(v) != labels.VERTEBRA_NAMES[0]:  # C2's top is the dens, already unannotated
                bands.append((labels.IGNORE, _endplate_band(c["AS"], c["PS"], +1, opts.endplate_mm)))
            bands.append((labels.IGNORE, _endplate_band(c["AI"], c["PI"], -1, opts.endplate_mm)))
    return regions + discs + bands


def _endplate_band(ant: np.ndarray, post: np.ndarray, into_body: int, reach_mm: float) -> np.ndarray:
    """Lens along the chord ant -> post: into the body (below the chord for a superior endplate, `into_body` =
    +1) up to `reach_mm` at mid-chord and 0.5 mm at the corners, as a concave endplate is deepest in its
    middle; a tenth of `reach_mm`, at most 0.25 mm (a pixel's rounding), into the disc; 1 mm beyond each
    corner (rounded corners)."""
    e = _unit(post - ant)
    down = _perp_down(post - ant) * into_body
    t = np.linspace(0.0, 1.0, 17)
    reach = np.minimum(0.5, reach_mm) + (reach_mm - np.minimum(0.5, reach_mm)) * 4 * t * (1 - t)
    along = ant[None, :] + t[:, None] * (post - ant)[None, :]
    body_side = along + reach[:, None] * down[None, :]
    disc = -min(0.25, reach_mm / 10) * down
    a, p = ant - e, post + e
    return np.array([a + disc, p + disc, p + 0.5 * down, *body_side[::-1], a + 0.5 * down])


def check_consecutive(points: dict[str, dict[str, np.ndarray]]) -> None:
    """Raise ValueError when a level between two annotated ones is missing (it would become background)."""
    order = labels.sort_labels(labels.label_of(lv) for lv in points)
    gaps = [labels.name_of(v) for v in range(order[0], order[-1] + 1) if v not in order]
    if gaps:
        raise ValueError(
            f"level(s) {', '.join(gaps)} between annotated levels have no corners; a mask would call them "
            "background: annotate them or leave out the levels beyond"
        )


def corner_mask(
    points: dict[str, dict[str, np.ndarray]], reference: Any, options: CornerMaskOptions | None = None
) -> Any:
    """A label mask on the grid of `reference` (the radiograph) drawn from one patient's corner points.

    Parameters
    ----------
    points : dict
        level -> corner -> (x, y) physical mm (:meth:`cdeg.corners.CornerSet.points`), consecutive levels.
    reference : SimpleITK.Image
        The 2D radiograph the points were placed on.
    options : CornerMaskOptions, optional
        Extent of the unannotated regions.

    Returns
    -------
    SimpleITK.Image
        uint8 mask in the :mod:`cdeg.labels` convention, with :data:`cdeg.labels.IGNORE` where nothing was
        annotated, same geometry as `reference`.
    """
    import SimpleITK as sitk
    from matplotlib.path import Path as Polygon

    opts = options or CornerMaskOptions()
    check_consecutive(points)
    ncols, nrows = reference.GetSize()
    mask = np.zeros((nrows, ncols), np.uint8)
    for value, poly_mm in _regions(points, opts):
        idx = np.array(
            [reference.TransformPhysicalPointToContinuousIndex(tuple(map(float, p))) for p in poly_mm]
        )
        c0, r0 = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
        c1, r1 = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, (ncols, nrows))
        if c0 >= c1 or r0 >= r1:
            continue
        rr, cc = np.mgrid[r0:r1, c0:c1]
        inside = Polygon(idx).contains_points(np.column_stack([cc.ravel(), rr.ravel()]))
        mask[r0:r1, c0:c1][inside.reshape(rr.shape)] = value
    out = sitk.GetImageFromArray(mask)
    out.CopyInformation(reference)
    return out


def masks_from_corners(
    corners: str | Path,
    cohort: str | Path,
    out: str | Path,
    posterior_mm: float = CornerMaskOptions.posterior_mm,
    dens_mm: float = CornerMaskOptions.dens_mm,
    endplate_mm: float = CornerMaskOptions.endplate_mm,
    strict: bool = False,
    progress: ProgressArg = None,
) -> dict[str, Any]:
    """Write one training mask per patient with corner points into a mask folder.

    Parameters
    ----------
    corners : path
        A corner file or a folder of them (:func:`cdeg.corners.load_corners`: Slicer, CSV, labelme, CVAT).
    cohort : path
        The cohort whose radiographs the points were placed on.
    out : path
        Mask folder to write (``<patient_id>/xray.nii.gz`` and ``masks_from_corners_xray.json``); it must
        not lie inside the cohort.
    posterior_mm, dens_mm, endplate_mm : float
        Extent of the unannotated regions (:class:`CornerMaskOptions`).
    strict : bool
        Stop at the first problem instead of leaving that patient out.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).

    Returns
    -------
    dict
        The manifest written: patients written, problems (one line each), options.
    """
    opts = CornerMaskOptions(posterior_mm=posterior_mm, dens_mm=dens_mm, endplate_mm=endplate_mm)
    coh = Cohort.open(cohort)
    out = Path(out)
    out_r, root_r = out.resolve(), coh.root.resolve()
    if out_r == root_r or root_r in out_r.parents:
        raise ValueError(f"output folder {out} is inside the cohort {coh.root}; choose a folder outside it")
    cs, problems = load_corners(corners, coh, strict=strict)
    folder = MaskFolder(out)
    written: list[str] = []
    for pid in track(cs.patients, progress, "masks from corners"):
        try:
            written.append(_write_one(coh, cs, pid, folder, opts))
        except CdegError as e:
            if strict:
                raise
            problems.append(e)
            log.warning("%s; left out", e.one_line())
    manifest = {
        "modality": MODALITY,
        "source": "corner points",
        "corners": str(corners),
        "cohort": str(coh.root),
        "options": asdict(opts),
        "ignore_label": labels.IGNORE,
        "patients": written,
        "counts": {"written": len(written), "left_out": len(problems)},
        "problems": [e.one_line() for e in problems],
    }
    return write_manifest(folder.corners_manifest(MODALITY), manifest, stage="segment")


def _write_one(coh: Cohort, cs: CornerSet, pid: str, folder: MaskFolder, opts: CornerMaskOptions) -> str:
    """Draw and write one patient's mask; a problem raises CdegError naming the patient and the file."""
    image = read_image(coh.image_path(pid, MODALITY), patient=pid)
    try:
        mask = corner_mask(cs.points(pid), image, opts)
    except ValueError as e:
        raise CdegError(str(e), patient=pid, path=cs.sources.get(pid)) from None
    write_image(folder.mask(pid, MODALITY), mask)
    return pid
