"""Where `cdeg extract` runs its patient x modality units: the local process pool or a Dask cluster.

:func:`executor_spec` turns the ``jobs`` / ``scheduler`` / ``cluster`` options of
:func:`cdeg.features.extract.extract` into an :class:`ExecutorSpec` (validated before anything
expensive); :func:`run_on_dask` runs units on ``dask.distributed`` workers.

Scheduling, retries and recovery are Dask's own, nothing is re-implemented here:

* each unit is one task (``client.map(..., pure=False, retries=RETRIES)``); a task that raises is
  re-run up to :data:`RETRIES` times (e.g. a transient I/O error on a shared file system);
* a task whose worker dies (killed, out of memory, node lost) is re-run on another worker by the
  scheduler, up to ``distributed.scheduler.allowed-failures`` times (Dask's default 3); only the units
  running on that worker are lost, finished ones came back already;
* workers write the per-unit cache (``OUT/cache/<patient>/<modality>``) with the same atomic writes as
  the local pool, so a unit that runs twice leaves one complete entry and a restarted run resumes;
* results are keyed by (patient, modality) and the tables are assembled in a fixed order, so the output
  is byte-for-byte the same whatever the executor, the number of workers or the completion order.

Workers must see the cohort, the masks, the parameter files and ``OUT`` at the same absolute paths (a
shared file system, as on any SLURM cluster) and run the same versions of the packages that compute
features; both are checked, per worker, before a unit runs. Task keys are
``("cdeg-extract-<run>", patient, modality)``, so the Dask dashboard shows one group per run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdeg.errors import CdegError

log = logging.getLogger(__name__)

#: Re-runs of a unit whose task raised (worker deaths are governed by Dask's allowed-failures).
RETRIES = 2
#: Seconds to wait for an external scheduler to answer.
CONNECT_TIMEOUT_S = 30
#: URL schemes of dask.distributed's communication layers.
PROTOCOLS = ("tcp", "tls", "inproc", "ucx", "ws", "wss")
INSTALL_HINT = "pip install 'cdeg[distributed]' (or: pip install 'dask[distributed]')"

_CLUSTER = re.compile(r"^local(?::(\d+))?$")
_HOST_PORT = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class ExecutorSpec:
    """Where the extraction units run.

    Attributes
    ----------
    kind : {"pool", "dask"}
        ``pool``: a local process pool of `jobs` processes (one process runs the units itself).
        ``dask``: tasks on a dask.distributed cluster.
    jobs : int
        Processes of the local pool (``pool`` only).
    scheduler : str, optional
        Address (``tcp://host:8786``) or scheduler file (JSON written by ``dask scheduler
        --scheduler-file``) of an existing cluster.
    local_workers : int, optional
        Size of a ``LocalCluster`` that cdeg starts and stops itself (one single-threaded process each).
    retries : int
        Re-runs of a unit whose task raised.
    """

    kind: str
    jobs: int = 1
    scheduler: str | None = None
    local_workers: int | None = None
    retries: int = RETRIES

    def describe(self) -> dict[str, Any]:
        """The executor as recorded in provenance.json."""
        if self.kind == "pool":
            return {"kind": "process pool", "jobs": self.jobs}
        where = (
            {"scheduler": self.scheduler} if self.scheduler else {"local_cluster_workers": self.local_workers}
        )
        return {"kind": "dask.distributed", **where, "retries": self.retries}


def executor_spec(jobs: int | None, scheduler: str | None, cluster: str | None) -> ExecutorSpec:
    """Validate the executor options of :func:`cdeg.features.extract.extract`.

    Parameters
    ----------
    jobs : int or None
        Local pool processes (None or 0: all cores).
    scheduler : str or None
        ``tcp://host:port`` (any dask.distributed protocol), ``host:port``, or a scheduler file (.json).
    cluster : str or None
        ``local:N``: a local Dask cluster of N worker processes (``local``: one per core).

    Returns
    -------
    ExecutorSpec

    Raises
    ------
    ValueError
        Malformed or contradictory options.
    CdegError
        Dask is requested but dask.distributed is not installed, or the scheduler file does not exist.
    """
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0):
        raise ValueError(f"jobs must be a positive number of processes (0 or None: all cores), got {jobs!r}")
    if scheduler is not None and cluster is not None:
        raise ValueError("give --scheduler (an existing Dask cluster) or --cluster (a local one), not both")
    if scheduler is None and cluster is None:
        return ExecutorSpec("pool", jobs=jobs or os.cpu_count() or 1)
    if jobs:
        raise ValueError(
            "--jobs sizes the local process pool; with --scheduler or --cluster the Dask workers run the units "
            "(size them with --cluster local:N or the workers' --nthreads)"
        )
    if scheduler is not None:
        scheduler = _check_scheduler(scheduler)
        spec = ExecutorSpec("dask", scheduler=scheduler)
    else:
        m = _CLUSTER.match(str(cluster).strip())
        if m is None or (m.group(1) is not None and int(m.group(1)) < 1):
            raise ValueError(
                f"--cluster must be 'local:N' with N >= 1 worker processes (or 'local'), got {cluster!r}"
            )
        spec = ExecutorSpec("dask", local_workers=int(m.group(1)) if m.group(1) else (os.cpu_count() or 1))
    _require_distributed()
    return spec


def _check_scheduler(scheduler: str) -> str:
    s = str(scheduler).strip()
    if "://" in s:
        proto, _, rest = s.partition("://")
        if proto not in PROTOCOLS or not rest:
            raise ValueError(
                f"--scheduler {s!r}: expected PROTOCOL://HOST:PORT with PROTOCOL one of {', '.join(PROTOCOLS)}"
            )
        return s
    if s.endswith(".json"):
        if not Path(s).is_file():
            raise CdegError("scheduler file not found (written by `dask scheduler --scheduler-file`)", path=s)
        return str(Path(s).resolve())
    if _HOST_PORT.match(s):
        return s
    raise ValueError(
        f"--scheduler {s!r}: expected an address (tcp://HOST:PORT or HOST:PORT) or a scheduler file (.json)"
    )


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CdegError(
            f"--scheduler/--cluster need dask.distributed, which is not installed: {INSTALL_HINT}"
        ) from None


def environment() -> dict[str, str | None]:
    """Versions of the packages that compute features, in this process (None: not installed)."""
    from cdeg.outputs import versions

    return {k: v for k, v in versions("extract").items() if k != "python"}


def _differences(theirs: dict[str, str | None], ours: dict[str, str | None]) -> list[str]:
    return [f"{k} {theirs.get(k)} (here {v})" for k, v in ours.items() if theirs.get(k) != v]


@contextlib.contextmanager
def dask_client(spec: ExecutorSpec) -> Iterator[Any]:
    """A connected ``distributed.Client``: to the given scheduler, or to a LocalCluster started (and stopped) here."""
    from distributed import Client, LocalCluster

    with _quiet_dask():
        yield from _connect(spec, Client, LocalCluster)


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Keep Dask's connection and worker lifecycle messages out of the log unless it is at debug level."""
    dask_log = logging.getLogger("distributed")
    before = dask_log.level
    if not log.isEnabledFor(logging.DEBUG):
        dask_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dask_log.setLevel(before)


def _connect(spec: ExecutorSpec, Client: Any, LocalCluster: Any) -> Iterator[Any]:
    if spec.local_workers is not None:
        # One single-threaded worker process per unit slot, like the local pool; Dask's nanny restarts a
        # worker process that dies. The scheduler's HTTP server (dashboard when bokeh is installed) takes
        # any free port, so several runs on one machine do not compete for 8787.
        with (
            LocalCluster(
                n_workers=spec.local_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    kwargs: dict[str, Any] = (
        {"scheduler_file": spec.scheduler}
        if str(spec.scheduler).endswith(".json")
        else {"address": spec.scheduler}
    )
    try:
        client = Client(**kwargs, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as e:
        raise CdegError(
            f"cannot reach the Dask scheduler at {spec.scheduler} within {CONNECT_TIMEOUT_S} s ({e}); "
            "is `dask scheduler` running and reachable from here?"
        ) from None
    with client:
        yield client


def _check_workers(client: Any, ours: dict[str, str | None]) -> None:
    """Refuse workers that would compute different numbers, before any unit is submitted."""
    seen = client.run(environment)
    bad = {addr: d for addr, env in seen.items() if (d := _differences(env, ours))}
    if bad:
        addr, diff = next(iter(bad.items()))
        raise CdegError(
            f"{len(bad)} of {len(seen)} Dask workers run other package versions than this process "
            f"(e.g. {addr}: {', '.join(diff)}); their features would differ: install the same versions everywhere"
        )
    threads = sum(client.nthreads().values())
    if not seen:
        log.info("no Dask worker connected yet: the units wait in the scheduler until workers join")
    else:
        log.info("Dask scheduler %s: %d workers, %d threads", client.scheduler.address, len(seen), threads)


def remote_unit(task: Any, expected: dict[str, str | None]) -> Any:
    """Run one unit on a Dask worker (the task function): check the worker, then extract and cache.

    A worker that cannot see the input files or runs other package versions returns a failed unit with
    the reason instead of computing (and caching) different numbers.
    """
    from cdeg.features.extract import UnitResult, _init_worker, run_unit
    from distributed import get_worker

    where = f"Dask worker {get_worker().address}"
    diff = _differences(environment(), expected)
    if diff:
        why = f"{where} runs other package versions ({', '.join(diff)}); install the same versions everywhere"
        return UnitResult(task.patient_id, task.modality, "failed", errors=[("", why)])
    files = (task.image, task.mask, task.params) if isinstance(task.params, str) else (task.image, task.mask)
    unseen = [p for p in files if not Path(p).is_file()]
    if unseen:
        why = f"{where} cannot see {unseen[0]}: workers need the cohort and --out on a shared file system"
        return UnitResult(task.patient_id, task.modality, "failed", errors=[("", why)])
    _init_worker()
    return run_unit(task)


def _absolute(task: Any) -> Any:
    """The task with absolute paths: a worker's working directory is not the client's."""
    import dataclasses

    return dataclasses.replace(
        task,
        image=str(Path(task.image).resolve()),
        mask=str(Path(task.mask).resolve()),
        params=str(Path(task.params).resolve()) if isinstance(task.params, str) else task.params,
        cache_dir=str(Path(task.cache_dir).resolve()),
    )


def run_on_dask(tasks: list[Any], spec: ExecutorSpec) -> Iterator[Any]:
    """Run extraction units as Dask tasks and yield their results as they finish (in any order).

    Parameters
    ----------
    tasks : list of cdeg.features.extract._Task
        Units to run.
    spec : ExecutorSpec
        A ``dask`` executor from :func:`executor_spec`.

    Yields
    ------
    cdeg.features.extract.UnitResult

    Raises
    ------
    CdegError
        The scheduler cannot be reached, a worker runs other package versions, or a unit's worker died
        more often than ``distributed.scheduler.allowed-failures`` (finished units stay cached).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    if not tasks:
        return
    ours = environment()
    run = f"cdeg-extract-{uuid.uuid4().hex}"
    with dask_client(spec) as client:
        _check_workers(client, ours)
        remote = [_absolute(t) for t in tasks]
        keys = [(run, t.patient_id, t.modality) for t in remote]
        futures = client.map(remote_unit, remote, expected=ours, key=keys, pure=False, retries=spec.retries)
        unit_of = {f.key: (k[1], k[2]) for f, k in zip(futures, keys, strict=True)}
        done = as_completed(futures, with_results=True, raise_errors=False)
        try:
            for fut, result in done:
                if fut.status != "finished":
                    pid, modality = unit_of[fut.key]
                    exc = result[1] if fut.status == "error" else None
                    if exc is not None and not isinstance(exc, KilledWorker):
                        raise exc.with_traceback(result[2])  # a bug in a unit fails the run, as in the pool
                    why = (
                        "its Dask worker died on every attempt (distributed.scheduler.allowed-failures)"
                        if exc is not None
                        else f"its Dask task was {fut.status}"
                    )
                    raise CdegError(
                        f"{why}; finished units are cached, a re-run resumes", patient=f"{pid} {modality}"
                    )
                fut.release()
                yield result
        finally:
            client.cancel([f for f in futures if not f.done()])
