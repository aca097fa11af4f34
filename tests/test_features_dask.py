"""`cdeg extract` on dask.distributed: same bytes as a serial run, a killed worker loses nothing, options."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from cdeg.features import distributed as dist
from cdeg.features.extract import extract
from click.testing import CliRunner
from phantoms import write_phantom_cohort

from cdeg.cli import cli
from cdeg.errors import CdegError
from cdeg.outputs import FeatureFolder

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (cdeg[distributed])"
)

KILLED_UNIT = ("P001", "mri")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two phantom patients, both modalities (read-only)."""
    return write_phantom_cohort(tmp_path_factory.mktemp("ph") / "cohort", n=2, seed=1)


@pytest.fixture(scope="module")
def serial(cohort, fast_params, tmp_path_factory):
    """The reference: one process, no Dask."""
    return extract(
        cohort, tmp_path_factory.mktemp("serial") / "out", params=fast_params, jobs=1, progress=False
    )


def _same_tables(a: Path, b: Path) -> None:
    for name in (FeatureFolder.LONG, FeatureFolder.FEATURES, FeatureFolder.FEATURES_CSV):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


class KillOnce(distributed.WorkerPlugin):
    """Kills its worker process (SIGKILL, as the OOM killer would) in the middle of one unit, once.

    The unit has computed its features but not written its cache yet: the worst moment to die.
    The marker file records the killed process id, so a restarted worker does not kill itself again.
    """

    def __init__(self, marker: str, unit: tuple[str, str]):
        self.marker = marker
        self.unit = unit

    def setup(self, worker):
        import cdeg.features.extract as ex

        original = ex._write_cache
        marker, unit = Path(self.marker), self.unit

        def write_cache_or_die(task, res):
            if (task.patient_id, task.modality) == unit and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            original(task, res)

        ex._write_cache = write_cache_or_die


@pytest.mark.slow
def test_local_cluster_gives_the_serial_bytes(serial, cohort, fast_params, tmp_path):
    res = extract(cohort, tmp_path / "out", params=fast_params, cluster="local:2", progress=False)
    _same_tables(serial.out, res.out)
    assert res.provenance["executor"] == {
        "kind": "dask.distributed",
        "local_cluster_workers": 2,
        "retries": dist.RETRIES,
    }
    assert res.provenance["jobs"] is None
    assert res.provenance["units"]["extracted"] == 4
    # Workers wrote the same cache entries the local pool writes.
    assert sorted(
        p.relative_to(res.out / "cache").as_posix() for p in (res.out / "cache").rglob("*.json")
    ) == [f"P00{i}/{m}.json" for i in range(2) for m in ("mri", "xray")]


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_nothing_and_reruns_resume(serial, cohort, fast_params, tmp_path):
    marker = tmp_path / "killed.pid"
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.register_plugin(KillOnce(str(marker), KILLED_UNIT), name="kill-once")
        out = tmp_path / "out"
        res = extract(cohort, out, params=fast_params, scheduler=cluster.scheduler_address, progress=False)

        # The worker really died mid-unit, and the unit was re-run elsewhere.
        killed = int(marker.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(killed, 0)
        _same_tables(serial.out, out)
        long = pd.read_parquet(out / "features_long.parquet")
        assert not long.duplicated(["patient_id", "modality", "level", "feature"]).any()
        assert res.provenance["patients"]["P001"]["mri"]["status"] == "ok"
        assert (out / "cache" / "P001" / "mri.json").is_file()

        # A worker running other package versions is refused before any unit is submitted.
        with pytest.raises(CdegError, match="other package versions"):
            dist._check_workers(client, {**dist.environment(), "numpy": "0.0"})

        # Restart after an interruption: only the missing unit runs, through the CLI this time.
        (out / "cache" / "P000" / "xray.json").unlink()
        r = CliRunner().invoke(
            cli,
            ["-q", "--no-progress", "extract", "--cohort", str(cohort), "--params", str(fast_params),
             "--scheduler", cluster.scheduler_address, "--out", str(out)],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    _same_tables(serial.out, out)
    units = pd.read_json(out / "provenance.json", typ="series")["units"]
    assert units["extracted"] == 1 and units["reused_from_cache"] == 3


def test_options_are_checked_before_any_work(cohort, tmp_path, monkeypatch):
    out = tmp_path / "o"
    for kwargs, match in (
        ({"scheduler": "tcp://h:1", "cluster": "local:2"}, "not both"),
        ({"cluster": "local:0"}, "local:N"),
        ({"cluster": "slurm:4"}, "local:N"),
        ({"scheduler": "http://h:8786"}, "PROTOCOL"),
        ({"scheduler": "not an address"}, "scheduler file"),
        ({"cluster": "local:2", "jobs": 2}, "--jobs"),
    ):
        with pytest.raises(ValueError, match=match):
            extract(cohort, out, progress=False, **kwargs)
    with pytest.raises(CdegError, match="scheduler file not found"):
        extract(cohort, out, progress=False, scheduler=str(tmp_path / "scheduler.json"))
    assert not out.exists()
    assert dist.executor_spec(None, "localhost:8786", None).scheduler == "localhost:8786"
    assert dist.executor_spec(0, None, "local").local_workers == (os.cpu_count() or 1)
    # The CLI turns them into usage errors.
    r = CliRunner().invoke(
        cli, ["extract", "--cohort", str(cohort), "--out", str(out), "--cluster", "local:x"]
    )
    assert r.exit_code == 2 and "local:N" in r.output


@pytest.mark.slow
def test_unreachable_scheduler_is_one_clear_error(cohort, fast_params, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(CdegError, match="cannot reach the Dask scheduler"):
        extract(
            cohort, tmp_path / "o", params=fast_params, scheduler=f"tcp://127.0.0.1:{port}", progress=False
        )
