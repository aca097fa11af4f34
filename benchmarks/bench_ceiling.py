"""How close `cdeg fit` comes to what the data allow: the synthetic study on reference masks.

A surgical ("neck") cohort of --n patients develops the model (`cdeg fit` with the shipped defaults, only the
clinical columns the population cohort also records, as the study pipeline does); a population cohort of
--pop-n patients validates it (`cdeg validate`). Beside each model's AUC, on the same patients:

* the *latent oracle*: AUC of the exact P(accelerated | true degeneration, ...) (truth/patients.csv p_oracle);
* the *observable ceiling*: AUC of the model of :mod:`cdeg.synth.ceiling`, fitted on 20,000 synthetic patients
  to everything the images and the clinical table show, read perfectly.

Two more rows split the gap to the observable ceiling into what 109 patients cost and what reading the images
costs, on the same development patients:

* *perfect reading*: `cdeg fit` (same defaults) given the true observable markers of each level instead of the
  image features: what the protocol learns from n patients when segmentation and extraction are perfect;
* *generator-aware*: a two-variable logistic regression (mean true Miyazaki grade over the discs, and age), the
  model one would write knowing how the generator makes `accelerated`, in 5-fold x 2 stratified CV.

The issue's targets: the headline (primary) model within 0.05 AUC of the observable ceiling in nested CV and
within 0.07 externally; `cdeg fit` with defaults on 109 x ~3,000 features in <= 5 minutes on 2 cores. The
poor_outcome_2y target (development cohort only) is fitted too, with its two ceilings.

Run: .venv/bin/python benchmarks/bench_ceiling.py --work DIR [--runs DIR] [--n 109] [--pop-n 300] [--seed 1]
A work folder that already holds the cohorts and features (same n and seed) is reused: synthesis and
extraction (most of the time) run once. Writes benchmarks/results/ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_fit import _cohort, machine

RESULTS = Path(__file__).parent / "results" / "ceiling.json"
TARGETS = ("accelerated", "poor_outcome_2y")


def _features(cohort: Path, out: Path, jobs: int) -> Path:
    """The features of `cohort` from its reference masks (reused when `out` already holds them)."""
    from cdeg.features.extract import extract

    from cdeg.outputs import FeatureFolder

    table = FeatureFolder(out).features
    if not table.is_file():
        extract(cohort, out, jobs=jobs, progress=False)
    return table


def truth_scores(profile: str, n: int, seed: int, ids: list[str]) -> dict[str, dict[str, float]]:
    """AUC of the latent oracle and of the observable ceiling per outcome, on the patients `ids`."""
    from sklearn.metrics import roc_auc_score

    from cdeg.cohort import TRUTH_CEILINGS
    from cdeg.synth.ceiling import ceiling_probabilities
    from cdeg.synth.model import load_model_config, sample_cohort

    cfg = load_model_config()
    tables = sample_cohort(cfg, profile, n, seed)  # the same patients `cdeg synth` drew
    probs = ceiling_probabilities(cfg, profile, tables).set_index("patient_id")
    # The latent oracle of `accelerated` is the generator's exact p_oracle (truth/patients.csv).
    probs = probs.join(tables.patients.set_index("patient_id"), rsuffix="_truth").loc[ids]
    clin = tables.clinical.set_index("patient_id").loc[ids]
    out: dict[str, dict[str, float]] = {}
    for target, cols in TRUTH_CEILINGS.items():
        if target not in clin or clin[target].nunique() < 2:
            continue
        y = clin[target].astype(int)
        out[target] = {
            kind: round(float(roc_auc_score(y, probs[col])), 3) for kind, col in cols.items() if col in probs
        }
    return out


def _fit(features: Path, clinical: Path, target: str, out: Path, external: Path | None) -> dict[str, Any]:
    from cdeg.modeling.fit import fit

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = fit(features, clinical, target, out, exclude_missing_in=external, progress=False)
    wall = time.perf_counter() - t0
    m = res.metrics
    tiers = m.get("tiers") or {}
    return {
        "wall_s": round(wall, 1),
        "load_average_1min_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
        "n_features": m["n_features"],
        "primary": res.config.primary_model,
        "nested_cv_auc": {k: round(s["auc"], 3) for k, s in m["cv"].items()},
        "nested_cv_auc_ci": {k: [round(v, 3) for v in s["auc_ci"]] for k, s in m["cv"].items()},
        "tiers_auc": {k: round(s["auc"], 3) for k, s in tiers.get("cv", {}).items()},
        "baselines_auc": {
            k: round(s["auc"], 3) for k, s in m.get("baselines", {}).items() if k != "definitions"
        },
        "tiers_comparison": [
            {k: r[k] for k in ("tier", "metric", "difference", "ci", "p_value", "delong_p_value")}
            for r in tiers.get("comparison", [])
        ],
        "timings_s": m["timings_s"],
        "oof_ids": sorted(res.oof[res.config.id_column].astype(str).unique()),
    }


def perfect_reading(
    profile: str, n: int, seed: int, clinical: Path, target: str, out: Path, external: Path | None
) -> dict[str, Any]:
    """`cdeg fit` on the true observable markers (per level) instead of image features, and the two-variable
    generator-aware logistic regression, on the same patients."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_predict

    from cdeg.synth.ceiling import observable_table
    from cdeg.synth.model import load_model_config, sample_cohort

    tables = sample_cohort(load_model_config(), profile, n, seed)
    obs = observable_table(tables)
    # Patient columns (age, sex, scores) come from clinical.csv as in the real fit; only per-level markers here.
    markers = obs[[c for c in obs.columns if c.split("_", 1)[0] in set(tables.levels["level"])]]
    out.mkdir(parents=True, exist_ok=True)
    feats = out / "true_markers.csv"
    markers.reset_index().to_csv(feats, index=False)
    r = _fit(feats, clinical, target, out / "fit", external)
    clin = tables.clinical.set_index("patient_id")
    y = clin[target].astype(int).to_numpy()
    discs = tables.levels[tables.levels["structure"] == "disc"]
    x = pd.DataFrame({
        "grade": discs.groupby("patient_id")["miyazaki_grade"].mean(),
        "age": clin["age"].astype(float),
    }).loc[clin.index].to_numpy(dtype=float)  # fmt: skip
    x = (x - x.mean(0)) / x.std(0)
    aucs = []
    for rep in range(2):
        cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=rep)
        p = cross_val_predict(LogisticRegression(), x, y, cv=list(cv.split(x, y)), method="decision_function")
        aucs.append(roc_auc_score(y, p))
    return {
        "nested_cv_auc": r["nested_cv_auc"],
        "n_features": r["n_features"],
        "generator_aware_cv_auc": round(float(np.mean(aucs)), 3),
        "wall_s": r["wall_s"],
    }


def run(work: Path, runs: Path, n: int, pop_n: int, seed: int, jobs: int) -> dict[str, Any]:
    from cdeg.modeling.validate import validate

    from cdeg.cohort import CLINICAL_CSV
    from cdeg.synth import synthesize

    neck = Path(_cohort(synthesize, work / "neck", "neck", n, seed, jobs))
    pop = Path(_cohort(synthesize, work / "pop", "population", pop_n, seed + 1, jobs))
    fneck = _features(neck, work / "neck_features", jobs)
    fpop = _features(pop, work / "pop_features", jobs)
    results: dict[str, Any] = {"n": n, "pop_n": pop_n, "seed": seed}
    for target in TARGETS:
        external = pop / CLINICAL_CSV if target == "accelerated" else None
        r = _fit(fneck, neck / CLINICAL_CSV, target, runs / f"fit_{target}", external)
        ids = r.pop("oof_ids")
        r["ceilings_development"] = truth_scores("neck", n, seed, ids).get(target, {})
        primary = r["nested_cv_auc"][r["primary"]]
        r["gap_development"] = {k: round(v - primary, 3) for k, v in r["ceilings_development"].items()}
        if external is not None:
            val = validate(
                runs / f"fit_{target}" / "model", fpop, pop / CLINICAL_CSV, target, runs / f"val_{target}",
                progress=False,
            )  # fmt: skip
            ext = {k: round(s["auc"], 3) for k, s in val.metrics["external"].items()}
            r["external_auc"] = ext
            r["external_baselines_auc"] = {
                k: round(s["auc"], 3)
                for k, s in val.metrics.get("baselines", {}).items()
                if k != "definitions"
            }
            ids_ext = sorted(val.predictions["patient_id"].astype(str))
            r["ceilings_external"] = truth_scores("population", pop_n, seed + 1, ids_ext).get(target, {})
            r["gap_external"] = {
                k: round(v - ext[r["primary"]], 3) for k, v in r["ceilings_external"].items()
            }
        if target == "accelerated":
            r["perfect_reading"] = perfect_reading(
                "neck", n, seed, neck / CLINICAL_CSV, target, runs / "perfect_reading", external
            )
        results[target] = r
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="work folder (kept; reused when it matches)")
    ap.add_argument("--runs", type=Path, default=None, help="folder of this run's fits [WORK/runs]")
    ap.add_argument("--n", type=int, default=109)
    ap.add_argument("--pop-n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="extraction workers")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    res = {
        "machine": machine(),
        **run(args.work, args.runs or args.work / "runs", args.n, args.pop_n, args.seed, args.jobs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    for t in TARGETS:
        r = res[t]
        print(
            f"{t}: nested CV {r['nested_cv_auc']}, tiers {r['tiers_auc']}, ceilings {r['ceilings_development']}, "
            f"external {r.get('external_auc')}, ceilings {r.get('ceilings_external')}; fit {r['wall_s']} s"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
