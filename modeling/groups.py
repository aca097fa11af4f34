"""Variables grouped the way a surgeon reads a spine: by level (which structure) and by kind of finding.

A model may use hundreds of image features; a surgeon asks "which level, and what about it". Every model
variable belongs to one :class:`Group` (`level`, `concept`). SHAP values are additive, so a group's
contribution for a patient is the sum of its members' SHAP values (:mod:`cdeg.modeling.explain`
``grouped_shap``).

Levels
------
============================================  =============================================================
variable                                       level
============================================  =============================================================
``<modality>__C5-C6__<feature>``              "disc C5-C6" (a disc of :mod:`cdeg.labels`)
``<modality>__C5__<feature>``                 "vertebra C5"
``<modality>__C2-C7__cobb_c2c7_deg``          "whole spine" (any level that is not one structure)
``<modality>__mean__<feature>``               "mean over discs" / "mean over vertebrae" / "mean over levels"
``<modality>__worst__<feature>``              "worst disc" / "worst vertebra" / "worst level"
``<modality>__index__<feature>``              "index level"
``<modality>__above_index__<feature>``        "level above the index"
``<modality>__below_index__<feature>``        "level below the index"
clinical-table column, one-hot ``col=level``  "clinical"
============================================  =============================================================

An aggregate's structure kind (disc or vertebra) comes from its measurement (``disc_*`` or ``body_*``);
PyRadiomics aggregates say "level".

Concepts
--------
==============  ===========================================================================================
concept         members
==============  ===========================================================================================
height          disc and vertebral body heights, disc height index, body depth; PyRadiomics size features
                (volume, surface area, diameters, axis lengths, area, perimeter)
signal          disc/CSF T2 signal ratio; PyRadiomics first-order (intensity) features
shape           angles (disc, segmental, wedge, C2-C7 Cobb); the other PyRadiomics shape features
                (sphericity, elongation, flatness, surface/volume ratio, ...)
texture         PyRadiomics GLCM, GLRLM, GLSZM, GLDM, NGTDM features
age-adjusted    any ``..__age_z`` column (a measurement standardised against an age norm)
clinical        clinical-table columns (a one-hot ``col=level`` belongs to its source column ``col``)
other           an image feature none of the above knows (a new extractor's output)
==============  ===========================================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdeg.modeling.data import SEP, feature_set_of
from cdeg.modeling.preprocess import DEGENERATION_SCORE, ONE_HOT_SEP

from cdeg import labels, measures

#: The concept vocabulary, in the order plots list them.
CONCEPTS: tuple[str, ...] = ("height", "signal", "shape", "texture", "age-adjusted", "clinical", "other")
CLINICAL = "clinical"
WHOLE_SPINE = "whole spine"
#: Suffix of a measurement standardised against an age norm.
AGE_Z = "age_z"

#: Concept of each clinical measurement of :mod:`cdeg.measures` (a test checks that every one is here).
MEASURE_CONCEPTS: dict[str, str] = {
    "disc_height_anterior_mm": "height",
    "disc_height_middle_mm": "height",
    "disc_height_posterior_mm": "height",
    "disc_height_index": "height",
    "body_height_anterior_mm": "height",
    "body_height_middle_mm": "height",
    "body_height_posterior_mm": "height",
    "body_depth_mm": "height",
    "disc_angle_deg": "shape",
    "segmental_angle_deg": "shape",
    "body_wedge_deg": "shape",
    "cobb_c2c7_deg": "shape",
    "disc_csf_signal_ratio": "signal",
}
# Chord heights (corner points) are heights too.
MEASURE_CONCEPTS.update({chord: MEASURE_CONCEPTS[f] for f, chord in measures.CHORD_FEATURES.items()})
#: PyRadiomics shape features that measure size (grouped with heights); other shape features are "shape".
SIZE_FEATURES: frozenset[str] = frozenset(
    {
        "MeshVolume",
        "VoxelVolume",
        "SurfaceArea",
        "Maximum3DDiameter",
        "Maximum2DDiameterSlice",
        "Maximum2DDiameterRow",
        "Maximum2DDiameterColumn",
        "MajorAxisLength",
        "MinorAxisLength",
        "LeastAxisLength",
        "MeshSurface",
        "PixelSurface",
        "Perimeter",
        "MaximumDiameter",
    }
)
_RADIOMICS_CLASS_CONCEPTS: dict[str, str] = {
    "firstorder": "signal",
    "glcm": "texture",
    "glrlm": "texture",
    "glszm": "texture",
    "gldm": "texture",
    "ngtdm": "texture",
}
_RADIOMICS = re.compile(
    r"^[A-Za-z0-9\-.]+?_(?P<cls>shape2D|shape|firstorder|glcm|glrlm|glszm|gldm|ngtdm)_(?P<name>\w+)$"
)
#: Level aggregates: words, with ``{kind}`` filled in from the measurement ("disc", "vertebra" or "level").
AGGREGATES: dict[str, str] = {
    "mean": "mean over {kinds}",
    "worst": "worst {kind}",
    "index": "index level",
    "above_index": "level above the index",
    "below_index": "level below the index",
    "discs_mean": "mean over discs",
    "vertebrae_mean": "mean over vertebrae",
}
_PLURAL = {"disc": "discs", "vertebra": "vertebrae", "level": "levels"}


@dataclass(frozen=True)
class Group:
    """Where a variable is (`level`, in words) and what kind of finding it is (`concept`, :data:`CONCEPTS`)."""

    level: str
    concept: str

    def key(self, by: str) -> str:
        """The group's name when grouping `by` "level", "concept" or "level_concept"."""
        if by == "level":
            return self.level
        if by == "concept":
            return self.concept
        if by == "level_concept":
            return self.level if self.level == self.concept else f"{self.level}: {self.concept}"
        raise ValueError(f"unknown grouping {by!r}; valid: level, concept, level_concept")


def group_of(name: str) -> Group:
    """The :class:`Group` of a model variable (features-file column, clinical column or one-hot ``col=level``)."""
    parts = name.split(SEP)
    if len(parts) < 3 or feature_set_of(name) == "other" or (ONE_HOT_SEP in name and SEP not in name):
        return Group(CLINICAL, CLINICAL)
    level, feature = parts[1], SEP.join(parts[2:])
    age_adjusted = feature.endswith(SEP + AGE_Z)
    if age_adjusted:
        feature = feature[: -len(SEP + AGE_Z)]
    concept = "age-adjusted" if age_adjusted else concept_of(feature)
    return Group(_level_words(level, feature), concept)


def concept_of(feature: str) -> str:
    """Concept of an image feature name (the part after ``<modality>__<level>__``, without ``__age_z``)."""
    if feature in MEASURE_CONCEPTS:
        return MEASURE_CONCEPTS[feature]
    m = _RADIOMICS.match(feature)
    if m is None:
        return "other"
    if m["cls"].startswith("shape"):
        return "height" if m["name"] in SIZE_FEATURES else "shape"
    return _RADIOMICS_CLASS_CONCEPTS[m["cls"]]


def base_variable(name: str) -> str:
    """The variable a column stands for: the source column of a one-hot ``col=level``, else `name`."""
    if ONE_HOT_SEP in name and SEP not in name:
        return name.rsplit(ONE_HOT_SEP, 1)[0]
    return name


def without_age_z(name: str) -> str:
    """The measurement an ``..__age_z`` column standardises (`name` itself otherwise)."""
    suffix = SEP + AGE_Z
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _level_words(level: str, feature: str) -> str:
    if level in AGGREGATES:
        kind = _kind_of(feature)
        return AGGREGATES[level].format(kind=kind, kinds=_PLURAL[kind])
    try:
        s = labels.structure(level)
    except KeyError:
        return WHOLE_SPINE  # a span of levels (C2-C7 Cobb angle)
    return f"{'disc' if s.kind == 'disc' else 'vertebra'} {s.name}"


def _kind_of(feature: str) -> str:
    if feature == DEGENERATION_SCORE:
        return "disc"
    if feature in measures.UNITS and feature.startswith("disc_"):
        return "disc"
    if feature in measures.UNITS and feature.startswith("body_"):
        return "vertebra"
    return "level"
