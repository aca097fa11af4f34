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
* a band of ``endplate_band_mm`` on both sides of each endplate.

Endplates are concave, which four corners cannot show, and a straight chord would teach the network straight
endplates (a disc Dice of 0.54 against full masks in bench_corners). Each endplate is therefore drawn as a
curve through its two corners that sags into the body by the mean depth published for C3-C7 (Chen et al.
2013, Eur Spine J 22:1570-5: superior endplates 0.9-1.2 mm, inferior 2.1-2.7 mm, apex in the posterior half),
and the band around it is left unannotated, since one patient's endplate departs from the mean.

Everything else is background. Bodies are painted over the unannotated band behind them, discs over the
bodies (as in the synthetic reference masks, a disc wins where it touches a body), the endplate bands last.
What stays different from a full mask: anterior osteophytes are background, and bodies and discs end at the
corners.

Output: a mask folder (:class:`cdeg.outputs.MaskFolder` layout, ``<patient_id>/xray.nii.gz`` on the grid of
the cohort's radiograph) with its manifest; ``cdeg segment train`` uses it as a cohort's ``masks/``.
"""

from __future__ import annotations

import dataclasses
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
    superior_depth_mm, inferior_depth_mm : float
        Depth of the concavity drawn for each superior and inferior endplate, below its chord at the apex
        (0: a straight chord). Defaults: the middle of the range of the C3-C7 level means that Chen et al.
        2013 report (Eur Spine J 22:1570-5, midsagittal CT of 97 adults: superior endplates 0.9-1.2 mm,
        inferior 2.1-2.7 mm).
    superior_apex, inferior_apex : float
        Where along the chord (0 = anterior corner) the concavity is deepest: Chen et al. 2013 found the
        apex in the posterior half, at 56-67% (superior) and 52-57% (inferior) of the endplate.
    endplate_band_mm : float
        Half-width of the unannotated band around each drawn endplate: a patient's endplate departs from
        the mean curve, and the network should place it where the image shows it (0: no band).
    """

    posterior_mm: float = 70.0
    dens_mm: float = 25.0
    superior_depth_mm: float = 1.05
    inferior_depth_mm: float = 2.4
    superior_apex: float = 0.6
    inferior_apex: float = 0.55
    endplate_band_mm: float = 0.5

    def __post_init__(self) -> None:
        for name in ("posterior_mm", "dens_mm"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 200):
                raise ValueError(f"{name} must be a number of mm in [0, 200], got {v!r}")
        for name in ("superior_depth_mm", "inferior_depth_mm", "endplate_band_mm"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0 <= v <= 10):
                raise ValueError(f"{name} must be a number of mm in [0, 10], got {v!r}")
        for name in ("superior_apex", "inferior_apex"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.05 <= v <= 0.95):
                raise ValueError(f"{name} must be a fraction of the chord in [0.05, 0.95], got {v!r}")


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
    sup = {labels.name_of(v): _endplate(points[labels.name_of(v)], "superior", opts) for v in levels}
    inf = {labels.name_of(v): _endplate(points[labels.name_of(v)], "inferior", opts) for v in levels}
    for v in levels:
        name = labels.name_of(v)
        # a body: superior endplate AS -> PS, posterior wall, inferior endplate PI -> AI, anterior wall
        regions.append((v, np.array([*sup[name], *inf[name][::-1]])))
        if v + 1 in levels:
            below = labels.name_of(v + 1)
            discs.append((labels.disc_between(v, v + 1), np.array([*inf[name], *sup[below][::-1]])))
        if opts.endplate_band_mm > 0:
            if name != labels.VERTEBRA_NAMES[0]:  # C2's top is the dens, already unannotated
                bands.append((labels.IGNORE, _band(sup[name], opts.endplate_band_mm)))
            bands.append((labels.IGNORE, _band(inf[name], opts.endplate_band_mm)))
    return regions + discs + bands


def _endplate(c: dict[str, np.ndarray], which: str, opts: CornerMaskOptions) -> np.ndarray:
    """Points of one endplate, anterior -> posterior corner, sagging into the body by the options' depth.

    The depth profile is 0 at the corners and 1 at the apex, a parabola on each side of it, so the apex sits
    where the options put it (Chen et al. 2013: in the posterior half).
    """
    if which == "superior":
        ant, post, depth, apex, into_body = c["AS"], c["PS"], opts.superior_depth_mm, opts.superior_apex, 1
    else:
        ant, post, depth, apex, into_body = c["AI"], c["PI"], opts.inferior_depth_mm, opts.inferior_apex, -1
    t = np.linspace(0.0, 1.0, 21)
    g = np.where(t <= apex, 1 - ((apex - t) / apex) ** 2, 1 - ((t - apex) / (1 - apex)) ** 2)
    normal = _perp_down(post - ant) * into_body
    return ant[None, :] + t[:, None] * (post - ant)[None, :] + (depth * g)[:, None] * normal[None, :]


def _band(curve: np.ndarray, half_width: float) -> np.ndarray:
    """Polygon covering `half_width` mm on both sides of an endplate curve, 1 mm beyond each corner."""
    e = _unit(curve[-1] - curve[0])
    n = _perp_down(curve[-1] - curve[0])
    line = np.array([curve[0] - e, *curve, curve[-1] + e])
    return np.array([*(line - half_width * n), *(line + half_width * n)[::-1]])


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
    endplate_band_mm: float = CornerMaskOptions.endplate_band_mm,
    straight_endplates: bool = False,
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
    posterior_mm, dens_mm, endplate_band_mm : float
        Extent of the unannotated regions (:class:`CornerMaskOptions`).
    straight_endplates : bool
        Draw endplates as straight chords instead of the published mean concavity.
    strict : bool
        Stop at the first problem instead of leaving that patient out.
    progress : bool or callable
        Progress per patient (:mod:`cdeg.progress`).

    Returns
    -------
    dict
        The manifest written: patients written, problems (one line each), options.
    """
    opts = CornerMaskOptions(posterior_mm=posterior_mm, dens_mm=dens_mm, endplate_band_mm=endplate_band_mm)
    if straight_endplates:
        opts = dataclasses.replace(opts, superior_depth_mm=0.0, inferior_depth_mm=0.0)
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
