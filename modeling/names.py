"""Variable names in words a clinician reads, with units: ``xray__C5-C6__disc_height_middle_mm`` ->
"disc height C5-C6 (radiograph), mm"; ``mri__C5-C6__original_shape_MeshVolume`` -> "volume of disc C5-C6 (MRI), mm³";
``xray__C5-C6__disc_height_middle_mm__age_z`` -> "disc height C5-C6 (radiograph), SD from the age norm";
``xray__worst__disc_height_middle_mm`` -> "disc height, worst level (radiograph), mm";
``mri__discs_mean__degeneration_score__age_z`` -> "disc degeneration score, mean over the discs (MRI), SD from the
age norm".

Clinical measurements take their words and units from :mod:`cdeg.measures` (the one definition); PyRadiomics
names from the small tables below; clinical-table columns from :data:`CLINICAL`; anything else is shown with
underscores turned into spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdeg.modeling.data import SEP, feature_set_of
from cdeg.modeling.preprocess import AGE_Z_SUFFIX, DEGENERATION_SCORE, ONE_HOT_SEP

from cdeg import labels, measures
from cdeg.cohort import MODALITY_WORDS

MODALITY_LABELS: dict[str, str] = MODALITY_WORDS

#: PyRadiomics shape features: words and unit (3D shapes in mm, 2D shapes of radiographs in mm / mm²).
RADIOMICS_SHAPE: dict[str, tuple[str, str]] = {
    "MeshVolume": ("volume", "mm³"),
    "VoxelVolume": ("voxel volume", "mm³"),
    "SurfaceArea": ("surface area", "mm²"),
    "SurfaceVolumeRatio": ("surface/volume ratio", "1/mm"),
    "Sphericity": ("sphericity", ""),
    "Maximum3DDiameter": ("largest diameter", "mm"),
    "Maximum2DDiameterSlice": ("largest in-slice diameter", "mm"),
    "Maximum2DDiameterRow": ("largest diameter (row plane)", "mm"),
    "Maximum2DDiameterColumn": ("largest diameter (column plane)", "mm"),
    "MajorAxisLength": ("major axis length", "mm"),
    "MinorAxisLength": ("minor axis length", "mm"),
    "LeastAxisLength": ("least axis length", "mm"),
    "Elongation": ("elongation", ""),
    "Flatness": ("flatness", ""),
    "MeshSurface": ("area", "mm²"),
    "PixelSurface": ("area", "mm²"),
    "Perimeter": ("perimeter", "mm"),
    "PerimeterSurfaceRatio": ("perimeter/area ratio", "1/mm"),
    "MaximumDiameter": ("largest diameter", "mm"),
    "SphericalDisproportion": ("spherical disproportion", ""),
}
#: PyRadiomics first-order (intensity) features; image intensities have arbitrary units (a.u.).
RADIOMICS_FIRSTORDER: dict[str, str] = {
    "Mean": "mean signal",
    "Median": "median signal",
    "Minimum": "minimum signal",
    "Maximum": "maximum signal",
    "10Percentile": "10th percentile of signal",
    "90Percentile": "90th percentile of signal",
    "InterquartileRange": "signal interquartile range",
    "Range": "signal range",
    "MeanAbsoluteDeviation": "signal mean absolute deviation",
    "RobustMeanAbsoluteDeviation": "signal robust mean absolute deviation",
    "RootMeanSquared": "root mean square signal",
    "StandardDeviation": "signal standard deviation",
    "Variance": "signal variance",
    "Skewness": "signal skewness",
    "Kurtosis": "signal kurtosis",
    "Entropy": "signal entropy",
    "Uniformity": "signal uniformity",
    "Energy": "signal energy",
    "TotalEnergy": "total signal energy",
}
_UNITLESS_FIRSTORDER = {"Skewness", "Kurtosis", "Entropy", "Uniformity"}
RADIOMICS_TEXTURE: dict[str, str] = {
    "glcm": "GLCM",
    "glrlm": "GLRLM",
    "glszm": "GLSZM",
    "gldm": "GLDM",
    "ngtdm": "NGTDM",
}

#: Clinical-table columns: words and unit (names as `cdeg synth` writes them and common variants).
CLINICAL: dict[str, tuple[str, str]] = {
    "age": ("age", "years"),
    "age_years": ("age", "years"),
    "sex": ("sex", ""),
    "male": ("male sex", ""),
    "bmi": ("BMI", "kg/m²"),
    "smoking": ("smoking", ""),
    "symptom_duration_months": ("symptom duration", "months"),
    "symptom_duration": ("symptom duration", "months"),
    "index_level": ("index level", ""),
    "arm": ("treatment arm", ""),
    "ndi_baseline": ("NDI before surgery", "0-100"),
    "ndi_0": ("NDI before surgery", "0-100"),
    "ndi": ("NDI", "0-100"),
    "vas_arm_baseline": ("arm pain VAS before surgery", "mm"),
    "vas_neck_baseline": ("neck pain VAS before surgery", "mm"),
    "vas_arm_0": ("arm pain VAS before surgery", "mm"),
    "vas_neck_0": ("neck pain VAS before surgery", "mm"),
    "modic": ("Modic change", ""),
}
#: Words of the level summaries (:data:`cdeg.modeling.preprocess.AGGREGATES`), which stand where the level is.
AGGREGATE_WORDS: dict[str, str] = {
    "mean": "mean over levels",
    "worst": "worst level",
    "index": "at the index level",
    "above_index": "level above the index",
    "below_index": "level below the index",
    "discs_mean": "mean over the discs",
    "vertebrae_mean": "mean over the vertebrae",
}
#: Unit of an age-adjusted measurement (``__age_z``).
AGE_Z_UNIT = "SD from the age norm"
_SUFFIX_UNITS = {"_mm": "mm", "_deg": "deg", "_months": "months", "_years": "years", "_kg": "kg", "_pct": "%"}


@dataclass(frozen=True)
class Described:
    """A variable in words: `text` (no unit), `unit` ("" if none) and `label` = "text, unit"."""

    text: str
    unit: str

    @property
    def label(self) -> str:
        return f"{self.text}, {self.unit}" if self.unit else self.text


def describe(name: str) -> Described:
    """Words and unit of a variable name (features file, clinical table, or one-hot ``col=level``)."""
    if ONE_HOT_SEP in name and SEP not in name:
        base, level = name.rsplit(ONE_HOT_SEP, 1)
        return Described(f"{describe(base).text}: {level}", "")
    if SEP in name:
        modality = feature_set_of(name)
        parts = name.split(SEP)
        if modality != "other" and len(parts) >= 3:
            return _describe_image(MODALITY_LABELS[modality], parts[1], SEP.join(parts[2:]))
        if modality != "other" and len(parts) == 2:
            return _describe_image(MODALITY_LABELS[modality], "", parts[1])
    if name.lower() in CLINICAL:
        text, unit = CLINICAL[name.lower()]
        return Described(text, unit)
    return _fallback(name)


def _fallback(name: str) -> Described:
    base, unit = name, ""
    for suffix, u in _SUFFIX_UNITS.items():
        if name.lower().endswith(suffix):
            base, unit = name[: -len(suffix)], u
            break
    return Described(base.replace(SEP, " ").replace("_", " ").strip(), unit)


def _where(level: str) -> str:
    if not level:
        return ""
    if level in AGGREGATE_WORDS:
        return AGGREGATE_WORDS[level]
    try:
        s = labels.structure(level)
    except KeyError:
        return level
    return f"{'disc' if s.kind == 'disc' else 'vertebra'} {s.name}"


def _describe_image(modality: str, level: str, feature: str) -> Described:
    if feature == DEGENERATION_SCORE + AGE_Z_SUFFIX:
        where = f", {AGGREGATE_WORDS[level]}" if level in AGGREGATE_WORDS else ""
        return Described(f"disc degeneration score{where} ({modality})", AGE_Z_UNIT)
    if feature.endswith(AGE_Z_SUFFIX) and feature.removesuffix(AGE_Z_SUFFIX) in measures.DESCRIPTIONS:
        plain = _describe_image(modality, level, feature.removesuffix(AGE_Z_SUFFIX))
        return Described(plain.text, AGE_Z_UNIT)
    if level in AGGREGATE_WORDS and feature in measures.DESCRIPTIONS:
        unit = measures.UNITS.get(feature, "")
        text = f"{measures.DESCRIPTIONS[feature]}, {AGGREGATE_WORDS[level]} ({modality})"
        return Described(text, "" if unit == "ratio" else unit)
    if feature in measures.DESCRIPTIONS:
        unit = measures.UNITS.get(feature, "")
        words = measures.DESCRIPTIONS[feature]
        text = words if level in words else " ".join(x for x in (words, level) if x)  # "C2-C7 Cobb angle"
        return Described(f"{text} ({modality})", "" if unit == "ratio" else unit)
    text, unit = _radiomics(feature)
    where = _where(level)
    joiner = ", " if level in AGGREGATE_WORDS else " of "  # "..., mean over the discs" / "... of disc C5-C6"
    return Described(f"{text}{joiner + where if where else ''} ({modality})", unit)


def _radiomics(feature: str) -> tuple[str, str]:
    m = re.match(
        r"^(?P<image>[A-Za-z0-9\-.]+?)_(?P<cls>shape2D|shape|firstorder|glcm|glrlm|glszm|gldm|ngtdm)_(?P<name>\w+)$",
        feature,
    )
    if not m:
        return _fallback(feature).text, _fallback(feature).unit
    image, cls, name = m["image"], m["cls"], m["name"]
    suffix = "" if image == "original" else f" [{image.replace('-', ' ')}]"
    if cls.startswith("shape"):
        text, unit = RADIOMICS_SHAPE.get(name, (_split_camel(name), ""))
        if cls == "shape2D" and unit == "mm³":
            unit = "mm²"
        return text + suffix, unit
    if cls == "firstorder":
        text = RADIOMICS_FIRSTORDER.get(name, "signal " + _split_camel(name))
        return text + suffix, "" if name in _UNITLESS_FIRSTORDER else "a.u."
    return f"texture ({RADIOMICS_TEXTURE[cls]} {_split_camel(name)}){suffix}", ""


def _split_camel(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
