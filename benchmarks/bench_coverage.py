"""Do the confidence intervals of the cross-validated AUC cover? A simulation on the synthetic generator.

Many small surgical ("neck") cohorts of --n patients are drawn from the generator at the table level
(:func:`cdeg.synth.model.sample_cohort`, no images). The features are true observable markers
(:func:`cdeg.synth.ceiling.observable_table`): age, sex, smoking and, for each disc, the Kellgren-Lawrence and
Miyazaki grades, the middle disc height, the T2 signal and the osteophyte size (33 columns), each with added
Gaussian measurement noise of --noise times the column's standard deviation (in the large sample). The outcome
is ``accelerated``.

Each cohort goes through the protocol ``cdeg fit`` uses for its outer loop: --repeats x repeated stratified
--folds-fold CV (5 x 2 by default, configs/fit.yaml), out-of-fold predictions per repeat, and
:func:`cdeg.modeling.metrics.summarize_repeats` with the folds. The model differs from the full pipeline on
purpose, for speed: median imputation, standardisation and an L2 logistic regression with a fixed C (--c), no
Optuna tuning, no feature reduction, no XGBoost. The interval's behaviour under tuning is therefore not
measured here.

The truths, on one large independent sample (--big patients, seed 2**32 + 1: neither a study's nor the ceiling
models' patients):

* ``full_model``: the AUC of the model refitted on the whole small cohort; what a CV interval is usually
  read as covering (the model one would deploy);
* ``fold_models``: the mean AUC of the cohort's fold models, the target of LeDell et al.'s interval;
* ``expected``: the mean of ``full_model`` over all cohorts; Bates, Hastie & Tibshirani (2023) show CV
  estimates this average over data sets better than the AUC of the model at hand.

Per interval: coverage of each truth (share of cohorts whose interval contains it, with a Clopper-Pearson 95%
interval), mean width, and the mean of the point estimate minus each truth. Intervals:

* ``corrected_t``: the one ``cdeg fit`` reports (``auc_ci``): mean test-fold AUC, corrected resampled t
  interval (Nadeau & Bengio 2003; :func:`cdeg.modeling.metrics.cv_auc_corrected_t`);
* ``cvauc_ic``: the influence-curve interval (:func:`cdeg.modeling.metrics.cv_auc_ic`, LeDell, Petersen &
  van der Laan 2015; ``auc_ci_influence_curve``);
* ``cvauc_ic_logit``: the same SE carried to the logit scale (delta method);
* ``delong_pooled``: the earlier interval (DeLong on the pooled out-of-fold predictions, mean variance;
  ``auc_ci_delong_pooled``).

The three first share one point estimate (the mean test-fold AUC); ``delong_pooled`` is centred on the mean
pooled AUC.

Run: .venv/bin/python benchmarks/bench_coverage.py [--out benchmarks/results] [--cohorts 300] [--n 109]
[--seed 0] [--noise 0.3]. Writes OUT/coverage.json (benchmarks/results/coverage_noise1.json is the run with
--noise 1.0, copied there).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
#: Per-disc markers of the feature table (true observable values plus measurement noise).
MARKERS = ("kl_grade", "miyazaki_grade", "disc_height_middle_mm", "t2_signal", "osteophyte_mm")
PATIENT_COLUMNS = ("age", "male", "smoking")
TARGET = "accelerated"
BIG_SEED = 2**32 + 1
METHODS = ("corrected_t", "cvauc_ic", "cvauc_ic_logit", "delong_pooled")
TRUTHS = ("full_model", "fold_models", "expected")


def _columns(table: Any) -> list[str]:
    return list(PATIENT_COLUMNS) + [c for c in table.columns if c.split("_", 1)[-1] in MARKERS]


def markers(cfg: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True observable markers (:data:`PATIENT_COLUMNS`, :data:`MARKERS` per disc) and outcome of a cohort."""
    from cdeg.synth.ceiling import observable_table
    from cdeg.synth.model import sample_cohort

    tables = sample_cohort(cfg, "neck", n, seed)
    obs = observable_table(tables)
    return obs[_columns(obs)].to_numpy(dtype=float), tables.clinical[TARGET].to_numpy(dtype=int)


def measured(x: np.ndarray, sd: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """`x` read with Gaussian measurement error of `noise` x `sd` per column (seeded; NaN stays NaN)."""
    return x + np.random.default_rng([seed, 7]).normal(size=x.shape) * sd * noise


def _model(c: float) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=c, max_iter=2000)
    )


def one_cohort(
    x: np.ndarray, y: np.ndarray, big: tuple[np.ndarray, np.ndarray], args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """CV of one cohort: the three intervals, and the large-sample AUC of the full and the fold models."""
    from cdeg.modeling import metrics as M
    from scipy import stats
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    rskf = RepeatedStratifiedKFold(n_splits=args.folds, n_repeats=args.repeats, random_state=seed)
    P = [np.full(len(y), np.nan) for _ in range(args.repeats)]
    F = [np.full(len(y), -1) for _ in range(args.repeats)]
    fold_truth = []
    for i, (tr, te) in enumerate(rskf.split(x, y)):
        m = _model(args.c).fit(x[tr], y[tr])
        P[i // args.folds][te] = m.predict_proba(x[te])[:, 1]
        F[i // args.folds][te] = i % args.folds
        fold_truth.append(roc_auc_score(big[1], m.predict_proba(big[0])[:, 1]))
    s = M.summarize_repeats(y, P, folds=F)
    z = float(stats.norm.ppf(0.975))
    var = float(np.mean([M.cv_auc_ic(y, p, f)["var"] for p, f in zip(P, F, strict=True)]))
    full = _model(args.c).fit(x, y)
    return {
        "estimate": {
            "corrected_t": s["auc"],
            "cvauc_ic": s["auc"],
            "cvauc_ic_logit": s["auc"],
            "delong_pooled": s["auc_pooled"],
        },
        "ci": {
            "corrected_t": s["auc_ci"],
            "cvauc_ic": s["auc_ci_influence_curve"],
            "cvauc_ic_logit": list(M.logit_interval(s["auc"], var, z)),
            "delong_pooled": s["auc_ci_delong_pooled"],
        },
        "truth": {
            "full_model": float(roc_auc_score(big[1], full.predict_proba(big[0])[:, 1])),
            "fold_models": float(np.mean(fold_truth)),
        },
        "events": int(y.sum()),
    }


def _share(hits: int, total: int) -> dict[str, Any]:
    from scipy import stats

    ci = stats.binomtest(hits, total).proportion_ci(confidence_level=0.95, method="exact")
    return {"coverage": round(hits / total, 3), "ci": [round(ci.low, 3), round(ci.high, 3)], "hits": hits}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage (with a Clopper-Pearson interval), mean width and mean error of each method for each truth."""
    expected = float(np.mean([r["truth"]["full_model"] for r in rows]))
    for r in rows:
        r["truth"]["expected"] = expected
    out: dict[str, Any] = {}
    for method in METHODS:
        ci = np.array([r["ci"][method] for r in rows])
        est = np.array([r["estimate"][method] for r in rows])
        out[method] = {
            "mean_width": round(float(np.mean(ci[:, 1] - ci[:, 0])), 3),
            "coverage": {},
            "mean_error": {},
        }
        for truth in TRUTHS:
            t = np.array([r["truth"][truth] for r in rows])
            hits = int(np.sum((ci[:, 0] <= t) & (t <= ci[:, 1])))
            out[method]["coverage"][truth] = _share(hits, len(rows))
            out[method]["mean_error"][truth] = round(float(np.mean(est - t)), 4)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    from cdeg.synth.model import load_model_config

    cfg = load_model_config()
    t0 = time.perf_counter()
    xb, yb = markers(cfg, args.big, BIG_SEED)
    sd = np.nanstd(xb, axis=0)  # the markers' own spread in the population sets the size of the noise
    xb = measured(xb, sd, args.noise, BIG_SEED)
    rows = []
    with threadpool_limits(limits=1):
        for i in range(args.cohorts):
            x, y = markers(cfg, args.n, args.seed + i)
            rows.append(
                one_cohort(measured(x, sd, args.noise, args.seed + i), y, (xb, yb), args, args.seed + i)
            )
    truths = {t: float(np.mean([r["truth"][t] for r in rows])) for t in ("full_model", "fold_models")}
    return {
        "conditions": {
            "cohorts": args.cohorts,
            "n": args.n,
            "profile": "neck",
            "target": TARGET,
            "features": f"{len(PATIENT_COLUMNS) + 6 * len(MARKERS)} true observable markers "
            f"({', '.join(PATIENT_COLUMNS + MARKERS)}) + Gaussian noise {args.noise} SD",
            "model": f"median imputation, standardisation, L2 logistic regression C={args.c} (no tuning)",
            "protocol": f"{args.repeats} x repeated stratified {args.folds}-fold",
            "large_sample": {"n": args.big, "seed": BIG_SEED, "prevalence": round(float(yb.mean()), 4)},
            "cohort_seeds": [args.seed, args.seed + args.cohorts - 1],
            "machine": f"{platform.machine()}, {platform.python_version()}",
        },
        "mean_events": round(float(np.mean([r["events"] for r in rows])), 1),
        "mean_truth": {k: round(v, 4) for k, v in truths.items()},
        "sd_full_model_truth": round(float(np.std([r["truth"]["full_model"] for r in rows])), 4),
        "methods": summarise(rows),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of coverage.json [benchmarks/results]")
    ap.add_argument("--cohorts", type=int, default=300, help="small cohorts drawn [300]")
    ap.add_argument("--n", type=int, default=109, help="patients per small cohort [109]")
    ap.add_argument(
        "--big", type=int, default=20_000, help="patients of the large sample (the truth) [20000]"
    )
    ap.add_argument("--folds", type=int, default=5, help="outer folds [5]")
    ap.add_argument("--repeats", type=int, default=2, help="outer repeats [2]")
    ap.add_argument(
        "--c", type=float, default=0.1, help="inverse L2 penalty of the logistic regression [0.1]"
    )
    ap.add_argument("--noise", type=float, default=0.3, help="measurement noise, in column SDs [0.3]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first small cohort [0]")
    args = ap.parse_args(argv)
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "coverage.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["methods"]))
    return res


if __name__ == "__main__":
    main()
