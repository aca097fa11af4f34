"""The study report: one self-contained ``report.html`` a clinician opens in a browser.

:func:`build_report` reads the outputs of a `cdeg run` folder (cohorts, segmentation, features, models,
validation, predictions, stage manifests) and writes one HTML file with every image inline (base64 PNG), one
stylesheet and a few lines of optional script: no network, no external file. Sections: summary, cohorts,
segmentation (accuracy and QC gallery, flagged first), features, one section per study question (metrics with
confidence intervals side by side, ROC / calibration / decision curves, SHAP), patients (a table linking to one
card per patient, opened with the URL fragment through CSS ``:target``), provenance.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdeg.io import write_text
from cdeg.report import html as H
from cdeg.report import sections as S

log = logging.getLogger(__name__)

TARGET_WORDS = {"accelerated": "accelerated degeneration", "poor_outcome_2y": "poor outcome at 2 years"}


class ReportData:
    """The files of a run folder, read once, with the small look-ups the sections need."""

    def __init__(self, ctx: Any) -> None:
        import pandas as pd

        from cdeg.config import to_dict
        from cdeg.pipeline import cache
        from cdeg.pipeline.config import cohort_roles

        self.ctx, self.cfg, self.out = ctx, ctx.cfg, Path(ctx.out)
        roles = cohort_roles(self.cfg)
        order = list(dict.fromkeys(roles["analysed"] + roles["train"]))
        devs = {s.development for s in self.cfg.targets.values()}
        exts = {s.external for s in self.cfg.targets.values() if s.external}
        self.dev_key = next(iter(k for k in order if k in devs), None)
        self.cohorts: dict[str, dict[str, Any]] = {}
        for k in order:
            folder = ctx.cohort_folder(k)
            clin = pd.read_csv(folder / "clinical.csv", dtype={"patient_id": str})
            role = ("development" if k in devs else "external validation" if k in exts else "") or (
                "segmentation training" if k in roles["train"] else ""
            )
            no_image = {
                m: sum(not (folder / "images" / p / f"{m}.nii.gz").is_file() for p in clin["patient_id"])
                for m in ("mri", "xray")
            }
            miss = clin.drop(columns=["patient_id"]).isna().mean()
            miss = miss[miss > 0].sort_values(ascending=False)
            from cdeg.modeling.names import describe

            text = ", ".join(f"{describe(c).text} {v:.0%}" for c, v in miss.items()) or "none"
            self.cohorts[k] = {
                "clinical": clin,
                "role": role,
                "no_image": no_image,
                "missing_text": text,
                "folder": folder,
            }
        self.manifests = {name: m for name, m in ctx.manifests.items()}
        self.train_manifests = {
            n.split(":", 1)[1]: m for n, m in self.manifests.items() if n.startswith("segment-train:")
        }
        self.evaluations = {}
        self.qc: dict[str, dict[str, Any]] = {}
        self.features = {}
        for k in roles["analysed"]:
            ev = S._read_json(self.out / "segmentation" / f"evaluate-{k}" / "evaluation.json")
            if ev:
                self.evaluations[k] = ev
            if self.cfg.segmentation.enabled:
                self.qc[k] = self._read_qc(ctx.masks_folder(k))
            fpath = ctx.features_folder(k) / "features.parquet"
            if fpath.is_file():
                self.features[k] = pd.read_parquet(fpath)
        self.fits, self.validations, self.fit_params, self.oof, self.final = {}, {}, {}, {}, {}
        for t in self.cfg.targets:
            self.fits[t] = S._read_json(self.out / "models" / t / "metrics.json")
            self.validations[t] = S._read_json(self.out / "validation" / t / "metrics.json")
            self.fit_params[t] = (self.manifests.get(f"fit:{t}") or {}).get("params", {})
            oof = S._read_csv(self.out / "models" / t / "oof_predictions.csv", dtype={"patient_id": str})
            if oof is not None and "xgboost" in oof:
                self.oof[t] = oof.groupby("patient_id")["xgboost"].mean().to_dict()
            pr = S._read_csv(self.out / "predictions" / t / "predictions.csv", dtype={"patient_id": str})
            if pr is not None:
                self.final[t] = pr.set_index("patient_id")["probability"].to_dict()
        self.oracle = {t: self._oracle(t) for t in self.cfg.targets}
        cfgd = to_dict(self.cfg)
        cfgd.pop("jobs", None)
        self.config_dict = cfgd
        self._cache = cache

    # -- look-ups ------------------------------------------------------------------------------------------
    def cohort_label(self, key: str) -> str:
        spec = self.cfg.cohorts[key]
        return spec.label or key

    def target_words(self, target: str) -> str:
        return TARGET_WORDS.get(target, target.replace("_", " "))

    def oof_risk(self, target: str, pid: str) -> float | None:
        return self.oof.get(target, {}).get(pid)

    def final_risk(self, target: str, pid: str) -> float | None:
        return self.final.get(target, {}).get(pid)

    def qc_png(self, key: str | None, pid: str, mod: str) -> Path | None:
        if key is None or not self.cfg.segmentation.enabled:
            return None
        return self.ctx.masks_folder(key) / pid / f"{mod}_qc.png"

    def patient_qc_status(self, pid: str) -> str:
        qc = self.qc.get(self.dev_key or "")
        if not qc:
            return "-"
        states = [v["status"] for (p, _), v in qc["status"].items() if p == pid]
        bad = [s for s in states if s not in ("ok", "skipped")]
        return "passed" if not bad else ", ".join(sorted(set(bad)))

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for pkg in (
            "cdeg",
            "numpy",
            "pandas",
            "scikit-learn",
            "xgboost",
            "optuna",
            "shap",
            "nnunetv2",
            "torch",
            "pyradiomics",
            "SimpleITK",
        ):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "-"
        import platform

        out["python"] = platform.python_version()
        return out

    # -- readers -------------------------------------------------------------------------------------------
    @staticmethod
    def _read_qc(folder: Path) -> dict[str, Any]:
        """Per (patient, modality): status from segment_predict_<modality>.json, findings from qc.csv."""
        status: dict[tuple[str, str], dict[str, Any]] = {}
        for f in sorted(folder.glob("segment_predict_*.json")):
            man = S._read_json(f) or {}
            mod = man.get("modality") or f.stem.rsplit("_", 1)[-1]
            for pid, v in (man.get("patients") or {}).items():
                status[(pid, mod)] = v
        findings: dict[tuple[str, str], list[str]] = {}
        qc = S._read_csv(
            folder / "qc.csv", dtype={"patient_id": str, "patient": str}
        )  # "patient": older runs
        if qc is not None:
            for r in qc.itertuples(index=False):
                if r.check in ("fragments_removed",):
                    continue
                findings.setdefault(
                    (getattr(r, "patient_id", None) or getattr(r, "patient", ""), r.modality), []
                ).append(str(r.detail) + ("" if str(r.repaired) == "True" else " (not repaired)"))
        return {"status": status, "findings": findings}

    def _oracle(self, target: str) -> dict[str, float | None] | None:
        """AUC of the synthetic truth's p_oracle for `accelerated`, on the patients the models saw."""
        from sklearn.metrics import roc_auc_score

        if target != "accelerated":
            return None
        spec = self.cfg.targets[target]
        out: dict[str, float | None] = {}
        for role, key in (("development", spec.development), ("external", spec.external)):
            if key is None:
                continue
            truth = S._read_csv(
                self.ctx.cohort_folder(key) / "truth" / "patients.csv", dtype={"patient_id": str}
            )
            if truth is None or "p_oracle" not in truth:
                return None
            if role == "development":
                ids = set(self.oof.get(target, {}))
            else:
                pr = S._read_csv(
                    self.out / "validation" / target / "predictions.csv", dtype={"patient_id": str}
                )
                ids = set(pr["patient_id"]) if pr is not None else set()
            t = truth[truth["patient_id"].isin(ids)] if ids else truth
            out[role] = (
                float(roc_auc_score(t["accelerated"], t["p_oracle"]))
                if t["accelerated"].nunique() == 2
                else None
            )
        return out


def summary_section(data: ReportData) -> str:
    """Headline: one box per question with development and external AUC and the ceiling."""
    boxes = []
    for t, spec in data.cfg.targets.items():
        fit = data.fits.get(t) or {}
        cv = fit.get("cv", {}).get("xgboost")
        val = (data.validations.get(t) or {}).get("external", {}).get("xgboost")
        oracle = data.oracle.get(t) or {}
        lines = [f"development (cross-validated): AUC {S.auc_text(cv)}"]
        ci = (cv or {}).get("auc_ci") or [None, None]
        if ci[0] is not None and ci[0] <= 0.5:
            # A reader takes the big number at face value: say plainly when it may be chance.
            lines.insert(0, "not better than chance: the 95% interval includes 0.5")
        if val:
            lines.append(f"external: AUC {S.auc_text(val)}")
        if oracle.get("development") is not None:
            lines.append(f"ceiling (synthetic truth): {oracle['development']:.2f}")
        boxes.append(
            f'<div class="kpi"><div>{H.esc(spec.title or data.target_words(t))}</div>'
            f'<div class="v">{H.esc(S.auc_text(cv).split(" (")[0])}</div>'
            f'<div class="muted">{"<br>".join(H.esc(x) for x in lines)}</div></div>'
        )
    cohorts = ", ".join(
        f"{data.cohort_label(k)}: {len(c['clinical'])} patients" for k, c in data.cohorts.items()
    )
    return (
        '<h2 id="summary">Summary</h2>'
        + H.howto(
            "Each box is one study question, answered by an XGBoost model on image measurements and clinical "
            "variables. The large number is its AUC in the development cohort (0.5 = a coin toss, 1 = perfect). "
            "The sections below show how the patients were selected, how well the automatic outlines worked, "
            "how the models compare with simpler ones, and one card per patient."
        )
        + f'<div class="headline">{"".join(boxes)}</div><p class="muted">{H.esc(cohorts)}.</p>'
    )


def build_report(ctx: Any, path: str | Path) -> Path:
    """Write the study report of a run folder to `path` and return it.

    Parameters
    ----------
    ctx : cdeg.pipeline.stages.Context
        The run's context (configuration, folders, stage manifests).
    path : path
        The HTML file to write (atomically).
    """
    path = Path(path)
    data = ReportData(ctx)
    nav = [
        ("summary", "Summary"),
        ("cohorts", "Cohorts"),
        ("segmentation", "Segmentation"),
        ("features", "Features"),
    ]
    nav += [(f"target-{t}", data.target_words(t).capitalize()) for t in data.cfg.targets]
    if data.cfg.report.patient_cards and data.dev_key:
        nav.append(("patients", "Patients"))
    nav.append(("provenance", "Provenance"))
    body = [
        summary_section(data),
        S.cohorts_section(data),
        S.segmentation_section(data),
        S.features_section(data),
    ]
    body += [S.target_section(data, t) for t in data.cfg.targets]
    body += [S.patients_section(data), S.provenance_section(data)]
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{data.cfg.name} — generated {created} by cdeg"
    write_text(path, H.page(data.cfg.report.title, subtitle, nav, body))
    log.info("report written to %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
