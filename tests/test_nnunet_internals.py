"""The parts of nnU-Net below its command line that cdeg trains and predicts with.

cdeg calls nnU-Net's Python API and subclasses its trainer, so a new nnU-Net release can break it without
any error of its own. pyproject.toml bounds ``nnunetv2`` to the minor release these tests ran with; when
the bound is raised, this file says first, and by name, which of those internals moved.
"""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import textwrap

import pytest

#: module -> names cdeg imports from it (segmentation/*.py).
IMPORTED = {
    "nnunetv2.paths": ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"],
    "nnunetv2.run.run_training": ["get_trainer_from_args", "maybe_load_checkpoint"],
    "nnunetv2.inference.predict_from_raw_data": ["nnUNetPredictor"],
    "nnunetv2.inference.export_prediction": ["convert_predicted_logits_to_segmentation_with_correct_shape"],
    "nnunetv2.inference.data_iterators": ["PreprocessAdapterFromNpy"],
    "nnunetv2.experiment_planning.plan_and_preprocess_api": [
        "extract_fingerprint_dataset",
        "plan_experiments",
        "preprocess",
    ],
    "nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor": ["DatasetFingerprintExtractor"],
    "nnunetv2.experiment_planning.experiment_planners.network_topology": ["get_pool_and_conv_props"],
    "nnunetv2.training.nnUNetTrainer.nnUNetTrainer": ["nnUNetTrainer"],
    "nnunetv2.training.lr_scheduler.polylr": ["PolyLRScheduler"],
    "nnunetv2.training.data_augmentation.compute_initial_patch_size": ["get_patch_size"],
    "nnunetv2.utilities.plans_handling.plans_handler": ["PlansManager"],
    "nnunetv2.utilities.find_objects": ["recursive_find_trainer_class_by_name"],
}

#: nnUNetTrainer methods cdeg's trainers override or call (segmentation/trainers.py).
TRAINER_METHODS = [
    "configure_rotation_dummyDA_mirroring_and_inital_patch_size",
    "save_checkpoint",
    "on_train_start",
    "on_epoch_end",
    "on_train_end",
    "train_step",
    "validation_step",
    "configure_optimizers",
    "run_training",
    "perform_actual_validation",
    "print_to_log_file",
]

#: nnUNetPredictor methods and keyword arguments cdeg uses (segmentation/predict.py).
PREDICTOR_CALLS = {
    "__init__": [
        "tile_step_size",
        "use_gaussian",
        "use_mirroring",
        "perform_everything_on_device",
        "device",
        "verbose",
        "verbose_preprocessing",
        "allow_tqdm",
    ],
    "initialize_from_trained_model_folder": ["model_training_output_dir", "use_folds", "checkpoint_name"],
    "predict_logits_from_preprocessed_data": ["data"],
    "predict_sliding_window_return_logits": ["input_image"],
}


@pytest.mark.parametrize("module", sorted(IMPORTED))
def test_imported_names_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in IMPORTED[module] if not hasattr(mod, name)]
    assert not missing, f"nnU-Net moved or renamed {missing} in {module}"


def test_trainer_methods_cdeg_overrides_exist():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    missing = [m for m in TRAINER_METHODS if not callable(getattr(nnUNetTrainer, m, None))]
    assert not missing, f"nnUNetTrainer no longer has {missing}"
    params = list(inspect.signature(nnUNetTrainer.__init__).parameters)
    assert params[:6] == ["self", "plans", "configuration", "fold", "dataset_json", "device"], params


def test_what_the_training_setup_relies_on():
    """train.py passes its own fingerprint extractor class (fewer intensity samples); the budget trainer wraps
    nnU-Net's logger to draw progress.png less often."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    params = list(inspect.signature(extract_fingerprint_dataset).parameters)
    assert params[:2] == ["dataset_id", "fingerprint_extractor_class"], params
    assert "num_foreground_voxels_for_intensitystats" in inspect.getsource(
        DatasetFingerprintExtractor.__init__
    )
    assert callable(getattr(MetaLogger, "plot_progress_png", None))


@pytest.mark.parametrize("method", sorted(PREDICTOR_CALLS))
def test_predictor_signatures(method):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    params = inspect.signature(getattr(nnUNetPredictor, method)).parameters
    missing = [p for p in PREDICTOR_CALLS[method] if p not in params]
    assert not missing, f"nnUNetPredictor.{method} lost the argument(s) {missing}"


def test_trainer_lookup_ends_at_the_cdeg_classes_without_importing_timm():
    """The search nnU-Net runs before training and prediction finds cdeg's trainers in its first module,
    without importing the trainer variants (timm, torchvision: absent or broken on a CPU-only install)."""
    code = textwrap.dedent(
        """
        import sys
        from cdeg.segmentation.trainers import TRAINERS, register_with_nnunet
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        register_with_nnunet()
        for name, cls in TRAINERS.items():
            assert recursive_find_trainer_class_by_name(name) is cls, name
        loaded = sorted(m for m in ("timm", "torchvision") if m in sys.modules)
        variants = [m for m in sys.modules if m.startswith("nnunetv2.training.nnUNetTrainer.variants")]
        print(loaded, len(variants))
        assert not loaded and not variants, (loaded, variants[:5])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_nnunet_is_the_minor_release_pyproject_allows():
    from importlib.metadata import version

    from packaging.version import Version

    v = Version(version("nnunetv2"))
    assert (v.major, v.minor) == (2, 8), f"nnunetv2 {v}: run this file, then move the bound in pyproject.toml"
