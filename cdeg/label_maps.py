"""Foreign label conventions: what another segmenter's mask values mean, and their conversion to cdeg's.

Spine segmenters trained on thousands of real scans (SPINEPS, TotalSpineSeg, TotalSegmentator) each number
their structures their own way. A *label map* says, for every value a tool writes, what it is:

* ``vertebra: C5`` - that vertebra (any spine level, C1..S; only C2..T1 are kept by cdeg), optionally with
  ``part: endplate`` for a part of it that the tool labels separately (SPINEPS' endplates, 200 + X), which is
  merged back into the vertebra: dropping it would leave holes in the body and shorten every body height;
* ``disc: C5-C6`` - that disc; ``disc: any`` - one class for every disc (TotalSegmentator's ``total_mr``):
  each connected component is named by the two vertebrae it lies between;
* ``drop: true`` - a structure cdeg does not use (cord, canal, ...), removed and counted.

Label maps are data: ``configs/label_maps/<name>.yaml`` (shipped, each citing the tool's own label table) or
any file a user writes in the same form. The file also says where the tool writes a patient's mask
(``files``), so its output folder is read without renaming. This module is the one place that converts:
:func:`convert` turns a foreign label array into the cdeg convention (:mod:`cdeg.labels`) and says what it
merged, dropped or could not name. A value the map does not list is an error naming the value, never taken
for a cdeg label (TotalSpineSeg's canal and cdeg's C2 are both 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from cdeg import labels
from cdeg.cohort import MODALITIES
from cdeg.config import ConfigError, from_dict, load_yaml
from cdeg.errors import CdegError

MAPS_PACKAGE = "cdeg.configs.label_maps"
#: Every vertebral level a foreign tool may label, cranio-caudally; "S" is the sacrum as one bone.
SPINE_LEVELS: tuple[str, ...] = (
    *(f"C{i}" for i in range(1, 8)),
    *(f"T{i}" for i in range(1, 14)),
    *(f"L{i}" for i in range(1, 7)),
    "S",
)
_LEVEL_ORDER = {name: i for i, name in enumerate(SPINE_LEVELS)}
#: Levels only some spines have (a 13th thoracic, a 6th lumbar vertebra): their neighbours are adjacent too.
VARIANT_LEVELS = frozenset({"T13", "L6"})
#: Parts of a vertebra a tool may label apart; merged back into the vertebra.
PARTS = ("endplate",)
#: A disc component names itself after the vertebrae it touches; a vertebra counts as touching when its
#: contact is at least this share of the strongest contact (a stray voxel of a third level is not a touch).
CONTACT_SHARE = 0.1
#: Actions reported per source value and disc component.
ACTIONS = ("mapped", "merged", "named", "dropped", "flagged")


class LabelMapError(CdegError):
    """A mask holds values its label map does not explain, or a label map file is invalid."""


@dataclass(frozen=True)
class LabelEntry:
    """What one value of a foreign mask is.

    Parameters
    ----------
    value : int
        The voxel value the tool writes.
    name : str
        The tool's own class name (also the file name ``<name>.nii.gz`` of a folder-per-class output).
    vertebra : str, optional
        The vertebral level (:data:`SPINE_LEVELS`) this value belongs to.
    part : str, optional
        With `vertebra`: a part the tool labels apart (``endplate``), merged into the vertebra.
    disc : str, optional
        The disc ("C5-C6"), or "any" for one class holding every disc.
    drop : bool
        A structure cdeg does not use.
    """

    value: int
    name: str
    vertebra: str | None = None
    part: str | None = None
    disc: str | None = None
    drop: bool = False

    def __post_init__(self) -> None:
        kinds = [self.vertebra is not None, self.disc is not None, self.drop]
        if sum(kinds) != 1:
            raise ValueError(f"value {self.value} ({self.name}): give exactly one of vertebra, disc, drop")
        if not 0 < self.value < 2**16:
            hint = " (0 is the background: leave it out)" if self.value == 0 else ""
            raise ValueError(f"value {self.value} ({self.name}) must be in 1..65535{hint}")
        if self.vertebra is not None and self.vertebra not in _LEVEL_ORDER:
            raise ValueError(
                f"value {self.value}: vertebra {self.vertebra!r}; valid: {', '.join(SPINE_LEVELS)}"
            )
        if self.part is not None and (self.vertebra is None or self.part not in PARTS):
            raise ValueError(f"value {self.value}: part is for a vertebra's parts ({', '.join(PARTS)})")
        if self.disc is not None and self.disc != "any":
            # Not necessarily neighbours in SPINE_LEVELS: T12-L1 and L5-S skip the variant levels T13 and L6.
            upper, _, lower = self.disc.partition("-")
            if upper not in _LEVEL_ORDER or _LEVEL_ORDER.get(lower, -1) <= _LEVEL_ORDER[upper]:
                raise ValueError(
                    f"value {self.value}: disc {self.disc!r} is not 'any' or two levels top-down"
                )

    @property
    def cdeg_label(self) -> int | None:
        """The cdeg label this value becomes, or None (dropped, or a disc named per component)."""
        name = self.vertebra or (self.disc if self.disc != "any" else None)
        if name in labels.VERTEBRA_NAMES or name in labels.DISC_NAMES:
            return labels.label_of(name)
        return None

    @property
    def action(self) -> str:
        """What conversion does with this value (see :data:`ACTIONS`); "disc" for per-component naming."""
        if self.disc == "any":
            return "disc"
        if self.cdeg_label is None:
            return "dropped"
        return "merged" if self.part else "mapped"


@dataclass(frozen=True)
class LabelMap:
    """A foreign label convention (the contents of one ``configs/label_maps/*.yaml``).

    Parameters
    ----------
    name : str
        Short name (``spineps``), used by ``--from`` / ``--label-map``.
    description : str
        What the tool and output are.
    source : str
        Where the numbers come from: the tool's file and version.
    labels : tuple of LabelEntry
        Every value the tool writes.
    files : dict
        Modality -> glob patterns (relative to the tool's output folder, ``**`` = any depth) of the files
        holding a patient's mask; default: cdeg's own layout ``<patient_id>/<modality>.nii.gz``.
    strip_suffixes : tuple of str
        Suffixes removed from a file name (after ``.nii.gz``) to recover the input image's name.

    A tool that writes a folder per patient with one binary ``<class name>.nii.gz`` per class
    (TotalSegmentator without ``--ml``) is read as well: the class names are the entries' names.
    """

    name: str
    description: str
    source: str
    labels: tuple[LabelEntry, ...]
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    strip_suffixes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        values = [e.value for e in self.labels]
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ValueError(f"value(s) {dup} listed twice")
        names = [e.name for e in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique (a folder-per-class output is read by name)")
        if sum(e.disc == "any" for e in self.labels) > 1:
            raise ValueError("at most one value may hold every disc (disc: any)")
        unknown = sorted(set(self.files) - set(MODALITIES))
        if unknown:
            raise ValueError(f"files: unknown modality {', '.join(unknown)}; valid: {', '.join(MODALITIES)}")

    def entry(self, value: int) -> LabelEntry | None:
        """The entry of a value, or None when the map does not list it."""
        return self._by_value().get(int(value))

    def _by_value(self) -> dict[int, LabelEntry]:
        return {e.value: e for e in self.labels}

    def by_name(self) -> dict[str, LabelEntry]:
        """Class name -> entry (the file names of a folder-per-class output)."""
        return {e.name: e for e in self.labels}

    def rows(self) -> list[dict[str, Any]]:
        """The map as rows (value, class, becomes, action), for ``cdeg labels --map``."""
        return [
            {
                "value": e.value,
                "class": e.name,
                "becomes": labels.name_of(e.cdeg_label) if e.cdeg_label is not None else "-",
                "action": "named by neighbours" if e.action == "disc" else e.action,
            }
            for e in self.labels
        ]


def available() -> list[str]:
    """Names of the shipped label maps."""
    folder = resources.files(MAPS_PACKAGE)
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_label_map(name_or_path: str | Path | LabelMap) -> LabelMap:
    """A shipped label map by name (``spineps``) or a user's YAML file in the same form, validated.

    Raises
    ------
    LabelMapError
        Unknown name (listing the shipped ones) or an invalid file (naming the key).
    """
    if isinstance(name_or_path, LabelMap):
        return name_or_path
    text = str(name_or_path)
    if text in available():
        path = Path(str(resources.files(MAPS_PACKAGE).joinpath(f"{text}.yaml")))
    elif Path(text).is_file():
        path = Path(text)
    else:
        raise LabelMapError(f"no label map {text!r}: give a file or one of {', '.join(available())}")
    data = load_yaml(path)
    try:
        return from_dict(LabelMap, data, source=path)
    except ConfigError as e:
        raise LabelMapError(e.message, path=path) from None


# --- conversion ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conversion:
    """A converted mask and what happened to each source value and disc component.

    ``rows`` hold value, class, action (:data:`ACTIONS`), target (cdeg level name or ""), voxels and detail.
    """

    mask: np.ndarray
    rows: tuple[dict[str, Any], ...]

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["action"] == "flagged"]

    def count(self, action: str) -> int:
        """Voxels with this action."""
        return int(sum(r["voxels"] for r in self.rows if r["action"] == action))


def unknown_values(values: Any, lmap: LabelMap) -> list[int]:
    """Non-zero values that `lmap` does not list."""
    return sorted(int(v) for v in values if int(v) != 0 and lmap.entry(int(v)) is None)


def convert(array: np.ndarray, lmap: LabelMap) -> Conversion:
    """Convert a mask in `lmap`'s convention to cdeg's (uint8, same shape).

    Raises
    ------
    LabelMapError
        When the mask holds values the map does not list (the caller adds the patient and the file).
    """
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise LabelMapError("mask holds non-integer values")
        array = array.astype(np.int64)
    values, counts = np.unique(array, return_counts=True)
    unknown = unknown_values(values, lmap)
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
        raise LabelMapError(
            f"value(s) {shown} are not in the label map {lmap.name!r} (`cdeg labels --map {lmap.name}` lists it)"
        )
    out = np.zeros(array.shape, dtype=np.uint8)
    rows: list[dict[str, Any]] = []
    for value, n in zip(values.tolist(), counts.tolist(), strict=True):
        if value == 0:
            continue
        e = lmap.entry(value)
        assert e is not None  # unknown values raised above
        if e.action == "disc":
            rows += _name_discs(array, e, lmap, out)
            continue
        if e.part is not None:
            rows += _merge_parts(array, e, lmap, out)
            continue
        if e.cdeg_label is not None:
            out[array == value] = e.cdeg_label
        rows.append(_row(e, e.action, e.cdeg_label, n))
    return Conversion(out, tuple(rows))


def _row(e: LabelEntry, action: str, label: int | None, voxels: int, detail: str = "") -> dict[str, Any]:
    return {
        "value": e.value,
        "class": e.name,
        "action": action,
        "target": labels.name_of(label) if label is not None else "",
        "voxels": int(voxels),
        "detail": detail,
    }


def _vertebra_lut(array: np.ndarray, lmap: LabelMap) -> np.ndarray:
    """Value -> spine-level index + 1 (0 = not a vertebra), for every value in `array`."""
    lut = np.zeros(int(array.max()) + 1, dtype=np.int32)
    for e in lmap.labels:
        if e.vertebra is not None and e.value < lut.size:
            lut[e.value] = _LEVEL_ORDER[e.vertebra] + 1
    return lut


def _components(array: np.ndarray, value: int) -> Any:
    """Connected components of one value (face connectivity) and, per component, its box grown by a voxel."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(array.ndim, 1)
    components, _ = ndimage.label(array == value, structure=structure)
    for i, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        yield grown, components[grown] == i, structure


def _contacts(
    array: np.ndarray, grown: Any, comp: np.ndarray, structure: Any, level_of: np.ndarray
) -> np.ndarray:
    """Voxels of each vertebral level (index + 1 of SPINE_LEVELS) touching a component's surface."""
    from scipy import ndimage

    ring = ndimage.binary_dilation(comp, structure=structure) & ~comp
    touched = level_of[array[grown][ring]]
    return np.bincount(touched[touched > 0], minlength=len(SPINE_LEVELS) + 1)


def _merge_parts(array: np.ndarray, e: LabelEntry, lmap: LabelMap, out: np.ndarray) -> list[dict[str, Any]]:
    """Merge each piece of a vertebra part (an endplate) into the vertebra it belongs to.

    SPINEPS documents 200 + X as the endplates of vertebra X (README), but numbers an endplate after the disc
    next to it, so the superior endplate of X + 1 may carry 200 + X too (spineps/phase_post.py,
    add_ivd_ep_vert_label, whose FIXME says so). Each connected piece therefore goes to whichever of X and
    X + 1 it touches more (face neighbours), X on a tie or when it touches neither. A one-voxel sliver at a
    rim where both bodies meet can still go either way (measured on the synthetic masks: at most 1 voxel
    per mask, tests/test_import_masks.py).
    """
    level_of = _vertebra_lut(array, lmap)
    own = _LEVEL_ORDER[str(e.vertebra)]
    rows = []
    for grown, comp, structure in _components(array, e.value):
        contact = _contacts(array, grown, comp, structure, level_of)
        nxt = next(
            (j for j in range(own + 1, len(SPINE_LEVELS)) if adjacent(own, j) and contact[j + 1]), None
        )
        level = SPINE_LEVELS[nxt if nxt is not None and contact[nxt + 1] > contact[own + 1] else own]
        label = labels.label_of(level) if level in labels.VERTEBRA_NAMES else None
        if label is not None:
            out[grown][comp] = label
        rows.append(
            _row(e, "merged" if label is not None else "dropped", label, int(comp.sum()), f"into {level}")
        )
    return rows


def adjacent(upper: int, lower: int) -> bool:
    """Whether two levels (indices of :data:`SPINE_LEVELS`) are neighbours, skipping variant levels (T12-L1)."""
    between = SPINE_LEVELS[upper + 1 : lower]
    return lower > upper and all(name in VARIANT_LEVELS for name in between)


def _name_discs(array: np.ndarray, e: LabelEntry, lmap: LabelMap, out: np.ndarray) -> list[dict[str, Any]]:
    """Name each connected component of a one-class-for-all-discs value by the two vertebrae around it.

    A component touching exactly two adjacent vertebrae (each with at least :data:`CONTACT_SHARE` of the
    strongest contact) becomes the disc between them (dropped when that disc is outside C2-C3..C7-T1); one
    touching no vertebra, one, or two that are not adjacent is reported and left out, never guessed.
    """
    from scipy import ndimage

    level_of = _vertebra_lut(array, lmap)
    rows = []
    for grown, comp, structure in _components(array, e.value):
        contact = _contacts(array, grown, comp, structure, level_of)
        levels = [j - 1 for j in np.flatnonzero(contact) if contact[j] >= CONTACT_SHARE * contact.max()]
        voxels = int(comp.sum())
        offset = [g.start for g in grown]
        centre = tuple(round(float(c) + o) for c, o in zip(ndimage.center_of_mass(comp), offset, strict=True))
        if len(levels) == 2 and adjacent(levels[0], levels[1]):
            disc = f"{SPINE_LEVELS[levels[0]]}-{SPINE_LEVELS[levels[1]]}"
            label = labels.label_of(disc) if disc in labels.DISC_NAMES else None
            if label is not None:
                out[grown][comp] = label
            rows.append(_row(e, "named" if label is not None else "dropped", label, voxels, disc))
            continue
        touches = ", ".join(SPINE_LEVELS[j] for j in levels) or "no vertebra"
        why = "only" if len(levels) == 1 else ("non-adjacent" if len(levels) == 2 else "")
        rows.append(
            _row(
                e,
                "flagged",
                None,
                voxels,
                f"disc component at voxel {centre} touches {why + ' ' if why else ''}{touches}: not named",
            )
        )
    return rows
