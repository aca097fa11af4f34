"""What each stage writes: one frozen contract per output folder, owned by this module alone.

The cohort layout (inputs: images, reference masks, clinical table, truth) is :mod:`cdeg.cohort`. Everything a
stage writes is declared here: its file names, the keys of its manifest that consumers rely on, and a
``read()`` that loads what a consumer needs. Producers write through these paths and consumers read through
them, so no stage output's file name is spelled anywhere else. ::

    MaskFolder            `cdeg segment predict`, `cdeg segment import-masks`
      <patient_id>/<modality>.nii.gz, <patient_id>/<modality>_qc.png, qc.csv, uncertainty.csv,
      segment_predict_<modality>.json | import_masks_<modality>.json, import_masks.csv,
      cdeg_labels.ctbl, cdeg_itksnap_labels.txt, suggest.csv (`cdeg segment suggest`)
    EditorExport          `cdeg segment export`: <pid>_<modality>.seg.nrrd | _seg.nii.gz, export.csv
    SegmentationModel     `cdeg segment train`: cdeg_model.json, NNUNET.md, nnUNet_results/, work/, nnunet_ext/
    Evaluation            `cdeg segment evaluate`: evaluation.json, evaluation.csv
    FeatureFolder         `cdeg extract`: features.parquet, features.csv, features_long.parquet, errors.csv,
                          provenance.json, cache/
    AgreementRun          `cdeg extract-agreement`: agreement.csv, stable_features.csv, agreement.json
    LabelRun              `cdeg label`: labels.csv, clinical.csv (the clinical table with the label), label.json
    FitRun                `cdeg fit`: metrics.json, oof_predictions.csv, report.html, plots/, optuna.db, model/
    FitRun                `cdeg fit`: metrics.json, oof_predictions.csv, oof_shap.csv, report.html, plots/,
                          waterfalls/ (by_level/ inside), optuna.db, model/
    ModelFolder           the model inside a fit run: model.json, <model>.model.json, <model>.preprocess.json,
                          development/ (oof_mean.csv, metrics.json, plots)
    ValidationRun         `cdeg validate`: metrics.json, predictions.csv, transport.csv, plots/, report.html,
                          waterfalls/
    PredictionRun         `cdeg predict`: predictions.csv, predict.json, waterfalls/ (by_level/ inside)
    DicomImport           `cdeg import-dicom`: import_report.csv, import_images.csv (beside the cohort)
    RunFolder             `cdeg run`: one folder per stage (below), run.json, a cdeg_stage.json per stage

Every manifest goes through :func:`write_manifest` (which adds the cdeg version, the time and the library
versions of :func:`versions`) and is read back with :func:`read_manifest`.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

from cdeg import __version__
from cdeg.cohort import CLINICAL_CSV, ID_COLUMN, check_modality, mask_path
from cdeg.errors import CdegError
from cdeg.io import read_json, write_json

#: The libraries whose versions shape each stage's results (and the report's provenance lists them all).
STAGE_LIBRARIES: dict[str, tuple[str, ...]] = {
    "segment": ("nnunetv2", "torch", "SimpleITK", "numpy"),
    # The distributions whose versions decide the feature values (a Dask worker must match the client).
    "extract": ("pyradiomics", "SimpleITK", "numpy", "scipy", "PyWavelets"),
    "agreement": ("numpy", "pandas", "scipy"),
    "label": ("numpy", "pandas"),
    "model": ("numpy", "pandas", "scikit-learn", "xgboost", "optuna", "shap"),
}
ALL_LIBRARIES: tuple[str, ...] = tuple(dict.fromkeys(p for libs in STAGE_LIBRARIES.values() for p in libs))


def versions(stage: str | None = None) -> dict[str, str | None]:
    """Versions of cdeg, Python and the libraries of `stage` (:data:`STAGE_LIBRARIES`; None: all of them).

    A library that is not installed is None (the report shows "-")."""
    libs = ALL_LIBRARIES if stage is None else STAGE_LIBRARIES[stage]
    out: dict[str, str | None] = {"cdeg": __version__, "python": platform.python_version()}
    for pkg in libs:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def now() -> str:
    """UTC time stamp for manifests (seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_manifest(path: str | Path, data: dict[str, Any], stage: str | None = None) -> dict[str, Any]:
    """Write a stage manifest atomically; return what was written.

    Adds ``cdeg_version``, ``created`` and, when `stage` is given, ``versions`` (:func:`versions`) unless
    `data` already holds them, so every manifest records what made it in the same words.
    """
    full = dict(data)
    full.setdefault("cdeg_version", __version__)
    full.setdefault("created", now())
    if stage is not None:
        full.setdefault("versions", versions(stage))
    write_json(path, full)
    return full


def read_manifest(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a manifest; a missing file, a non-object or a missing `required` key is a CdegError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CdegError("manifest not found", path=path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise CdegError("a manifest must hold a JSON object", path=path)
    missing = [k for k in required if k not in data]
    if missing:
        raise CdegError(f"manifest lacks {', '.join(missing)} (written by another cdeg version?)", path=path)
    return data


def waterfall_stem(patient_id: str) -> str:
    """File stem of a patient's waterfall plot: the id with characters unsafe in file names replaced."""
    import re

    return re.sub(r"[^A-Za-z0-9_.\-]", "_", str(patient_id))[:80] or "patient"


#: File type of the per-patient waterfalls (SVG, words as text: cheaper to draw than a PNG, and smaller).
WATERFALL_SUFFIX = ".svg"

#: Sub-folder of a waterfalls folder with the waterfalls grouped per level (same file stem as the per-variable one).
GROUPED_WATERFALLS_DIR = "by_level"


def grouped_waterfall_stem(patient_id: str) -> str:
    """Stem, relative to a waterfalls folder, of a patient's waterfall grouped per level (a sub-folder, so no
    patient id can collide with it)."""
    return f"{GROUPED_WATERFALLS_DIR}/{waterfall_stem(patient_id)}"


def _read_optional_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json(path)
    return data if isinstance(data, dict) else None


def _read_optional_table(path: Path, **kw: Any) -> Any:
    from cdeg.io import read_table

    return read_table(path, **kw) if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskFolder:
    """Masks in the cdeg convention, one ``<patient_id>/<modality>.nii.gz`` each, with their QC.

    Written by `cdeg segment predict` and `cdeg segment import-masks`; a cohort's reference ``masks/`` has the
    same layout (without QC files).
    """

    root: Path
    QC_CSV: ClassVar[str] = "qc.csv"
    IMPORT_CSV: ClassVar[str] = "import_masks.csv"
    #: The level names and colours for editors (:mod:`cdeg.segmentation.editors`): a 3D Slicer colour table
    #: and an ITK-SNAP label description file, at the root of every mask folder.
    SLICER_CTBL: ClassVar[str] = "cdeg_labels.ctbl"
    ITKSNAP_LABELS: ClassVar[str] = "cdeg_itksnap_labels.txt"
    #: qc.csv columns: one row per finding (a level repaired, a fragment removed, a patient skipped).
    QC_COLUMNS: ClassVar[tuple[str, ...]] = (ID_COLUMN, "modality", "check", "detail", "repaired")
    #: Per patient, modality and predicted structure: the network's own doubt (written by predict only).
    UNCERTAINTY_CSV: ClassVar[str] = "uncertainty.csv"
    UNCERTAINTY_COLUMNS: ClassVar[tuple[str, ...]] = (
        ID_COLUMN,
        "modality",
        "structure",
        "voxels",
        "mean_confidence",
        "low_confidence_share",
        "flip_dice",
        "fold_dice",
    )
    #: `cdeg segment suggest`: the masks most likely wrong, worst first, with the reasons in words.
    SUGGEST_CSV: ClassVar[str] = "suggest.csv"
    SUGGEST_COLUMNS: ClassVar[tuple[str, ...]] = ("rank", ID_COLUMN, "modality", "score", "reasons")
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("modality", "patients", "counts")

    def mask(self, patient_id: str, modality: str) -> Path:
        return mask_path(self.root, patient_id, modality)

    def qc_png(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / patient_id / f"{check_modality(modality)}_qc.png"

    @property
    def qc_csv(self) -> Path:
        return Path(self.root) / self.QC_CSV

    @property
    def import_csv(self) -> Path:
        return Path(self.root) / self.IMPORT_CSV

    @property
    def slicer_ctbl(self) -> Path:
        return Path(self.root) / self.SLICER_CTBL

    @property
    def itksnap_labels(self) -> Path:
        return Path(self.root) / self.ITKSNAP_LABELS

    @property
    def uncertainty_csv(self) -> Path:
        return Path(self.root) / self.UNCERTAINTY_CSV

    @property
    def suggest_csv(self) -> Path:
        return Path(self.root) / self.SUGGEST_CSV

    def predict_manifest(self, modality: str) -> Path:
        return Path(self.root) / f"segment_predict_{check_modality(modality)}.json"

    def import_manifest(self, modality: str) -> Path:
        return Path(self.root) / f"import_masks_{check_modality(modality)}.json"

    def corners_manifest(self, modality: str) -> Path:
        """Manifest of `cdeg segment masks-from-corners` (masks drawn from corner points)."""
        return Path(self.root) / f"masks_from_corners_{check_modality(modality)}.json"

    def manifests(self) -> dict[str, dict[str, Any]]:
        """modality -> the manifest of the stage that wrote its masks (prediction, else import, else corners)."""
        from cdeg.cohort import MODALITIES

        out = {}
        for m in MODALITIES:
            for path in (self.predict_manifest(m), self.import_manifest(m), self.corners_manifest(m)):
                data = _read_optional_json(path)
                if data is not None:
                    out[m] = data
                    break
        return out

    def read(self) -> dict[str, Any]:
        """``{"qc": qc.csv as a DataFrame or None, "manifests": modality -> manifest}``."""
        qc = _read_optional_table(self.qc_csv, dtype={ID_COLUMN: str, "patient": str})
        if qc is not None and ID_COLUMN not in qc and "patient" in qc:
            qc = qc.rename(
                columns={"patient": ID_COLUMN}
            )  # mask folders of cdeg 0.1 named the column "patient"
        return {"qc": qc, "manifests": self.manifests()}


@dataclass(frozen=True)
class EditorExport:
    """`cdeg segment export`: masks as files a segmentation editor opens with names and colours. ::

    slicer:   <pid>_<modality>.seg.nrrd (segments named C2..T1), <pid>_<modality>.nrrd (the image)
    itksnap:  <pid>_<modality>.nii.gz (the image), <pid>_<modality>_seg.nii.gz (the mask)
    both:     export.csv (worst QC first), the Slicer colour table and the ITK-SNAP label file

    `cdeg segment import-masks --from slicer|itksnap --masks ROOT` reads the corrected files back from the
    same names; an ITK-SNAP label file ``<pid>_<modality>_labels.txt`` beside a mask replaces the shared one.
    """

    root: Path
    CSV: ClassVar[str] = "export.csv"
    CSV_COLUMNS: ClassVar[tuple[str, ...]] = (
        "order",
        ID_COLUMN,
        "modality",
        "findings",
        "reasons",
        "files",
    )
    SLICER_CTBL: ClassVar[str] = MaskFolder.SLICER_CTBL
    ITKSNAP_LABELS: ClassVar[str] = MaskFolder.ITKSNAP_LABELS

    @property
    def csv(self) -> Path:
        return Path(self.root) / self.CSV

    @staticmethod
    def stem(patient_id: str, modality: str) -> str:
        return f"{patient_id}_{check_modality(modality)}"

    def slicer_segmentation(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / f"{self.stem(patient_id, modality)}.seg.nrrd"

    def slicer_image(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / f"{self.stem(patient_id, modality)}.nrrd"

    def itksnap_image(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / f"{self.stem(patient_id, modality)}.nii.gz"

    def itksnap_segmentation(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / f"{self.stem(patient_id, modality)}_seg.nii.gz"

    def itksnap_patient_labels(self, patient_id: str, modality: str) -> Path:
        return Path(self.root) / f"{self.stem(patient_id, modality)}_labels.txt"

    @property
    def slicer_ctbl(self) -> Path:
        return Path(self.root) / self.SLICER_CTBL

    @property
    def itksnap_labels(self) -> Path:
        return Path(self.root) / self.ITKSNAP_LABELS

    def read(self) -> Any:
        """export.csv as a DataFrame, or None when the stage did not run."""
        return _read_optional_table(self.csv, dtype={ID_COLUMN: str})


@dataclass(frozen=True)
class SegmentationModel:
    """A `cdeg segment train` model folder: the manifest and nnU-Net's own results folder inside."""

    root: Path
    MANIFEST: ClassVar[str] = "cdeg_model.json"
    NNUNET_DOC: ClassVar[str] = "NNUNET.md"
    RESULTS_DIR: ClassVar[str] = "nnUNet_results"
    WORK_DIR: ClassVar[str] = "work"
    EXT_DIR: ClassVar[str] = "nnunet_ext"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = (
        "status",
        "modality",
        "preset",
        "configuration",
        "labels",
        "versions",
    )

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    @property
    def nnunet_doc(self) -> Path:
        return Path(self.root) / self.NNUNET_DOC

    @property
    def results(self) -> Path:
        return Path(self.root) / self.RESULTS_DIR

    @property
    def work(self) -> Path:
        return Path(self.root) / self.WORK_DIR

    @property
    def ext(self) -> Path:
        return Path(self.root) / self.EXT_DIR

    def is_model(self) -> bool:
        return self.manifest.is_file()

    def read(self) -> dict[str, Any]:
        """The manifest (cdeg_model.json)."""
        return read_manifest(self.manifest, required=self.MANIFEST_KEYS)


@dataclass(frozen=True)
class Evaluation:
    """`cdeg segment evaluate` output: the JSON summary and the tidy per-structure CSV beside it."""

    root: Path
    JSON: ClassVar[str] = "evaluation.json"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("summary", "definitions")

    @property
    def json(self) -> Path:
        return Path(self.root) / self.JSON

    @property
    def csv(self) -> Path:
        return self.json.with_suffix(".csv")

    def read(self) -> dict[str, Any] | None:
        """evaluation.json, or None when the stage did not run."""
        return _read_optional_json(self.json)


# ----------------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureFolder:
    """`cdeg extract` output: one wide row per patient, the tidy long table, errors and provenance."""

    root: Path
    FEATURES: ClassVar[str] = "features.parquet"
    FEATURES_CSV: ClassVar[str] = "features.csv"
    LONG: ClassVar[str] = "features_long.parquet"
    ERRORS: ClassVar[str] = "errors.csv"
    MANIFEST: ClassVar[str] = "provenance.json"
    CACHE_DIR: ClassVar[str] = "cache"
    #: With ``--label-map``: another tool's masks converted into cdeg's convention, kept for review.
    IMPORTED_MASKS_DIR: ClassVar[str] = "masks"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("cdeg_version", "pyradiomics_version", "patients", "outputs")

    @property
    def features(self) -> Path:
        return Path(self.root) / self.FEATURES

    @property
    def features_csv(self) -> Path:
        return Path(self.root) / self.FEATURES_CSV

    @property
    def long(self) -> Path:
        return Path(self.root) / self.LONG

    @property
    def errors(self) -> Path:
        return Path(self.root) / self.ERRORS

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    @property
    def cache(self) -> Path:
        return Path(self.root) / self.CACHE_DIR

    def read(self) -> Any:
        """The wide feature table (features.parquet) as a DataFrame, or None when it was not written."""
        return _read_optional_table(self.features)


@dataclass(frozen=True)
class AgreementRun:
    """`cdeg extract-agreement` output: the agreement of two feature tables of the same patients.

    agreement.csv has one row per feature column (ICC(2,1), ICC(3,1) with 95% CIs; Bland-Altman for the
    clinical measurements); stable_features.csv (``feature``, ``icc``) is what `cdeg fit --stable-features`
    reads; agreement.json records the inputs, the patients matched and left out, and the share of reliable
    features per modality and feature class.
    """

    root: Path
    TABLE: ClassVar[str] = "agreement.csv"
    STABLE_FEATURES: ClassVar[str] = "stable_features.csv"
    MANIFEST: ClassVar[str] = "agreement.json"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = (
        "inputs",
        "id_column",
        "patients",
        "columns",
        "reliable_share",
    )

    @property
    def table(self) -> Path:
        return Path(self.root) / self.TABLE

    @property
    def stable_features(self) -> Path:
        return Path(self.root) / self.STABLE_FEATURES

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    def read(self) -> dict[str, Any] | None:
        """agreement.json, or None when the stage did not run."""
        return _read_optional_json(self.manifest)

    def read_table(self) -> Any:
        """agreement.csv as a DataFrame, or None."""
        return _read_optional_table(self.table)


@dataclass(frozen=True)
class LabelRun:
    """`cdeg label` output: an operational study label derived by a stated rule from measurements.

    labels.csv has one row per patient of the clinical table (:data:`LABEL_COLUMNS`: the standardised score,
    its centile in the reference cohort, the stratum whose norms and threshold were used, the label; empty
    score and label where no score could be computed); clinical.csv is the input clinical table with the label
    added as a column named as the label (what `cdeg fit` and `cdeg validate` read); label.json records the
    rule in words and as data, the reference cohort (paths, SHA-256, patients) and the thresholds.
    """

    root: Path
    LABELS: ClassVar[str] = "labels.csv"
    CLINICAL: ClassVar[str] = CLINICAL_CSV
    MANIFEST: ClassVar[str] = "label.json"
    LABEL_COLUMNS: ClassVar[tuple[str, ...]] = (
        ID_COLUMN,
        "score",
        "reference_centile",
        "stratum",
        "label",
        "why_missing",
    )
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("name", "rule", "thresholds", "reference", "counts")

    @property
    def labels(self) -> Path:
        return Path(self.root) / self.LABELS

    @property
    def clinical(self) -> Path:
        return Path(self.root) / self.CLINICAL

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    def read(self) -> dict[str, Any] | None:
        """label.json, or None when the stage did not run."""
        return _read_optional_json(self.manifest)

    def read_labels(self) -> Any:
        """labels.csv as a DataFrame, or None."""
        return _read_optional_table(self.labels, dtype={ID_COLUMN: str})

    @classmethod
    def beside(cls, clinical: str | Path, target: str) -> dict[str, Any] | None:
        """The label.json of the `cdeg label` run that wrote clinical table `clinical`, when its label is
        `target` (how `cdeg fit` and `cdeg validate` learn the outcome definition); None otherwise."""
        run = cls(Path(clinical).parent)
        if Path(clinical).name != cls.CLINICAL:
            return None
        data = run.read()
        return data if data is not None and data.get("name") == target else None


# ----------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFolder:
    """The fitted models of a fit run (what `cdeg predict` and `cdeg validate` load)."""

    root: Path
    MANIFEST: ClassVar[str] = "model.json"
    DEV_DIR: ClassVar[str] = "development"
    OOF_MEAN: ClassVar[str] = "oof_mean.csv"
    DEV_METRICS: ClassVar[str] = "metrics.json"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = (
        "format",
        "format_version",
        "target",
        "primary_model",
        "models",
    )

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    @property
    def development(self) -> Path:
        return Path(self.root) / self.DEV_DIR

    @property
    def oof_mean(self) -> Path:
        return self.development / self.OOF_MEAN

    @property
    def dev_metrics(self) -> Path:
        return self.development / self.DEV_METRICS

    @staticmethod
    def model_files(name: str) -> dict[str, str]:
        """File names of one fitted model (its preprocessing and its estimator)."""
        return {"preprocess": f"{name}.preprocess.json", "model": f"{name}.model.json"}

    def read(self) -> dict[str, Any]:
        """The manifest (model.json)."""
        return read_manifest(self.manifest, required=self.MANIFEST_KEYS)


#: Plot stems of the performance and explanation figures (each written as .png and .svg).
PLOTS: dict[str, str] = {
    "roc": "roc",
    "calibration": "calibration",
    "decision_curve": "decision_curve",
    "shap_bar": "shap_bar",
    "shap_bar_level": "shap_bar_level",
    "shap_bar_concept": "shap_bar_concept",
    "shap_beeswarm": "shap_beeswarm",
    "recalibration": "recalibration",
}


@dataclass(frozen=True)
class FitRun:
    """A `cdeg fit` run folder."""

    root: Path
    METRICS: ClassVar[str] = "metrics.json"
    OOF: ClassVar[str] = "oof_predictions.csv"
    #: SHAP values of the primary model's outer-fold models on the patients each predicted (all repeats).
    OOF_SHAP: ClassVar[str] = "oof_shap.csv"
    REPORT: ClassVar[str] = "report.html"
    PLOTS_DIR: ClassVar[str] = "plots"
    #: Per-patient waterfalls of the cross-validated risk (first repeat's outer-fold model; by_level/ inside).
    WATERFALLS_DIR: ClassVar[str] = "waterfalls"
    MODEL_DIR: ClassVar[str] = "model"
    OPTUNA_DB: ClassVar[str] = "optuna.db"
    #: Files of the Optuna study a re-run resumes (SQLite and its write-ahead log).
    OPTUNA_FILES: ClassVar[tuple[str, ...]] = ("optuna.db", "optuna.db-wal", "optuna.db-shm")
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("target", "cv", "comparison", "data")

    @property
    def metrics(self) -> Path:
        return Path(self.root) / self.METRICS

    @property
    def oof(self) -> Path:
        return Path(self.root) / self.OOF

    @property
    def report(self) -> Path:
        return Path(self.root) / self.REPORT

    @property
    def plots(self) -> Path:
        return Path(self.root) / self.PLOTS_DIR

    def plot(self, name: str, suffix: str = ".png") -> Path:
        return self.plots / f"{PLOTS.get(name, name)}{suffix}"

    @property
    def optuna_db(self) -> Path:
        return Path(self.root) / self.OPTUNA_DB

    @property
    def model(self) -> ModelFolder:
        return ModelFolder(Path(self.root) / self.MODEL_DIR)

    def read(self) -> dict[str, Any] | None:
        """metrics.json, or None when the stage did not run."""
        return _read_optional_json(self.metrics)

    def read_oof(self) -> Any:
        """oof_predictions.csv (one row per patient, repeat and model column), or None."""
        return _read_optional_table(self.oof, dtype={ID_COLUMN: str})

    @property
    def oof_shap(self) -> Path:
        return Path(self.root) / self.OOF_SHAP

    def read_oof_shap(self) -> Any:
        """oof_shap.csv (one row per patient, repeat and variable of its outer-fold model), or None."""
        return _read_optional_table(self.oof_shap, dtype={ID_COLUMN: str})

    @property
    def waterfalls(self) -> Path:
        return Path(self.root) / self.WATERFALLS_DIR

    def waterfall(self, patient_id: str, suffix: str = WATERFALL_SUFFIX) -> Path:
        """A patient's waterfall of the cross-validated risk (the id made safe as a file name)."""
        return self.waterfalls / f"{waterfall_stem(patient_id)}{suffix}"

    def grouped_waterfall(self, patient_id: str, suffix: str = WATERFALL_SUFFIX) -> Path:
        """A patient's waterfall of the cross-validated risk with the variables summed per level."""
        return self.waterfalls / f"{grouped_waterfall_stem(patient_id)}{suffix}"


@dataclass(frozen=True)
class ValidationRun:
    """A `cdeg validate` output folder."""

    root: Path
    METRICS: ClassVar[str] = "metrics.json"
    PREDICTIONS: ClassVar[str] = "predictions.csv"
    #: Development vs external distribution of the primary model's top variables (:mod:`cdeg.modeling.transport`).
    TRANSPORT: ClassVar[str] = "transport.csv"
    REPORT: ClassVar[str] = "report.html"
    PLOTS_DIR: ClassVar[str] = "plots"
    WATERFALLS_DIR: ClassVar[str] = "waterfalls"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("target", "model", "external", "comparison")

    @property
    def metrics(self) -> Path:
        return Path(self.root) / self.METRICS

    @property
    def predictions(self) -> Path:
        return Path(self.root) / self.PREDICTIONS

    @property
    def transport(self) -> Path:
        return Path(self.root) / self.TRANSPORT

    @property
    def report(self) -> Path:
        return Path(self.root) / self.REPORT

    @property
    def plots(self) -> Path:
        return Path(self.root) / self.PLOTS_DIR

    def plot(self, name: str, suffix: str = ".png") -> Path:
        return self.plots / f"{PLOTS.get(name, name)}{suffix}"

    @property
    def waterfalls(self) -> Path:
        return Path(self.root) / self.WATERFALLS_DIR

    def read(self) -> dict[str, Any] | None:
        """metrics.json, or None when the stage did not run."""
        return _read_optional_json(self.metrics)

    def read_predictions(self) -> Any:
        return _read_optional_table(self.predictions, dtype={ID_COLUMN: str})


@dataclass(frozen=True)
class PredictionRun:
    """A `cdeg predict` output folder."""

    root: Path
    PREDICTIONS: ClassVar[str] = "predictions.csv"
    MANIFEST: ClassVar[str] = "predict.json"
    WATERFALLS_DIR: ClassVar[str] = "waterfalls"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("target", "primary_model", "n_patients")

    @property
    def predictions(self) -> Path:
        return Path(self.root) / self.PREDICTIONS

    @property
    def manifest(self) -> Path:
        return Path(self.root) / self.MANIFEST

    @property
    def waterfalls(self) -> Path:
        return Path(self.root) / self.WATERFALLS_DIR

    def waterfall(self, patient_id: str, suffix: str = WATERFALL_SUFFIX) -> Path:
        """A patient's SHAP waterfall (the id made safe as a file name)."""
        return self.waterfalls / f"{waterfall_stem(patient_id)}{suffix}"

    def grouped_waterfall(self, patient_id: str, suffix: str = WATERFALL_SUFFIX) -> Path:
        """A patient's SHAP waterfall with the variables summed per level."""
        return self.waterfalls / f"{grouped_waterfall_stem(patient_id)}{suffix}"

    def read(self) -> Any:
        """predictions.csv as a DataFrame, or None when the stage did not run."""
        return _read_optional_table(self.predictions, dtype={ID_COLUMN: str})


# ----------------------------------------------------------------------------------------------------------
# import and the study run
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomImport:
    """The reports `cdeg import-dicom` writes into the cohort it creates."""

    root: Path
    REPORT_CSV: ClassVar[str] = "import_report.csv"
    IMAGES_CSV: ClassVar[str] = "import_images.csv"

    @property
    def report(self) -> Path:
        return Path(self.root) / self.REPORT_CSV

    @property
    def images(self) -> Path:
        return Path(self.root) / self.IMAGES_CSV

    def read(self) -> Any:
        """import_report.csv as a DataFrame, or None."""
        return _read_optional_table(self.report, dtype={ID_COLUMN: str})


@dataclass(frozen=True)
class RunFolder:
    """A `cdeg run` folder: one folder per stage, each with its ``cdeg_stage.json``, and ``run.json``. ::

    cohorts/<cohort>/                synthetic cohorts (cohort layout)
    segmentation/train-<modality>/   model/ = a SegmentationModel
    masks/<cohort>/                  a MaskFolder, all modalities
    segmentation/evaluate-<cohort>/  an Evaluation
    features/<cohort>/               a FeatureFolder
    reference-features/<cohort>/     a FeatureFolder from the cohort's reference masks (agreement patients only)
    agreement/<cohort>/              an AgreementRun: predicted-mask features vs reference-mask features
    labels/<target>/<cohort>/        a LabelRun: the target derived by its rule (targets with a label section)
    models/<target>/                 a FitRun
    validation/<target>/             a ValidationRun
    predictions/<target>/            a PredictionRun on the development cohort (patient cards)
    report/report.html               the study report
    run.json                         the resolved study configuration and what the last run did
    """

    root: Path
    RUN_JSON: ClassVar[str] = "run.json"
    STAGE_MANIFEST: ClassVar[str] = "cdeg_stage.json"
    REPORT: ClassVar[str] = "report.html"
    SEGMENT_MODEL_DIR: ClassVar[str] = "model"
    MANIFEST_KEYS: ClassVar[tuple[str, ...]] = ("config", "study", "stages")

    @property
    def run_json(self) -> Path:
        return Path(self.root) / self.RUN_JSON

    def cohort(self, key: str) -> Path:
        return Path(self.root) / "cohorts" / key

    def segment_train(self, modality: str) -> Path:
        return Path(self.root) / "segmentation" / f"train-{check_modality(modality)}"

    def segment_model(self, modality: str) -> SegmentationModel:
        return SegmentationModel(self.segment_train(modality) / self.SEGMENT_MODEL_DIR)

    def masks(self, key: str) -> MaskFolder:
        return MaskFolder(Path(self.root) / "masks" / key)

    def evaluation(self, key: str) -> Evaluation:
        return Evaluation(Path(self.root) / "segmentation" / f"evaluate-{key}")

    def features(self, key: str) -> FeatureFolder:
        return FeatureFolder(Path(self.root) / "features" / key)

    def reference_features(self, key: str) -> FeatureFolder:
        return FeatureFolder(Path(self.root) / "reference-features" / key)

    def agreement(self, key: str) -> AgreementRun:
        return AgreementRun(Path(self.root) / "agreement" / key)

    def label(self, target: str, key: str) -> LabelRun:
        return LabelRun(Path(self.root) / "labels" / target / key)

    def fit(self, target: str) -> FitRun:
        return FitRun(Path(self.root) / "models" / target)

    def validation(self, target: str) -> ValidationRun:
        return ValidationRun(Path(self.root) / "validation" / target)

    def predictions(self, target: str) -> PredictionRun:
        return PredictionRun(Path(self.root) / "predictions" / target)

    @property
    def report_folder(self) -> Path:
        return Path(self.root) / "report"

    @property
    def report(self) -> Path:
        return self.report_folder / self.REPORT

    @classmethod
    def stage_manifest(cls, stage_folder: str | Path) -> Path:
        return Path(stage_folder) / cls.STAGE_MANIFEST

    def read(self) -> dict[str, Any]:
        """run.json (the resolved study configuration under ``study``)."""
        if not self.run_json.is_file():
            raise CdegError(
                f"not a cdeg run folder ({self.RUN_JSON} is missing; `cdeg run` writes it)", path=self.root
            )
        return read_manifest(self.run_json, required=self.MANIFEST_KEYS)
