"""Post-processing of a predicted mask: largest component per label, then level consistency.

Level naming is where spine segmenters fail most (a vertebra counted twice, a level skipped, a disc
misnamed in a degenerated spine), so every prediction is checked against what anatomy allows:
vertebrae and discs alternate cranio-caudally, each disc lies between the two vertebrae it is named
after, and no level is duplicated or skipped.

Algorithm (works on a canonical-orientation array, 2D or 3D):

1. *Components.* Each label is split into connected components. The largest is the structure. Another
   component becomes a structure of its own (a level predicted twice) when it holds at least
   ``duplicate_min_fraction`` of the largest one's voxels and lies at least ``duplicate_min_distance_mm``
   above or below it, more cranio-caudally than antero-posteriorly displaced (a piece of the same
   vertebra, such as posterior elements cut off in thick slices, lies behind the body, not below it).
   Other components are kept as parts of the structure when they hold ``part_min_fraction`` of its
   voxels, and removed when smaller (the "largest component" rule for noise).
2. *Order.* Structures are sorted by the cranio-caudal centre of their anterior 15 mm (the vertebral
   body, the disc): the centre of a whole vertebra is pulled down by its spinous process.
3. *Naming.* A dynamic programme gives each structure in that order a level whose kind matches
   (vertebrae on even positions of the convention's sequence C2, C2-C3, C3, ..., discs on odd ones),
   strictly increasing, minimising

   ``sum_k w_k [level_k != predicted_k] + sum_k skip_cost_k * (levels skipped between k-1 and k)``

   where ``w_k`` is the structure's mean predicted probability (1 without probabilities), so the most
   confident levels anchor the sequence. A skipped level is cheap (``gap_penalty``) where the two
   structures are separated by at least ``room_mm`` of background (a structure the network missed) and
   prohibitive where they touch (there is no room for the level a name jump implies).
4. *Repair and report.* Renamed structures get their new labels (swapped neighbours, a duplicated
   level, a disc misnamed between two correctly named vertebrae); skipped levels that remain are
   reported, not invented.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from cdeg.segmentation.presets import PostprocessOptions

from cdeg import labels

HARD_SKIP_COST = 10.0  # per skipped level where neighbours touch: effectively forbidden
BODY_DEPTH_MM = 15.0  # antero-posterior depth of a cervical vertebral body (14.5-17 mm in adults)
DROP_COST = 3.0  # leaving a structure out, per unit of confidence: the last resort, after renaming


@dataclass(frozen=True)
class Finding:
    """One QC observation on one mask (a row of qc.csv without patient and modality)."""

    check: str
    detail: str
    repaired: bool


@dataclass(eq=False)  # identity, not value, equality: instances hold voxel arrays
class Instance:
    """One predicted structure: a connected component (or the label's main component)."""

    label: int
    voxels: tuple[np.ndarray, ...]
    size: int
    si_center: float
    ap_center: float
    order_key: float  # cranio-caudal position of the anterior column (vertebral body or disc)
    weight: float
    assigned: int | None = None
    duplicate_of: int | None = None  # set when the label has several instances

    @property
    def order(self) -> int:
        return labels.structure(self.label).order


def _components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(binary.ndim, binary.ndim)
    return ndimage.label(binary, structure=structure)


def _instance(
    lab: int,
    vox: tuple[np.ndarray, ...],
    spacing: tuple[float, ...],
    si_axis: int,
    confidence: np.ndarray | None,
) -> Instance:
    si = vox[si_axis] * spacing[si_axis]
    ap = vox[si_axis + 1] * spacing[si_axis + 1]  # canonical arrays: AP (anterior first) follows SI
    # Order by the anterior column: the spinous process of a lower cervical vertebra points down and
    # back, pulling the centre of the whole vertebra below the centre of the disc under its body.
    front = ap <= ap.min() + BODY_DEPTH_MM
    return Instance(
        label=lab,
        voxels=vox,
        size=int(vox[0].size),
        si_center=float(si.mean()),
        ap_center=float(ap.mean()),
        order_key=float(si[front].mean()),
        weight=float(confidence[vox].mean()) if confidence is not None else 1.0,
    )


def _is_other_level(inst: Instance, main: Instance, opts: PostprocessOptions) -> bool:
    """A big component displaced mainly cranio-caudally from the main one is another level."""
    d_si, d_ap = abs(inst.si_center - main.si_center), abs(inst.ap_center - main.ap_center)
    return inst.size >= opts.duplicate_min_fraction * main.size and d_si >= max(
        d_ap, opts.duplicate_min_distance_mm
    )


def find_instances(
    seg: np.ndarray,
    spacing: tuple[float, ...],
    si_axis: int,
    confidence: np.ndarray | None,
    opts: PostprocessOptions,
) -> tuple[list[Instance], list[Finding]]:
    """Split the labels of `seg` into structure instances; removed fragments are reported.

    Per label: the largest component is the structure; another component is a second instance of the
    label (another level carrying the same name) when :func:`_is_other_level`; otherwise it is kept as
    part of the structure when it has at least ``part_min_fraction`` of the largest component's voxels
    (posterior elements cut off from the body in thick slices) and removed when smaller.
    """
    from scipy import ndimage

    findings: list[Finding] = []
    instances: list[Instance] = []
    removed: dict[str, int] = {}
    present = [int(v) for v in np.unique(seg) if v != 0]
    unknown = labels.invalid_labels(present)
    if unknown:
        raise ValueError(f"labels {unknown} are not in the convention")
    objects = ndimage.find_objects(seg.astype(np.int32, copy=False))
    for lab in present:
        sl = objects[lab - 1]
        comp, _ = _components(seg[sl] == lab)
        sizes = np.bincount(comp.ravel())[1:]
        order = np.argsort(-sizes, kind="stable")
        if int(sizes[order[0]]) < opts.min_voxels:
            removed[labels.name_of(lab)] = removed.get(labels.name_of(lab), 0) + int(sizes.sum())
            continue
        kept: list[Instance] = []
        parts: list[tuple[np.ndarray, ...]] = []
        main_size = int(sizes[order[0]])
        # Only components big enough to be another level or a part are looked at voxel by voxel.
        floor = max(opts.min_voxels, min(opts.duplicate_min_fraction, opts.part_min_fraction) * main_size)
        small = sizes < floor
        if small.any():
            removed[labels.name_of(lab)] = removed.get(labels.name_of(lab), 0) + int(sizes[small].sum())
        boxes = ndimage.find_objects(comp)
        for rank, ci in enumerate(order):
            if small[ci]:
                break  # sizes are sorted: the rest are smaller still
            box = boxes[ci]
            idx = np.nonzero(comp[box] == ci + 1)
            vox = tuple(i + b.start + s.start for i, b, s in zip(idx, box, sl, strict=True))
            inst = _instance(lab, vox, spacing, si_axis, confidence)
            if rank == 0:
                kept.append(inst)
            elif _is_other_level(inst, kept[0], opts):
                kept.append(inst)
            elif inst.size >= opts.part_min_fraction * main_size:
                parts.append(vox)
            else:
                removed[labels.name_of(lab)] = removed.get(labels.name_of(lab), 0) + inst.size
        if parts:  # parts stay with the main structure; its centre stays that of the main component
            main = kept[0]
            main.voxels = tuple(
                np.concatenate([main.voxels[d], *(p[d] for p in parts)]) for d in range(seg.ndim)
            )
            main.size = int(main.voxels[0].size)
        if len(kept) > 1:
            for inst in kept:
                inst.duplicate_of = lab
        instances.extend(kept)
    if removed:
        detail = ", ".join(
            f"{k} ({v} voxels)" for k, v in sorted(removed.items(), key=lambda kv: labels.label_of(kv[0]))
        )
        findings.append(Finding("fragments_removed", f"small extra components removed: {detail}", True))
    instances.sort(key=lambda i: i.order_key)
    return instances, findings


def _gap_mm(a: Instance, b: Instance, shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    """Smallest physical distance between two instances (0 when they touch)."""
    from scipy import ndimage

    lo = [min(int(a.voxels[d].min()), int(b.voxels[d].min())) for d in range(len(shape))]
    hi = [max(int(a.voxels[d].max()), int(b.voxels[d].max())) + 1 for d in range(len(shape))]
    box = tuple(h - low for low, h in zip(lo, hi, strict=True))
    mask_a = np.ones(box, bool)
    mask_a[tuple(v - o for v, o in zip(a.voxels, lo, strict=True))] = False
    dist = ndimage.distance_transform_edt(mask_a, sampling=spacing)
    d = float(dist[tuple(v - o for v, o in zip(b.voxels, lo, strict=True))].min())
    # Voxel centres of touching structures are one voxel apart: count that as touching.
    return max(0.0, d - float(max(spacing)))


def assign_levels(
    instances: list[Instance], skip_costs: list[float], drop_cost: float | None = None
) -> list[int | None] | None:
    """Cheapest strictly increasing, kind-respecting level orders for the sorted instances.

    `skip_costs[k]` is the cost per level skipped between instance k-1 and k (index 0 unused) beyond the
    one level that two neighbours of the same kind always skip (the disc between two vertebrae), which
    costs ``min(skip_costs[k], 1)``. With `drop_cost`, an instance may also be left out (its order is None)
    at ``drop_cost * weight``: the way out when no naming fits all structures. Returns None when no
    assignment exists (only possible without `drop_cost`).
    """
    n_levels = len(labels.STRUCTURES)
    none = n_levels  # state "nothing assigned yet"
    inf = float("inf")
    n = len(instances)
    cost = np.full((n + 1, n_levels + 1), inf)
    back = np.full((n + 1, n_levels + 1), -1, dtype=int)
    cost[0, none] = 0.0
    for k, inst in enumerate(instances):
        even = labels.is_vertebra(inst.label)
        for p in range(n_levels + 1):
            base = cost[k, p]
            if base == inf:
                continue
            if drop_cost is not None and base + drop_cost * inst.weight < cost[k + 1, p] - 1e-12:
                cost[k + 1, p], back[k + 1, p] = base + drop_cost * inst.weight, p
            for o in range(0 if p == none else p + 1, n_levels):
                if (o % 2 == 0) != even:
                    continue
                c = base + (0.0 if o == inst.order else inst.weight)
                if p != none:
                    skipped = o - p - 1
                    forced = 1 if (p % 2) == (o % 2) else 0  # same kind: the level between is always skipped
                    c += min(skip_costs[k], 1.0) * forced + skip_costs[k] * (skipped - forced)
                # Ties keep the lower previous level, which keeps names closest to the top anchor (C2).
                if c < cost[k + 1, o] - 1e-12:
                    cost[k + 1, o], back[k + 1, o] = c, p
    if n == 0 or not np.isfinite(cost[n]).any():
        return None
    state = int(np.argmin(cost[n]))
    path: list[int | None] = []
    for k in range(n, 0, -1):
        prev = int(back[k, state])
        path.append(None if prev == state else state)
        state = prev
    return path[::-1]


def check_levels(
    seg: np.ndarray,
    spacing: tuple[float, ...],
    si_axis: int,
    confidence: np.ndarray | None = None,
    opts: PostprocessOptions | None = None,
) -> tuple[np.ndarray, list[Finding]]:
    """Clean and check one predicted mask; returns the repaired mask and the QC findings.

    Parameters
    ----------
    seg : ndarray
        Mask in the label convention, canonical array order (2D or 3D).
    spacing : tuple of float
        Voxel size in mm per array axis.
    si_axis : int
        Array axis running superior to inferior.
    confidence : ndarray, optional
        Predicted probability of the chosen label per voxel (same shape), used as anchor weights.
    opts : PostprocessOptions, optional
        Thresholds; defaults when None.
    """
    opts = opts or PostprocessOptions()
    if not np.any(seg):
        return seg.copy(), [Finding("empty", "no structure was segmented", False)]
    instances, findings = find_instances(seg, spacing, si_axis, confidence, opts)
    if not instances:
        return np.zeros_like(seg), [
            *findings,
            Finding("empty", "nothing left after removing fragments", False),
        ]
    cache: dict[tuple[int, int], float] = {}

    def gaps_and_costs() -> tuple[list[float], list[float]]:
        gaps = [0.0]
        for a, b in itertools.pairwise(instances):
            key = (id(a), id(b))
            if key not in cache:
                cache[key] = _gap_mm(a, b, seg.shape, spacing)
            gaps.append(cache[key])
        return gaps, [opts.gap_penalty if g >= opts.room_mm else HARD_SKIP_COST for g in gaps]

    gaps, skip_costs = gaps_and_costs()
    path = assign_levels(instances, skip_costs)
    while path is None and any(i.duplicate_of is not None for i in instances):
        # More structures than levels: drop the smallest extra copy of a label (noise) and try again.
        extra = [i for i in instances if i.duplicate_of is not None and i is not _primary(i.label, instances)]
        if not extra:
            break
        drop = min(extra, key=lambda i: (i.size, i.weight))
        instances = [i for i in instances if i is not drop]
        findings.append(
            Finding(
                "fragments_removed",
                f"extra {labels.name_of(drop.label)} copy ({drop.size} voxels) "
                "removed: more structures than levels",
                True,
            )
        )
        gaps, skip_costs = gaps_and_costs()
        path = assign_levels(instances, skip_costs)
    if path is None:
        # Still no naming fits (e.g. a structure sorted far out of place): leave out the structures that
        # cost least to lose instead of giving up on the whole mask.
        path = assign_levels(instances, skip_costs, drop_cost=DROP_COST)
        assert path is not None  # dropping always makes a solution
        for inst, o in zip(instances, path, strict=True):
            if o is None:
                findings.append(
                    Finding(
                        "sequence",
                        f"a {labels.name_of(inst.label)} structure ({inst.size} voxels) "
                        "fits nowhere in the cranio-caudal sequence; removed",
                        True,
                    )
                )
        kept = [(i, o) for i, o in zip(instances, path, strict=True) if o is not None]
        instances, path = [i for i, _ in kept], [o for _, o in kept]
        gaps = [0.0] + [_gap_mm(a, b, seg.shape, spacing) for a, b in itertools.pairwise(instances)]
    out = np.zeros_like(seg)
    renamed = []
    for inst, o in zip(instances, path, strict=True):
        new = labels.STRUCTURES[o].label
        inst.assigned = new
        if new != inst.label:
            renamed.append(inst)
        out[inst.voxels] = new if opts.repair else inst.label
    findings.extend(_rename_findings(renamed, opts.repair))
    findings.extend(_gap_findings(instances, path, gaps))
    return out, findings


def _primary(label: int, instances: list[Instance]) -> Instance:
    """The copy of a label that is kept longest: the largest, then the most confident."""
    return max((i for i in instances if i.label == label), key=lambda i: (i.size, i.weight))


def _rename_findings(renamed: list[Instance], repaired: bool) -> list[Finding]:
    out = []
    verb = "renamed" if repaired else "should be"
    for inst in renamed:
        old, new = labels.name_of(inst.label), labels.name_of(inst.assigned or inst.label)
        if inst.duplicate_of is not None:
            check, why = (
                "duplicate",
                f"{old} appeared more than once; the copy centred {inst.si_center:.0f} mm below the image top",
            )
        else:
            check, why = "level_name", old
        out.append(Finding(check, f"{why} {verb} {new} by the cranio-caudal sequence", repaired))
    return out


def _gap_findings(instances: list[Instance], path: list[int], gaps: list[float]) -> list[Finding]:
    out = []
    for k in range(1, len(path)):
        if path[k] - path[k - 1] > 1:
            missing = [labels.STRUCTURES[o].name for o in range(path[k - 1] + 1, path[k])]
            above, below = labels.STRUCTURES[path[k - 1]].name, labels.STRUCTURES[path[k]].name
            out.append(
                Finding(
                    "missing_level",
                    f"{', '.join(missing)} not found between {above} and {below} ({gaps[k]:.1f} mm apart)",
                    False,
                )
            )
    return out
