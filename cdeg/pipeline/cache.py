"""Stage manifests and input fingerprints: how `cdeg run` knows a stage is up to date.

Each stage writes ``<stage folder>/cdeg_stage.json``::

    format, format_version     "cdeg-stage", 1
    stage, kind                "fit:accelerated", "fit"
    status                     "running" while the stage runs, "complete" after
    params                     the resolved options the stage function was called with (paths as strings)
    inputs                     name -> {"stage": upstream stage, "hash": its manifest hash}
                                    or {"path": user folder/file, "fingerprint": fast fingerprint}
    key                        SHA-256 of kind, params, inputs and the cdeg version
    outputs                    files the stage wrote, relative to its folder
    outputs_fingerprint        SHA-256 over (relative path, size, mtime_ns) of those files
    hash                       SHA-256 of key + outputs_fingerprint: what downstream stages record
    cdeg_version, started, finished, seconds, result (a small summary for the report)

A stage runs again when its manifest is missing or not complete, when its key changed (other params, other
input hashes, another cdeg version), or when one of its listed outputs is missing. A stage that runs gets new
output mtimes, hence a new hash, so every stage downstream of it runs too.

Fingerprint of user files (cohort folders of real data, parameter files): for every file, its path relative to
the folder, its size and its modification time in nanoseconds; small tables (.csv, .tsv, .json, .yaml under
1 MiB: clinical.csv, cohort.json) are hashed by content instead, so re-saving an unchanged table does not
trigger a re-run. Images are never read, so fingerprinting 1,000 patients takes well under a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cdeg import __version__
from cdeg.io import file_sha256, read_json
from cdeg.outputs import RunFolder, write_manifest
from cdeg.outputs import now as outputs_now

MANIFEST = RunFolder.STAGE_MANIFEST
FORMAT = "cdeg-stage"
FORMAT_VERSION = 1
_CONTENT_HASH_SUFFIXES = (".csv", ".tsv", ".json", ".yaml", ".yml")
_CONTENT_HASH_MAX_BYTES = 1 << 20


now = outputs_now  # one time stamp format for every manifest


def sha256_json(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object, keys sorted."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def list_files(folder: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> list[str]:
    """Files below `folder` as sorted relative POSIX paths, skipping `exclude` names and temporary files."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = Path(root).relative_to(folder)
        for f in sorted(files):
            if f in exclude or (f.startswith(".") and ".tmp" in f):
                continue
            out.append((rel_root / f).as_posix())
    return out


def path_fingerprint(path: str | Path) -> str:
    """Fast fingerprint of a user file or folder (see the module docstring)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        entries = [(path.name, path)]
    elif path.is_dir():
        entries = [(rel, path / rel) for rel in list_files(path)]
    else:
        return "missing"
    for rel, p in entries:
        st = p.stat()
        if p.suffix.lower() in _CONTENT_HASH_SUFFIXES and st.st_size <= _CONTENT_HASH_MAX_BYTES:
            h.update(f"{rel}\t{st.st_size}\tsha256:{file_sha256(p)}\n".encode())
        else:
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def outputs_fingerprint(folder: Path, files: list[str]) -> str:
    """SHA-256 over (relative path, size, mtime_ns) of a stage's output files."""
    h = hashlib.sha256()
    for rel in files:
        st = (folder / rel).stat()
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stage_key(kind: str, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """What decides whether a stage must run again: its kind, params, inputs and the cdeg version."""
    return sha256_json({"kind": kind, "params": params, "inputs": inputs, "cdeg": __version__})


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The stage manifest in `folder`, or None when there is none (or it is not a stage manifest)."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        m = read_json(path)
    except Exception:  # a damaged manifest only means the stage runs again
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def why_stale(folder: Path, key: str) -> str | None:
    """Why the stage in `folder` must run (a short reason), or None when it is up to date."""
    m = read_manifest(folder)
    if m is None:
        return "never run"
    if m.get("status") != "complete":
        return "interrupted"
    if m.get("key") != key:
        return "inputs or options changed"
    missing = [rel for rel in m.get("outputs", []) if not (folder / rel).is_file()]
    if missing:
        return f"{len(missing)} output(s) missing (e.g. {missing[0]})"
    return None


def write_running(
    folder: Path, stage: str, kind: str, key: str, params: dict, inputs: dict
) -> dict[str, Any]:
    """Record that a stage started (an interrupted run then resumes instead of starting over)."""
    m = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "kind": kind,
        "status": "running",
        "key": key,
        "params": params,
        "inputs": inputs,
        "cdeg_version": __version__,
        "started": now(),
    }
    write_manifest(folder / MANIFEST, m)
    return m


def write_complete(
    manifest: dict[str, Any], folder: Path, seconds: float, result: dict[str, Any]
) -> dict[str, Any]:
    """Finish a stage's manifest: outputs, their fingerprint, hash, timings and a result summary."""
    files = list_files(folder)
    ofp = outputs_fingerprint(folder, files)
    manifest = dict(manifest)
    manifest.update(
        status="complete",
        outputs=files,
        outputs_fingerprint=ofp,
        hash=hashlib.sha256(f"{manifest['key']}:{ofp}".encode()).hexdigest(),
        finished=now(),
        seconds=round(seconds, 2),
        result=result,
    )
    write_manifest(folder / MANIFEST, manifest)
    return manifest
