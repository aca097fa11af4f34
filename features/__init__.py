"""Per-level features (``cdeg extract``): PyRadiomics plus the measurements clinicians use.

* :func:`cdeg.features.extract.extract`   - the API (one call per cohort); ``cdeg extract`` calls it
* :mod:`cdeg.features.measurements`       - disc heights, angles, body size, signal ratio from masks
* :mod:`cdeg.features.radiomics_features` - PyRadiomics per structure

Importing this package imports neither PyRadiomics nor the stage; the modules load what they need.
"""
