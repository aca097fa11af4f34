"""PyRadiomics per structure (cdeg.features.radiomics_features): shipped parameters, known shapes, equality
with PyRadiomics' own per-label loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from cdeg.features.radiomics_features import StructureExtractor, as_volume, naive_features, validate_params

from cdeg.config import ConfigError, shipped_config

SHIPPED = ("radiomics_mri.yaml", "radiomics_xray.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_parameter_files_pass_pyradiomics_schema(name):
    params = validate_params(shipped_config(name))
    assert params["setting"]["normalize"] is True
    assert "binWidth" in params["setting"]


def test_invalid_parameter_file_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -3\nfeatureClass:\n  nosuchclass:\n")
    with pytest.raises(ConfigError, match="not a valid PyRadiomics parameter file"):
        validate_params(bad)


def _params(tmp_path, text: str):
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_box_shape_features_3d(tmp_path):
    # A 12 x 20 x 4 voxel box (x, y, z) of 0.5 x 0.5 x 3 mm: 6 x 10 x 12 mm.
    arr = np.zeros((8, 30, 24), np.uint8)
    arr[2:6, 5:25, 6:18] = 7
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, arr.shape).astype(np.float32))
    img.SetSpacing((0.5, 0.5, 3.0))
    p = _params(tmp_path, "featureClass:\n  shape:\nsetting:\n  additionalInfo: false\n")
    vals, errors = StructureExtractor(p).features(img, arr, [7])
    assert errors == []
    f = vals[7]
    assert f["original_shape_VoxelVolume"] == pytest.approx(6 * 10 * 12)
    assert f["original_shape_MeshVolume"] == pytest.approx(720, rel=0.03)
    assert f["original_shape_Maximum3DDiameter"] == pytest.approx(math.sqrt(6**2 + 10**2 + 12**2), rel=0.03)
    assert f["original_shape_Maximum2DDiameterSlice"] == pytest.approx(math.hypot(6, 10), rel=0.03)


def test_box_shape_features_2d(tmp_path):
    arr = np.zeros((40, 50), np.uint8)
    arr[10:30, 5:45] = 3  # 20 x 40 pixels of 0.3 mm: 6 x 12 mm
    img = sitk.GetImageFromArray(np.random.default_rng(1).normal(0, 1, arr.shape).astype(np.float32))
    img.SetSpacing((0.3, 0.3))
    vol = as_volume(img)
    p = _params(tmp_path, "featureClass:\n  shape2D:\nsetting:\n  force2D: true\n  force2Ddimension: 0\n")
    vals, _ = StructureExtractor(p).features(vol, arr[None], [3])
    f = vals[3]
    assert f["original_shape2D_PixelSurface"] == pytest.approx(6 * 12)
    assert f["original_shape2D_Perimeter"] == pytest.approx(2 * (6 + 12), rel=0.03)
    assert f["original_shape2D_MaximumDiameter"] == pytest.approx(math.hypot(6, 12), rel=0.03)


@pytest.mark.parametrize("name", SHIPPED)
def test_cropped_extraction_matches_pyradiomics_loop(name):
    """Same features as execute(image, mask, label=L) on the whole image, for every structure."""
    rng = np.random.default_rng(3)
    if name.startswith("mri"):
        shape, spacing = (5, 70, 60), (0.7, 0.7, 3.0)
    else:
        shape, spacing = (90, 80), (0.35, 0.35)
    mask = np.zeros(shape, np.uint8)
    sl = (slice(1, 4),) if len(shape) == 3 else ()
    mask[(*sl, slice(10, 30), slice(10, 40))] = 4
    mask[(*sl, slice(32, 40), slice(12, 42))] = 104
    mask[(*sl, slice(42, 62), slice(8, 44))] = 5
    from scipy import ndimage

    arr = ndimage.gaussian_filter(rng.normal(300, 60, shape), 1).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    m = sitk.GetImageFromArray(mask)
    m.CopyInformation(img)
    params = shipped_config(name)
    ours, errors = StructureExtractor(params).features(
        as_volume(img), sitk.GetArrayFromImage(as_volume(m)), [4, 104, 5]
    )
    ref = naive_features(img, m, [4, 104, 5], params)
    assert errors == []
    for label in (4, 104, 5):
        assert list(ours[label]) == list(ref[label])
        a, b = np.array(list(ours[label].values())), np.array(list(ref[label].values()))
        assert np.allclose(a, b, rtol=1e-4, atol=1e-6), label
