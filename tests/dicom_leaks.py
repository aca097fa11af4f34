"""Helpers shared by the tests that search an import's output for identifying DICOM values."""

from __future__ import annotations

import gzip
from pathlib import Path

import pydicom

IDENTIFYING_TAGS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def identifying_values(dicom_root: Path) -> set[str]:
    """Every identifying value written into the DICOM tree, read back from the files themselves."""
    values: set[str] = set()
    for p in dicom_root.rglob("*"):
        if not p.is_file():
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # not DICOM, or a file damaged on purpose
            continue
        for tag in IDENTIFYING_TAGS:
            v = str(ds.get(tag, "") or "").strip()
            if v:
                values.add(v)
                values.update(part for part in v.split("^") if len(part) >= 4)
    return values


def output_bytes(root: Path) -> bytes:
    """All bytes of an output tree, gz files decompressed, plus every path name, lower-cased."""
    chunks = []
    for p in sorted(root.rglob("*")):
        chunks.append(str(p.relative_to(root)).encode())
        if p.is_file():
            data = p.read_bytes()
            chunks.append(gzip.decompress(data) if p.name.endswith(".gz") else data)
    return b"\n".join(chunks).lower()
