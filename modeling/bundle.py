"""What :mod:`~cdeg.modeling.fit`, :mod:`~cdeg.modeling.predict` and :mod:`~cdeg.modeling.validate` share.

The saved model folder (:class:`ModelBundle`), the preparation of new patients for it (:func:`read_inputs`),
the input check of a clinical table, the versions recorded beside every result and the curves of the
performance figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from cdeg.modeling import plots
from cdeg.modeling.config import MODELS
from cdeg.modeling.data import is_text, read_clinical_table, read_features_table
from cdeg.modeling.models import TabularClassifier

from cdeg.errors import CdegError
from cdeg.io import read_json
from cdeg.outputs import FitRun as FitRunFolder
from cdeg.outputs import ModelFolder

log = logging.getLogger(__name__)

MODEL_DIR = FitRunFolder.MODEL_DIR
MANIFEST = ModelFolder.MANIFEST
DEV_DIR = ModelFolder.DEV_DIR
FORMAT = "cdeg-model"
FORMAT_VERSION = 1


#: Words after the counts of the progress bars of this stage's tasks.
def check_out(out: str | Path) -> Path:
    """The output folder `out`, refused when a file of that name is in the way."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    return out


def check_clinical(stage: str, clinical: str | Path, id_column: str, uses: Any, strict: bool) -> Any:
    """The stage's check of its clinical table (:func:`cdeg.check.check_stage_table`).

    A bad value in a column the stage `uses` leaves the patient out (or stops the stage with `strict`);
    see :func:`cdeg.modeling.fit.fit`.
    """
    from cdeg.check import check_stage_table

    return check_stage_table(stage, clinical, id_column=id_column, uses=uses, strict=strict)


def unused_columns(check: Any) -> set[str]:
    """Columns with bad values the stage does not use: read as missing rather than stopping it."""
    return {f.column for f in check.ignored if f.column}


def curves(y: np.ndarray, probs: pd.DataFrame, per_model: dict[str, Any]) -> list[plots.Curve]:
    """One curve per model of `probs` with metrics in `per_model`, in report order, AUC in the legend."""
    out = []
    for m in MODELS:
        if m in probs.columns and m in per_model:
            s = per_model[m]
            legend = (
                f"{plots.MODEL_LABELS[m]}: AUC {s['auc']:.2f} [{s['auc_ci'][0]:.2f}, {s['auc_ci'][1]:.2f}]"
            )
            out.append((m, np.asarray(y, int), probs[m].to_numpy(dtype=float), legend))
    return out


# ==============================================================================================================
# saved models
# ==============================================================================================================


@dataclass
class ModelBundle:
    """A saved model folder: the manifest and the fitted classifiers."""

    path: Path
    manifest: dict[str, Any]
    models: dict[str, TabularClassifier]

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        """Load ``RUN_DIR/model`` (or the run folder itself) written by :func:`cdeg.modeling.fit.fit`; JSON only."""
        path = Path(path)
        if (path / MODEL_DIR / MANIFEST).is_file() and not (path / MANIFEST).is_file():
            path = path / MODEL_DIR
        manifest = read_json(path / MANIFEST)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CdegError(
                f"not a cdeg model folder ({MANIFEST} has no format {FORMAT!r})", path=path / MANIFEST
            )
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise CdegError(
                f"model format {manifest['format_version']} is newer than this cdeg reads "
                f"({FORMAT_VERSION}); update cdeg",
                path=path / MANIFEST,
            )
        models = {}
        for m, info in manifest["models"].items():
            try:
                models[m] = TabularClassifier.load(path, m, info["files"], params=info.get("params"))
            except (OSError, ValueError, KeyError) as e:
                raise CdegError(f"cannot load model {m!r} ({type(e).__name__}: {e})", path=path) from None
        return cls(path, manifest, models)

    @property
    def primary(self) -> str:
        return self.manifest["primary_model"]

    @property
    def input_columns(self) -> list[str]:
        cols: list[str] = []
        for info in self.manifest["models"].values():
            cols += [c for c in info["input_columns"] if c not in cols]
        return cols


@dataclass
class Inputs:
    """External patients prepared for a saved model."""

    X: pd.DataFrame
    clinical: pd.DataFrame | None
    missing: dict[str, list[str]]
    imputed_share: dict[str, float]
    imputed_by_variable: dict[str, dict[str, float]]
    imputed_per_patient: dict[str, np.ndarray]
    unseen_levels: dict[str, list[str]]
    #: The whole features table as read (every column, not only the model's): the baselines read it.
    features: pd.DataFrame | None = None

    def subset(self, keep: np.ndarray) -> Inputs:
        """The patients where `keep` is true (the imputation summary stays that of all patients; `clinical`
        and `features` stay whole: align them with ``X.index``)."""
        return Inputs(
            self.X[keep],
            self.clinical,
            self.missing,
            self.imputed_share,
            self.imputed_by_variable,
            {m: v[keep] for m, v in self.imputed_per_patient.items()},
            self.unseen_levels,
            self.features,
        )


def read_inputs(
    bundle: ModelBundle,
    features: str | Path,
    clinical: str | Path | None,
    id_column: str | None,
    check: Any = None,
) -> Inputs:
    """The model's input columns for the patients of the two tables (less those `check` skipped)."""
    idc = id_column or bundle.manifest["id_column"]
    skip = set(check.skipped) if check is not None else set()
    feat = read_features_table(features, idc, skip)
    clin = (
        read_clinical_table(clinical, idc, skip, unused_columns(check) if check is not None else ())
        if clinical is not None
        else None
    )
    data = _join(feat, clin, features, clinical)
    needed = bundle.input_columns
    X = _model_frame(bundle, data, clin, features, clinical)
    X.index.name = idc
    missing, share, by_var, per_patient, unseen = _imputation_report(bundle, X, list(data.columns))
    extra = [c for c in data.columns if c not in needed]
    if extra:
        log.info("%d input column(s) not used by the model", len(extra))
    return Inputs(X, clin, missing, share, by_var, per_patient, unseen, feat)


def _join(
    feat: pd.DataFrame, clin: pd.DataFrame | None, features: str | Path, clinical: str | Path | None
) -> pd.DataFrame:
    """The features and clinical columns of the patients in both tables (features only without clinical)."""
    frames = [feat]
    if clin is not None:
        only_f = sorted(set(feat.index) - set(clin.index))
        only_c = sorted(set(clin.index) - set(feat.index))
        if only_f or only_c:
            log.warning(
                "%d id(s) only in %s and %d only in %s are left out",
                len(only_f),
                features,
                len(only_c),
                clinical,
            )
        ids = [i for i in feat.index if i in clin.index]
        frames = [feat.loc[ids], clin.loc[ids, [c for c in clin.columns if c not in feat.columns]]]
    data = pd.concat(frames, axis=1)
    if data.empty:
        raise CdegError("no patient to predict", path=features)
    return data


def _model_frame(
    bundle: ModelBundle,
    data: pd.DataFrame,
    clin: pd.DataFrame | None,
    features: str | Path,
    clinical: str | Path | None,
) -> pd.DataFrame:
    """The model's input columns, typed as in development; absent ones are all missing."""
    cats = set(bundle.manifest.get("categorical", []))
    cols: dict[str, Any] = {}
    for c in bundle.input_columns:
        if c not in data.columns:
            cols[c] = pd.Series(
                None if c in cats else np.nan, index=data.index, dtype=object if c in cats else float
            )
            continue
        s = data[c]
        if c in cats:
            cols[c] = s.map(
                lambda v: (
                    None if pd.isna(v) else (str(int(v)) if isinstance(v, float) and v == int(v) else str(v))
                )
            ).astype(object)
        elif is_text(s):
            src = clinical if clin is not None and c in clin.columns else features
            bad = s.dropna()
            raise CdegError(
                f"column {c!r} is numeric in the model but holds text such as {bad.iloc[0]!r}",
                patient=str(bad.index[0]),
                path=src,
            )
        else:
            cols[c] = s.astype(float)
    return pd.DataFrame(cols, index=data.index)


def _imputation_report(bundle: ModelBundle, X: pd.DataFrame, available: list[str]) -> tuple[Any, ...]:
    """Per model: missing variables, share of imputed values (overall, per variable, per patient); unseen levels."""
    missing, share, by_var, per_patient, unseen = {}, {}, {}, {}, {}
    for m, info in bundle.manifest["models"].items():
        used = info["used_columns"]
        missing[m] = [c for c in used if c not in available]
        na = X[used].isna() if used else pd.DataFrame(index=X.index)
        share[m] = float(na.to_numpy().mean()) if used else 0.0
        by_var[m] = {c: float(na[c].mean()) for c in used if na[c].any()}
        per_patient[m] = na.mean(axis=1).to_numpy() if used else np.zeros(len(X))
        if missing[m]:
            log.warning(
                "model %s: %d of its %d variables are not in the input and are imputed with the development "
                "values (median / most frequent): %s",
                m,
                len(missing[m]),
                len(used),
                ", ".join(missing[m][:10]) + (" ..." if len(missing[m]) > 10 else ""),
            )
        if share[m] > 0:
            log.warning("model %s: %.1f%% of its input values are imputed", m, 100 * share[m])
        enc = bundle.models[m].preprocessor_.encoder_
        for c, levels in enc.categories_.items():
            if c in X.columns:
                new = sorted({v for v in X[c].dropna() if v not in levels})
                if new:
                    unseen[c] = new
    for c, new in unseen.items():
        log.warning(
            "column %r has values not seen in development (%s): encoded as none of the known levels",
            c,
            ", ".join(new[:5]),
        )
    return missing, share, by_var, per_patient, unseen


def predict_table(bundle: ModelBundle, inp: Inputs) -> pd.DataFrame:
    """Id, primary probability, one probability per model and the imputed share, one row per patient."""
    idc = inp.X.index.name
    df = pd.DataFrame({idc: inp.X.index})
    probs = {}
    for m, clf in bundle.models.items():
        probs[m] = clf.predict_proba(inp.X[bundle.manifest["models"][m]["input_columns"]])[:, 1]
    df["probability"] = probs[bundle.primary]
    for m in bundle.models:
        df[f"probability_{m}"] = probs[m]
    df["imputed_share"] = inp.imputed_per_patient[bundle.primary]
    return df
