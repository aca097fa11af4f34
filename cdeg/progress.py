"""Progress of a stage function, reported through one parameter and drawn by whoever called it.

Every stage function takes ``progress``: ``None``/``False`` (silent), ``True`` (bars on stderr) or a
:class:`Progress` callable. The function only reports ``progress(task, done, total)`` after each unit of work
(patient, image, fold); the command line and the pipeline decide how that is shown (:class:`Bars`), and a
program embedding cdeg can pass its own callable. Library code never reads the command line's options and
never turns log lines back into bars.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    """Called after each unit of work of `task`: `done` of `total` units are finished."""

    def __call__(self, task: str, done: int, total: int) -> None: ...


def _silent(task: str, done: int, total: int) -> None:
    """A :class:`Progress` that shows nothing."""


#: The unit of each stage's tasks (by task name prefix), as the stages name their tasks.
UNITS: dict[str, str] = {
    "synth": "patient",
    "scan DICOM": "file",
    "segment": "image",
    "evaluate": "patient",
    "import": "patient",
    "extract": "unit",
    "nested CV": "fold",
    "permutation test": "fold",
    "waterfalls": "patient",
}


class Bars:
    """A :class:`Progress` drawing one tqdm bar (with rate and ETA) per task, closed when the task is done.

    Parameters
    ----------
    units : dict, optional
        Task name prefix -> word after the counts ("patient", "image", ...); added to :data:`UNITS`.
    """

    def __init__(self, units: dict[str, str] | None = None) -> None:
        self.units = {**UNITS, **(units or {})}
        self._bars: dict[str, Any] = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = self._bars.get(task)
        if bar is None:
            unit = next((u for p, u in self.units.items() if task.startswith(p)), "item")
            bar = self._bars[task] = tqdm(total=total, desc=task, unit=unit, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            del self._bars[task]

    def close(self) -> None:
        """Close the bars of tasks that stopped before their end (an error, an interrupt)."""
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


ProgressArg = Progress | Callable[[str, int, int], None] | bool | None


def as_progress(progress: ProgressArg) -> Progress:
    """The callable behind a stage function's `progress` argument (None/False: silent, True: bars)."""
    if progress is None or progress is False:
        return _silent
    if progress is True:
        return Bars()
    if callable(progress):
        return progress
    raise TypeError(f"progress must be a bool, None or a callable (task, done, total), not {progress!r}")


@contextmanager
def shown(progress: ProgressArg) -> Iterator[ProgressArg]:
    """`progress` for the length of a stage, with ``True`` turned into :class:`Bars` that are closed on the way
    out, also when the stage stops with an error (a bar left open would garble the next line of the console)."""
    if progress is not True:
        yield progress
        return
    bars = Bars()
    try:
        yield bars
    finally:
        bars.close()


def is_shown(progress: ProgressArg) -> bool:
    """Whether the caller asked for progress at all (for libraries with their own on/off switch)."""
    return progress is not None and progress is not False


def track(items: Iterable[T], progress: ProgressArg, task: str, total: int | None = None) -> Iterator[T]:
    """Yield `items`, reporting each one done to `progress` as `task` (total: ``len(items)`` by default)."""
    report = as_progress(progress)
    n = total if total is not None else len(items)  # type: ignore[arg-type]
    report(task, 0, n)
    for i, item in enumerate(items, 1):
        yield item
        report(task, i, n)
