"""cdeg: accelerated cervical spine degeneration from a lateral radiograph, a sagittal T2 MRI and clinical scores.

Stages (each a plain function with a thin CLI command over it):

* :func:`cdeg.synth.synthesize`  - synthetic cohorts with known ground truth (``cdeg synth``)
* :mod:`cdeg.segmentation`       - nnU-Net v2 segmentation and level naming (``cdeg segment``)
* :mod:`cdeg.features`           - PyRadiomics and clinical measurements per level (``cdeg extract``)
* :mod:`cdeg.modeling`           - nested-CV XGBoost vs logistic regression, SHAP (``cdeg fit``)
"""

__version__ = "0.1.0"
