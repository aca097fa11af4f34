"""PyRadiomics features per structure: one extractor per parameter file, each image read once.

The obvious way to get features for 13 structures is to call
``RadiomicsFeatureExtractor.execute(image, mask, label=L)`` 13 times. Each call then normalises the
whole image again and scans the whole mask for the label. Here the image is normalised once (exactly as
PyRadiomics would, on all its voxels, before any resampling), and each structure is cropped to its
bounding box with a margin before it is handed to PyRadiomics, with one extractor reused for all.

The crop keeps results equal to PyRadiomics' own: the margin covers ``padDistance`` plus the support of
the resampling interpolator, and the crop starts on a voxel where PyRadiomics' resampling grid (aligned
to the image origin) has a node, so the resampled voxels are the same ones.

Radiographs are passed as single-slice 3D volumes: the layout PyRadiomics documents for 2D extraction
(``force2D: true``, ``force2Ddimension: 0``, ``shape2D``). A native 2D image with ``force2D`` would
drop the in-plane angles of the texture matrices.

The 3D shape class is PyRadiomics' own with its mesh coefficients (surface area, volume, diameters) computed
by :mod:`cdeg.features.shape_mesh`: the same values, without PyRadiomics' comparison of every pair of mesh
vertices, which took a third of an MRI's extraction.

The parameter file is passed through unchanged: PyRadiomics validates it against its own schema and
applies it. Only ``label`` is set per structure (each crop is a binary mask with label 1).
"""

from __future__ import annotations

import collections
import copy
import functools
import logging
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from cdeg.config import ConfigError
from cdeg.io import file_sha256

log = logging.getLogger(__name__)


class _DropKnownNotice(logging.Filter):
    """PyRadiomics warns on every GLCM computation that SumAverage equals 2 x JointAverage; say it once, here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "GLCM is symmetrical" not in record.getMessage()


logging.getLogger("radiomics.glcm").addFilter(_DropKnownNotice())


#: How to install PyRadiomics (an extra: only `cdeg extract` needs it), named when it is missing.
INSTALL_HINT = (
    "on Python 3.11: pip install numpy && pip install --no-build-isolation pyradiomics==3.0.1 "
    "(what `make install` does; PyRadiomics 3.0.1 does not build on 3.12)"
)


def require_pyradiomics() -> Any:
    """The radiomics package, or a one-line ConfigError saying how to install it."""
    try:
        import radiomics
    except ImportError:
        raise ConfigError(
            f"PyRadiomics is not installed; `cdeg extract` needs it for the radiomics features ({INSTALL_HINT}). "
            "`cdeg extract --corners` and every other stage run without it"
        ) from None
    return radiomics


def _featureextractor() -> Any:
    """PyRadiomics' featureextractor module, with its logger brought back under the command line's control.

    Importing radiomics sets its logger to INFO (one line per structure and feature class), overriding the
    level the command line chose; it is put back to WARNING unless the user asked for debug output (-vv).
    """
    require_pyradiomics()
    from radiomics import featureextractor

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("radiomics").setLevel(logging.WARNING)
    return featureextractor


#: Voxels added to the crop margin beyond padDistance: the B-spline prefilter's influence decays by ~0.27
#: per voxel, so 10 voxels leave differences below 1e-5 of the signal.
INTERPOLATION_MARGIN = 10
DIAGNOSTICS_PREFIX = "diagnostics_"


def pyradiomics_version() -> str:
    return str(require_pyradiomics().__version__)


def params_sha256(params: Mapping[str, Any]) -> str:
    """Hash of a parameter set given as a mapping: the SHA-256 of its YAML text, keys in the given order.

    It equals the hash of the file ``yaml.safe_dump(params, sort_keys=False)`` writes, so results cached
    for a parameter file holding exactly that text stay valid.
    """
    import hashlib

    import yaml

    return hashlib.sha256(yaml.safe_dump(dict(params), sort_keys=False).encode("utf-8")).hexdigest()


def validate_params(params: str | Path | Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Validate PyRadiomics parameters against PyRadiomics' own schema and return them.

    Parameters
    ----------
    params : path or mapping
        A parameter file (YAML or JSON), or its contents as a mapping (e.g. written inline in a study file).
    where : str
        Dotted key the mapping was read from (``extract.radiomics``); prefixes the keys named in errors.

    Raises
    ------
    ConfigError
        Naming the file (or the dotted key) and PyRadiomics' complaint, when the file is missing, not
        YAML/JSON, or invalid.
    """
    require_pyradiomics()
    import pykwalify.core
    from radiomics import getParameterValidationFiles

    if isinstance(params, Mapping):
        source: dict[str, Any] = {"source_data": dict(params)}
        what, path = "set", None
    else:
        path = Path(params)
        if not path.is_file():
            raise ConfigError("PyRadiomics parameter file not found", path=path)
        source, what = {"source_file": str(path)}, "file"
    schema_file, schema_funcs = getParameterValidationFiles()
    # pykwalify logs its findings at ERROR before raising; the raised message carries them already.
    pk_log = logging.getLogger("pykwalify")
    level = pk_log.level
    pk_log.setLevel(logging.CRITICAL)
    core = None
    try:
        core = pykwalify.core.Core(schema_files=[schema_file], extensions=[schema_funcs], **source)
        return dict(core.validate(raise_exception=True) or {})
    except Exception as e:  # pykwalify raises its own error types, yaml errors, ValueError from schema funcs
        found = _schema_errors(core, where) if core is not None else []
        msg = "; ".join(found) if found else " ".join(str(getattr(e, "msg", e)).split())
        raise ConfigError(f"not a valid PyRadiomics parameter {what}: {msg[:400]}", path=path) from None
    finally:
        pk_log.setLevel(level)


def _schema_errors(core: Any, where: str) -> list[str]:
    """pykwalify's findings with their place as a dotted key (``extract.radiomics.setting.binWidht``)."""
    out = []
    for entry in getattr(core, "errors", None) or []:
        place = ".".join(p for p in [where, *str(getattr(entry, "path", "")).split("/")] if p)
        key = getattr(entry, "key", None)
        if key is not None and "was not defined" in str(getattr(entry, "msg", "")):
            out.append(f"unknown key {place + '.' if place else ''}{key}")
        else:
            out.append(f"{place or 'top level'}: {' '.join(repr(entry).split())}")
    return out


@functools.cache
def _extractor_class() -> type:
    """PyRadiomics' RadiomicsFeatureExtractor whose 3D shape class computes the mesh coefficients in
    :mod:`cdeg.features.shape_mesh` (same values, without comparing every pair of mesh vertices)."""
    base = _featureextractor().RadiomicsFeatureExtractor  # first: the one-line message where it is missing
    from cdeg.features.shape_mesh import mesh_shape_class
    from radiomics import imageoperations

    class Extractor(base):
        def computeShape(self, image, mask, boundingBox, **kwargs):
            enabled = self.enabledFeatures
            if "shape" not in enabled or mask.GetDimension() != 3:
                return super().computeShape(image, mask, boundingBox, **kwargs)
            # What RadiomicsFeatureExtractor.computeShape does for "shape" (the class on the cropped image,
            # the listed features or, for none listed, all), with the faster class; then shape2D, if enabled,
            # by PyRadiomics itself.
            cropped_image, cropped_mask = imageoperations.cropToTumorMask(image, mask, boundingBox)
            shape = mesh_shape_class()(cropped_image, cropped_mask, **kwargs)
            for name in enabled["shape"] or ():
                shape.enableFeatureByName(name)
            values = collections.OrderedDict((f"original_shape_{k}", v) for k, v in shape.execute().items())
            self.enabledFeatures = {k: v for k, v in enabled.items() if k != "shape"}
            try:
                values.update(super().computeShape(image, mask, boundingBox, **kwargs))
            finally:
                self.enabledFeatures = enabled
            return values

    return Extractor


class StructureExtractor:
    """PyRadiomics features for every structure of one image, from one parameter file.

    Parameters
    ----------
    params : path or mapping
        A PyRadiomics parameter file (YAML or JSON), or its contents as a mapping, applied as PyRadiomics
        applies it.
    """

    def __init__(self, params: str | Path | Mapping[str, Any]):
        if isinstance(params, Mapping):
            self.params: Path | dict[str, Any] = dict(params)
            self.sha256 = params_sha256(params)
            # PyRadiomics takes a parameter dict as it takes a file, and validates it the same way.
            self.extractor = _extractor_class()(copy.deepcopy(self.params))
        else:
            self.params = Path(params)
            self.sha256 = file_sha256(self.params)
            self.extractor = _extractor_class()(str(self.params))
        self.settings = dict(self.extractor.settings)
        # Normalisation uses all image voxels, so it is done once per image here, not per (cropped) structure.
        self.normalize = bool(self.settings.get("normalize", False))
        self.extractor.settings["normalize"] = False

    def _margin_and_step(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Crop margin (voxels) and crop-start multiple per numpy axis."""
        spacing = np.array(image.GetSpacing(), dtype=float)  # x, y, z
        pad = int(self.settings.get("padDistance", 5) or 0)
        resampled = self.settings.get("resampledPixelSpacing")
        interp = self.settings.get("interpolator")
        margin = np.full(len(spacing), pad + 2, dtype=int)
        step = np.ones(len(spacing), dtype=int)
        if resampled is not None and interp is not None and len(resampled) == len(spacing):
            target = np.where(
                np.array(resampled, dtype=float) == 0, spacing, np.array(resampled, dtype=float)
            )
            ratio = spacing / target
            margin = np.ceil(pad / np.maximum(ratio, 1e-6)).astype(int) + INTERPOLATION_MARGIN
            for i, r in enumerate(ratio):
                # Smallest q with q * ratio an integer: crops starting on multiples of q keep the grid.
                frac = Fraction(float(r)).limit_denominator(20)
                if abs(float(frac) - r) < 1e-6 * max(1.0, r):
                    step[i] = frac.denominator
        return margin[::-1], step[::-1]  # numpy axis order

    def features(
        self, image: Any, mask: np.ndarray, structures: list[int]
    ) -> tuple[dict[int, collections.OrderedDict], list[tuple[int, str]]]:
        """Features of each structure label in `mask` (numpy array on `image`'s grid).

        Returns
        -------
        values : dict
            label -> ordered {feature name: float}, in PyRadiomics' order (diagnostics left out).
        errors : list of (label, message)
            Structures PyRadiomics refused (for example a region too small for the settings).
        """
        if self.normalize:
            from radiomics import imageoperations

            image = imageoperations.normalizeImage(image, **self.settings)
        margin, step = self._margin_and_step(image)
        shape = np.array(mask.shape)
        out: dict[int, collections.OrderedDict] = {}
        errors: list[tuple[int, str]] = []
        for label in structures:
            hit = np.nonzero(mask == label)
            if not len(hit[0]):
                continue
            lo = np.array([h.min() for h in hit]) - margin
            hi = np.array([h.max() for h in hit]) + margin + 1
            lo = np.maximum(lo, 0)
            lo -= lo % step
            hi = np.minimum(hi, shape)
            sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            # SimpleITK slicing is in (x, y, z) order and keeps the physical position of the crop.
            crop = image[tuple(slice(int(a), int(b)) for a, b in zip(lo[::-1], hi[::-1], strict=True))]
            roi = sitk.GetImageFromArray((mask[sl] == label).astype(np.uint8))
            roi.CopyInformation(crop)
            try:
                result = self.extractor.execute(crop, roi, label=1)
            except (ValueError, RuntimeError, AssertionError, IndexError) as e:
                errors.append((label, f"PyRadiomics: {' '.join(str(e).split())[:300]}"))
                continue
            vals: collections.OrderedDict = collections.OrderedDict()
            for k, v in result.items():
                if k.startswith(DIAGNOSTICS_PREFIX):
                    continue
                try:
                    vals[k] = float(v)
                except (TypeError, ValueError):
                    continue
            out[label] = vals
        return out, errors


def as_volume(image: Any) -> Any:
    """A 2D image as a single-slice 3D volume (z spacing 1 mm); 3D images unchanged."""
    if image.GetDimension() == 3:
        return image
    vol = sitk.JoinSeries(image)
    d = np.array(image.GetDirection()).reshape(2, 2)
    direction = np.eye(3)
    direction[:2, :2] = d
    vol.SetDirection(tuple(direction.ravel()))
    return vol


def naive_features(
    image: Any, mask: Any, structures: list[int], params: str | Path
) -> dict[int, dict[str, float]]:
    """PyRadiomics' own loop, ``execute(image, mask, label=L)`` per structure: the reference for tests and benchmarks."""
    ext = _featureextractor().RadiomicsFeatureExtractor(str(params))
    image, mask = as_volume(image), as_volume(mask)
    out = {}
    for label in structures:
        r = ext.execute(image, mask, label=int(label))
        out[label] = {k: float(v) for k, v in r.items() if not k.startswith(DIAGNOSTICS_PREFIX)}
    return out
