"""nnU-Net's environment: folders, threads, compile switch and device, set per call and restored after.

nnU-Net reads its folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) and a few
switches from environment variables. cdeg never asks the user for them: each call points them into the
model folder, inside :func:`nnunet_environment`, and restores the caller's values afterwards.

Versions before 2.8 read the folder variables once, when ``nnunetv2.paths`` is first imported, and
other modules copy them with ``from nnunetv2.paths import nnUNet_raw``. Setting the environment alone
would then leave stale values in a process that trains twice (a notebook, the test suite). The context
manager therefore also rewrites those module attributes where they are plain strings; from 2.8 on they
are lazy objects that read the environment on use and are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

# Raised by torch when nnU-Net's dependencies import; it concerns their code, not the user's, and would be
# printed once per process in every segment command.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.interface.* is deprecated", category=FutureWarning)

PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: nnU-Net dataset id and name per modality (ids are local to a model folder, so they never clash).
DATASET_NAMES = {"mri": "Dataset501_cdegMRI", "xray": "Dataset502_cdegXray"}


def dataset_id(modality: str) -> int:
    """nnU-Net dataset id of a modality (the three digits of its folder name)."""
    return int(DATASET_NAMES[modality][len("Dataset") : len("Dataset") + 3])


def dataset_name(modality: str) -> str:
    """nnU-Net dataset folder name of a modality (``Dataset501_cdegMRI``)."""
    return DATASET_NAMES[modality]


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda" when a CUDA device is visible, else "cpu"; "cuda" without one raises ValueError."""
    from cdeg.choices import DEVICES

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError(
            "--device cuda was asked for but no CUDA device is available (use --device cpu or auto)"
        )
    return "cpu"


def _patch_loaded_path_attributes(values: Mapping[str, str | None]) -> None:
    # Only for nnunetv2 < 2.8 (see module docstring): plain str/None attributes are stale copies.
    paths = sys.modules.get("nnunetv2.paths")
    if paths is None or not isinstance(getattr(paths, "nnUNet_raw", None), (str, type(None))):
        return
    for name, module in list(sys.modules.items()):
        if not (name == "nnunetv2" or name.startswith("nnunetv2.")) or module is None:
            continue
        for var, value in values.items():
            if var in vars(module) and isinstance(vars(module)[var], (str, type(None))):
                setattr(module, var, value)


@contextlib.contextmanager
def nnunet_environment(
    work: str | Path | None = None,
    results: str | Path | None = None,
    ext_trainer: str | Path | None = None,
    extra: Mapping[str, str | None] | None = None,
) -> Iterator[None]:
    """Point nnU-Net at `work`/nnUNet_raw, `work`/nnUNet_preprocessed and `results` for the block.

    Parameters
    ----------
    work : Path, optional
        Folder for raw and preprocessed data (created).
    results : Path, optional
        nnU-Net results folder (the trained model).
    ext_trainer : Path, optional
        Folder with the trainer shim (see :mod:`cdeg.segmentation.trainers`).
    extra : mapping, optional
        Further variables (None removes one), e.g. ``nnUNet_compile``, ``nnUNet_n_proc_DA``.
    """
    values: dict[str, str | None] = {}
    if work is not None:
        values["nnUNet_raw"] = str(Path(work) / "nnUNet_raw")
        values["nnUNet_preprocessed"] = str(Path(work) / "nnUNet_preprocessed")
        for var in ("nnUNet_raw", "nnUNet_preprocessed"):
            Path(values[var]).mkdir(parents=True, exist_ok=True)
    if results is not None:
        values["nnUNet_results"] = str(results)
        Path(results).mkdir(parents=True, exist_ok=True)
    if ext_trainer is not None:
        values["nnUNet_extTrainer"] = str(ext_trainer)
    values.update(extra or {})
    saved = {k: os.environ.get(k) for k in values}
    for var in PATH_VARS:
        saved.setdefault(var, os.environ.get(var))
    try:
        _set(values)
        _patch_loaded_path_attributes({v: os.environ.get(v) for v in PATH_VARS})
        yield
    finally:
        _set(saved)
        _patch_loaded_path_attributes({v: os.environ.get(v) for v in PATH_VARS})


def _set(values: Mapping[str, str | None]) -> None:
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def torch_threads(device: str) -> Iterator[None]:
    """Use every core on CPU, one on CUDA (as nnU-Net's entry points do); restore afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads((os.cpu_count() or 1) if device == "cpu" else 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet_stdout(enabled: bool = True) -> Iterator[None]:
    """Send nnU-Net's print() output to the log at DEBUG level (it prints rather than logs)."""
    if not enabled:
        yield
        return

    class _ToLog:
        def __init__(self) -> None:
            self._buf = ""

        def write(self, s: str) -> int:
            self._buf += s
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                if line.strip():
                    log.debug("nnU-Net: %s", line.rstrip())
            return len(s)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    with contextlib.redirect_stdout(_ToLog()):  # type: ignore[type-var]
        yield
