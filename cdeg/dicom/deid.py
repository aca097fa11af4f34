"""De-identification: pseudonyms for patient ids, the id map, and keys standing for file paths.

Pseudonyms are ``P0001``, ``P0002``, ... assigned in the sorted order of ``sha256(salt + PatientID)``:
the same input (and salt) always gives the same pseudonyms, and the numbering says nothing about the
hospital ids (not their order, not their date of first visit). Without a secret salt, anyone holding the
list of hospital ids could recompute the assignment, so an import draws a random salt
(:func:`new_salt`) unless one is given (``--salt`` or the environment variable ``CDEG_ID_SALT``). The
salt is written only into the id map (a first line ``# salt: "<salt>"``), never into the cohort; an
import with an existing id map reuses its salt, and patients already in the map keep their pseudonyms
while new ones get the next numbers, so a second batch imported with the same id map stays consistent
with the first.

The id map (CSV: ``pseudonym,patient_id``) is the only place the link is written. It must lie outside
the cohort (and outside the DICOM input); nothing in this package logs or prints an original id.
File paths of a DICOM export often contain patient names, so reports inside the cohort name files by a
key (:func:`path_key`, a salted hash of the path relative to the DICOM folder); the key -> path table
is written next to the id map (``<id map>.files.csv``) only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from pathlib import Path

from cdeg.errors import CdegError

PSEUDONYM_PREFIX = "P"
ID_MAP_COLUMNS = ("pseudonym", "patient_id")
#: First line of an id map that stores its salt (the salt JSON-quoted, so any character survives).
SALT_LINE = "# salt: "
#: Random bytes of a new salt (token_hex gives twice as many hex digits): 128 bits cannot be guessed.
SALT_BYTES = 16


def new_salt() -> str:
    """A random salt for one import (:func:`secrets.token_hex`)."""
    return secrets.token_hex(SALT_BYTES)


def _digest(salt: str, kind: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{kind}\x1f{value}".encode()).hexdigest()


def assign_pseudonyms(
    patient_ids: Iterable[str],
    salt: str = "",
    existing: dict[str, str] | None = None,
    prefix: str = PSEUDONYM_PREFIX,
) -> dict[str, str]:
    """Map original patient ids to pseudonyms (``P0001``...), deterministically.

    Parameters
    ----------
    patient_ids : iterable of str
        Original ids (DICOM PatientID).
    salt : str
        Secret mixed into the hash that orders the ids ("" = no secret).
    existing : dict, optional
        Original id -> pseudonym already assigned (from an id map); kept as they are.
    prefix : str
        Letters before the number.

    Returns
    -------
    dict
        Original id -> pseudonym, for every id in `patient_ids` and in `existing`.
    """
    out = dict(existing or {})
    used = set(out.values())
    numbers = [int(p[len(prefix) :]) for p in used if p.startswith(prefix) and p[len(prefix) :].isdigit()]
    nxt = max(numbers, default=0) + 1
    new = sorted({p for p in patient_ids if p not in out}, key=lambda p: _digest(salt, "patient", p))
    width = max(4, len(str(nxt + len(new))))
    for pid in new:
        while f"{prefix}{nxt:0{width}d}" in used:
            nxt += 1
        out[pid] = f"{prefix}{nxt:0{width}d}"
        used.add(out[pid])
        nxt += 1
    return out


def path_key(relative_path: str, salt: str = "") -> str:
    """A short key standing for a file path in reports (``F`` + 12 hex digits of a salted hash)."""
    return "F" + _digest(salt, "path", relative_path)[:12]


def series_key(series_uid: str, salt: str = "") -> str:
    """A short key standing for a SeriesInstanceUID in reports (``S`` + 12 hex digits)."""
    return "S" + _digest(salt, "series", series_uid)[:12]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CdegError(f"cannot read id map ({type(e).__name__})", path=path) from None


def read_salt(path: str | Path) -> str | None:
    """The salt stored in an id map by :func:`write_id_map`, or None (a map written without one)."""
    lines = _read_lines(Path(path))
    if not lines or not lines[0].startswith(SALT_LINE):
        return None
    try:
        salt = json.loads(lines[0][len(SALT_LINE) :])
    except json.JSONDecodeError:
        salt = None
    if not isinstance(salt, str):
        raise CdegError('line 1: the salt line is damaged (expected # salt: "...")', path=path)
    return salt


def read_id_map(path: str | Path) -> dict[str, str]:
    """Read an id map written by :func:`write_id_map`: original id -> pseudonym.

    Comment lines (``#``) before the header are skipped (the salt line). Errors name the line, never an
    id.
    """
    import csv

    path = Path(path)
    lines = _read_lines(path)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    rows = list(csv.reader(lines[skip:]))
    if not rows or tuple(c.strip() for c in rows[0]) != ID_MAP_COLUMNS:
        raise CdegError(f"an id map must have the header {','.join(ID_MAP_COLUMNS)}", path=path)
    out: dict[str, str] = {}
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=skip + 2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise CdegError(f"line {line}: expected two non-empty values", path=path)
        pseudonym, original = row[0].strip(), row[1].strip()
        if original in out or pseudonym in seen:
            raise CdegError(f"line {line}: duplicate entry", path=path)
        out[original] = pseudonym
        seen.add(pseudonym)
    return out


def write_id_map(path: str | Path, mapping: dict[str, str], salt: str | None = None) -> None:
    """Write original id -> pseudonym as CSV ``pseudonym,patient_id`` sorted by pseudonym, atomically.

    With `salt`, the first line is ``# salt: "<salt>"`` (:func:`read_salt` reads it back).
    """
    import csv
    import io

    from cdeg.io import write_text

    buf = io.StringIO()
    if salt is not None:
        buf.write(SALT_LINE + json.dumps(salt) + "\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ID_MAP_COLUMNS)
    for original, pseudonym in sorted(mapping.items(), key=lambda kv: kv[1]):
        w.writerow((pseudonym, original))
    write_text(path, buf.getvalue())


def files_table_path(id_map: str | Path) -> Path:
    """Where the file key -> relative path table goes: next to the id map."""
    id_map = Path(id_map)
    return id_map.with_name(id_map.name.removesuffix(".csv") + ".files.csv")


def write_files_table(id_map: str | Path, keys: dict[str, str]) -> None:
    """Write the file key -> relative path table next to the id map (outside the cohort)."""
    import csv
    import io

    from cdeg.io import write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("file_key", "relative_path"))
    for key, rel in sorted(keys.items(), key=lambda kv: kv[1]):
        w.writerow((key, rel))
    write_text(files_table_path(id_map), buf.getvalue())
