"""Mapping between the cdeg label convention and nnU-Net's consecutive training labels.

nnU-Net needs labels 0..K-1 without gaps; the convention (:mod:`cdeg.labels`) uses 2..8 for vertebrae
and 102..107 for discs. Training label k is the k-th structure in cranio-caudal order (C2 = 1,
C2-C3 = 2, C3 = 3, ... T1 = 13), so neighbouring training labels are neighbouring structures. The mapping
is written into every prepared dataset and model folder, and predictions are mapped back with the
mapping stored in the model, never with a recomputed one.

Pixels marked :data:`cdeg.labels.IGNORE` ("not annotated") become nnU-Net's ignore label, which "MUST be the
highest integer label value in the segmentation" and be named "ignore" in dataset.json
(MIC-DKFZ/nnUNet documentation/ignore_label.md, "Usage within nnU-Net"): training label K + 1 after the K
structures. nnU-Net computes no loss there and never predicts it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cdeg import labels


def training_labels() -> dict[int, int]:
    """Convention label -> consecutive training label (background stays 0)."""
    return {s.label: i + 1 for i, s in enumerate(labels.STRUCTURES)}


def ignore_training_label() -> int:
    """Training label of :data:`cdeg.labels.IGNORE`: one above the highest structure (nnU-Net's rule)."""
    return max(training_labels().values()) + 1


def dataset_json_labels(ignore: bool = False) -> dict[str, int]:
    """The ``labels`` entry of an nnU-Net dataset.json: level name -> training label.

    With `ignore` (the masks hold unannotated pixels), the last entry is ``"ignore"``, nnU-Net's name for it.
    """
    out = {"background": 0}
    out.update({labels.name_of(conv): train for conv, train in training_labels().items()})
    if ignore:
        out["ignore"] = ignore_training_label()
    return out


def to_training(mask: np.ndarray, mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """Convention labels -> training labels (uint8). Unknown values raise ValueError listing them."""
    mapping = dict(mapping or training_labels())
    bad = labels.invalid_labels(np.unique(mask).tolist())
    if bad:
        raise ValueError(f"labels {bad} are not part of the {labels.CONVENTION_NAME} convention")
    lut = np.zeros(max(*labels.ALL_LABELS, labels.IGNORE) + 1, dtype=np.uint8)
    for conv, train in mapping.items():
        lut[int(conv)] = int(train)
    lut[labels.IGNORE] = ignore_training_label()
    return lut[mask.astype(np.int64, copy=False)]


def from_training(
    seg: np.ndarray, mapping: Mapping[int, int] | Mapping[str, int] | None = None
) -> np.ndarray:
    """Training labels -> convention labels (uint8); `mapping` is convention -> training (keys may be str)."""
    mapping = {int(k): int(v) for k, v in (mapping or training_labels()).items()}
    lut = np.zeros(max(mapping.values()) + 1, dtype=np.uint8)
    for conv, train in mapping.items():
        lut[train] = conv
    seg = seg.astype(np.int64, copy=False)
    if seg.size and (seg.min() < 0 or seg.max() >= lut.size):
        raise ValueError(f"training label {int(seg.max())} is outside the model's mapping")
    return lut[seg]
