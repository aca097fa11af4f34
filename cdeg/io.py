"""File I/O shared by every stage: atomic writes, NIfTI images, tables and JSON.

Every file cdeg writes goes through these helpers, so an interrupted run never leaves a half-written
output behind: data goes to a temporary file in the destination folder, then is renamed into place.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cdeg.errors import CdegError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    The temporary name keeps the final suffix (``.nii.gz``, ``.parquet``) because several writers pick
    the format from it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def remove_stale_temporaries(folder: str | Path, pattern: str = "**/.*.tmp*") -> list[Path]:
    """Delete the temporary files that a killed run left in a stage's own output `folder`; return them.

    A process killed inside :func:`atomic_path` never reaches its clean-up, so its half-written data stays
    in a hidden ``.<stem>.<random>.tmp<suffix>`` file next to the target (no reader opens it). Call this
    only on a folder that the calling stage owns and no other process is writing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(pattern) if p.is_file() and ".tmp" in p.name]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if stale:
        log.info("removed %d temporary file(s) left by an interrupted run in %s", len(stale), folder)
    return stale


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, indented, with numpy scalars converted."""
    write_text(path, json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file raises CdegError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CdegError("file not found", path=path) from None
    except json.JSONDecodeError as e:
        raise CdegError(f"not valid JSON ({e.msg}, line {e.lineno})", path=path) from None


def write_table(path: str | Path, df: Any, index: bool = False) -> None:
    """Write a pandas DataFrame as CSV or Parquet (chosen by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=index)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=index, lineterminator="\n")
        else:
            raise ValueError(f"unsupported table format {path.suffix!r} (use .csv or .parquet)")


def read_table(path: str | Path, **kwargs: Any) -> Any:
    """Read a CSV or Parquet table; problems raise CdegError naming the file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CdegError("file not found", path=path)
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path, **kwargs)
        if path.suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
            return pd.read_csv(path, **kwargs)
        if path.suffix == ".tsv":
            return pd.read_csv(path, sep="\t", **kwargs)
    except Exception as e:  # pandas raises many types for bad files
        raise CdegError(f"cannot read table ({type(e).__name__}: {e})", path=path) from None
    raise CdegError(f"unsupported table format {path.suffix!r}; use .csv, .tsv or .parquet", path=path)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (provenance and change detection)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- images -------------------------------------------------------------------------------------


def read_image(path: str | Path, patient: str | None = None) -> Any:
    """Read a NIfTI image with SimpleITK; an unreadable file raises CdegError naming patient and file."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise CdegError("file not found", patient=patient, path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        reason = next((ln for ln in msg if "ERROR" in ln or "Exception" in ln), msg[-1] if msg else "")
        raise CdegError(f"cannot read image ({reason.strip()[:160]})", patient=patient, path=path) from None
    if path.name.endswith((".nii", ".nii.gz")):
        # A truncated .nii.gz (an interrupted copy) is read without error, its missing voxels as zeros.
        problem = nifti_truncation(path)
        if problem:
            raise CdegError(f"cannot read image ({problem})", patient=patient, path=path)
    return image


def nifti_truncation(path: str | Path) -> str:
    """'' when a NIfTI file holds as many bytes as its header says, else what is wrong.

    For ``.nii.gz`` the gzip trailer (uncompressed size modulo 2**32) is compared with the size the header
    implies, which costs one seek; only when they differ (a truncated file, or a multi-member gzip) is
    the stream decompressed to be sure.
    """
    path = Path(path)
    compressed = path.name.endswith(".gz")
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error) as e:
        return f"cannot read the NIfTI header: file truncated or corrupt ({type(e).__name__})"
    expected = _nifti_nbytes(head)
    if expected is None:
        return ""  # not NIfTI (another format SimpleITK reads): nothing to compare
    if not compressed:
        actual = path.stat().st_size
        return (
            "" if actual >= expected else f"file has {actual} bytes, the header needs {expected}: truncated"
        )
    with open(path, "rb") as f:
        f.seek(-4, 2)
        trailer = struct.unpack("<I", f.read(4))[0]
    if trailer == expected % 2**32:
        return ""
    total, ok = _gunzip_length(path)
    if ok and total >= expected:
        return ""
    return f"decompresses to {total} bytes{'' if ok else ' before the data ends abruptly'}, the header needs {expected}: truncated"


def _nifti_nbytes(head: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (vox_offset + voxels), or None if `head` is not a NIfTI header."""
    if len(head) < 348:
        return None
    for endian in "<>":
        size = struct.unpack(f"{endian}i", head[:4])[0]
        if size == 348:
            dims = struct.unpack(f"{endian}8h", head[40:56])
            bitpix = struct.unpack(f"{endian}h", head[72:74])[0]
            offset = int(struct.unpack(f"{endian}f", head[108:112])[0])
            break
        if size == 540 and len(head) >= 540:
            dims = struct.unpack(f"{endian}8q", head[16:80])
            bitpix = struct.unpack(f"{endian}h", head[14:16])[0]
            offset = struct.unpack(f"{endian}q", head[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    n = 1
    for d in dims[1 : ndim + 1]:
        n *= max(int(d), 0)
    return max(offset, 352 if size == 348 else 544) + n * bitpix // 8


def _gunzip_length(path: Path, chunk: int = 1 << 20) -> tuple[int, bool]:
    """(decompressed bytes, stream ended cleanly) of a possibly multi-member gzip file."""
    total, clean = 0, False
    d = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as f:
            data = f.read(chunk)
            while data:
                total += len(d.decompress(data))
                if d.eof:  # end of one gzip member: more members may follow
                    data = d.unused_data or f.read(chunk)
                    d = zlib.decompressobj(wbits=31)
                    clean = not data
                else:
                    data, clean = f.read(chunk), False
    except zlib.error:
        return total, False
    return total, clean


def write_image(path: str | Path, image: Any, compress: bool = True) -> None:
    """Write a SimpleITK image atomically (NIfTI when the name ends in .nii or .nii.gz)."""
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)


def image_from_array(
    array: np.ndarray,
    spacing: tuple[float, ...],
    origin: tuple[float, ...] | None = None,
    direction: tuple[float, ...] | None = None,
) -> Any:
    """Build a SimpleITK image from a numpy array in SimpleITK's (z, y, x) / (y, x) index order.

    `spacing`, `origin` and `direction` are in SimpleITK's (x, y, z) physical order.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        img.SetDirection(tuple(float(d) for d in direction))
    return img
