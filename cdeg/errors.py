"""Errors a user can cause, carrying what the CLI needs to print one line: which patient, which file."""

from __future__ import annotations

from pathlib import Path


class CdegError(ValueError):
    """A problem with the user's input or options; printed as one line by the CLI, never a traceback.

    Parameters
    ----------
    message : str
        What is wrong and, where possible, what to do about it.
    patient : str, optional
        The patient the problem belongs to.
    path : str or Path, optional
        The file the problem was found in.
    """

    def __init__(self, message: str, *, patient: str | None = None, path: str | Path | None = None):
        self.message = message
        self.patient = patient
        self.path = str(path) if path is not None else None
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.patient is not None:
            where.append(f"patient {self.patient}")
        if self.path is not None:
            where.append(str(self.path))
        prefix = f"{' / '.join(where)}: " if where else ""
        return prefix + " ".join(self.message.split())


class CohortError(CdegError):
    """The cohort folder (layout, cohort.json, clinical.csv, an image or a mask) is not usable."""
