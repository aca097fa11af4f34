"""Atomic writes and image I/O."""

import numpy as np
import pytest

from cdeg.errors import CdegError
from cdeg.io import atomic_path, image_from_array, read_image, write_image, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_converts_numpy_and_rejects_nan(tmp_path):
    write_json(tmp_path / "a.json", {"x": np.int64(3), "y": np.float32(0.5)})
    assert '"x": 3' in (tmp_path / "a.json").read_text()
    with pytest.raises(ValueError):
        write_json(tmp_path / "b.json", {"x": float("nan")})


def test_image_roundtrip_keeps_geometry(tmp_path):
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = image_from_array(arr, spacing=(0.7, 0.8, 3.0), origin=(1, 2, 3))
    write_image(tmp_path / "a.nii.gz", img)
    back = read_image(tmp_path / "a.nii.gz")
    assert back.GetSpacing() == pytest.approx((0.7, 0.8, 3.0))
    assert back.GetOrigin() == pytest.approx((1, 2, 3))


def test_unreadable_image_names_patient_and_file(tmp_path):
    bad = tmp_path / "mri.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(CdegError) as e:
        read_image(bad, patient="P7")
    assert "patient P7" in str(e.value) and "mri.nii.gz" in str(e.value)


def test_truncated_nifti_is_refused_not_read_as_zeros(tmp_path):
    # SimpleITK reads a truncated .nii.gz without error (the lost voxels become zeros): read_image must not.
    rng = np.random.default_rng(0)
    img = image_from_array(rng.integers(0, 1000, (8, 64, 64)).astype(np.int16), (1.0, 1.0, 3.0))
    good = tmp_path / "mri.nii.gz"
    write_image(good, img)
    assert read_image(good).GetSize() == (64, 64, 8)
    cut = tmp_path / "cut" / "mri.nii.gz"
    cut.parent.mkdir()
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CdegError) as e:
        read_image(cut, patient="P7")
    assert "P7" in str(e.value) and "truncated" in str(e.value) and str(cut) in str(e.value)


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    from cdeg.io import remove_stale_temporaries

    out = tmp_path / "out"
    write_json(out / "metrics.json", {"a": 1})
    left = out / "sub" / ".mri.abc123.tmp.nii.gz"  # what atomic_path leaves when the process is killed
    left.parent.mkdir(parents=True)
    left.write_bytes(b"half")
    other = out / "sub" / ".xray.def456.tmp.nii.gz"
    other.write_bytes(b"half")
    assert remove_stale_temporaries(out, "*/.mri[._]*.tmp*") == [left]
    assert not left.exists() and other.exists() and (out / "metrics.json").exists()
    assert remove_stale_temporaries(out) == [other]
    assert remove_stale_temporaries(tmp_path / "absent") == []
