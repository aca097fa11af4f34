"""The label convention: the one place that knows label numbers, level names and their order.

cdeg uses the convention of the VerSe challenge data and SPINEPS, the same for MRI and radiographs:

* vertebrae C2..C7 are labels 2..7 and T1 is label 8 (C2 includes the dens; a vertebra label covers
  the body, the posterior elements and any osteophytes);
* each intervertebral disc is 100 + the label of the vertebra above it: C2-C3 = 102 ... C7-T1 = 107;
* background is 0;
* :data:`IGNORE` (255) marks pixels nobody annotated (masks drawn from corner points leave the posterior
  elements unannotated): training ignores them, evaluation leaves them out, and nothing treats them as a
  structure.

Every other module asks this one for numbers, names, order and neighbours; none hard-codes them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

CONVENTION_NAME = "verse-spineps"
BACKGROUND = 0
DISC_OFFSET = 100
#: "Not annotated": neither a structure nor background. nnU-Net's ignore label (training computes no loss
#: on these pixels); the largest uint8 value, far from every structure label.
IGNORE = 255

StructureKind = Literal["vertebra", "disc"]


@dataclass(frozen=True)
class Structure:
    """One labelled structure of the cervical spine.

    Parameters
    ----------
    label : int
        Voxel value in a mask.
    name : str
        Level name as clinicians write it ("C5" or "C5-C6").
    kind : {"vertebra", "disc"}
        What the structure is.
    order : int
        Cranio-caudal position, 0 = most cranial (C2); vertebrae and discs interleave.
    """

    label: int
    name: str
    kind: StructureKind
    order: int


VERTEBRA_NAMES: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6", "C7", "T1")
VERTEBRA_LABELS: tuple[int, ...] = tuple(range(2, 2 + len(VERTEBRA_NAMES)))
DISC_NAMES: tuple[str, ...] = tuple(f"{a}-{b}" for a, b in itertools.pairwise(VERTEBRA_NAMES))
DISC_LABELS: tuple[int, ...] = tuple(DISC_OFFSET + v for v in VERTEBRA_LABELS[:-1])


def _build() -> tuple[Structure, ...]:
    out: list[Structure] = []
    for i, (label, name) in enumerate(zip(VERTEBRA_LABELS, VERTEBRA_NAMES, strict=True)):
        out.append(Structure(label, name, "vertebra", 2 * i))
        if i < len(DISC_LABELS):
            out.append(Structure(DISC_LABELS[i], DISC_NAMES[i], "disc", 2 * i + 1))
    return tuple(out)


#: All structures, cranio-caudal order (C2, C2-C3, C3, ..., C7-T1, T1).
STRUCTURES: tuple[Structure, ...] = _build()
_BY_LABEL = {s.label: s for s in STRUCTURES}
_BY_NAME = {s.name: s for s in STRUCTURES}
ALL_LABELS: tuple[int, ...] = tuple(s.label for s in STRUCTURES)


def structure(key: int | str) -> Structure:
    """Return the structure for a label value or a level name.

    Raises
    ------
    KeyError
        With the list of valid labels/names, when `key` is not part of the convention.
    """
    try:
        return _BY_LABEL[int(key)] if _is_int(key) else _BY_NAME[str(key)]
    except KeyError:
        raise KeyError(
            f"{key!r} is not in the {CONVENTION_NAME} label convention; valid labels: "
            f"{', '.join(f'{s.label}={s.name}' for s in STRUCTURES)}"
        ) from None


def _is_int(key: object) -> bool:
    if isinstance(key, bool):
        return False
    if isinstance(key, int):
        return True
    try:  # numpy integers
        import numpy as np

        return isinstance(key, np.integer)
    except ImportError:  # pragma: no cover
        return False


def name_of(label: int) -> str:
    """Level name of a label value (``105 -> "C5-C6"``)."""
    return structure(label).name


def label_of(name: str) -> int:
    """Label value of a level name (``"C5-C6" -> 105``)."""
    return structure(name).label


def is_disc(label: int) -> bool:
    """True for disc labels (102..107)."""
    return label in DISC_LABELS


def is_vertebra(label: int) -> bool:
    """True for vertebra labels (2..8)."""
    return label in VERTEBRA_LABELS


def disc_between(upper: int | str, lower: int | str) -> int:
    """Label of the disc between two adjacent vertebrae (``disc_between("C5", "C6") -> 105``)."""
    u, lo = structure(upper), structure(lower)
    if u.kind != "vertebra" or lo.kind != "vertebra" or lo.order != u.order + 2:
        raise ValueError(f"{u.name} and {lo.name} are not adjacent vertebrae")
    return DISC_OFFSET + u.label


def vertebrae_of_disc(disc: int | str) -> tuple[int, int]:
    """Labels of the vertebrae above and below a disc (``105 -> (5, 6)``)."""
    d = structure(disc)
    if d.kind != "disc":
        raise ValueError(f"{d.name} is not a disc")
    upper = d.label - DISC_OFFSET
    return upper, upper + 1


def neighbours(key: int | str) -> tuple[int | None, int | None]:
    """Labels of the structures directly above and below (None at the ends of the convention)."""
    s = structure(key)
    above = STRUCTURES[s.order - 1].label if s.order > 0 else None
    below = STRUCTURES[s.order + 1].label if s.order + 1 < len(STRUCTURES) else None
    return above, below


def sort_labels(labels: Iterable[int]) -> list[int]:
    """Labels sorted cranio-caudally; labels outside the convention raise KeyError."""
    return sorted({int(v) for v in labels}, key=lambda v: structure(v).order)


def invalid_labels(labels: Iterable[int]) -> list[int]:
    """The values in `labels` that are neither background, :data:`IGNORE` nor part of the convention."""
    return sorted({int(v) for v in labels} - set(ALL_LABELS) - {BACKGROUND, IGNORE})


#: One display colour per structure (RGB, 0-255), cranio-caudal: matplotlib's "tab20" palette in order, so
#: vertebrae take its saturated (even) entries and discs the light (odd) entry of the vertebra above; every
#: neighbour pair differs. The QC overlays, the Slicer colour table, the ITK-SNAP label file and the
#: segments of a .seg.nrrd all read this table.
COLOURS: dict[int, tuple[int, int, int]] = dict(
    zip(
        ALL_LABELS,
        (
            (31, 119, 180),
            (174, 199, 232),
            (255, 127, 14),
            (255, 187, 120),
            (44, 160, 44),
            (152, 223, 138),
            (214, 39, 40),
            (255, 152, 150),
            (148, 103, 189),
            (197, 176, 213),
            (140, 86, 75),
            (196, 156, 148),
            (227, 119, 194),
        ),
        strict=True,
    )
)


def colour(key: int | str) -> tuple[int, int, int]:
    """Display colour (RGB, 0-255) of a structure, by label value or level name."""
    return COLOURS[structure(key).label]


_NAME_SEPARATORS = re.compile(r"\s*[-_/\s\u2013]\s*")


def find_name(text: str) -> Structure | None:
    """The structure a level name typed by a person means, or None.

    Case and the separator between the two levels of a disc do not matter: "c5", "C5 - C6", "c5_c6" and
    "C5/C6" are found; anything else (another level, "Segment_1") is None.
    """
    key = _NAME_SEPARATORS.sub("-", str(text).strip()).upper()
    return _BY_NAME.get(key)


def lookup_table() -> list[dict[str, object]]:
    """The convention as rows (label, name, kind, order), for docs, reports and `cdeg labels`."""
    return [{"label": s.label, "name": s.name, "kind": s.kind, "order": s.order} for s in STRUCTURES]
