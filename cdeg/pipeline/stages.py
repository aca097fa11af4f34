"""The stages of a study and how each calls its stage function (no stage logic is copied here).

A :class:`Stage` names its folder, its upstream stages, the user files it reads, its parameters and the call
that produces its outputs. :func:`build_stages` turns a :class:`~cdeg.pipeline.config.RunConfig` into the
ordered list: synth (synthetic cohorts only) -> segment-train -> segment-predict -> segment-evaluate (where
reference masks exist) -> extract (on predicted masks) -> extract-reference and agreement (a few patients'
features from their reference masks, compared with those from predicted masks) -> label (targets derived by a
rule) -> fit -> validate (external
cohort) -> predict (per-patient explanations for the report) -> report.

Run folder layout (``OUT``)::

    cohorts/<cohort>/                synthetic cohorts (cohort layout)
    segmentation/train-<modality>/   model/ = a `cdeg segment train` model folder
    masks/<cohort>/                  `cdeg segment predict` output (masks, QC PNGs, qc.csv), all modalities
    segmentation/evaluate-<cohort>/  evaluation.json (`cdeg segment evaluate`)
    features/<cohort>/               `cdeg extract` output
    reference-features/<cohort>/     `cdeg extract --patients` on the cohort's reference masks (agreement)
    agreement/<cohort>/              `cdeg extract-agreement` (predicted vs reference masks)
    labels/<target>/<cohort>/        `cdeg label` (targets with a label section): clinical.csv with the label
    models/<target>/                 `cdeg fit` run folder (model/ inside)
    validation/<target>/             `cdeg validate` output
    predictions/<target>/            `cdeg predict` output on the development cohort (SHAP waterfalls)
    report/report.html               the study report
    run.json                         what the last `cdeg run` did, stage by stage

Every stage folder holds its ``cdeg_stage.json`` (see :mod:`cdeg.pipeline.cache`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdeg.cohort import CLINICAL_CSV, IMAGE_SUFFIX, MASKS_DIR
from cdeg.config import deep_merge, load_yaml, to_dict
from cdeg.errors import CdegError
from cdeg.outputs import Evaluation, FeatureFolder, FitRun, RunFolder
from cdeg.pipeline.config import RunConfig, agreement_cohort, cohort_roles
from cdeg.progress import ProgressArg

log = logging.getLogger(__name__)

#: Sections of configs/segment.yaml each segmentation stage reads (so a change to prediction options does not
#: retrain the network).
_SEGMENT_SECTIONS = {"train": ("presets",), "predict": ("predict", "postprocess")}


@dataclass
class Context:
    """What stages share during one `cdeg run`: the configuration, folders and switches."""

    cfg: RunConfig
    out: Path
    jobs: int
    device: str
    progress: ProgressArg
    config_path: Path | None = None
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    strict: bool = False

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> Context:
        """The context of a finished run, rebuilt from its run.json (to read its outputs, e.g. the report)."""
        from cdeg.config import from_dict

        run = RunFolder(Path(run_dir))
        record = run.read()
        cfg = from_dict(RunConfig, record["study"], source=run.run_json)
        config = record.get("config")
        return cls(
            cfg=cfg, out=run.root, jobs=1, device="cpu", progress=None, config_path=config and Path(config)
        )

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.out)

    def cohort_folder(self, key: str) -> Path:
        spec = self.cfg.cohorts[key]
        return self.run.cohort(key) if spec.synth is not None else Path(spec.path or "")

    def masks_folder(self, key: str) -> Path:
        if self.cfg.segmentation.enabled:
            return self.run.masks(key).root
        return self.cohort_folder(key) / MASKS_DIR

    def model_folder(self, modality: str) -> Path:
        seg = self.cfg.segmentation
        if modality in seg.models:
            return Path(seg.models[modality])
        return self.run.segment_model(modality).root

    def features_folder(self, key: str) -> Path:
        return self.run.features(key).root


@dataclass
class Stage:
    """One step of the study.

    Attributes
    ----------
    name : str
        Unique name, ``kind:subject`` (``fit:accelerated``).
    kind : str
        synth, segment-train, segment-predict, segment-evaluate, extract, extract-reference, agreement, fit,
        validate, predict, report.
    folder : Path
        Where its outputs and manifest go.
    deps : dict
        Input name -> upstream stage name (their manifest hashes enter this stage's key).
    paths : dict
        Input name -> user file or folder (its fast fingerprint enters the key).
    params : callable
        ``params(ctx) -> dict``: the resolved options (JSON); may read upstream outputs.
    call : callable
        ``call(stage, ctx, params) -> dict``: runs the stage function; returns a small summary.
    resumable : bool
        The stage function resumes an interrupted run itself: its folder is kept when it runs again with the
        same key (and `keep` is kept even when the key changed).
    keep : tuple
        Names in the folder that survive a re-run with another key (the stage function's own caches).
    """

    name: str
    kind: str
    folder: Path
    deps: dict[str, str]
    paths: dict[str, Path]
    params: Callable[[Context], dict[str, Any]]
    call: Callable[[Stage, Context, dict[str, Any]], dict[str, Any]]
    resumable: bool = False
    keep: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# building the list
# --------------------------------------------------------------------------------------------------------------


def build_stages(ctx: Context) -> list[Stage]:
    """The ordered stages of the study described by ``ctx.cfg``."""
    stages = (
        _synth_stages(ctx)
        + _segmentation_stages(ctx)
        + _extract_stages(ctx)
        + _agreement_stages(ctx)
        + _label_stages(ctx)
        + _model_stages(ctx)
    )
    report_deps = {s.name: s.name for s in stages}
    report_paths = {k: v for s in stages for k, v in s.paths.items()}
    stages.append(
        Stage(
            "report", "report", ctx.run.report_folder, report_deps, report_paths, _report_params, _run_report
        )
    )
    return stages


def _cohort_input(ctx: Context, key: str) -> tuple[dict[str, str], dict[str, Path]]:
    """How a stage depends on a cohort: on its synth stage, or on the user's folder."""
    if ctx.cfg.cohorts[key].synth is not None:
        return {f"cohort {key}": f"synth:{key}"}, {}
    return {}, {f"cohort {key}": ctx.cohort_folder(key)}


def _synth_stages(ctx: Context) -> list[Stage]:
    roles = cohort_roles(ctx.cfg)
    stages = []
    for key in dict.fromkeys(roles["train"] + roles["analysed"]):
        spec = ctx.cfg.cohorts[key]
        if spec.synth is None:
            continue
        paths = {"synth config": Path(spec.synth.config)} if spec.synth.config else {}
        params = lambda c, s=spec.synth: to_dict(s)  # noqa: E731 - bound per cohort
        stages.append(Stage(f"synth:{key}", "synth", ctx.cohort_folder(key), {}, paths, params, _run_synth))
    return stages


def _segmentation_stages(ctx: Context) -> list[Stage]:
    seg = ctx.cfg.segmentation
    if not seg.enabled:
        return []
    seg_file = {"segment config": Path(seg.config)} if seg.config else {}
    stages = []
    for m in seg.modalities:
        if m in seg.models:
            continue
        deps, paths = _cohort_input(ctx, seg.train_cohort or "")
        stages.append(
            Stage(
                f"segment-train:{m}",
                "segment-train",
                ctx.run.segment_train(m),
                deps,
                {**paths, **seg_file},
                lambda c, m=m: _train_params(c, m),
                _run_train,
                resumable=True,
            )
        )
    for key in cohort_roles(ctx.cfg)["analysed"]:
        deps, paths = _cohort_input(ctx, key)
        for m in seg.modalities:
            if m in seg.models:
                paths[f"model {m}"] = ctx.model_folder(m)
            else:
                deps[f"model {m}"] = f"segment-train:{m}"
        stages.append(
            Stage(
                f"segment-predict:{key}",
                "segment-predict",
                ctx.masks_folder(key),
                deps,
                {**paths, **seg_file},
                lambda c: _predict_params(c),
                _run_segment_predict,
            )
        )
        if seg.evaluate and _has_references(ctx, key):
            stages.append(
                Stage(
                    f"segment-evaluate:{key}",
                    "segment-evaluate",
                    ctx.run.evaluation(key).root,
                    {**deps, "masks": f"segment-predict:{key}"},
                    paths,
                    lambda c, k=key: {"modalities": list(_reference_modalities(c, k))},
                    _run_evaluate,
                )
            )
    return stages


def _extract_stages(ctx: Context) -> list[Stage]:
    stages = []
    for key in cohort_roles(ctx.cfg)["analysed"]:
        deps, paths = _cohort_input(ctx, key)
        if ctx.cfg.segmentation.enabled:
            deps["masks"] = f"segment-predict:{key}"
        if ctx.cfg.extract.params:
            paths["radiomics params"] = Path(ctx.cfg.extract.params)
        stages.append(
            Stage(
                f"extract:{key}",
                "extract",
                ctx.features_folder(key),
                deps,
                paths,
                _extract_params,
                _run_extract,
                resumable=True,
                keep=(FeatureFolder.CACHE_DIR,),
            )
        )
    return stages


def _extract_params(ctx: Context) -> dict[str, Any]:
    """The extraction options every extract stage shares (the predicted and the reference masks alike)."""
    e = ctx.cfg.extract
    return {
        "params": bool(e.params),
        "radiomics": e.radiomics,
        "modalities": list(e.modalities),
        "geometry_tolerance_mm": e.geometry_tolerance_mm,
    }


def _agreement_stages(ctx: Context) -> list[Stage]:
    """extract-reference (the agreement patients' features from their reference masks), then agreement."""
    key = agreement_cohort(ctx.cfg)
    if key is None:
        return []
    mods = _agreement_modalities(ctx, key)
    if not mods:
        if ctx.cfg.agreement.enabled:
            raise CdegError(
                f"agreement.enabled is true but cohort {key!r} has no reference masks of "
                f"{', '.join(m for m in ctx.cfg.extract.modalities if m in ctx.cfg.segmentation.modalities)}",
                path=ctx.cohort_folder(key) / MASKS_DIR,
            )
        return []
    deps, paths = _cohort_input(ctx, key)
    if ctx.cfg.extract.params:
        paths["radiomics params"] = Path(ctx.cfg.extract.params)
    reference = Stage(
        f"extract-reference:{key}",
        "extract-reference",
        ctx.run.reference_features(key).root,
        deps,
        paths,
        lambda c: {
            **_extract_params(c),
            "modalities": list(mods),
            "patients": agreement_patients(c, key, mods),
        },
        _run_extract_reference,
        resumable=True,
        keep=(FeatureFolder.CACHE_DIR,),
    )
    compare = Stage(
        f"agreement:{key}",
        "agreement",
        ctx.run.agreement(key).root,
        {"predicted features": f"extract:{key}", "reference features": reference.name},
        {},
        lambda c: {"cohort": key, "patients": agreement_patients(c, key, mods)},
        _run_agreement,
    )
    return [reference, compare]


def _agreement_modalities(ctx: Context, key: str) -> tuple[str, ...]:
    """The modalities extracted from predicted masks for which the cohort has reference masks."""
    return tuple(m for m in _reference_modalities(ctx, key) if m in ctx.cfg.extract.modalities)


def agreement_patients(ctx: Context, key: str, modalities: tuple[str, ...]) -> list[str]:
    """The patients of the agreement: the first ``agreement.patients`` ids in sorted order among the cohort's
    patients with a reference mask of one of `modalities` (all of them for 0), so the choice is deterministic."""
    from cdeg.cohort import Cohort

    cohort = Cohort.open(ctx.cohort_folder(key))
    ids = sorted(p for p in cohort.patient_ids() if any(cohort.has_mask(p, m) for m in modalities))
    n = ctx.cfg.agreement.patients
    return ids[:n] if n else ids


def _label_stages(ctx: Context) -> list[Stage]:
    """label (targets with a label section): the target derived by its rule on the development and the external
    cohort, against the same reference."""
    stages = []
    for target, spec in ctx.cfg.targets.items():
        if spec.label is None:
            continue
        ref = spec.label.reference or ""
        for key in dict.fromkeys(k for k in (spec.development, spec.external) if k is not None):
            deps, paths = _cohort_input(ctx, key)
            d2, p2 = _cohort_input(ctx, ref)
            deps = {**deps, **d2, "features": f"extract:{key}", "reference features": f"extract:{ref}"}
            stages.append(
                Stage(
                    f"label:{target}:{key}",
                    "label",
                    ctx.run.label(target, key).root,
                    deps,
                    {**paths, **p2},
                    lambda c, t=target, k=key: _label_params(c, t, k),
                    _run_label,
                )
            )
    return stages


def clinical_table(ctx: Context, target: str, key: str) -> Path:
    """The clinical table the model stages of `target` read for cohort `key`: the one with the derived label
    for a target with a label section, else the cohort's own."""
    if ctx.cfg.targets[target].label is not None:
        return ctx.run.label(target, key).clinical
    return ctx.cohort_folder(key) / CLINICAL_CSV


def _label_dep(ctx: Context, target: str, key: str | None) -> dict[str, str]:
    if key is None or ctx.cfg.targets[target].label is None:
        return {}
    return {f"label {key}": f"label:{target}:{key}"}


def _model_stages(ctx: Context) -> list[Stage]:
    """fit, then validate (external cohort) and predict (patient cards) for every target."""
    cfg = ctx.cfg
    fit_file = {"fit config": Path(cfg.fit.config)} if cfg.fit.config else {}
    stages = []
    for target, spec in cfg.targets.items():
        deps, paths = _cohort_input(ctx, spec.development)
        deps["features"] = f"extract:{spec.development}"
        for key in (spec.external, cfg.fit.age_reference):
            if key is not None:
                d2, p2 = _cohort_input(ctx, key)
                deps.update(d2)
                paths.update(p2)
        if cfg.fit.age_reference is not None:
            deps["age reference features"] = f"extract:{cfg.fit.age_reference}"
        deps.update(_label_dep(ctx, target, spec.development))
        stages.append(
            Stage(
                f"fit:{target}",
                "fit",
                ctx.run.fit(target).root,
                deps,
                {**paths, **fit_file},
                lambda c, t=target: _fit_params(c, t),
                _run_fit,
                resumable=True,
                keep=FitRun.OPTUNA_FILES,
            )
        )
        if spec.external is not None:
            d3, p3 = _cohort_input(ctx, spec.external)
            stages.append(
                Stage(
                    f"validate:{target}",
                    "validate",
                    ctx.run.validation(target).root,
                    {
                        **d3,
                        **_label_dep(ctx, target, spec.external),
                        "model": f"fit:{target}",
                        "features": f"extract:{spec.external}",
                    },
                    p3,
                    lambda c, t=target: {
                        "target": t,
                        "cohort": c.cfg.targets[t].external,
                        "max_imputed": c.cfg.targets[t].max_imputed,
                        "recalibrate": c.cfg.targets[t].recalibrate,
                    },
                    _run_validate,
                )
            )
        if cfg.report.patient_cards:
            d4, p4 = _cohort_input(ctx, spec.development)
            stages.append(
                Stage(
                    f"predict:{target}",
                    "predict",
                    ctx.run.predictions(target).root,
                    {
                        **d4,
                        **_label_dep(ctx, target, spec.development),
                        "model": f"fit:{target}",
                        "features": f"extract:{spec.development}",
                    },
                    p4,
                    lambda c, t=target: {
                        "target": t,
                        "cohort": c.cfg.targets[t].development,
                        # The cards explain the cross-validated risk with the fit's waterfalls; this stage gives
                        # the final model's risk beside it, so its own waterfalls would never be shown.
                        "waterfalls": False,
                    },
                    _run_predict,
                )
            )
    return stages


def _has_references(ctx: Context, key: str) -> bool:
    if ctx.cfg.cohorts[key].synth is not None:
        return True
    return bool(_reference_modalities(ctx, key))


def _reference_modalities(ctx: Context, key: str) -> tuple[str, ...]:
    if ctx.cfg.cohorts[key].synth is not None:
        return tuple(ctx.cfg.segmentation.modalities)
    masks = ctx.cohort_folder(key) / MASKS_DIR
    if not masks.is_dir():
        return ()
    return tuple(m for m in ctx.cfg.segmentation.modalities if any(masks.glob(f"*/{m}{IMAGE_SUFFIX}")))


# --------------------------------------------------------------------------------------------------------------
# parameters (what enters each stage's key)
# --------------------------------------------------------------------------------------------------------------


def segment_overrides(ctx: Context, part: str) -> dict[str, Any]:
    """The sections of the segmentation overrides (file, then inline) one segmentation stage reads."""
    seg = ctx.cfg.segmentation
    data: dict[str, Any] = load_yaml(seg.config) if seg.config else {}
    data = deep_merge(data, seg.overrides)
    return {k: v for k, v in data.items() if k in _SEGMENT_SECTIONS[part]}


def segment_config(params: dict[str, Any]) -> Any:
    """The resolved segmentation configuration a stage runs with: shipped values < its overrides.

    `params` is the stage's parameters (``_train_params`` / ``_predict_params``): their ``overrides`` hold the
    sections of the study's segmentation overrides this stage reads, already validated by
    :func:`cdeg.pipeline.config.check_stage_configs`.
    """
    from cdeg.registry import load_segment

    return load_segment(params["overrides"], where="segmentation.overrides")


def resolved_device(ctx: Context) -> str:
    """The device kind segmentation runs on ("cpu" or "cuda")."""
    from cdeg.segmentation.nnunet_env import resolve_device

    return resolve_device(ctx.device)


def _train_params(ctx: Context, modality: str) -> dict[str, Any]:
    seg = ctx.cfg.segmentation
    # The device kind is part of the key: presets differ by device, so a model trained elsewhere is retrained.
    return {
        "modality": modality,
        "preset": seg.preset,
        "device": resolved_device(ctx),
        "fold": seg.fold,
        "overrides": segment_overrides(ctx, "train"),
    }


def _predict_params(ctx: Context) -> dict[str, Any]:
    # The device is not in the key: CPU and GPU give the same masks up to rounding.
    return {
        "modalities": list(ctx.cfg.segmentation.modalities),
        "overrides": segment_overrides(ctx, "predict"),
    }


def _fit_params(ctx: Context, target: str) -> dict[str, Any]:
    f, spec = ctx.cfg.fit, ctx.cfg.targets[target]
    return {
        "target": target,
        "cohort": spec.development,
        "exclude": list(spec.exclude),
        # Whose clinical columns the model may use: fit leaves out those this cohort's table lacks.
        "exclude_missing_in": spec.external
        if spec.external is not None and spec.shared_variables_only
        else None,
        "trials": f.trials,
        "outer_folds": f.outer_folds,
        "repeats": f.repeats,
        "seed": f.seed if f.seed is not None else ctx.cfg.seed,
        "feature_set": f.feature_set,
        "tiers": f.tiers,
        "permutations": f.permutations,
        "age_reference": f.age_reference,
        # The patient cards of the report show each patient's cross-validated risk with its waterfall.
        "waterfalls": ctx.cfg.report.patient_cards,
    }


def _label_params(ctx: Context, target: str, key: str) -> dict[str, Any]:
    from dataclasses import asdict

    label = ctx.cfg.targets[target].label
    assert label is not None
    return {"target": target, "cohort": key, "reference": label.reference, "rule": asdict(label.rule())}


def _report_params(ctx: Context) -> dict[str, Any]:
    # jobs, out and strict change no result; the report shows the rest of the configuration.
    cfg = to_dict(ctx.cfg)
    cfg.pop("jobs", None)
    cfg.pop("out", None)
    cfg.pop("strict", None)
    return {"config": cfg}


# --------------------------------------------------------------------------------------------------------------
# calls
# --------------------------------------------------------------------------------------------------------------


def _run_synth(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    import os
    import shutil

    from cdeg.synth import synthesize

    key = stage.name.split(":", 1)[1]
    # Generate next to the final folder and rename when complete: an interrupted run leaves no half cohort.
    partial = stage.folder.parent / f".{key}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    synthesize(
        partial,
        profile=params["profile"],
        n=params["n"],
        seed=params["seed"],
        config=params["config"],
        jobs=ctx.jobs,
        name=key,
        progress=ctx.progress,
    )
    os.replace(partial, stage.folder)
    return {"patients": params["n"], "profile": params["profile"]}


def _run_train(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.segmentation.train import train

    seg = ctx.cfg.segmentation
    m = train(
        ctx.cohort_folder(seg.train_cohort or ""),
        params["modality"],
        stage.folder / RunFolder.SEGMENT_MODEL_DIR,
        preset=params["preset"],
        device=params["device"],
        fold=params["fold"],
        config=segment_config(params),
        progress=ctx.progress,
        strict=ctx.strict,
    )
    return {
        k: m.get(k)
        for k in ("modality", "preset", "device", "configuration", "epochs_completed", "timings_s")
    } | {"n_cases": m.get("cohort", {}).get("n_cases")}


def _run_segment_predict(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.segmentation.predict import predict

    key = stage.name.split(":", 1)[1]
    config = segment_config(params)
    counts = {}
    device, devices = ctx.device, None
    workers = ctx.cfg.segmentation.predict_workers or os.cpu_count() or 1
    if workers > 1 and resolved_device(ctx) == "cpu":
        device, devices = "auto", f"cpu:{workers}"
    for m in params["modalities"]:
        s = predict(
            ctx.cohort_folder(key),
            m,
            ctx.model_folder(m),
            stage.folder,
            device=device,
            devices=devices,
            config=config,
            strict=ctx.strict,
            progress=ctx.progress,
        )
        counts[m] = {
            "counts": s["counts"],
            "seconds_per_case_mean": s.get("seconds_per_case_mean"),
            "device": s.get("device"),
        }
    return counts


def _run_evaluate(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.segmentation.evaluate import evaluate

    key = stage.name.split(":", 1)[1]
    r = evaluate(
        ctx.masks_folder(key),
        ctx.cohort_folder(key),
        Evaluation(stage.folder).json,
        modality=",".join(params["modalities"]),
        progress=ctx.progress,
        jobs=ctx.jobs,
    )
    return {
        m: {
            k: s.get(k)
            for k in (
                "n_evaluated",
                "level_identification",
                "identification_rate_verse",
                "dice_vertebrae_mean",
                "dice_discs_mean",
            )
        }
        for m, s in r["summary"].items()
    }


def _run_extract(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.features.extract import extract

    key = stage.name.split(":", 1)[1]
    e = ctx.cfg.extract
    masks = ctx.masks_folder(key) if ctx.cfg.segmentation.enabled else None
    # The inline parameter set is passed as it is (its hash is that of the file earlier versions wrote, so
    # cached units stay valid).
    radiomics: str | dict[str, Any] | None = e.radiomics or e.params
    res = extract(
        ctx.cohort_folder(key),
        stage.folder,
        masks=masks,
        modality=list(e.modalities),
        params=radiomics,
        jobs=ctx.jobs or None,
        geometry_tolerance_mm=e.geometry_tolerance_mm,
        progress=ctx.progress,
        strict=ctx.strict,
    )
    return {
        "patients": len(res.features),
        "features": int(res.features.shape[1] - 1),
        "errors": len(res.errors),
        "skipped_for_bad_input": sorted(res.provenance.get("input_check", {}).get("skipped", {})),
    }


def _run_extract_reference(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.features.extract import extract

    key = stage.name.split(":", 1)[1]
    e = ctx.cfg.extract
    res = extract(
        ctx.cohort_folder(key),
        stage.folder,
        masks=None,  # the cohort's own reference masks
        modality=params["modalities"],
        params=e.radiomics or e.params,
        jobs=ctx.jobs or None,
        geometry_tolerance_mm=e.geometry_tolerance_mm,
        progress=ctx.progress,
        strict=ctx.strict,
        patients=params["patients"],
    )
    return {
        "patients": len(res.features),
        "features": int(res.features.shape[1] - 1),
        "errors": len(res.errors),
    }


def _run_agreement(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.features.agreement import agreement

    key = params["cohort"]
    # First the predicted masks, then the reference: Bland-Altman differences are predicted minus reference.
    r = agreement(
        [ctx.features_folder(key), ctx.run.reference_features(key).root],
        stage.folder,
        patients=params["patients"],
    )
    return {
        "patients": r.manifest["patients"]["matched"],
        "features": r.manifest["columns"]["compared"],
        "reliable_share": r.manifest["reliable_share"],
    }


def _run_label(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.modeling.label import LabelRule, derive_label

    key, ref = params["cohort"], params["reference"]
    rule = params["rule"]
    r = derive_label(
        FeatureFolder(ctx.features_folder(key)).features,
        ctx.cohort_folder(key) / CLINICAL_CSV,
        FeatureFolder(ctx.features_folder(ref)).features,
        ctx.cohort_folder(ref) / CLINICAL_CSV,
        stage.folder,
        rule=LabelRule(**{**rule, "measurements": tuple(rule["measurements"])}),
        name=params["target"],
    )
    return dict(r.manifest["counts"])


def _run_fit(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.modeling.fit import fit

    key, missing_in = params["cohort"], params.get("exclude_missing_in")
    r = fit(
        FeatureFolder(ctx.features_folder(key)).features,
        clinical_table(ctx, params["target"], key),
        params["target"],
        stage.folder,
        exclude=params["exclude"] or None,
        exclude_missing_in=missing_in and ctx.cohort_folder(missing_in) / CLINICAL_CSV,
        trials=params["trials"],
        outer_folds=params["outer_folds"],
        repeats=params["repeats"],
        seed=params["seed"],
        feature_set=params["feature_set"],
        tiers=params.get("tiers"),
        permutations=params.get("permutations"),
        age_reference=_age_reference(ctx, params.get("age_reference")),
        jobs=ctx.jobs or None,
        config=ctx.cfg.fit.config,
        waterfalls=params.get("waterfalls"),
        progress=ctx.progress,
        strict=ctx.strict,
    )
    out: dict[str, Any] = {m: {"auc": v["auc"], "auc_ci": v["auc_ci"]} for m, v in r.metrics["cv"].items()}
    out["skipped_for_bad_input"] = sorted(r.metrics["data"].get("skipped_patients", {}))
    return out


def _age_reference(ctx: Context, key: str | None) -> tuple[Path, Path] | None:
    """The features and clinical table of the cohort that gives the age norms, if the study names one."""
    if key is None:
        return None
    return FeatureFolder(ctx.features_folder(key)).features, ctx.cohort_folder(key) / CLINICAL_CSV


def _run_validate(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.modeling.validate import validate

    key, target = params["cohort"], params["target"]
    r = validate(
        ctx.run.fit(target).model.root,
        FeatureFolder(ctx.features_folder(key)).features,
        clinical_table(ctx, target, key),
        target,
        stage.folder,
        max_imputed=params.get("max_imputed", 0.5),
        recalibrate=params.get("recalibrate", "none"),
        progress=ctx.progress,
        strict=ctx.strict,
    )
    return {m: {"auc": v["auc"], "auc_ci": v["auc_ci"]} for m, v in r.metrics["external"].items()}


def _run_predict(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.modeling.predict import predict

    key, target = params["cohort"], params["target"]
    r = predict(
        ctx.run.fit(target).model.root,
        FeatureFolder(ctx.features_folder(key)).features,
        stage.folder,
        clinical=clinical_table(ctx, target, key),
        waterfalls=params["waterfalls"],
        progress=ctx.progress,
        strict=ctx.strict,
    )
    return {"patients": len(r.predictions) if hasattr(r, "predictions") else None}


def _run_report(stage: Stage, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
    from cdeg.report import build_report

    path = build_report(ctx.out, ctx.run.report)
    return {"report": str(path), "bytes": path.stat().st_size}
