"""The study report: one self-contained ``report.html`` a clinician opens in a browser.

:func:`build_report` reads the outputs of a `cdeg run` folder (cohorts, segmentation, features, models,
validation, predictions, stage manifests) and writes one HTML file with every image inline (base64 PNG), one
stylesheet and a few lines of optional script: no network, no external file. Sections: summary, cohorts,
segmentation (accuracy and QC gallery, flagged first), features, agreement of the features of predicted and
reference masks (when the study compares them), one section per study question (metrics with
confidence intervals side by side, ROC / calibration / decision curves, SHAP), patients (a table linking to one
card per patient, opened with the URL fragment through CSS ``:target``), provenance.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdeg.cohort import (
    CEILING_KINDS,
    CLINICAL_CSV,
    ID_COLUMN,
    MODALITIES,
    TRUTH_CEILINGS,
    TRUTH_DIR,
    TRUTH_PATIENTS,
    image_path,
    read_clinical,
)
from cdeg.config import to_dict
from cdeg.io import write_text
from cdeg.outputs import FeatureFolder, MaskFolder, versions
from cdeg.report import html as H
from cdeg.report import sections as S

log = logging.getLogger(__name__)


class ReportData:
    """The files of a run folder, read once through the stage contracts, with the look-ups the sections need."""

    def __init__(self, run_dir: str | Path) -> None:
        from cdeg.pipeline.stages import Context

        ctx = Context.from_run_dir(run_dir)
        self._primary: dict[str, str] = {}
        self._absent: dict[str, list[str]] | None = None
        self._age_column: dict[str, str] = {}
        self.ctx, self.cfg, self.out, self.run = ctx, ctx.cfg, Path(ctx.out), ctx.run
        self._read_cohorts()
        self._read_stage_outputs()
        self.ceilings = {t: self._ceilings(t) for t in self.cfg.targets}
        cfgd = to_dict(self.cfg)
        cfgd.pop("jobs", None)
        self.config_dict = cfgd

    def _read_cohorts(self) -> None:
        from cdeg.modeling.names import describe
        from cdeg.pipeline.config import cohort_roles

        ctx = self.ctx
        roles = cohort_roles(self.cfg)
        order = list(dict.fromkeys(roles["analysed"] + roles["train"]))
        devs = {s.development for s in self.cfg.targets.values()}
        exts = {s.external for s in self.cfg.targets.values() if s.external}
        self.dev_key = next(iter(k for k in order if k in devs), None)
        self.cohorts: dict[str, dict[str, Any]] = {}
        for k in order:
            folder = ctx.cohort_folder(k)
            clin = read_clinical(folder / CLINICAL_CSV, bad_ids="first")
            role = ("development" if k in devs else "external validation" if k in exts else "") or (
                "segmentation training" if k in roles["train"] else ""
            )
            no_image = {
                m: sum(not image_path(folder, p, m).is_file() for p in clin[ID_COLUMN]) for m in MODALITIES
            }
            miss = clin.drop(columns=[ID_COLUMN]).isna().mean()
            miss = miss[miss > 0].sort_values(ascending=False)
            text = ", ".join(f"{describe(c).text} {v:.0%}" for c, v in miss.items()) or "none"
            self.cohorts[k] = {
                "clinical": clin,
                "role": role,
                "no_image": no_image,
                "missing_text": text,
                "folder": folder,
            }

    def _read_stage_outputs(self) -> None:
        """Stage manifests, evaluations, QC, features, metrics and predictions, each through its contract."""
        from cdeg.pipeline import cache
        from cdeg.pipeline.config import agreement_cohort, cohort_roles
        from cdeg.pipeline.stages import build_stages

        ctx, run = self.ctx, self.run
        self.manifests = {}
        for stage in build_stages(ctx):
            if stage.kind != "report":
                self.manifests[stage.name] = cache.read_manifest(stage.folder) or {}
        self.train_manifests = {
            n.split(":", 1)[1]: m for n, m in self.manifests.items() if n.startswith("segment-train:")
        }
        self.evaluations, self.qc, self.features = {}, {}, {}
        for k in cohort_roles(self.cfg)["analysed"]:
            ev = run.evaluation(k).read()
            if ev:
                self.evaluations[k] = ev
            if self.cfg.segmentation.enabled:
                self.qc[k] = self._read_qc(MaskFolder(ctx.masks_folder(k)))
            table = FeatureFolder(ctx.features_folder(k)).read()
            if table is not None:
                self.features[k] = table
        # The agreement of predicted-mask and reference-mask features, when the study has that stage.
        self.agreement: dict[str, Any] | None = None
        key = agreement_cohort(self.cfg)
        if key is not None and f"agreement:{key}" in self.manifests:
            folder = run.agreement(key)
            self.agreement = {"cohort": key, "manifest": folder.read(), "table": folder.read_table()}
        self.fits, self.validations, self.oof, self.final = {}, {}, {}, {}
        self.oof_first: dict[str, dict[str, float]] = {}
        self.oof_shap: dict[str, Any] = {}
        for t in self.cfg.targets:
            self.fits[t] = run.fit(t).read()
            self.validations[t] = run.validation(t).read()
            oof, primary = run.fit(t).read_oof(), self.primary_model(t)
            if oof is not None and primary in oof:
                self.oof[t] = oof.groupby(ID_COLUMN)[primary].mean().to_dict()
                # the first repeat's out-of-fold risk: the one the cross-validated waterfall explains
                first = oof[oof["repeat"] == oof["repeat"].min()]
                self.oof_first[t] = first.set_index(ID_COLUMN)[primary].to_dict()
            self.oof_shap[t] = run.fit(t).read_oof_shap()
            pr = run.predictions(t).read()
            if pr is not None:
                self.final[t] = pr.set_index(ID_COLUMN)["probability"].to_dict()

    # -- look-ups ------------------------------------------------------------------------------------------
    def cohort_label(self, key: str) -> str:
        spec = self.cfg.cohorts[key]
        return spec.label or key

    def target_words(self, target: str) -> str:
        """The outcome in a few words ("accelerated degeneration"), from the study's ``targets.<t>.words``."""
        return self.cfg.targets[target].words or target.replace("_", " ")

    def primary_model(self, target: str) -> str:
        """The model the fit stage chose as its answer (``primary_model`` of the fit configuration)."""
        if target not in self._primary:
            model = self.run.fit(target).model
            manifest = model.read() if model.manifest.is_file() else {}
            self._primary[target] = manifest.get("primary_model") or "xgboost"
        return self._primary[target]

    def missing_in_external(self, target: str) -> list[str]:
        """Clinical columns left out of `target`'s model because the external cohort lacks them (fit records
        them: ``cdeg fit --exclude-missing-in``)."""
        data = (self.fits.get(target) or {}).get("data", {})
        return list((data.get("missing_in_other_table") or {}).get("columns") or [])

    def oof_risk(self, target: str, pid: str) -> float | None:
        """The cross-validated risk: the mean of the out-of-fold probabilities over the repeats."""
        return self.oof.get(target, {}).get(pid)

    def oof_first_risk(self, target: str, pid: str) -> float | None:
        """The first repeat's out-of-fold probability, which the cross-validated waterfall explains."""
        return self.oof_first.get(target, {}).get(pid)

    def repeats(self, target: str) -> int:
        """Repeats of the outer cross-validation of `target`'s fit (1 when unknown)."""
        tuning = (self.fits.get(target) or {}).get("tuning") or []
        return len({r["repeat"] for r in tuning if r.get("repeat") is not None}) or 1

    def age_contribution(self, target: str, pid: str) -> float | None:
        """The SHAP value of age in the model that gave the patient's first-repeat cross-validated risk (None
        when age is not among its variables or no SHAP table was written)."""
        table = self.oof_shap.get(target)
        if table is None:
            return None
        first = table[(table["repeat"] == table["repeat"].min()) & (table[ID_COLUMN] == pid)]
        age = first.loc[first["variable"] == self.age_column(target), "shap"]
        return float(age.iloc[0]) if len(age) else None

    def age_column(self, target: str) -> str:
        """The clinical column of age in `target`'s fit (``preprocess.age_column``; "age" when unknown)."""
        if target not in self._age_column:
            model = self.run.fit(target).model
            manifest = model.read() if model.manifest.is_file() else {}
            pre = (manifest.get("config") or {}).get("preprocess") or {}
            self._age_column[target] = pre.get("age_column") or "age"
        return self._age_column[target]

    def absent_scans(self, pid: str) -> list[str]:
        """Modalities of the development features table of which the patient has no value at all (no scan)."""
        if self._absent is None:
            from cdeg.modeling.explain import absent_modalities

            table = self.features.get(self.dev_key) if self.dev_key else None
            self._absent = {} if table is None else absent_modalities(table.set_index(ID_COLUMN))
        return self._absent.get(pid, [])

    def final_risk(self, target: str, pid: str) -> float | None:
        return self.final.get(target, {}).get(pid)

    def qc_png(self, key: str | None, pid: str, mod: str) -> Path | None:
        if key is None or not self.cfg.segmentation.enabled:
            return None
        return MaskFolder(self.ctx.masks_folder(key)).qc_png(pid, mod)

    def patient_qc_status(self, pid: str) -> str:
        qc = self.qc.get(self.dev_key or "")
        if not qc:
            return "-"
        states = [v["status"] for (p, _), v in qc["status"].items() if p == pid]
        bad = [s for s in states if s not in ("ok", "skipped")]
        return "passed" if not bad else ", ".join(sorted(set(bad)))

    def versions(self) -> dict[str, str]:
        """Versions of the software this report was built with ("-": not installed)."""
        return {k: v or "-" for k, v in versions().items()}

    # -- readers -------------------------------------------------------------------------------------------
    @staticmethod
    def _read_qc(masks: MaskFolder) -> dict[str, Any]:
        """Per (patient, modality): status from the mask folder's manifests, findings from qc.csv."""
        contents = masks.read()
        status: dict[tuple[str, str], dict[str, Any]] = {}
        for mod, man in contents["manifests"].items():
            for pid, v in (man.get("patients") or {}).items():
                status[(pid, mod)] = v
        findings: dict[tuple[str, str], list[str]] = {}
        qc = contents["qc"]
        if qc is not None:
            for r in qc.to_dict("records"):
                if r["check"] in ("fragments_removed",):
                    continue
                findings.setdefault((str(r[ID_COLUMN]), r["modality"]), []).append(
                    str(r["detail"]) + ("" if str(r["repaired"]) == "True" else " (not repaired)")
                )
        return {"status": status, "findings": findings}

    def _ceilings(self, target: str) -> dict[str, dict[str, float | None]]:
        """AUC of each synthetic-truth ceiling of `target` (:data:`cdeg.cohort.TRUTH_CEILINGS`: "latent",
        "observable") per role ("development", "external"), on the patients the models saw; a kind or role
        is left out where its cohort has no such truth column (a real cohort, one written without ceilings).
        """
        from sklearn.metrics import roc_auc_score

        columns = TRUTH_CEILINGS.get(target, {})
        spec = self.cfg.targets[target]
        out: dict[str, dict[str, float | None]] = {}
        for role, key in (("development", spec.development), ("external", spec.external)):
            if key is None or not columns:
                continue
            truth = S._read_csv(
                self.ctx.cohort_folder(key) / TRUTH_DIR / TRUTH_PATIENTS, dtype={ID_COLUMN: str}
            )
            clin = self.cohorts.get(key, {}).get("clinical")
            if truth is None or clin is None or target not in clin:
                continue  # e.g. a real external cohort: no truth there, the development ceiling still holds
            if role == "development":
                ids = set(self.oof.get(target, {}))
            else:
                pr = self.run.validation(target).read_predictions()
                ids = set(pr[ID_COLUMN]) if pr is not None else set()
            for kind in CEILING_KINDS:
                column = columns.get(kind)
                if column not in truth:
                    continue
                t = truth[[ID_COLUMN, column]].merge(clin[[ID_COLUMN, target]].dropna(), on=ID_COLUMN)
                t = t[t[ID_COLUMN].isin(ids)] if ids else t
                auc = float(roc_auc_score(t[target], t[column])) if t[target].nunique() == 2 else None
                out.setdefault(kind, {})[role] = auc
        return out


def _ceiling_lines(ceilings: dict[str, dict[str, float | None]], auc: float | None) -> list[str]:
    """The development ceilings of a question and how far the headline model's AUC stays below each."""
    words = {
        "latent": "latent oracle (true degeneration)",
        "observable": "observable ceiling (images + clinical)",
    }
    lines = []
    for kind in CEILING_KINDS:
        value = (ceilings.get(kind) or {}).get("development")
        if value is None:
            continue
        gap = ""
        if auc is not None:  # above the observable ceiling happens by chance in a small cohort: say so
            gap = f", the model {abs(value - auc):.2f} {'below' if value >= auc else 'above'} it"
        lines.append(f"{words[kind]}: {value:.2f}{gap}")
    return lines


def summary_section(data: ReportData) -> str:
    """Headline: one box per question with development and external AUC and the ceiling."""
    boxes = []
    for t, spec in data.cfg.targets.items():
        fit = data.fits.get(t) or {}
        primary = data.primary_model(t)
        cv = fit.get("cv", {}).get(primary)
        val = (data.validations.get(t) or {}).get("external", {}).get(primary)
        lines = [f"development (cross-validated): AUC {S.auc_text(cv)}"]
        ci = (cv or {}).get("auc_ci") or [None, None]
        if ci[1] is not None and ci[1] < 0.5:
            # Below chance is not a reversed signal: without any signal, cross-validation is pessimistic (a
            # test fold's outcome rate mirrors its training folds'), so the estimate falls below 0.5.
            lines.insert(
                0, "below chance: read as no signal (cross-validation is pessimistic when there is none)"
            )
        elif ci[0] is not None and ci[0] <= 0.5:
            # A reader takes the big number at face value: say plainly when it may be chance.
            lines.insert(0, "not better than chance: the 95% interval includes 0.5")
        if val:
            lines.append(f"external: AUC {S.auc_text(val)}")
        lines += _ceiling_lines(data.ceilings.get(t) or {}, (cv or {}).get("auc"))
        boxes.append(
            f'<div class="kpi"><div>{H.esc(spec.title or data.target_words(t))}</div>'
            f'<div class="muted">{H.esc(S.MODEL_WORDS.get(primary, primary))}</div>'
            f'<div class="v">{H.esc(S.auc_text(cv).split(" (")[0])}</div>'
            f'<div class="muted">{"<br>".join(H.esc(x) for x in lines)}</div></div>'
        )
    cohorts = ", ".join(
        f"{data.cohort_label(k)}: {len(c['clinical'])} patients" for k, c in data.cohorts.items()
    )
    return (
        '<h2 id="summary">Summary</h2>'
        + H.howto(
            "Each box is one study question, answered by the study's primary model (named in the box) on image "
            "measurements and clinical variables. The large number is its AUC in the development cohort (0.5 = a coin toss, 1 = perfect). "
            "The sections below show how the patients were selected, how well the automatic outlines worked, "
            "how the models compare with simpler ones, and one card per patient."
        )
        + f'<div class="headline">{"".join(boxes)}</div><p class="muted">{H.esc(cohorts)}.</p>'
    )


def build_report(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write the study report of a finished (or partly finished) `cdeg run` folder and return its path.

    It reads only files: run.json (the resolved study configuration) and each stage's outputs through the
    contracts of :mod:`cdeg.outputs`, so a report can be rebuilt at any time with `cdeg report --run DIR`.

    Parameters
    ----------
    run_dir : path
        The run folder (`cdeg run`'s ``out``).
    path : path, optional
        The HTML file to write (atomically); default ``RUN_DIR/report/report.html``.
    """
    data = ReportData(run_dir)
    path = Path(path) if path is not None else data.run.report
    nav = [
        ("summary", "Summary"),
        ("cohorts", "Cohorts"),
        ("segmentation", "Segmentation"),
        ("features", "Features"),
    ]
    if data.agreement is not None:
        nav.append(("agreement", "Agreement"))
    nav += [(f"target-{t}", data.target_words(t).capitalize()) for t in data.cfg.targets]
    if data.cfg.report.patient_cards and data.dev_key:
        nav.append(("patients", "Patients"))
    nav += [("checklist", "Checklist"), ("provenance", "Provenance")]
    body = [
        summary_section(data),
        S.cohorts_section(data),
        S.segmentation_section(data),
        S.features_section(data),
    ]
    if data.agreement is not None:
        body.append(S.agreement_section(data))
    body += [S.target_section(data, t) for t in data.cfg.targets]
    body += [S.patients_section(data), S.checklist_section(data), S.provenance_section(data)]
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = f"{data.cfg.name} — generated {created} by cdeg"
    write_text(path, H.page(data.cfg.report.title, subtitle, nav, body))
    log.info("report written to %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
