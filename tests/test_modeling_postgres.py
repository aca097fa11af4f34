"""`cdeg fit --storage`: several workers share one Optuna study per outer fold on a real PostgreSQL server.

The server is a throwaway one started on loopback from the Debian `postgresql` binaries (initdb + pg_ctl),
as an unprivileged user when the tests run as root (PostgreSQL refuses root). Skipped, saying why, when no
server binary or no PostgreSQL driver (psycopg) is installed.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cdeg.modeling.fit import fit
from cdeg.modeling.simulate import simulate

from cdeg.io import write_table

TRIALS = 5
OUTER = 2
PG_USER = "cdeg"  # the database role, not a system account
TEST_ACCOUNT = "cdeg-pgtest"  # system account created when running as root and `postgres` does not exist


def _pg_bin() -> Path | None:
    """Folder of initdb / pg_ctl: Debian's versioned folders first, then PATH."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(d) / b).is_file() for b in ("initdb", "pg_ctl", "createdb")):
            return Path(d)
    found = [shutil.which(b) for b in ("initdb", "pg_ctl", "createdb")]
    return Path(found[0]).parent if all(found) else None


def _server_account() -> str | None:
    """An unprivileged system account to run the server as (only needed as root)."""
    for name in ("postgres", TEST_ACCOUNT):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    r = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_ACCOUNT],
        capture_output=True,
        text=True,
    )
    return TEST_ACCOUNT if r.returncode == 0 else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """URL of an empty database on a PostgreSQL server started for this module (stopped and removed after)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl) on this machine: "
            "install Debian's postgresql package (.ci/run does) to run this test"
        )
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    prefix: list[str] = []
    # Not under pytest's tmp folder: that one is private to the current user, and the server's account
    # must be able to reach its data and socket folders.
    root = Path(tempfile.mkdtemp(prefix="cdeg_pg_"))
    if os.geteuid() == 0:
        account = _server_account()
        if account is None or shutil.which("runuser") is None:
            shutil.rmtree(root)
            pytest.skip("running as root, and no unprivileged account/runuser to start PostgreSQL with")
        pw = pwd.getpwnam(account)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", account, "--"]
    data, sock, logfile, port = root / "data", root / "sock", root / "server.log", _free_port()

    def run(*cmd: str | Path) -> None:
        r = subprocess.run([*prefix, *map(str, cmd)], cwd=root, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout}\n{r.stderr}"

    run("mkdir", "-m", "700", sock)
    run(bindir / "initdb", "-D", data, "-U", PG_USER, "--auth=trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
    run(bindir / "pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60", "-o", options, "start")
    try:
        run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", PG_USER, "optuna")
        yield f"postgresql://{PG_USER}@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            cwd=root,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fitdata")
    feat, clin = simulate(n=60, n_features=12, signal=2.0, prevalence=0.35, seed=4)
    write_table(tmp / "f.csv", feat)
    write_table(tmp / "c.csv", clin)
    (tmp / "inner2.yaml").write_text("inner_folds: 2\nstartup_trials: 2\n")
    return tmp


def _fit_command(tables: Path, out: Path, storage: str) -> list[str]:
    return [
        sys.executable, "-m", "cdeg.cli", "-q", "--no-progress", "fit",
        "--features", str(tables / "f.csv"), "--clinical", str(tables / "c.csv"), "--target", "accelerated",
        "--trials", str(TRIALS), "--outer-folds", str(OUTER), "--repeats", "1", "--jobs", "1",
        "--config", str(tables / "inner2.yaml"), "--storage", storage, "--out", str(out), "--tiers", "none",
    ]  # fmt: skip


@pytest.mark.slow
def test_two_fit_processes_share_one_study_per_fold(postgres_url, tables, tmp_path):
    import optuna

    outs = [tmp_path / f"worker{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            _fit_command(tables, o, postgres_url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for o in outs
    ]
    logs = [p.communicate(timeout=600)[0].decode() for p in procs]
    for p, text in zip(procs, logs, strict=True):
        assert p.returncode == 0, text
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs]

    # One study per (model, repeat, outer fold) plus one final per tuned model, in the one database.
    key = metrics[0]["protocol"]["run_key"]
    folds = [f"r0-f{f}" for f in range(OUTER)] + ["final"]
    expected = {f"cdeg-{key}-{m}-{s}" for m in ("xgboost", "logistic") for s in folds}
    storage = optuna.storages.RDBStorage(postgres_url)
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(studies) == expected
    total = 0
    for name in expected:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        # Both workers counted towards the total (a last-moment race may add one trial, never lose one)...
        assert TRIALS <= len(complete) <= TRIALS + 1, name
        assert len(complete) == len(trials), name  # nothing failed or left running
        # ...and never drew the same point: trial k is seeded with (study seed, k).
        points = {tuple(sorted(t.params.items())) for t in complete}
        assert len(points) == len(complete), name
        total += len(complete)
    storage.engine.dispose()

    # The work was shared, every trial counted once.
    new = [m["new_trials"] for m in metrics]
    assert all(n > 0 for n in new), new
    assert sum(new) == total
    # Both workers read the same studies, so they report the same (valid) results.
    assert metrics[0]["cv"] == metrics[1]["cv"]
    for m in ("xgboost", "logistic", "clinical_only"):
        cv = metrics[0]["cv"][m]
        assert 0 <= cv["auc"] <= 1 and 0 <= cv["brier"] <= 1
    assert metrics[0]["protocol"]["storage"] == postgres_url


@pytest.mark.slow
def test_one_worker_on_a_shared_storage_equals_a_private_run(tables, tmp_path):
    """Per-trial seeds: alone on a shared storage, a worker proposes exactly the trials of a private run."""
    kw = {"trials": 3, "outer_folds": 2, "repeats": 1, "jobs": 1, "progress": False, "tiers": "none"}
    kw["config"] = tables / "inner2.yaml"
    private = fit(tables / "f.csv", tables / "c.csv", "accelerated", tmp_path / "a", **kw)
    shared = fit(
        tables / "f.csv",
        tables / "c.csv",
        "accelerated",
        tmp_path / "b",
        storage=f"sqlite:///{tmp_path / 'shared.db'}",
        **kw,
    )
    assert private.metrics["cv"] == shared.metrics["cv"]
    drop = ("seconds",)
    assert [{k: v for k, v in t.items() if k not in drop} for t in private.metrics["tuning"]] == [
        {k: v for k, v in t.items() if k not in drop} for t in shared.metrics["tuning"]
    ]


def test_storage_url_is_checked_first_and_its_password_never_recorded(tables, tmp_path):
    from cdeg.modeling.tuning import check_storage

    with pytest.raises(ValueError, match="not a database URL"):
        fit(tables / "f.csv", tables / "c.csv", "accelerated", tmp_path / "o", storage="localhost:5432")
    with pytest.raises(ValueError, match="unknown database kind"):
        fit(tables / "f.csv", tables / "c.csv", "accelerated", tmp_path / "o", storage="postgress://h/db")
    assert not (tmp_path / "o").exists()
    assert check_storage("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
