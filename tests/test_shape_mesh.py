"""3D shape coefficients (cdeg.features.shape_mesh): the same values as PyRadiomics' C function, on random,
degenerate and segmented masks, and the same shape features through the extractor."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.radiomics
cShape = pytest.importorskip("radiomics").cShape

from cdeg.features.shape_mesh import mesh_coefficients, mesh_shape_class  # noqa: E402


def _assert_same(mask: np.ndarray, spacing) -> None:
    spacing = np.asarray(spacing, dtype=float)
    area, volume, diameters = cShape.calculate_coefficients(mask, spacing)
    ours = mesh_coefficients(mask, spacing)
    assert ours[0] == pytest.approx(area, rel=1e-11, abs=1e-12)
    assert ours[1] == pytest.approx(volume, rel=1e-11, abs=1e-12)
    assert ours[2] == tuple(diameters)  # the same pair of vertices, the same arithmetic: identical


def test_random_masks_match_pyradiomics():
    rng = np.random.default_rng(7)
    for _ in range(40):
        inner = rng.integers(2, 14, 3)
        mask = np.pad(rng.random(inner) < rng.uniform(0.15, 0.95), 1)
        _assert_same(mask, rng.uniform(0.3, 3.5, 3))


@pytest.mark.parametrize(
    "inner",
    [(1, 1, 1), (1, 7, 1), (1, 1, 9), (1, 4, 6), (5, 1, 6), (3, 4, 6), (2, 2, 2)],
    ids=["voxel", "line-y", "line-x", "plane", "plane-y", "box", "cube"],
)
def test_degenerate_masks_match_pyradiomics(inner):
    _assert_same(np.pad(np.ones(inner, dtype=bool), 1), (3.06, 0.5, 0.5))


def test_diagonal_and_hollow_masks_match_pyradiomics():
    diagonal = np.zeros((30, 30, 30), dtype=bool)
    idx = np.arange(1, 29)
    diagonal[idx, idx, idx] = True  # vertices on few lines: Qhull's degenerate cases
    _assert_same(diagonal, (1.0, 1.0, 1.0))
    z, y, x = np.mgrid[-12:13, -12:13, -12:13]
    shell = np.pad((x**2 + y**2 + z**2 <= 121) & (x**2 + y**2 + z**2 >= 64), 1)
    _assert_same(shell, (0.7, 0.5, 0.5))


def test_vertebra_sized_mask_matches_pyradiomics():
    """A body-sized blob at the MRI's resampled spacing: thousands of vertices, where the hull does the work."""
    z, y, x = np.mgrid[0:12, 0:70, 0:60]
    body = ((y - 35) / 30.0) ** 2 + ((x - 30) / 24.0) ** 2 + ((z - 6) / 5.5) ** 2 <= 1
    body &= ~((y > 50) & (x > 40))  # a notch: not convex
    _assert_same(np.pad(body, 1), (3.06, 0.5, 0.5))


def test_extractor_shape_features_equal_pyradiomics():
    """Through PyRadiomics' RadiomicsShape and the subclass: every shape feature, same value."""
    import SimpleITK as sitk
    from radiomics.shape import RadiomicsShape

    rng = np.random.default_rng(3)
    arr = np.zeros((6, 40, 36), np.uint8)
    z, y, x = np.mgrid[0:6, 0:40, 0:36]
    arr[((y - 20) / 15.0) ** 2 + ((x - 18) / 12.0) ** 2 + ((z - 2.5) / 2.6) ** 2 <= 1] = 1
    img = sitk.GetImageFromArray(rng.normal(0, 1, arr.shape).astype(np.float32))
    img.SetSpacing((0.5, 0.5, 3.0))
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(img)
    ref = RadiomicsShape(img, mask, label=1).execute()
    ours = mesh_shape_class()(img, mask, label=1).execute()
    assert list(ours) == list(ref)
    for name in ref:
        assert float(ours[name]) == pytest.approx(float(ref[name]), rel=1e-10), name
