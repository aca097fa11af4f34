"""`cdeg run`: run the stages of a study in order, each only when its inputs or options changed."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdeg.choices import DEVICES
from cdeg.errors import CdegError
from cdeg.outputs import write_manifest
from cdeg.pipeline import cache
from cdeg.pipeline.config import RunConfig, check_run_config, load_run_config
from cdeg.pipeline.stages import Context, Stage, build_stages
from cdeg.progress import ProgressArg

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run` did: per stage ``ran`` / ``up to date`` / ``would run``, seconds, and the report path."""

    out: Path
    report: Path
    stages: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ran(self) -> list[str]:
        """Names of the stages that ran."""
        return [s["stage"] for s in self.stages if s["status"] == "ran"]


def run(
    config: str | Path | RunConfig,
    out: str | Path | None = None,
    jobs: int | None = None,
    device: str | None = None,
    force: str | list[str] | tuple[str, ...] | None = None,
    dry_run: bool = False,
    progress: ProgressArg = True,
    strict: bool | None = None,
) -> RunResult:
    """Run a study: every stage whose inputs or options changed since its last run, in order.

    Each stage checks its inputs with the checks of ``cdeg check`` before any work and skips the patients
    with a problem (see each stage function); a problem with a whole cohort (cohort.json, clinical.csv,
    ids) stops the run.

    Parameters
    ----------
    config : path or RunConfig
        The study configuration (YAML, see ``configs/study_template.yaml``).
    out : path, optional
        Run folder; overrides the configuration's ``out``.
    jobs : int, optional
        Worker processes (0 = all cores); overrides the configuration's ``jobs``. Never changes a result.
    device : {"auto", "cpu", "cuda"}, optional
        Where segmentation runs; overrides ``segmentation.device``.
    force : str or list, optional
        Stage names (``fit:accelerated``) or kinds (``fit``) to run even when up to date ("all" for every
        stage); their downstream stages follow.
    dry_run : bool
        Only report which stages would run and why.
    progress : bool or callable
        Progress bars.
    strict : bool, optional
        Stop at the first problem with an input instead of skipping that patient; overrides the
        configuration's ``strict``. Not part of any stage's key: a stage that is up to date is not run,
        so its inputs are not checked again.

    Returns
    -------
    RunResult
    """
    t_start = time.perf_counter()
    config_path = None if isinstance(config, RunConfig) else Path(config)
    cfg = config if isinstance(config, RunConfig) else load_run_config(config)
    if isinstance(config, RunConfig):
        check_run_config(cfg)  # a configuration built in Python is checked as thoroughly as a file
    jobs = cfg.jobs if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be >= 0 (0 = all cores), got {jobs!r}")
    device = device or cfg.segmentation.device
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    out_dir = Path(out if out is not None else cfg.out)
    ctx = Context(
        cfg=cfg,
        out=out_dir,
        jobs=jobs,
        device=device,
        progress=progress,
        config_path=config_path,
        strict=cfg.strict if strict is None else bool(strict),
    )
    stages = build_stages(ctx)
    forced = _parse_force(force, stages)
    _check_user_inputs(stages)
    study = {**study_record(cfg), "out": str(out_dir.resolve())}  # the folder it really ran in (--out)
    record = {"config": str(config_path.resolve()) if config_path else None, "study": study}
    if not dry_run:
        # Written before the first stage: the report (a stage) and `cdeg report --run` read the study from it.
        out_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(
            ctx.run.run_json, {**record, "status": "running", "started": cache.now(), "stages": []}
        )

    rows = _run_stages(stages, ctx, forced, dry_run)
    report = ctx.run.report
    res = RunResult(out=out_dir, report=report, stages=rows, seconds=round(time.perf_counter() - t_start, 1))
    if not dry_run:
        write_manifest(
            ctx.run.run_json,
            {
                **record,
                "status": "complete",
                "seconds": res.seconds,
                "stages": rows,
                "report": str(report),
                "finished": cache.now(),
            },
        )
    return res


#: Keys of the study configuration that hold paths (dotted, ``*`` = every key of a mapping).
_PATH_KEYS = (
    "cohorts.*.path",
    "cohorts.*.synth.config",
    "segmentation.models.*",
    "segmentation.config",
    "extract.params",
    "fit.config",
)


def study_record(cfg: RunConfig) -> dict[str, Any]:
    """The resolved study configuration as stored in run.json: every path absolute, so that the run folder
    can be read (`cdeg report --run`) from any working directory."""
    from cdeg.config import to_dict

    data = to_dict(cfg)
    for dotted in _PATH_KEYS:
        _absolutise(data, dotted.split("."))
    return data


def _absolutise(node: Any, keys: list[str]) -> None:
    if not isinstance(node, dict) or not keys:
        return
    head, rest = keys[0], keys[1:]
    names = list(node) if head == "*" else [head]
    for name in names:
        if name not in node:
            continue
        if rest:
            _absolutise(node[name], rest)
        elif node[name] is not None:
            node[name] = str(Path(node[name]).resolve())


def _run_stages(stages: list[Stage], ctx: Context, forced: set[str], dry_run: bool) -> list[dict[str, Any]]:
    """Run (or, dry, list) the stages in order; one row per stage: ran, up to date or would run, and why."""
    rows: list[dict[str, Any]] = []
    pending: set[str] = set()
    for i, stage in enumerate(stages, 1):
        prefix = f"[{i}/{len(stages)}] {stage.name}"
        upstream_pending = [d for d in stage.deps.values() if d in pending]
        if dry_run and upstream_pending:
            pending.add(stage.name)
            rows.append(
                {"stage": stage.name, "status": "would run", "reason": f"{upstream_pending[0]} would run"}
            )
            log.info("%s: would run (%s would run)", prefix, upstream_pending[0])
            continue
        inputs = _inputs(stage, ctx)
        params = _jsonable(stage.params(ctx))
        key = cache.stage_key(stage.kind, params, inputs)
        reason = "forced" if stage.name in forced else cache.why_stale(stage.folder, key)
        if reason is None:
            ctx.manifests[stage.name] = cache.read_manifest(stage.folder) or {}
            last = ctx.manifests[stage.name].get("seconds")
            rows.append({"stage": stage.name, "status": "up to date", "seconds": 0.0, "last_run_s": last})
            log.info("%s: up to date", prefix)
        elif dry_run:
            pending.add(stage.name)
            rows.append({"stage": stage.name, "status": "would run", "reason": reason})
            log.info("%s: would run (%s)", prefix, reason)
        else:
            log.info("%s: running (%s)", prefix, reason)
            seconds = _run_one(stage, ctx, key, params, inputs)
            rows.append(
                {"stage": stage.name, "status": "ran", "reason": reason, "seconds": round(seconds, 1)}
            )
            log.info("%s: done in %.1f s", prefix, seconds)
    return rows


def _run_one(stage: Stage, ctx: Context, key: str, params: dict[str, Any], inputs: dict[str, Any]) -> float:
    """Run one stage into its cleared folder and record its manifest; return the seconds it took."""
    t0 = time.perf_counter()
    manifest = _prepare_folder(stage, key, params, inputs, ctx.out)
    result = stage.call(stage, ctx, params)
    seconds = time.perf_counter() - t0
    ctx.manifests[stage.name] = cache.write_complete(manifest, stage.folder, seconds, _jsonable(result))
    return seconds


def _parse_force(force: str | list[str] | tuple[str, ...] | None, stages: list[Stage]) -> set[str]:
    if not force:
        return set()
    # `--force a,b` and `--force a --force b` both: the CLI passes a tuple whose items may hold commas.
    parts = [force] if isinstance(force, str) else list(force)
    items = [f.strip() for part in parts for f in part.split(",") if f.strip()]
    names = {s.name for s in stages}
    kinds = {s.kind for s in stages}
    out: set[str] = set()
    for f in items:
        if f == "all":
            out |= names
        elif f in names:
            out.add(f)
        elif f in kinds:
            out |= {s.name for s in stages if s.kind == f}
        else:
            raise ValueError(f"unknown stage {f!r} for --force; stages: {', '.join(s.name for s in stages)}")
    return out


def _check_user_inputs(stages: list[Stage]) -> None:
    """Every user file and folder the study reads must exist: report them all before any work starts."""
    missing = sorted(
        {f"{name}: {path}" for s in stages for name, path in s.paths.items() if not path.exists()}
    )
    if missing:
        raise CdegError(f"{len(missing)} input(s) not found: " + "; ".join(missing))


def _inputs(stage: Stage, ctx: Context) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for name, dep in sorted(stage.deps.items()):
        inputs[name] = {"stage": dep, "hash": ctx.manifests[dep].get("hash")}
    for name, path in sorted(stage.paths.items()):
        inputs[name] = {"path": str(path), "fingerprint": cache.path_fingerprint(path)}
    return inputs


def _prepare_folder(stage: Stage, key: str, params: dict, inputs: dict, out: Path) -> dict[str, Any]:
    """Clear what a previous run left (unless the stage resumes it) and record that the stage started."""
    folder = stage.folder
    previous = cache.read_manifest(folder)
    resume = stage.resumable and previous is not None and previous.get("key") == key
    if folder.exists() and not resume:
        inside = out.resolve() in folder.resolve().parents
        if not inside:
            raise CdegError("a stage folder outside the run folder cannot be cleared", path=folder)
        if previous is None and any(folder.iterdir()) and not stage.keep:
            # Never delete what cdeg run did not write.
            raise CdegError(
                f"folder is not empty and was not written by `cdeg run` (no {cache.MANIFEST}); "
                "remove it or choose another run folder",
                path=folder,
            )
        for child in folder.iterdir():
            if child.name in stage.keep:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    if stage.kind == "synth":
        # `cdeg synth` writes only into a new folder (the call renames a finished cohort into place): the
        # manifest is written when it is complete.
        if folder.exists():
            folder.rmdir()
        return {
            "format": cache.FORMAT,
            "format_version": cache.FORMAT_VERSION,
            "stage": stage.name,
            "kind": stage.kind,
            "status": "running",
            "key": key,
            "params": params,
            "inputs": inputs,
            "cdeg_version": cache.__version__,
            "started": cache.now(),
        }
    folder.mkdir(parents=True, exist_ok=True)
    return cache.write_running(folder, stage.name, stage.kind, key, params, inputs)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))
