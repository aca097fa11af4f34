"""Fault injection through the command line: killed runs resume to the same outputs, no stage touches the network,
damaged inputs cost only their own patient, interrupted writes never replace a good file.

Every stage runs as a separate ``cdeg`` process, as a user or a job scheduler would start it, so SIGKILL, exit
codes and console output are the real ones. Runs are small (light PyRadiomics parameters, few Optuna trials) and
the kill is triggered by polling what the stage has written, never by a sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from conftest import FAST_RADIOMICS
from dicom_leaks import identifying_values, output_bytes

from cdeg.io import atomic_path, write_json, write_table, write_text
from cdeg.outputs import FeatureFolder

#: The console entry point, through the interpreter under test (no reliance on PATH or the bin/ script).
CDEG = (sys.executable, "-c", "from cdeg.cli import main; main()")
#: Shape and first order only (conftest.py): PyRadiomics really runs, a unit costs about a second.
LIGHT_PARAMS = FAST_RADIOMICS
EXTRACT_TABLES = (FeatureFolder.LONG, FeatureFolder.FEATURES, FeatureFolder.FEATURES_CSV)
#: Nested CV small enough for seconds: 2 tuned models x (3 outer folds + final) studies x TRIALS trials.
TRIALS = 8
# No feature tiers: they resume like any other study, and without them the count below stays that of the models.
FIT_ARGS = (
    "--target", "accelerated", "--trials", str(TRIALS), "--outer-folds", "3", "--repeats", "1", "--tiers", "none",
)  # fmt: skip
FIT_STUDIES = 2 * (3 + 1)
KILL_TIMEOUT_S = 300


# --- helpers -----------------------------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "CDEG_NO_PROGRESS": "1", "MPLBACKEND": "Agg", "nnUNet_compile": "f"}
    env.update(extra)
    return env


def _run(
    args: tuple[str, ...], env: dict[str, str], timeout: float = 600
) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cdeg args`` to the end: (result, process id). On a timeout its whole process group is killed."""
    proc = subprocess.Popen(
        [*CDEG, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), proc.pid


def _cdeg(*args: str) -> subprocess.CompletedProcess:
    return _run(args, _env())[0]


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _kill_when(args: tuple[str, ...], ready: Callable[[], bool], log: Path) -> None:
    """Start ``cdeg args``; SIGKILL its whole process group as soon as `ready()` holds (polled)."""
    with open(log, "w") as out:
        # A session of its own: the kill reaches any worker process too, as a scheduler's kill would.
        proc = subprocess.Popen(
            [*CDEG, *args], env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + KILL_TIMEOUT_S
            while not ready():
                if proc.poll() is not None:
                    pytest.fail(
                        f"the run ended (exit {proc.returncode}) before the kill point:\n{log.read_text()}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"kill point not reached in {KILL_TIMEOUT_S} s:\n{log.read_text()}")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}: the kill did not land mid-run"


def _fingerprints(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of every file under `root`."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _temporaries(root: Path) -> list[str]:
    """Files named like cdeg.io.atomic_path's temporary files (``.<stem>.<random>.tmp<suffix>``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp*"))


def _killed_write(target: Path) -> None:
    """A writer SIGKILLed inside cdeg.io.atomic_path, after writing half of the new content."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from cdeg.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half of the new content")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


# --- no network: a bootstrap that refuses every Internet socket in the stage's processes ---------------------------

#: Installed as sitecustomize.py on PYTHONPATH, so it runs first in the stage's process and in every worker process
#: it starts (forked or spawned). AF_UNIX sockets and pipes keep working: multiprocessing needs them.
NO_NETWORK = """\
import os
import socket

_LOG = os.environ["CDEG_TEST_NETLOG"]
PROBE = ("192.0.2.1", 9)  # TEST-NET-1 (RFC 5737): never routed anywhere


class NetworkBlocked(OSError):
    pass


def _refuse(what, detail):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\\tblocked\\t{what}\\t{detail!r}\\n")
    raise NetworkBlocked(f"network access refused by the test: {what} {detail!r}")


_INET = (socket.AF_INET, socket.AF_INET6)
_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def _guarded_connect(self, address):
    if self.family in _INET:
        _refuse("connect", address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    if self.family in _INET:
        _refuse("connect_ex", address)
    return _connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    if self.family in _INET:
        _refuse("sendto", args[-1])
    return _sendto(self, data, *args)


def _refusing(name):
    def refused(*args, **kwargs):
        _refuse(name, args[:2])

    return refused


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.socket.sendto = _guarded_sendto
for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "create_connection"):
    setattr(socket, _name, _refusing(_name))

# The guard proves itself in this very process: a deliberate connection must be refused, by both routes.
_fired = 0
try:
    socket.create_connection(PROBE, timeout=0.1)
except NetworkBlocked:
    _fired += 1
try:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as _s:
        _s.connect(PROBE)
except NetworkBlocked:
    _fired += 1
if _fired == 2:
    with open(_LOG, "a", encoding="utf-8") as _f:
        _f.write(f"{os.getpid()}\\tarmed\\n")
"""
PROBE = "('192.0.2.1', 9)"


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> Callable[[str], tuple[dict[str, str], Path]]:
    """``offline(name)`` -> (environment that runs a process with sockets refused, its log of attempts)."""
    base = tmp_path_factory.mktemp("offline")
    (base / "boot").mkdir()
    (base / "boot" / "sitecustomize.py").write_text(NO_NETWORK)

    def make(name: str) -> tuple[dict[str, str], Path]:
        log = base / f"{name}.log"
        path = os.pathsep.join(p for p in (str(base / "boot"), os.environ.get("PYTHONPATH", "")) if p)
        return _env(PYTHONPATH=path, CDEG_TEST_NETLOG=str(log)), log

    return make


def _run_offline(offline, name: str, *args: str) -> tuple[subprocess.CompletedProcess, Path, int]:
    """Run ``cdeg args`` with sockets refused: (result, log of refused attempts, process id)."""
    env, log = offline(name)
    result, pid = _run(args, env)
    return result, log, pid


def _assert_offline(result: subprocess.CompletedProcess, log: Path, pid: int) -> None:
    """The stage succeeded, the guard was armed in its main process, and nothing but the probe was refused."""
    _ok(result)
    lines = [ln.split("\t") for ln in log.read_text().splitlines()]
    armed = {int(ln[0]) for ln in lines if ln[1] == "armed"}
    assert pid in armed, f"guard not active in the stage's process: {lines}"
    probes = [ln for ln in lines if ln[1] == "blocked" and PROBE in ln[3]]
    assert len(probes) == 2 * len(armed)  # both deliberate attempts refused, in every process
    others = [ln for ln in lines if ln[1] == "blocked" and PROBE not in ln[3]]
    assert others == [], f"the stage tried to use the network: {others}"


@pytest.mark.slow
def test_segment_train_and_predict_run_without_network(cohort3, offline, tmp_path):
    """nnU-Net (the stage with the largest third-party surface) plans, trains and predicts offline."""
    before = _fingerprints(cohort3)
    model, masks = tmp_path / "model", tmp_path / "masks"
    common = ("--cohort", str(cohort3), "--modality", "xray", "--device", "cpu")
    train = ("segment", "train", *common, "--preset", "smoke", "--out", str(model))
    _assert_offline(*_run_offline(offline, "segment_train", *train))
    predict = ("segment", "predict", *common, "--model", str(model), "--out", str(masks))
    _assert_offline(*_run_offline(offline, "segment_predict", *predict))
    assert (masks / "qc.csv").is_file()
    assert _fingerprints(cohort3) == before, "an input file was modified"


# --- segment train, full preset: killed after a checkpoint, resumed --------------------------------------------------


def _training_log(model: Path) -> str:
    return "".join(
        p.read_text() for p in sorted(model.glob("nnUNet_results/*/*/fold_all/training_log_*.txt"))
    )


def _epochs_started(log_text: str) -> list[int]:
    """Epoch numbers whose start nnU-Net logged ("<time>: Epoch 3 "), in order."""
    return [int(n) for n in re.findall(r": Epoch (\d+) *$", log_text, flags=re.M)]


@pytest.mark.slow
def test_full_preset_checkpoints_and_resumes_after_a_kill(tmp_path):
    """`full` = nnU-Net's planned 3d_fullres network, SGD and 1000-epoch poly schedule. Only the epoch length and
    checkpoint interval are shortened (a user's --config), so a checkpoint comes within seconds on a CPU."""
    import torch
    from cdeg.segmentation.phantom import write_phantom_cohort

    cohort = write_phantom_cohort(tmp_path / "cohort", n=5, seed=3, modalities=("mri",))
    cfg = tmp_path / "often.yaml"
    cfg.write_text(
        "presets: {full: {cpu: {mri: {iterations_per_epoch: 2, val_iterations_per_epoch: 1, save_every: 2, "
        "n_proc_da: 1}}}}\n"
    )
    model = tmp_path / "model"
    args = ("segment", "train", "--cohort", str(cohort), "--modality", "mri", "--preset", "full")
    args += ("--device", "cpu", "--config", str(cfg), "--out", str(model))

    # First run: killed once epoch 2 has started, i.e. after the checkpoint written at the end of epoch 1.
    _kill_when(args, lambda: 2 in _epochs_started(_training_log(model)), tmp_path / "run1.log")
    manifest = json.loads((model / "cdeg_model.json").read_text())
    assert manifest["status"] == "training" and manifest["configuration"] == "3d_fullres"
    fold = model / manifest["results_folder"] / "fold_all"
    plans = json.loads((model / manifest["results_folder"] / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][0] == 32
    ckpt = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert ckpt["current_epoch"] == 2 and ckpt["trainer_name"] == "nnUNetTrainer_cdegBudget"
    group = ckpt["optimizer_state"]["param_groups"][0]
    assert group["momentum"] == pytest.approx(0.99) and group["nesterov"]  # nnU-Net's SGD
    assert not list(fold.glob("*.tmp*")), "checkpoints are renamed into place"
    size_before = len(_training_log(model))

    # Second run: resumes at epoch 2 with the schedule's learning rate there, 0.01 * (1 - 2/1000)^0.9.
    _kill_when(args, lambda: 3 in _epochs_started(_training_log(model)[size_before:]), tmp_path / "run2.log")
    resumed = _training_log(model)[size_before:]
    assert "resuming the interrupted training" in (tmp_path / "run2.log").read_text()
    assert _epochs_started(resumed)[:2] == [2, 3]  # continued from the checkpoint, did not restart
    lrs = re.findall(r"Current learning rate: ([0-9.e-]+)", resumed)
    assert float(lrs[0]) == pytest.approx(0.01 * (1 - 2 / 1000) ** 0.9, abs=1e-5)
    assert json.loads((model / "cdeg_model.json").read_text())["status"] == "training"


# --- extract: killed mid-run, resumed --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def light_params(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("params") / "light.yaml"
    path.write_text(LIGHT_PARAMS)
    return path


@pytest.fixture(scope="module")
def cohort6(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, int]]]:
    """Six patients, both modalities, reference masks; with the fingerprints of its files, taken before any run."""
    from cdeg.synth import synthesize

    root = synthesize(tmp_path_factory.mktemp("ft") / "neck6", profile="neck", n=6, seed=7, progress=False)
    return root, _fingerprints(root)


def _extract_args(cohort: Path, params: Path, out: Path) -> tuple[str, ...]:
    return ("extract", "--cohort", str(cohort), "--params", str(params), "--jobs", "1", "--out", str(out))


@pytest.fixture(scope="module")
def extract_reference(cohort6, light_params, offline, tmp_path_factory):
    """An uninterrupted extract, run with sockets refused (it is also the no-network test of extract)."""
    cohort, _ = cohort6
    out = tmp_path_factory.mktemp("extract") / "reference"
    return (*_run_offline(offline, "extract", *_extract_args(cohort, light_params, out)), out)


@pytest.mark.slow
@pytest.mark.radiomics
def test_extract_runs_without_network(extract_reference):
    result, log, pid, out = extract_reference
    _assert_offline(result, log, pid)
    assert all((out / name).is_file() for name in EXTRACT_TABLES)


def _done_units(out: Path) -> int:
    # A unit's JSON is written after its table: its presence marks a finished unit. pathlib's glob also matches
    # dot files, so a JSON still being written (atomic_path's ".<stem>.<random>.tmp.json") is left out.
    if not (out / "cache").is_dir():
        return 0
    return sum(1 for p in (out / "cache").glob("*/*.json") if not p.name.startswith("."))


def _provenance_without_run_details(path: Path) -> dict:
    """provenance.json minus what legitimately differs between an uninterrupted and a resumed run."""
    prov = json.loads(path.read_text())
    del prov["seconds"], prov["units"]  # wall time; how many units were computed vs reused
    del prov["created"]  # when the manifest was written
    for per_modality in prov["patients"].values():
        for entry in per_modality.values():
            del entry["cached"]
    return prov


@pytest.mark.slow
@pytest.mark.radiomics
def test_extract_killed_mid_run_resumes_to_identical_outputs(
    cohort6, light_params, extract_reference, tmp_path
):
    cohort, before = cohort6
    ref = extract_reference[-1]
    n_units = 2 * 6
    out = tmp_path / "killed"
    args = _extract_args(cohort, light_params, out)
    _kill_when(args, lambda: _done_units(out) >= 3, tmp_path / "killed.log")
    n_done = _done_units(out)
    assert 3 <= n_done < n_units and not (out / "features.parquet").exists(), (
        "the first run was not cut short"
    )
    # The kill may or may not have landed inside a write; make sure one did: a unit's table half written.
    unfinished = next(
        out / "cache" / p.name / f"{m}.parquet"
        for p in sorted((cohort / "images").iterdir())
        for m in ("mri", "xray")
        if not (out / "cache" / p.name / f"{m}.json").exists()
    )
    _killed_write(unfinished)
    assert _temporaries(out)

    result = _ok(_cdeg(*args))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["units"]["reused_from_cache"] == n_done  # resumed where it stopped, not restarted
    assert prov["units"]["extracted"] == n_units - n_done
    for name in EXTRACT_TABLES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert not (out / "errors.csv").exists() and not (ref / "errors.csv").exists()
    assert _provenance_without_run_details(out / "provenance.json") == _provenance_without_run_details(
        ref / "provenance.json"
    )
    assert _temporaries(out) == [], "temporary files left behind"
    assert _fingerprints(cohort) == before, "an input file was modified"
    assert "Traceback" not in result.stderr


# --- fit: killed during tuning, resumed ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fit_inputs(tmp_path_factory) -> tuple[Path, dict[str, tuple[str, int]]]:
    from cdeg.modeling.simulate import simulate

    root = tmp_path_factory.mktemp("fitdata")
    feat, clin = simulate(n=40, n_features=12, signal=2.0, prevalence=0.35, seed=2)
    write_table(root / "features.csv", feat)
    write_table(root / "clinical.csv", clin)
    (root / "inner2.yaml").write_text("inner_folds: 2\nstartup_trials: 2\n")
    return root, _fingerprints(root)


def _fit_args(data: Path, out: Path) -> tuple[str, ...]:
    return (
        "fit",
        "--features",
        str(data / "features.csv"),
        "--clinical",
        str(data / "clinical.csv"),
        *FIT_ARGS,
        "--jobs",
        "1",
        "--config",
        str(data / "inner2.yaml"),
        "--out",
        str(out),
    )


@pytest.fixture(scope="module")
def fit_reference(fit_inputs, offline, tmp_path_factory):
    """An uninterrupted fit, run with sockets refused (it is also the no-network test of fit)."""
    data, _ = fit_inputs
    out = tmp_path_factory.mktemp("fit") / "reference"
    return (*_run_offline(offline, "fit", *_fit_args(data, out)), out)


@pytest.mark.slow
def test_fit_runs_without_network(fit_reference):
    result, log, pid, out = fit_reference
    _assert_offline(result, log, pid)
    assert (out / "metrics.json").is_file() and (out / "model" / "model.json").is_file()


def _complete_trials(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError:  # tables not created yet, or locked for a moment
        return 0


def _studies(db: Path) -> dict[str, list[tuple[dict, float]]]:
    """Study name -> its completed trials in order: (hyperparameters, inner-CV objective)."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    try:
        out = {}
        for name in sorted(optuna.get_all_study_names(storage)):
            study = optuna.load_study(study_name=name, storage=storage)
            trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
            out[name] = [(t.params, t.value) for t in trials]
        return out
    finally:
        storage.engine.dispose()


def _metrics_without_run_details(path: Path) -> dict:
    """metrics.json minus what legitimately differs between an uninterrupted and a resumed run."""
    metrics = json.loads(path.read_text())
    del metrics["timings_s"], metrics["new_trials"]  # wall times; trials run by this invocation
    for task in metrics["tuning"]:
        del task["seconds"], task["new_trials"]  # same, per study
    return metrics


def _listing(run: Path) -> list[str]:
    # optuna.db-wal/-shm exist while any connection to the study database is open (this test opens some).
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if not p.name.startswith("optuna.db"))


def _report_without_timings(path: Path) -> str:
    # The report's timing rows ("time: nested_cv | 4.39 s") are wall times.
    return re.sub(r"(time: \w+</td><td>)[0-9.]+ s<", r"\1X s<", path.read_text())


@pytest.mark.slow
def test_fit_killed_during_tuning_resumes_to_identical_outputs(fit_inputs, fit_reference, tmp_path):
    data, before = fit_inputs
    ref = fit_reference[-1]
    total = FIT_STUDIES * TRIALS
    out = tmp_path / "killed"
    args = _fit_args(data, out)
    _kill_when(args, lambda: _complete_trials(out / "optuna.db") >= 12, tmp_path / "killed.log")
    n_done = _complete_trials(out / "optuna.db")
    assert 12 <= n_done < total and not (out / "metrics.json").exists(), "the first run was not cut short"

    result = _ok(_cdeg(*args))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["new_trials"] == total - n_done  # resumed: only the missing trials were run
    # The claim of cdeg.modeling.tuning: a resumed study proposes the trials of an uninterrupted one.
    assert _studies(out / "optuna.db") == _studies(ref / "optuna.db")
    assert _metrics_without_run_details(out / "metrics.json") == _metrics_without_run_details(
        ref / "metrics.json"
    )
    manifest, ref_manifest = (json.loads((d / "model" / "model.json").read_text()) for d in (out, ref))
    del manifest["created"], ref_manifest["created"]  # a timestamp
    assert manifest == ref_manifest
    # Everything else byte for byte: predictions, model files, PNG and SVG figures.
    compared = [
        p.relative_to(ref)
        for p in sorted(ref.rglob("*"))
        if p.is_file()
        and p.suffix in (".csv", ".json", ".png", ".svg")
        and p.name not in ("metrics.json", "model.json")
    ]
    compared.append(Path("model/development/metrics.json"))
    assert len(compared) > 15
    for rel in compared:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert _listing(out) == _listing(ref)
    assert _report_without_timings(out / "report.html") == _report_without_timings(ref / "report.html")
    assert _temporaries(out) == []
    assert _fingerprints(data) == before, "an input file was modified"
    assert "Traceback" not in result.stderr


# --- damaged inputs, one patient at a time ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort3(tmp_path_factory) -> Path:
    """Three patients (read-only: copy before planting a problem)."""
    from cdeg.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("ft3") / "neck3", profile="neck", n=3, seed=5, progress=False)


def _truncate_image(root: Path, pid: str) -> str:
    path = root / "images" / pid / "xray.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted copy
    return f"images/{pid}/xray.nii.gz"


def _shift_mask(root: Path, pid: str) -> str:
    path = root / "masks" / pid / "xray.nii.gz"
    mask = sitk.ReadImage(str(path))
    mask.SetOrigin((mask.GetOrigin()[0] + 5.0, *mask.GetOrigin()[1:]))  # 5 mm: beyond any rounding tolerance
    sitk.WriteImage(mask, str(path), useCompression=True)
    return f"masks/{pid}/xray.nii.gz"


MISSING_LEVEL = ("C4-C5", 104)


def _drop_level(root: Path, pid: str) -> str:
    path = root / "masks" / pid / "xray.nii.gz"
    mask = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(mask)
    assert (arr == MISSING_LEVEL[1]).any()
    arr[arr == MISSING_LEVEL[1]] = 0
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(mask)
    sitk.WriteImage(out, str(path), useCompression=True)
    return f"masks/{pid}/xray.nii.gz"


@pytest.mark.parametrize(
    "plant",
    [_truncate_image, _shift_mask, _drop_level],
    ids=["truncated_nifti", "geometry_mismatch", "missing_level"],
)
@pytest.mark.radiomics
def test_damaged_input_costs_only_its_patient(plant, cohort3, light_params, tmp_path):
    cohort = Path(shutil.copytree(cohort3, tmp_path / "cohort"))
    pids = sorted(p.name for p in (cohort / "images").iterdir())
    bad = pids[1]
    rel = plant(cohort, bad)
    before = _fingerprints(cohort)
    out = tmp_path / "out"
    result = _cdeg(*_extract_args(cohort, light_params, out), "--modality", "xray")
    console = result.stdout + result.stderr
    assert result.returncode == 0, console
    assert "Traceback" not in console
    wide = pd.read_parquet(out / "features.parquet").set_index("patient_id")
    for pid in pids:
        if pid != bad:
            assert wide.loc[pid].notna().mean() > 0.9, pid  # the others are processed in full
    assert _fingerprints(cohort) == before, "an input file was modified"
    if plant is _drop_level:
        # Not an error: that level's values are missing, the patient's other levels are there.
        level = wide.loc[bad].filter(like=f"xray__{MISSING_LEVEL[0]}__")
        assert len(level) and level.isna().all()
        assert np.isfinite(wide.loc[bad, "xray__C5-C6__disc_height_middle_mm"])
        assert np.isfinite(wide.loc[bad, "xray__C3__original_firstorder_Mean"])
        return
    # One line names the patient and the file; the patient's values are not computed from the damaged file.
    assert [ln for ln in console.splitlines() if rel in ln], (
        f"no line names patient {bad} and {rel}:\n{console}"
    )
    if bad in wide.index:
        assert wide.loc[bad].filter(like="xray__").isna().all()
    # --strict: the same problem stops the stage before any work, with one line and no traceback.
    strict = _cdeg(
        *_extract_args(cohort, light_params, tmp_path / "strict"), "--modality", "xray", "--strict"
    )
    console = strict.stdout + strict.stderr
    assert strict.returncode == 1 and "Traceback" not in console, console
    assert [ln for ln in console.splitlines() if ln.startswith("Error:") and rel in ln], console
    assert not (tmp_path / "strict" / "features.parquet").exists()


# --- a damaged DICOM file in an import ------------------------------------------------------------------------------


def test_damaged_dicom_file_is_skipped_with_a_reason_and_nothing_identifying_leaks(tmp_path):
    pytest.importorskip("pydicom")
    from cdeg.dicom import deid
    from cdeg.dicom.api import REPORT_CSV
    from cdeg.dicom.write import write_cohort_dicom
    from cdeg.synth import synthesize

    source = synthesize(tmp_path / "source", profile="neck", n=3, seed=3, progress=False)
    dicom = write_cohort_dicom(source, tmp_path / "pacs", seed=11).root
    secrets = identifying_values(dicom)
    assert secrets
    folder = sorted(p for p in dicom.iterdir() if p.is_dir())[0]
    damaged = next(folder.rglob("S001_C-SPINE_LAT/*.dcm"))
    damaged.write_bytes(damaged.read_bytes()[:3000])  # cut inside the pixel data
    before = _fingerprints(dicom)
    private = tmp_path / "private" / "id_map.csv"
    result = _cdeg(
        "import-dicom", "--dicom", str(dicom), "--out", str(tmp_path / "cohort"), "--id-map", str(private)
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in console, console
    assert _fingerprints(dicom) == before, "an input file was modified"

    pseudonym = deid.read_id_map(private)[folder.name.rsplit("_", 1)[1]]  # folders end in the hospital id
    # One console line names the (pseudonymised) patient and what was not imported; the file itself is named by its
    # key in import_report.csv, because its path carries the patient's name.
    assert [ln for ln in console.splitlines() if pseudonym in ln and "xray" in ln], console
    report = pd.read_csv(tmp_path / "cohort" / REPORT_CSV, dtype=str).fillna("")
    files = pd.read_csv(deid.files_table_path(private), dtype=str).set_index("file_key")["relative_path"]
    row = report[report["file_key"].map(files.get) == damaged.relative_to(dicom).as_posix()]
    assert len(row) == 1 and row["reason"].iloc[0] and row["patient_id"].iloc[0] == pseudonym
    cohort = tmp_path / "cohort"
    assert not (cohort / "images" / pseudonym / "xray.nii.gz").exists()
    assert (cohort / "images" / pseudonym / "mri.nii.gz").exists()
    others = [p.name for p in (cohort / "images").iterdir() if p.name != pseudonym]
    assert len(others) == 2 and all((cohort / "images" / p / "xray.nii.gz").exists() for p in others)
    # Identifying values: in no output file, no file name, no console line.
    text = output_bytes(cohort)
    for value in sorted(secrets):
        assert value.lower().encode() not in text, f"{value!r} reached the cohort"
        assert value.lower() not in console.lower(), f"{value!r} reached the console"


# --- atomic writes --------------------------------------------------------------------------------------------------


def test_failed_writes_keep_the_previous_file(tmp_path):
    """A writer failing midway leaves the previous version in place and no temporary file."""
    target = tmp_path / "table.parquet"
    write_table(target, pd.DataFrame({"a": [1.0, 2.0]}))
    good = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(good[: len(good) // 2])
        raise RuntimeError("disk full")
    bad = pd.DataFrame({"a": [1.0, "text", object()]})  # pyarrow fails while converting
    with pytest.raises((TypeError, ValueError)):  # pyarrow's ArrowTypeError / ArrowInvalid
        write_table(target, bad)
    assert target.read_bytes() == good
    meta = tmp_path / "meta.json"
    write_json(meta, {"ok": 1})
    with pytest.raises(ValueError):
        write_json(meta, {"ok": float("nan")})
    assert json.loads(meta.read_text()) == {"ok": 1}
    notes = tmp_path / "notes.txt"
    write_text(notes, "first")
    with pytest.raises(TypeError):
        write_text(notes, b"bytes where text is due")  # fails once the temporary file is open
    assert notes.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "notes.txt", "table.parquet"]


def test_killed_write_keeps_the_previous_file(tmp_path):
    """A process SIGKILLed inside a write: the previous version is intact, the half-written data is only in a
    hidden temporary file that no reader picks up."""
    target = tmp_path / "features.parquet"
    write_table(target, pd.DataFrame({"a": [1.0, 2.0]}))
    good = target.read_bytes()
    _killed_write(target)
    assert target.read_bytes() == good
    assert pd.read_parquet(target)["a"].tolist() == [1.0, 2.0]
    leftovers = _temporaries(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".features.")
