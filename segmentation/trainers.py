"""nnU-Net trainer classes used by cdeg, and the registry that names them.

Two changes to nnU-Net's default trainer, both explicit classes rather than one subclass per epoch count:

* :class:`nnUNetTrainer_cdegSpine` keeps nnU-Net's schedule, network and loss but preserves orientation
  in the data augmentation. nnU-Net mirrors 2D patches along both axes and rotates them by up to 180
  degrees; a cervical spine flipped cranio-caudally puts C2 where T1 belongs, so the network would have
  to recover the direction from anatomy alone, and level naming (the metric users care most about)
  suffers. Here rotations stay within 15 degrees and mirroring is only left-right (the sagittal slice
  axis of 3D MRI), at training and at test time.
* :class:`nnUNetTrainer_cdegBudget` adds epochs, iterations per epoch, checkpoint interval, learning
  rate and a wall-clock deadline read from the environment variable ``CDEG_TRAINER_SETTINGS`` (JSON,
  written by :func:`cdeg.segmentation.train.train` from the preset). When the deadline cannot hold the
  remaining epochs, it shortens the schedule (and the polynomial learning-rate decay with it) instead of
  stopping half-way at a high learning rate.

nnU-Net finds trainers by class name, in its own package and then in the folders listed in
``nnUNet_extTrainer``. That search imports every module of the folder as a top-level module, so it is
pointed at a small folder holding only :data:`SHIM_FILENAME` (written by :func:`write_trainer_shim`),
which imports the classes from here; pointing it at this package would import cli.py, predict.py, ...
under bare names.

This module imports torch and nnunetv2; the configuration checks use
:data:`cdeg.segmentation.presets.TRAINER_NAMES` instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

log = logging.getLogger(__name__)

SETTINGS_ENV = "CDEG_TRAINER_SETTINGS"
SHIM_FILENAME = "cdeg_nnunet_trainers.py"
MAX_ROTATION_DEG = 15.0
#: The seed of every training: nnU-Net seeds nothing (see nnUNetTrainer_cdegBudget.on_train_start).
TRAINING_SEED = 0
#: Files a checkpoint write killed half-way leaves (cdeg.io.atomic_path names them .<stem>.<random>.tmp.pth).
CHECKPOINT_TEMPORARIES = ".checkpoint_*.tmp*"


class nnUNetTrainer_cdegSpine(nnUNetTrainer):
    """nnU-Net's default trainer with orientation-preserving augmentation (see module docstring)."""

    uses_settings = False

    def _left_right_axes(self) -> tuple[int, ...]:
        # Canonical MRI arrays are [LR, SI, AP]; nnU-Net may transpose axes (lowest resolution first).
        # Only the axis that came from array axis 0 of a 3D image is left-right; 2D radiographs have none
        # (their first nnU-Net axis is a dummy of size 1).
        transpose = list(self.plans_manager.transpose_forward)
        patch_dim = len(self.configuration_manager.patch_size)
        is_3d_data = self.plans_manager.plans.get("original_median_shape_after_transp", [1, 1, 1])[0] != 1
        if not is_3d_data:
            return ()
        if patch_dim == 3:
            return (transpose.index(0),)
        return (transpose[1:].index(0),) if 0 in transpose[1:] else ()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        _, do_dummy_2d, _, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        patch_size = self.configuration_manager.patch_size
        dim = len(patch_size)
        rot = (-math.radians(MAX_ROTATION_DEG), math.radians(MAX_ROTATION_DEG))
        initial_patch_size = get_patch_size(patch_size[-dim:], rot, rot, rot, (0.85, 1.25))
        if do_dummy_2d:
            initial_patch_size[0] = patch_size[0]
        mirror_axes = self._left_right_axes() or None
        self.inference_allowed_mirroring_axes = mirror_axes
        self.print_to_log_file(f"cdeg: rotation +-{MAX_ROTATION_DEG} deg, mirror axes {mirror_axes}")
        return rot, do_dummy_2d, initial_patch_size, mirror_axes

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed into place.

        nnU-Net writes ``checkpoint_latest.pth`` in place; a job killed during that write (a scheduler's
        time limit, a pre-empted node) would leave a truncated file that the resumed run then fails to load.
        """
        if self.disable_checkpointing or self.local_rank != 0:  # nnU-Net writes nothing then
            super().save_checkpoint(filename)
            return
        from cdeg.io import atomic_path

        with atomic_path(filename) as tmp:
            super().save_checkpoint(str(tmp))


class nnUNetTrainer_cdegBudget(nnUNetTrainer_cdegSpine):
    """:class:`nnUNetTrainer_cdegSpine` with schedule and deadline from ``CDEG_TRAINER_SETTINGS``."""

    uses_settings = True
    #: settings key -> trainer attribute
    SETTING_ATTRS: ClassVar[dict[str, str]] = {
        "epochs": "num_epochs",
        "iterations_per_epoch": "num_iterations_per_epoch",
        "val_iterations_per_epoch": "num_val_iterations_per_epoch",
        "save_every": "save_every",
        "initial_lr": "initial_lr",
    }

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        settings = read_settings()
        for key, attr in self.SETTING_ATTRS.items():
            if settings.get(key) is not None:
                setattr(self, attr, type(getattr(self, attr))(settings[key]))
        self.deadline: float | None = settings.get("deadline_unix")
        self.optimizer_name: str = settings.get("optimizer") or "sgd"
        if self.optimizer_name not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer_name!r}")
        self.planned_epochs = self.num_epochs
        self.cpu_bf16: bool = bool(settings.get("cpu_bf16")) and self.device.type == "cpu"
        self.logger = _ProgressPlotWhenAsked(self.logger)

    def on_train_start(self) -> None:
        # nnU-Net seeds nothing. The weights are initialised in super().on_train_start() and, without background
        # augmentation workers (n_proc_da 0), the patches and their augmentation come from the process's global
        # generators: seeded here, such a training is repeatable. With workers it is not (their order depends
        # on scheduling), nor is a time-budgeted one (the epochs that fit depend on the machine's speed).
        random.seed(TRAINING_SEED)
        np.random.seed(TRAINING_SEED)  # noqa: NPY002 - nnU-Net and its augmentations draw from the legacy generator
        torch.manual_seed(TRAINING_SEED)
        super().on_train_start()
        if self.cpu_bf16:
            self.network.to(memory_format=self._memory_format())
            self.print_to_log_file("cdeg: bfloat16 autocast, channels-last (CPU)")

    def _memory_format(self) -> torch.memory_format:
        return channels_last(len(self.configuration_manager.patch_size))

    def _cpu_bf16_batch(self, batch: dict) -> dict:
        if not self.cpu_bf16:
            return batch
        return {**batch, "data": batch["data"].contiguous(memory_format=self._memory_format())}

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step; with ``cpu_bf16`` inside a bfloat16 autocast (nnU-Net autocasts on CUDA only)."""
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            return super().train_step(self._cpu_bf16_batch(batch))

    def validation_step(self, batch: dict) -> dict:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            return super().validation_step(self._cpu_bf16_batch(batch))

    def configure_optimizers(self):
        """nnU-Net's SGD (momentum 0.99), or AdamW, which learns faster in a schedule of a few thousand steps."""
        if self.optimizer_name == "sgd":
            return super().configure_optimizers()
        from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

        optimizer = torch.optim.AdamW(
            self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay, amsgrad=True
        )
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def on_epoch_end(self) -> None:
        """nnU-Net's epoch end; under a time budget, ``progress.png`` is drawn every ``save_every`` epochs and at
        the end instead of after every epoch.

        nnU-Net redraws progress.png, a 3000 x 5400 pixel figure, after every epoch: 0.7 s on the 2-core CPU
        of the README's benchmarks, 6% of a radiograph epoch of the ``fast`` preset and 12% of an MRI one,
        taken from the budget. Without a budget (``full``) it is drawn after every epoch, as nnU-Net does.
        """
        self.logger.draw = self._plots_after(self.current_epoch + 1)
        try:
            super().on_epoch_end()
        finally:
            self.logger.draw = True

    def on_train_end(self) -> None:
        # Drawn here unless the last epoch's end drew it already.
        if self.local_rank == 0 and not self._plots_after(self.current_epoch):
            self.logger.plot_progress_png(self.output_folder)
        super().on_train_end()

    def _plots_after(self, epochs_done: int) -> bool:
        """Whether the epoch end draws progress.png after `epochs_done` epochs (see :meth:`on_epoch_end`)."""
        return self.deadline is None or epochs_done % self.save_every == 0

    def run_training(self) -> None:
        """nnU-Net's training loop, re-planning the number of epochs against the deadline after each."""
        self.on_train_start()
        epoch_times: list[float] = []
        while self.current_epoch < self.num_epochs:
            t0 = time.time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [
                self.train_step(next(self.dataloader_train)) for _ in range(self.num_iterations_per_epoch)
            ]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val))
                    for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            epoch_times.append(time.time() - t0)
            self._fit_schedule_to_deadline(epoch_times)
        self.on_train_end()

    def _fit_schedule_to_deadline(self, epoch_times: list[float]) -> None:
        if self.deadline is None:
            return
        # The first epoch carries the warm-up (torch.compile, worker start-up): judge speed by later ones.
        recent = epoch_times[1:][-3:] or epoch_times[-1:]
        per_epoch = float(np.median(recent))
        remaining = self.deadline - time.time()
        fits = max(0, int(remaining // per_epoch)) if per_epoch > 0 else 0
        # Re-plan in both directions (never beyond the planned epochs): a machine that was busy for a
        # while should not cut the schedule for good.
        target = min(self.planned_epochs, self.current_epoch + fits)
        if target != self.num_epochs:
            self.num_epochs = target
            if self.num_epochs > 0:
                self.lr_scheduler.max_steps = self.num_epochs
            self.print_to_log_file(
                f"cdeg: time budget holds {fits} more epoch(s) of {per_epoch:.1f} s; training ends after epoch "
                f"{self.num_epochs} (planned {self.planned_epochs})"
            )


class _ProgressPlotWhenAsked:
    """nnU-Net's logger, whose ``plot_progress_png`` does nothing while ``draw`` is false (see
    :meth:`nnUNetTrainer_cdegBudget.on_epoch_end`); everything else is the logger's own."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.draw = True

    def plot_progress_png(self, output_folder: str) -> None:
        if self.draw:
            self._logger.plot_progress_png(output_folder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)


def channels_last(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a 2D or 3D network's tensors (training and inference in bfloat16)."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


#: The trainers a preset may name (name -> class). The one list; presets.TRAINER_NAMES mirrors it.
TRAINERS: dict[str, type[nnUNetTrainer]] = {
    "nnUNetTrainer": nnUNetTrainer,
    "nnUNetTrainer_cdegSpine": nnUNetTrainer_cdegSpine,
    "nnUNetTrainer_cdegBudget": nnUNetTrainer_cdegBudget,
}


def register_with_nnunet() -> None:
    """Let nnU-Net's trainer search find the cdeg trainers in the first module it inspects.

    nnU-Net looks a trainer up by class name
    (``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``, nnU-Net 2.8): it imports the
    modules of ``nnunetv2/training/nnUNetTrainer`` one by one, the top-level ``nnUNetTrainer.py`` first, then
    every variant package (``primus``, ``variants/...``), and only then the ``nnUNet_extTrainer`` folders. The
    primus trainers import timm, which imports torchvision: with a CPU-only torch beside a torchvision built
    for CUDA (or none), the search dies there before it reaches cdeg's classes, and on any machine it imports
    dozens of modules it does not need. Naming the cdeg classes in the module it inspects first ends the
    search there. The ``nnUNet_extTrainer`` shim stays for ``nnUNetv2_train`` run by hand
    (:func:`write_trainer_shim`). tests/test_nnunet_internals.py fails when nnU-Net changes this search.
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as first

    for name, cls in TRAINERS.items():
        if getattr(first, name, cls) is not cls:
            raise RuntimeError(f"nnU-Net already defines a trainer named {name}; cdeg's would shadow it")
        setattr(first, name, cls)


def read_settings() -> dict[str, Any]:
    """The budget trainer's settings from ``CDEG_TRAINER_SETTINGS`` (empty when unset)."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{SETTINGS_ENV} is not valid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{SETTINGS_ENV} must hold a JSON object")
    return data


def write_trainer_shim(folder: str | Path) -> Path:
    """Write the one-module folder that ``nnUNet_extTrainer`` points at; returns the folder."""
    from cdeg.io import write_text

    folder = Path(folder)
    names = ", ".join(n for n in TRAINERS if n != "nnUNetTrainer")
    write_text(
        folder / SHIM_FILENAME,
        '"""Lets nnU-Net find the cdeg trainer classes by name (nnUNet_extTrainer points at this folder)."""\n\n'
        f"from cdeg.segmentation.trainers import {names}  # noqa: F401\n",
    )
    return folder
