"""Value lists shared by the stages, their command lines and the study configuration, defined once.

Modalities and cohort profiles belong to the cohort layout (:data:`cdeg.cohort.MODALITIES`,
:data:`cdeg.cohort.PROFILES`); the lists here are the options of the stages. This module imports nothing
heavy, so a command line can build its choices without loading torch or PyRadiomics.
"""

from __future__ import annotations

from cdeg.cohort import MODALITIES, PROFILES

#: Where segmentation runs: "auto" takes CUDA when present.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: The device kinds "auto" resolves to; segmentation presets are given per kind.
DEVICE_KINDS: tuple[str, ...] = tuple(d for d in DEVICES if d != "auto")
#: Segmentation training presets (configs/segment.yaml).
SEGMENT_PRESETS: tuple[str, ...] = ("full", "fast", "smoke")
#: nnU-Net folds: "all" trains on every case; 0-4 hold out a fifth.
FOLDS: tuple[str, ...] = ("all", "0", "1", "2", "3", "4")
#: Cohort profiles the generator draws; "external" describes an imported cohort, never a synthetic one.
SYNTH_PROFILES: tuple[str, ...] = tuple(p for p in PROFILES if p != "external")
#: Model updates of `cdeg validate --recalibrate` (:mod:`cdeg.modeling.recalibration`); "none" applies the
#: model unchanged.
RECALIBRATION_METHODS: tuple[str, ...] = ("none", "intercept", "logistic")
#: Modalities by name, in cohort order.
MODALITY_NAMES: tuple[str, ...] = tuple(MODALITIES)

__all__ = [
    "DEVICES",
    "DEVICE_KINDS",
    "FOLDS",
    "MODALITY_NAMES",
    "PROFILES",
    "RECALIBRATION_METHODS",
    "SEGMENT_PRESETS",
    "SYNTH_PROFILES",
]
