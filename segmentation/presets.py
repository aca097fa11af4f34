"""Options of `cdeg segment`: training presets per device and modality, prediction and post-processing.

The values live in ``configs/segment.yaml`` (a user file given with ``--config`` overrides any key);
this module declares and validates them. A preset is resolved for one device kind ("cpu" or "cuda")
and one modality, because what fits in ten minutes differs by orders of magnitude between a 2-core
CPU and a GPU, and a 2D radiograph is not planned like a 3D MRI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdeg.choices import DEVICE_KINDS, FOLDS, SEGMENT_PRESETS
from cdeg.cohort import MODALITIES
from cdeg.config import ConfigError, deep_merge, from_dict, load_yaml, shipped_config
from cdeg.defaults import doc_field as _f
from cdeg.defaults import shipped_defaults

#: The shipped options of `cdeg segment` (configs/): the defaults layer every user file is merged onto.
SHIPPED_FILE = "segment.yaml"

PRESETS = SEGMENT_PRESETS
CONFIGURATIONS = ("2d", "3d_fullres")
__all__ = ["CONFIGURATIONS", "DEVICE_KINDS", "FOLDS", "PRESETS", "SegmentConfig", "TrainSettings"]
#: Trainer class name -> whether it reads epochs/iterations/time budget from the settings. The classes
#: are in trainers.py (which imports torch); this table lets configuration checks run without torch,
#: and a test keeps the two in step.
TRAINER_NAMES: dict[str, bool] = {
    "nnUNetTrainer": False,
    "nnUNetTrainer_cdegSpine": False,
    "nnUNetTrainer_cdegBudget": True,
}


@dataclass(frozen=True)
class TrainSettings:
    """How one preset trains one modality on one kind of device. None keeps nnU-Net's own value."""

    trainer: str = field(
        default="nnUNetTrainer_cdegSpine",
        metadata={"help": "trainer class (see trainers.py)", "choices": tuple(TRAINER_NAMES)},
    )
    configuration: str = field(
        default="2d",
        metadata={"help": "nnU-Net configuration planned and trained", "choices": CONFIGURATIONS},
    )
    epochs: int | None = field(
        default=None, metadata={"help": "epochs (nnU-Net: 1000)", "range": (1, 100000)}
    )
    iterations_per_epoch: int | None = field(
        default=None, metadata={"help": "training iterations per epoch (nnU-Net: 250)", "range": (1, 100000)}
    )
    val_iterations_per_epoch: int | None = field(
        default=None, metadata={"help": "validation iterations per epoch (nnU-Net: 50)", "range": (1, 10000)}
    )
    save_every: int | None = field(
        default=None,
        metadata={"help": "epochs between resumable checkpoints (nnU-Net: 50)", "range": (1, 10000)},
    )
    time_budget_s: float | None = field(
        default=None,
        metadata={
            "help": "wall-clock budget of the whole train call (planning included); the trainer shortens "
            "its schedule to finish inside it. None = no budget",
            "range": (1.0, 1e7),
        },
    )
    optimizer: str | None = field(
        default=None,
        metadata={
            "help": "sgd (nnU-Net: momentum 0.99) or adamw (learns faster in short schedules); None = sgd",
            "choices": (None, "sgd", "adamw"),
        },
    )
    initial_lr: float | None = field(
        default=None, metadata={"help": "initial learning rate (nnU-Net: 0.01)", "range": (1e-6, 1.0)}
    )
    target_spacing_mm: float | None = field(
        default=None,
        metadata={
            "help": "in-plane pixel spacing of a reduced configuration (coarser than the data = faster); "
            "None keeps nnU-Net's planned spacing",
            "range": (0.05, 10.0),
        },
    )
    max_patch_size: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "largest in-plane patch size of a reduced configuration", "range": (8, 4096)},
    )
    base_features: int | None = field(
        default=None, metadata={"help": "features of the first U-Net stage (nnU-Net: 32)", "range": (2, 512)}
    )
    max_features: int | None = field(
        default=None,
        metadata={"help": "feature cap of the deepest stages (nnU-Net: 512 2D, 320 3D)", "range": (2, 1024)},
    )
    max_stages: int | None = field(
        default=None, metadata={"help": "maximum number of U-Net resolution stages", "range": (2, 10)}
    )
    n_conv_per_stage: int | None = field(
        default=None,
        metadata={"help": "convolutions per encoder and decoder stage (nnU-Net: 2)", "range": (1, 4)},
    )
    batch_size: int | None = field(default=None, metadata={"help": "batch size", "range": (1, 1024)})
    n_proc_da: int = field(
        default=2,
        metadata={
            "help": "data augmentation worker processes (0 = in the training process)",
            "range": (0, 64),
        },
    )
    torch_compile: bool = field(default=True, metadata={"help": "torch.compile the network (CUDA only)"})
    cpu_bf16: bool = field(
        default=False,
        metadata={
            "help": "CPU only: train in bfloat16 autocast with channels-last tensors (fast on CPUs with AMX or "
            "AVX-512 BF16; slower elsewhere). The weights stay float32"
        },
    )
    final_validation: bool = field(
        default=False,
        metadata={
            "help": "run nnU-Net's full-image validation after training (only meaningful for folds 0-4)"
        },
    )

    @property
    def reduced(self) -> bool:
        """Whether a reduced configuration derived from nnU-Net's plan is trained."""
        return any(
            v is not None
            for v in (
                self.target_spacing_mm,
                self.max_patch_size,
                self.base_features,
                self.max_features,
                self.max_stages,
                self.n_conv_per_stage,
                self.batch_size,
            )
        )


@dataclass(frozen=True)
@shipped_defaults("predict", file=SHIPPED_FILE)
class PredictOptions:
    """How a trained model is applied (defaults: ``predict`` of configs/segment.yaml)."""

    tile_step_size: float = _f("sliding-window step as a fraction of the patch", range=(0.1, 1.0))
    use_mirroring: bool = _f("test-time mirroring along the axes the trainer allowed (left-right only)")
    qc_png: bool = _f("write a QC overlay PNG per patient and modality")
    low_confidence: float = _f(
        "a voxel whose softmax maximum is below this counts as low-confidence in uncertainty.csv",
        range=(0.0, 1.0),
    )
    disagreement: bool = _f(
        "run the folds and the mirrored input as separate passes (the same network passes nnU-Net's ensemble "
        "and mirroring make) so that uncertainty.csv reports how much they disagree (fold_dice, flip_dice); "
        "the segmentation is their mean logits, as nnU-Net's"
    )
    batch_tiles: int = _f(
        "sliding-window tiles a 2D model sees at once (nnU-Net: 1); a 2D model on a 3D volume has one or more "
        "tiles per slice, and on a CPU one batch of many is faster than many of one. 3D models keep one tile "
        "per call (their patches are sized for a training batch of 2)",
        range=(1, 1024),
    )
    cpu_bf16: bool = _f(
        "on a CPU, run the network in bfloat16 autocast with channels-last tensors (fast on CPUs with AMX or "
        "AVX-512 BF16, slower elsewhere); logits are accumulated as nnU-Net does"
    )
    torch_resampling: bool = _f(
        "bring the network's output back to the image grid with nnU-Net's torch resampling "
        "(resample_torch_fornnunet: multi-threaded) instead of the plans' per-slice one (single-threaded, "
        "half an MRI's prediction time on a CPU); the same linear interpolation up to float rounding"
    )


@dataclass(frozen=True)
@shipped_defaults("postprocess", file=SHIPPED_FILE)
class PostprocessOptions:
    """Largest-component cleaning and level-consistency repair (see postprocess.py; defaults: ``postprocess`` of
    configs/segment.yaml)."""

    duplicate_min_fraction: float = _f(
        "a further component of a label is another level (renamed by the sequence) when it has at least this "
        "fraction of the largest component's voxels and is displaced cranio-caudally "
        "(see duplicate_min_distance_mm)",
        range=(0.0, 1.0),
    )
    duplicate_min_distance_mm: float = _f(
        "...and its centre lies at least this far above or below the largest component's centre, and further "
        "cranio-caudally than antero-posteriorly",
        range=(0.0, 1000.0),
    )
    part_min_fraction: float = _f(
        "other components with at least this fraction of the largest one's voxels are kept as parts of the "
        "structure (e.g. posterior elements cut off from the body); smaller ones are removed",
        range=(0.0, 1.0),
    )
    min_voxels: int = _f("structures with fewer voxels are removed as noise", range=(0, 10**9))
    gap_penalty: float = _f(
        "cost of leaving a level out of the cranio-caudal sequence, in units of one confident renaming; lower "
        "renames less and reports more gaps",
        range=(0.0, 10.0),
    )
    room_mm: float = _f(
        "background between two consecutive structures (mm) that can hold a level the network missed; closer "
        "structures may not skip a level between their names",
        range=(0.0, 100.0),
    )
    repair: bool = _f("rename levels by the sequence (False: only report)")


@dataclass(frozen=True)
@shipped_defaults("suggest", file=SHIPPED_FILE)
class SuggestOptions:
    """How `cdeg segment suggest` scores a mask (see suggest.py; defaults: ``suggest`` of configs/segment.yaml).

    score = sum of the finding weights of the mask's findings + sum of the component weights times the
    component (each in robust standard deviations)."""

    qc_weights: dict[str, float] = _f(  # noqa: RUF009 - _f returns a dataclasses.field
        "score per qc.csv finding, by its check (orientation, fragments_removed, duplicate, level_name, ...)"
    )
    qc_default_weight: float = _f(
        "score per qc.csv finding whose check qc_weights does not list", range=(0, 100)
    )
    no_mask_weight: float = _f("score of a patient the stage could not segment or import", range=(0, 1000))
    missing_level_weight: float = _f("score per level missing from the mask", range=(0, 100))
    duplicate_weight: float = _f("score per level found twice, far apart, in the mask", range=(0, 100))
    fragment_weight: float = _f("score per level with stray fragments in the mask", range=(0, 100))
    order_weight: float = _f("score per pair of structures out of cranio-caudal order", range=(0, 100))
    volume_outlier_weight: float = _f(
        "score per structure whose volume is an outlier (volume_z)", range=(0, 100)
    )
    volume_z: float = _f(
        "robust z of a structure's relative volume beyond which it is an outlier for its level",
        range=(0.5, 100),
    )
    volume_min_rel_sd: float = _f(
        "floor of a level's robust SD of relative volume, as a fraction of its median (tiny cohorts of near "
        "identical masks have a MAD near 0)",
        range=(0.0, 1.0),
    )
    expected_share: float = _f(
        "a top or bottom level present in at least this share of the folder's masks is missing where absent",
        range=(0.0, 1.0),
    )
    confidence_weight: float = _f(
        "weight of the worst structure's mean confidence (robust z)", range=(0, 100)
    )
    low_confidence_weight: float = _f("weight of the largest low-confidence share (robust z)", range=(0, 100))
    flip_weight: float = _f("weight of the worst flip Dice (robust z)", range=(0, 100))
    fold_weight: float = _f("weight of the worst fold Dice (robust z)", range=(0, 100))
    volume_weight: float = _f("weight of the mean |robust z| of the structure volumes", range=(0, 100))
    reason_z: float = _f("a component is named among the reasons from this robust z up", range=(0, 100))
    min_patients: int = _f(
        "patients with a value needed before a component is standardised", range=(2, 10**6)
    )


@dataclass(frozen=True)
class SegmentConfig:
    """Everything `cdeg segment` reads from configs/segment.yaml."""

    presets: dict[str, dict[str, dict[str, TrainSettings]]] = field(
        default_factory=dict, metadata={"help": "preset -> device kind -> modality -> settings"}
    )
    predict: PredictOptions = field(default_factory=PredictOptions, metadata={"help": "prediction"})
    postprocess: PostprocessOptions = field(
        default_factory=PostprocessOptions, metadata={"help": "post-processing"}
    )
    suggest: SuggestOptions = field(
        default_factory=SuggestOptions, metadata={"help": "ranking masks for correction"}
    )

    def settings(self, preset: str, device_kind: str, modality: str) -> TrainSettings:
        """Settings of one preset for one device kind and modality; unknown names list the valid ones."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(self.presets)}")
        by_device = self.presets[preset]
        if device_kind not in by_device:
            raise ValueError(f"preset {preset!r} has no settings for device {device_kind!r}")
        by_modality = by_device[device_kind]
        if modality not in by_modality:
            raise ValueError(f"preset {preset!r} ({device_kind}) has no settings for modality {modality!r}")
        return by_modality[modality]


def load_segment_config(
    config: str | Path | Mapping[str, Any] | SegmentConfig | None = None,
    where: str = "",
    source: str | Path | None = None,
) -> SegmentConfig:
    """Shipped configs/segment.yaml with the user's keys on top, checked against the schema.

    Parameters
    ----------
    config : path, mapping or SegmentConfig, optional
        A YAML file of (some of) the keys of configs/segment.yaml, or those keys as a mapping; a resolved
        SegmentConfig is returned as it is. None: the shipped values.
    where : str
        Dotted key the mapping was read from (``segmentation.overrides``); prefixes the keys named in errors.
    source : path, optional
        The file the mapping was read from, named in errors.

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, values out of range, unknown trainers, or presets lacking a
        device kind or modality.
    """
    if isinstance(config, SegmentConfig):
        return config
    data = load_yaml(shipped_config(SHIPPED_FILE))
    if isinstance(config, Mapping):
        data = deep_merge(data, config)
    elif config is not None:
        data, source = deep_merge(data, load_yaml(config)), config
    cfg = from_dict(SegmentConfig, data, where, source)
    check_segment_config(cfg, source=source, where=where)
    return cfg


def check_segment_config(cfg: SegmentConfig, source: str | Path | None = None, where: str = "") -> None:
    """Invariants the schema cannot express: every preset covers both device kinds and modalities.

    `where` (a dotted key, e.g. ``segmentation.overrides``) prefixes the keys named in errors.
    """
    top = f"{where}.presets" if where else "presets"
    for preset in PRESETS:
        if preset not in cfg.presets:
            raise ConfigError(f"{top}.{preset} is missing", path=source)
    for preset, by_device in cfg.presets.items():
        for kind in DEVICE_KINDS:
            if kind not in by_device:
                raise ConfigError(f"{top}.{preset}.{kind} is missing", path=source)
        for kind, by_mod in by_device.items():
            if kind not in DEVICE_KINDS:
                raise ConfigError(
                    f"{top}.{preset}.{kind}: valid device kinds: {', '.join(DEVICE_KINDS)}", path=source
                )
            for modality in MODALITIES:
                if modality not in by_mod:
                    raise ConfigError(f"{top}.{preset}.{kind}.{modality} is missing", path=source)
            for modality, s in by_mod.items():
                at = f"{top}.{preset}.{kind}.{modality}"
                if modality not in MODALITIES:
                    raise ConfigError(f"{at}: valid modalities: {', '.join(MODALITIES)}", path=source)
                if MODALITIES[modality] == 2 and s.configuration != "2d":
                    raise ConfigError(f"{at}.configuration must be 2d for a 2D modality", path=source)
                if s.max_patch_size is not None and len(s.max_patch_size) != 2:
                    raise ConfigError(f"{at}.max_patch_size must have 2 items (in-plane)", path=source)
                if not TRAINER_NAMES[s.trainer] and any(
                    v is not None
                    for v in (
                        s.epochs,
                        s.iterations_per_epoch,
                        s.val_iterations_per_epoch,
                        s.time_budget_s,
                        s.save_every,
                    )
                ):
                    raise ConfigError(
                        f"{at}: epochs/iterations/time budget need a trainer that reads them "
                        f"(e.g. nnUNetTrainer_cdegBudget), not {s.trainer}",
                        path=source,
                    )
    _check_suggest(cfg.suggest, source, where)


def _check_suggest(opts: SuggestOptions, source: str | Path | None, where: str) -> None:
    """Finding weights are not negative (a finding never makes a mask look better)."""
    for check, w in opts.qc_weights.items():
        if w < 0:
            top = f"{where}.suggest" if where else "suggest"
            raise ConfigError(f"{top}.qc_weights.{check} = {w} must be >= 0", path=source)
