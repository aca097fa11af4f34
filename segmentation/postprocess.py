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
   prohibitive where they touch (there is no room for the level a name jump implies). A disc and a
   vertebra whose order the anterior columns cannot tell (:func:`_order_ambiguous`) may be named in either
   order at ``SWAP_COST``. Where no naming fits every structure, the programme may also leave structures
   out, at ``DROP_COST`` times their weight each.
4. *Repair and report.* Renamed structures get their new labels (swapped neighbours, a duplicated
   level, a disc misnamed between two correctly named vertebrae); skipped levels that remain are
   reported, not invented.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from cdeg.segmentation.presets import PostprocessOptions

from cdeg import labels

HARD_SKIP_COST = 10.0  # per skipped level where neighbours touch: effectively forbidden
BODY_DEPTH_MM = 15.0  # antero-posterior depth of a cervical vertebral body (14.5-17 mm in adults)
DROP_COST = 3.0  # leaving a structure out, per unit of confidence: the last resort, after renaming
#: Naming two neighbours whose cranio-caudal order is ambiguous (a disc whose centre lies within the height of a
#: vertebra's anterior column) in the other order: cheaper than one confident renaming, so the order that lets
#: the names fit wins, and never taken for nothing.
SWAP_COST = 0.3


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
    order_span: tuple[float, float] = (0.0, 0.0)  # cranio-caudal extent of that anterior column
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
        order_span=(float(si[front].min()), float(si[front].max())),
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


def _order_ambiguous(a: Instance, b: Instance) -> bool:
    """A disc and a vertebra whose cranio-caudal order cannot be told from their anterior columns: the disc's
    centre lies within the vertebra's height there (an undertrained network's vertebra that reaches over the
    disc below, a tilted lower cervical spine). Their levels may then be taken in either order."""
    if labels.is_vertebra(a.label) == labels.is_vertebra(b.label):
        return False
    vertebra, disc = (a, b) if labels.is_vertebra(a.label) else (b, a)
    return vertebra.order_span[0] < disc.order_key < vertebra.order_span[1]


def _fits(inst: Instance, o: int) -> bool:
    """Vertebrae take the even positions of the level sequence, discs the odd ones."""
    return (o % 2 == 0) == labels.is_vertebra(inst.label)


def _step(p: int | None, inst: Instance, o: int, skip: float) -> float:
    """Cost of naming `inst` level `o` after level `p` (None: first): a renaming weighs its confidence, and the
    levels skipped between cost `skip` each beyond the one two neighbours of the same kind always skip (the
    disc between two vertebrae), which costs ``min(skip, 1)``."""
    c = 0.0 if o == inst.order else inst.weight
    if p is not None:
        forced = 1 if (p % 2) == (o % 2) else 0
        c += min(skip, 1.0) * forced + skip * (o - p - 1 - forced)
    return c


def _moves(
    instances: list[Instance],
    k: int,
    p: int | None,
    prev: int,
    skip_cost: Callable[[int, int], float],
    swappable: frozenset[int],
) -> Iterator[tuple[int, float, tuple[tuple[int, int], ...]]]:
    """From `k` instances named (the last level `p`, the instance named last `prev`): each way to name the next
    one, or the next two in swapped order, as (instances consumed, cost, ((instance, level), ...))."""
    n_levels = len(labels.STRUCTURES)
    first = 0 if p is None else p + 1
    inst = instances[k]
    skip = skip_cost(prev, k) if prev >= 0 else 0.0
    for o in range(first, n_levels):
        if _fits(inst, o):
            yield 1, _step(p, inst, o, skip), ((k, o),)
    if k not in swappable or k + 1 >= len(instances):
        return
    upper, lower = instances[k + 1], instances[k]
    skip_upper = skip_cost(prev, k + 1) if prev >= 0 else 0.0
    skip_lower = skip_cost(k + 1, k)
    for o1 in (o for o in range(first, n_levels) if _fits(upper, o)):
        c1 = SWAP_COST + _step(p, upper, o1, skip_upper)
        for o2 in (o for o in range(o1 + 1, n_levels) if _fits(lower, o)):
            yield 2, c1 + _step(o1, lower, o2, skip_lower), ((k + 1, o1), (k, o2))


def assign_levels(
    instances: list[Instance],
    skip_cost: Callable[[int, int], float],
    drop_cost: float | None = None,
    swappable: frozenset[int] = frozenset(),
) -> list[int | None] | None:
    """Cheapest strictly increasing, kind-respecting level orders for the sorted instances.

    `skip_cost(i, j)` is the cost per level skipped between instance i and instance j named next (see
    :func:`_step`). With `drop_cost`, an instance may also be left out (its order is None) at
    ``drop_cost * weight``: the way out when no naming fits all structures. For k in `swappable`, instances
    k and k + 1 may be named in the other order at :data:`SWAP_COST` (:func:`_order_ambiguous`). Returns each
    instance's order, or None when no assignment exists (only possible without `drop_cost`).
    """
    n_levels = len(labels.STRUCTURES)
    none = n_levels  # state "nothing assigned yet"
    n = len(instances)
    # cost[k, p, f]: the first k instances named, the last level p; f = 1 when the last step named a swapped
    # pair, so that the instance named last is k - 2, not k - 1 (the skip cost of the next step depends on it).
    cost = np.full((n + 1, n_levels + 1, 2), np.inf)
    back: dict[tuple[int, int, int], tuple[tuple[int, int, int], tuple[tuple[int, int | None], ...]]] = {}
    cost[0, none, 0] = 0.0

    def relax(state: tuple[int, int, int], c: float, came: tuple, named: tuple) -> None:
        # Strictly cheaper only: ties keep the lower previous level, which keeps names closest to the top anchor.
        if c < cost[state] - 1e-12:
            cost[state], back[state] = c, (came, named)

    for k in range(n):
        for p in range(n_levels + 1):
            for f in (0, 1):
                base = cost[k, p, f]
                if base == np.inf:
                    continue
                if drop_cost is not None:
                    relax((k + 1, p, 0), base + drop_cost * instances[k].weight, (k, p, f), ((k, None),))
                last = None if p == none else p
                for used, c, named in _moves(instances, k, last, k - 1 - f, skip_cost, swappable):
                    relax((k + used, named[-1][1], used - 1), base + c, (k, p, f), named)
    if n == 0 or not np.isfinite(cost[n]).any():
        return None
    state = (n, *(int(v) for v in np.unravel_index(int(np.argmin(cost[n])), cost[n].shape)))
    path: list[int | None] = [None] * n
    while state[0] > 0:
        state, named = back[state]
        for i, o in named:
            path[i] = o
    return path


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

    def gap(a: Instance, b: Instance) -> float:
        key = (id(a), id(b))
        if key not in cache:
            cache[key] = _gap_mm(a, b, seg.shape, spacing)
        return cache[key]

    def skip_cost(i: int, j: int) -> float:
        return opts.gap_penalty if gap(instances[i], instances[j]) >= opts.room_mm else HARD_SKIP_COST

    swappable = frozenset(
        k for k, (a, b) in enumerate(itertools.pairwise(instances)) if _order_ambiguous(a, b)
    )
    path = assign_levels(instances, skip_cost, swappable=swappable)
    if path is None:
        # No naming fits every structure (more structures than levels, or one sorted far out of place): leave
        # out those that cost least to lose, extra copies of a label or not, instead of giving up on the mask.
        path = assign_levels(instances, skip_cost, DROP_COST, swappable)
        assert path is not None  # dropping always makes a solution
        for inst, o in zip(instances, path, strict=True):
            if o is not None:
                continue
            name = labels.name_of(inst.label)
            if inst.duplicate_of is not None:
                check, detail = "fragments_removed", f"extra {name} copy ({inst.size} voxels) removed: "
                detail += "more structures than levels"
            else:
                check, detail = "sequence", f"a {name} structure ({inst.size} voxels) fits nowhere in the "
                detail += "cranio-caudal sequence; removed"
            findings.append(Finding(check, detail, True))
    # The structures in the order of their levels (a swapped pair's order follows its names).
    kept = sorted(((o, i) for i, o in zip(instances, path, strict=True) if o is not None), key=lambda t: t[0])
    path, instances = [o for o, _ in kept], [i for _, i in kept]
    gaps = [0.0] + [gap(a, b) for a, b in itertools.pairwise(instances)]
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
